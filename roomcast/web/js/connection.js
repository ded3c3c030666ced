// The WebSocket to /ws and the HTTP API: reconnect with jittered back-off, a
// heartbeat that notices a dead link, and a table of handlers per event type
// that the feature modules fill (several modules may listen to one type).

import { state } from "./state.js";

const HEARTBEAT_MS = 25000; // a ping this often while connected...
const HEARTBEAT_TIMEOUT_MS = 10000; // ...and a link that answers nothing for this long is dead
const MAX_BACKOFF_MS = 10000;

const handlers = new Map(); // type -> [fn]
let ws = null;
let backoff = 500;
let reconnectTimer = null;
let heartbeatTimer = null;
let lastFrameAt = 0;
let stopped = true;
let everConnected = false;

/** Call ``fn(payload)`` for every server event of ``type``; "open"/"close" are the link's own. */
export function on(type, fn) {
  if (!handlers.has(type)) handlers.set(type, []);
  handlers.get(type).push(fn);
}

function emit(type, payload) {
  for (const fn of handlers.get(type) || []) {
    try {
      fn(payload);
    } catch (error) {
      console.error(`handler for ${type} failed`, error);
    }
  }
}

/** Send one request; false when the link is not open (nothing was sent). */
export function send(type, payload = {}) {
  if (!ws || ws.readyState !== WebSocket.OPEN) return false;
  ws.send(JSON.stringify({ type, payload, timestamp: Date.now() }));
  return true;
}

export function connect() {
  stopped = false;
  everConnected = false;
  open();
}

export function disconnect() {
  stopped = true;
  clearTimeout(reconnectTimer);
  clearInterval(heartbeatTimer);
  if (ws) {
    const old = ws;
    ws = null;
    old.close();
  }
  state.connected = false;
}

function open() {
  clearTimeout(reconnectTimer);
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const query = state.token
    ? `token=${encodeURIComponent(state.token)}`
    : `user_id=${encodeURIComponent(state.me)}`;
  const socket = new WebSocket(`${scheme}://${location.host}/ws?${query}`);
  ws = socket;
  emit("link", { state: "connecting", text: "Connecting…" });
  socket.onmessage = (event) => {
    lastFrameAt = Date.now();
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch {
      return;
    }
    if (frame.type === "connected") {
      state.connected = true;
      everConnected = true;
      backoff = 500;
      startHeartbeat(socket);
    }
    emit(frame.type, frame.payload || {});
  };
  socket.onclose = (event) => {
    if (ws !== socket) return;
    clearInterval(heartbeatTimer);
    state.connected = false;
    emit("close", { code: event.code });
    if (stopped) return;
    if (event.code === 1008 && !everConnected) {
      stopped = true;
      emit("refused", {});
      return;
    }
    const delay = Math.min(backoff, MAX_BACKOFF_MS) * (0.75 + Math.random() * 0.5);
    backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
    emit("link", { state: "offline", text: `Offline — reconnecting in ${Math.ceil(delay / 1000)} s…` });
    reconnectTimer = setTimeout(open, delay);
  };
}

function startHeartbeat(socket) {
  clearInterval(heartbeatTimer);
  heartbeatTimer = setInterval(() => {
    if (ws !== socket) return;
    if (Date.now() - lastFrameAt > HEARTBEAT_MS + HEARTBEAT_TIMEOUT_MS) {
      socket.close(); // nothing came back, not even a pong: start over
      return;
    }
    send("ping");
  }, HEARTBEAT_MS);
}

// -- HTTP ------------------------------------------------------------------------------

export async function api(path, options = {}) {
  const url = new URL(path, location.origin);
  const headers = { ...(options.headers || {}) };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  else if (state.me) url.searchParams.set("user_id", state.me);
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, {
    method: options.method || "GET",
    headers,
    body: options.body !== undefined ? JSON.stringify(options.body) : undefined,
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error((data.error && data.error.message) || response.statusText);
  return data;
}

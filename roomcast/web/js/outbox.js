// The outbox: every message the user sends is shown at once and kept here
// until the server broadcasts it back (matched by its client_msg_id).
//
// Order: one message per room is in flight at a time, so a room receives the
// user's messages in the order they were typed, whatever is refused and
// retried. Pace: the client keeps to the chat rate /api/info publishes (a
// mirror of the server's token bucket), so a fast typist is slowed down
// rather than refused; a refusal still seen (the user's other tabs share the
// per-user bucket) pauses sending for its retry_after_ms. Nothing shown as
// sent is dropped: a message the server will not take (too long, forbidden)
// stays in the timeline as failed, with Retry and Discard. The outbox is
// kept in sessionStorage, so a reload of the tab sends what was waiting.

import { on, send } from "./connection.js";
import { state } from "./state.js";
import { toast } from "./dom.js";

const STORAGE_KEY = "roomcast.outbox";
// Refusals that sending the same message again later can cure.
const TRANSIENT = new Set(["rate_limited", "internal"]);

const queues = new Map(); // room id -> [{clientMsgId, room, text, status, error, attempts}]
const listeners = [];
let bucket = null;
let pausedUntil = 0;
let pumpTimer = null;

/** Call ``fn(roomId)`` whenever the room's pending messages change. */
export function onPendingChange(fn) {
  listeners.push(fn);
}

function changed(roomId) {
  save();
  for (const fn of listeners) fn(roomId);
  const waiting = [...queues.values()].reduce((n, q) => n + q.filter((m) => m.status !== "failed").length, 0);
  const status = document.getElementById("outbox-state");
  if (status) {
    status.textContent =
      waiting > 1 && Date.now() < pausedUntil
        ? `Sending ${waiting} messages — the server asks to slow down…`
        : waiting > 3
          ? `Sending ${waiting} messages…`
          : "";
  }
}

/**
 * The room's messages not yet stored, in the order they were typed: those of
 * its timeline, or with ``threadId`` those replying in that thread.
 */
export function pending(roomId, threadId = null) {
  return (queues.get(roomId) || []).filter((m) => ((m.extra && m.extra.thread_id) || null) === threadId);
}

/** Queue a message; ``extra`` holds its ``thread_id`` and ``mentions``, if any. */
export function queueMessage(roomId, text, extra = {}) {
  const clientMsgId = crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`;
  const item = {
    clientMsgId,
    room: roomId,
    text,
    extra,
    status: "queued",
    error: null,
    attempts: 0,
    at: Date.now(),
  };
  if (!queues.has(roomId)) queues.set(roomId, []);
  queues.get(roomId).push(item);
  changed(roomId);
  pump();
  return item;
}

export function retry(clientMsgId) {
  const item = find(clientMsgId);
  if (!item || item.status !== "failed") return;
  item.status = "queued";
  item.error = null;
  changed(item.room);
  pump();
}

export function discard(clientMsgId) {
  const item = find(clientMsgId);
  if (!item) return;
  remove(item);
  pump();
}

function find(clientMsgId) {
  for (const queue of queues.values()) {
    const item = queue.find((m) => m.clientMsgId === clientMsgId);
    if (item) return item;
  }
  return null;
}

function remove(item) {
  const queue = queues.get(item.room) || [];
  const index = queue.indexOf(item);
  if (index >= 0) queue.splice(index, 1);
  if (!queue.length) queues.delete(item.room);
  changed(item.room);
}

// -- pacing ----------------------------------------------------------------------------

class TokenBucket {
  constructor(perSecond, burst) {
    this.rate = perSecond;
    this.burst = burst;
    this.tokens = burst;
    this.last = performance.now();
  }

  refill() {
    const now = performance.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.rate);
    this.last = now;
  }

  take() {
    this.refill();
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  waitMs() {
    this.refill();
    return this.tokens >= 1 ? 0 : Math.ceil(((1 - this.tokens) / this.rate) * 1000);
  }

  drain() {
    this.refill();
    this.tokens = 0;
  }
}

/** Keep to the server's chat rate (slightly under it: the clocks differ). */
export function usePacing(rateLimits) {
  const chat = rateLimits && rateLimits.chat;
  bucket = chat ? new TokenBucket(chat.per_second * 0.9, Math.max(1, Math.floor(chat.burst) - 2)) : null;
}

function schedule(delayMs) {
  if (pumpTimer !== null) return;
  pumpTimer = setTimeout(() => {
    pumpTimer = null;
    pump();
  }, Math.max(delayMs, 10));
}

/** Send the first waiting message of every room that has none in flight. */
export function pump() {
  if (!state.connected) return;
  const now = Date.now();
  for (const queue of queues.values()) {
    if (queue.some((m) => m.status === "sending")) continue;
    const head = queue.find((m) => m.status === "queued");
    if (!head) continue;
    if (now < pausedUntil) {
      schedule(pausedUntil - now);
      return;
    }
    if (bucket && !bucket.take()) {
      schedule(bucket.waitMs());
      return;
    }
    const payload = {
      ...(head.extra || {}),
      room_id: head.room,
      content: head.text,
      type: "text",
      client_msg_id: head.clientMsgId,
    };
    if (!send("chat", payload)) return;
    head.status = "sending";
    head.attempts += 1;
  }
}

// -- answers -------------------------------------------------------------------------

on("chat", (p) => {
  if (!p.client_msg_id) return;
  const item = find(p.client_msg_id);
  if (item) remove(item);
  pump();
});

on("error", (p) => {
  const item = p.client_msg_id && find(p.client_msg_id);
  if (!item) return;
  item.status = "queued";
  if (p.code === "rate_limited") {
    pausedUntil = Math.max(pausedUntil, Date.now() + (p.retry_after_ms || 1000));
    if (bucket) bucket.drain();
  } else if (p.code === "internal") {
    const wait = Math.min(30000, 1000 * 2 ** Math.min(item.attempts, 5));
    pausedUntil = Math.max(pausedUntil, Date.now() + wait);
    if (item.attempts === 1) toast("The server could not store your message; retrying…");
  }
  if (!TRANSIENT.has(p.code)) {
    item.status = "failed";
    item.error = p.message || p.code;
  }
  changed(item.room);
  pump();
});

on("connected", () => {
  // Whatever was in flight when the link dropped goes again with its
  // client_msg_id: the server stores each message once however often sent.
  for (const queue of queues.values()) {
    for (const item of queue) if (item.status === "sending") item.status = "queued";
  }
  pausedUntil = 0;
  if (bucket) bucket.tokens = bucket.burst; // a new connection has a full bucket
});

// -- kept across reloads of the tab ----------------------------------------------------

function save() {
  const items = [...queues.values()].flat().map(({ clientMsgId, room, text, extra, status, error, at }) => ({
    clientMsgId,
    room,
    text,
    extra,
    status: status === "failed" ? "failed" : "queued",
    error,
    at,
  }));
  try {
    sessionStorage.setItem(STORAGE_KEY, JSON.stringify({ user: state.me, items }));
  } catch {
    // Storage full or disabled: the outbox still works for this page.
  }
}

/** Take back what this tab had not sent when it was reloaded (for the same user). */
export function restore() {
  let saved = null;
  try {
    saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || "null");
  } catch {
    saved = null;
  }
  queues.clear();
  if (!saved || saved.user !== state.me) return;
  for (const item of saved.items || []) {
    if (!queues.has(item.room)) queues.set(item.room, []);
    queues.get(item.room).push({ ...item, attempts: 0 });
  }
}

export function clear() {
  queues.clear();
  sessionStorage.removeItem(STORAGE_KEY);
}

/** Rooms that have messages waiting (joined again after a reload). */
export function rooms() {
  return [...queues.keys()];
}

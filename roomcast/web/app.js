// roomcast browser client: chat, presence, typing and video calls over /ws.
// Plain DOM, no framework and no build step. User-provided text is only ever
// assigned with textContent, never parsed as HTML.
"use strict";

const EMOJIS = ["👍", "❤️", "😂", "🎉", "😮", "😢"];
const TYPING_IDLE_MS = 2500;
const TYPING_REFRESH_MS = 2000;
const HISTORY_PAGE = 50;

const END_REASONS = {
  rejected: (peer) => `${peer} declined the call.`,
  busy: (peer) => `${peer} is busy in another call.`,
  no_answer: (peer) => `No answer from ${peer}.`,
  unavailable: (peer) => `${peer} is offline.`,
  disconnected: (peer) => `The call with ${peer} was disconnected.`,
  glare: (peer) => `${peer} is calling you at the same moment — answer their call.`,
  answered_elsewhere: () => "Answered on another device.",
  ended: (peer, by, me) => (by === me ? "Call ended." : `${peer} hung up.`),
};

const $ = (id) => document.getElementById(id);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function timeOf(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function initials(name) {
  return (name || "?").trim().slice(0, 2).toUpperCase();
}

function colorFor(name) {
  let hash = 0;
  for (const ch of name || "") hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return `hsl(${hash % 360} 55% 45%)`;
}

// -- state -------------------------------------------------------------------------------

const state = {
  mode: "open",
  me: null, // user id
  token: null,
  ws: null,
  connected: false,
  backoff: 500,
  reconnectTimer: null,
  stopped: false,
  rooms: [], // the room list's pages loaded so far, in id order
  roomsNext: null, // the next page's cursor (null: every room is loaded)
  roomFilter: "", // the name filter of the room list
  current: null, // room id on screen
  joined: new Set(), // rooms this client is in (re-joined after a reconnect)
  rooms_state: new Map(), // room id -> RoomView
  typingSent: false,
  typingIdleTimer: null,
  typingLastSent: 0,
  outbox: new Map(), // client_msg_id -> {room, text}: sent but not yet seen back
  call: null,
};

class RoomView {
  constructor(id) {
    this.id = id;
    this.members = new Map(); // user -> status
    this.messages = new Map(); // id -> message (with reactions: Map emoji -> Set users)
    this.order = []; // message ids ascending
    this.notices = []; // {after: message id, text}
    this.typing = new Set();
    this.nextBefore = undefined; // undefined: not loaded; null: no more history
    this.loadingOlder = false;
  }
}

function room(id) {
  if (!state.rooms_state.has(id)) state.rooms_state.set(id, new RoomView(id));
  return state.rooms_state.get(id);
}

// -- HTTP --------------------------------------------------------------------------------

async function api(path, options = {}) {
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

// -- WebSocket ---------------------------------------------------------------------------

function send(type, payload = {}) {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return false;
  state.ws.send(JSON.stringify({ type, payload, timestamp: Date.now() }));
  return true;
}

function setConnState(kind, text) {
  const node = $("conn-state");
  node.dataset.state = kind;
  node.textContent = text;
  const enabled = kind === "connected" && state.current !== null;
  $("message-input").disabled = !enabled;
  $("send-button").disabled = !enabled;
}

function connect() {
  clearTimeout(state.reconnectTimer);
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const query = state.token
    ? `token=${encodeURIComponent(state.token)}`
    : `user_id=${encodeURIComponent(state.me)}`;
  const ws = new WebSocket(`${scheme}://${location.host}/ws?${query}`);
  state.ws = ws;
  setConnState("connecting", "Connecting…");
  ws.onmessage = (event) => {
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch {
      return;
    }
    const handler = HANDLERS[frame.type];
    if (handler) handler(frame.payload || {});
  };
  ws.onclose = (event) => {
    if (state.ws !== ws) return;
    state.connected = false;
    endCallLocally("disconnected", null);
    if (state.stopped) return;
    if (event.code === 1008 && !state.everConnected) {
      showLogin("The server refused this identity. Check your name or token.");
      return;
    }
    const delay = Math.min(state.backoff, 10000) * (0.75 + Math.random() * 0.5);
    state.backoff = Math.min(state.backoff * 2, 10000);
    setConnState("offline", `Offline — reconnecting in ${Math.ceil(delay / 1000)} s…`);
    state.reconnectTimer = setTimeout(connect, delay);
  };
}

const HANDLERS = {
  connected(p) {
    state.connected = true;
    state.everConnected = true;
    state.backoff = 500;
    if (p.user_id) state.me = p.user_id;
    renderMe();
    setConnState("connected", "Connected");
    const status = $("status-select").value;
    if (status !== "online") send("presence", { status });
    for (const id of state.joined) rejoin(id);
    flushOutbox();
    refreshRooms();
  },
  error(p) {
    // Candidates still in flight when a call ends meet a call the server has
    // already closed: expected, and not worth a message over the real reason.
    const signaling = p.type === "webrtc" || p.type === "call_end" || p.type === "call_reject";
    if (signaling && p.code === "not_found") return;
    const pending = p.client_msg_id && state.outbox.get(p.client_msg_id);
    if (pending && (p.code === "rate_limited" || p.code === "internal")) {
      // Not stored: try this one again shortly (it keeps its client_msg_id).
      setTimeout(() => {
        if (!state.outbox.has(p.client_msg_id)) return;
        send("chat", { room_id: pending.room, content: pending.text, type: "text", client_msg_id: p.client_msg_id });
      }, Math.max(p.retry_after_ms || 0, 1000));
      if (p.code === "internal") toast("The server could not store your message; retrying…");
      return;
    }
    if (pending) state.outbox.delete(p.client_msg_id);
    toast(p.message || p.code);
  },
  pong() {},
  room_users(p) {
    const view = room(p.room_id);
    view.members = new Map(p.users.map((u) => [u.user_id, u.status]));
    if (p.room_id === state.current) renderMembers();
  },
  user_joined(p) {
    const view = room(p.room_id);
    view.members.set(p.user_id, "online");
    addNotice(view, `${p.user_id} joined`);
  },
  user_left(p) {
    const view = room(p.room_id);
    view.members.delete(p.user_id);
    view.typing.delete(p.user_id);
    addNotice(view, `${p.user_id} left`);
    if (p.room_id === state.current) renderTyping();
  },
  presence(p) {
    for (const view of state.rooms_state.values()) {
      if (view.members.has(p.user_id)) view.members.set(p.user_id, p.status);
    }
    if (p.user_id === state.me && p.status !== "offline") $("status-select").value = p.status;
    renderMembers();
  },
  history_gap(p) {
    // More was missed than the server replays: start this room over from HTTP.
    const view = room(p.room_id);
    view.messages.clear();
    view.order = [];
    view.notices = [];
    view.nextBefore = undefined;
    loadOlder(view, true).then(() => {
      if (p.room_id === state.current) renderMessages("force");
    });
  },
  chat(p) {
    if (p.client_msg_id) state.outbox.delete(p.client_msg_id);
    const view = room(p.room_id);
    view.typing.delete(p.user_id);
    addMessage(view, { ...p, edited_at: null, reactions: {} });
    if (p.room_id === state.current) {
      renderMessages(true);
      renderTyping();
    }
  },
  message_edit(p) {
    const message = room(p.room_id).messages.get(p.message_id);
    if (!message) return;
    message.content = p.content;
    message.edited_at = p.edited_at;
    if (p.room_id === state.current) renderMessages(false);
  },
  message_delete(p) {
    const view = room(p.room_id);
    view.messages.delete(p.message_id);
    view.order = view.order.filter((id) => id !== p.message_id);
    if (p.room_id === state.current) renderMessages(false);
  },
  message_reaction(p) {
    const message = room(p.room_id).messages.get(p.message_id);
    if (!message) return;
    const users = message.reactions.get(p.emoji) || new Set();
    if (p.action === "added") users.add(p.user_id);
    else users.delete(p.user_id);
    if (users.size) message.reactions.set(p.emoji, users);
    else message.reactions.delete(p.emoji);
    if (p.room_id === state.current) renderMessages(false);
  },
  typing(p) {
    const view = room(p.room_id);
    if (p.is_typing) view.typing.add(p.user_id);
    else view.typing.delete(p.user_id);
    if (p.room_id === state.current) renderTyping();
  },
  call_ringing(p) {
    onCallRinging(p);
  },
  incoming_call(p) {
    onIncomingCall(p);
  },
  webrtc(p) {
    onSignal(p);
  },
  call_active(p) {
    onCallActive(p);
  },
  call_ended(p) {
    if (state.call && state.call.id === p.call_id) endCallLocally(p.reason, p.by);
  },
};

// -- rooms ---------------------------------------------------------------------------------

// The server lists rooms a page at a time (by id, optionally filtered by name):
// the list starts with the first page and "More rooms" fetches the next.
const ROOM_PAGE = 50;

async function fetchRooms(after) {
  const params = new URLSearchParams({ limit: String(ROOM_PAGE) });
  if (after !== null) params.set("after", String(after));
  if (state.roomFilter) params.set("q", state.roomFilter);
  return api(`/api/rooms?${params}`);
}

async function refreshRooms() {
  const filter = state.roomFilter;
  let page;
  try {
    page = await fetchRooms(null);
  } catch (error) {
    toast(`Could not load rooms: ${error.message}`);
    return;
  }
  if (filter !== state.roomFilter) return; // typed on meanwhile: a newer answer follows
  state.rooms = page.rooms;
  state.roomsNext = page.next;
  renderRooms();
}

async function loadMoreRooms() {
  if (state.roomsNext === null) return;
  const filter = state.roomFilter;
  let page;
  try {
    page = await fetchRooms(state.roomsNext);
  } catch (error) {
    toast(`Could not load rooms: ${error.message}`);
    return;
  }
  if (filter !== state.roomFilter) return;
  mergeRooms(page.rooms);
  state.roomsNext = page.next;
  renderRooms();
}

function mergeRooms(rooms) {
  const byId = new Map(state.rooms.map((info) => [info.id, info]));
  for (const info of rooms) byId.set(info.id, info);
  state.rooms = [...byId.values()].sort((a, b) => a.id - b.id);
}

function renderRooms() {
  const list = $("room-list");
  list.replaceChildren();
  $("more-rooms").hidden = state.roomsNext === null;
  if (!state.rooms.length) {
    list.append(el("li", "muted small", state.roomFilter ? "No room has that name." : "No rooms yet."));
  }
  for (const info of state.rooms) {
    const item = el("li");
    const button = el("button", "room-item" + (info.id === state.current ? " active" : ""));
    button.dataset.roomId = String(info.id);
    button.append(el("span", "hash", info.private ? "🔒" : "#"), el("span", "room-label", info.name));
    button.onclick = () => openRoom(info.id);
    item.append(button);
    list.append(item);
  }
}

async function openRoom(id) {
  document.body.classList.remove("sidebar-open");
  if (!state.joined.has(id)) {
    state.joined.add(id);
    send("join_room", { room_id: id });
  }
  state.current = id;
  const info = state.rooms.find((r) => r.id === id);
  $("room-name").textContent = info ? info.name : `Room ${id}`;
  $("empty-room").hidden = true;
  renderRooms();
  renderMembers();
  renderTyping();
  setConnState(state.connected ? "connected" : "offline", $("conn-state").textContent);
  const view = room(id);
  if (view.nextBefore === undefined) await loadOlder(view, true);
  renderMessages(true);
  $("message-input").focus();
}

function addMessage(view, message) {
  const reactions =
    message.reactions instanceof Map
      ? message.reactions
      : new Map(Object.entries(message.reactions || {}).map(([e, users]) => [e, new Set(users)]));
  const known = view.messages.has(message.id);
  view.messages.set(message.id, { ...message, reactions });
  if (!known) {
    const order = view.order;
    if (!order.length || order[order.length - 1] < message.id) order.push(message.id);
    else {
      order.push(message.id);
      order.sort((a, b) => a - b);
    }
  }
}

function addNotice(view, text) {
  const after = view.order.length ? view.order[view.order.length - 1] : 0;
  view.notices.push({ after, text, at: Date.now() });
  if (view.id === state.current) {
    renderMembers();
    renderMessages(true);
  }
}

async function loadOlder(view, initial) {
  if (view.loadingOlder || view.nextBefore === null) return;
  view.loadingOlder = true;
  try {
    const before = initial || view.nextBefore === undefined ? "" : `&before=${view.nextBefore}`;
    const page = await api(`/api/rooms/${view.id}/messages?limit=${HISTORY_PAGE}${before}`);
    for (const message of page.messages) addMessage(view, message);
    view.nextBefore = page.next_before;
  } catch (error) {
    toast(`Could not load history: ${error.message}`);
  } finally {
    view.loadingOlder = false;
  }
}

function lastSeen(id) {
  const order = room(id).order;
  return order.length ? order[order.length - 1] : null;
}

function rejoin(id) {
  // After a reconnect the server replays what this room missed since the last
  // message we have (join_room "since"), then live traffic, each exactly once.
  const since = lastSeen(id);
  send("join_room", since === null ? { room_id: id } : { room_id: id, since });
}

function flushOutbox() {
  // Messages typed while offline, or sent just before a drop, go (again) with
  // their client_msg_id: the server stores each one once, however often sent.
  for (const [clientMsgId, pending] of state.outbox) {
    send("chat", { room_id: pending.room, content: pending.text, type: "text", client_msg_id: clientMsgId });
  }
}

// -- rendering -------------------------------------------------------------------------------

function renderMe() {
  $("me-name").textContent = state.me;
  const avatar = $("me-avatar");
  avatar.textContent = initials(state.me);
  avatar.style.background = colorFor(state.me);
}

function renderMembers() {
  const list = $("member-list");
  list.replaceChildren();
  if (state.current === null) return;
  const view = room(state.current);
  const names = [...view.members.keys()].sort();
  $("room-sub").textContent = `${names.length} online`;
  for (const name of names) {
    const status = view.members.get(name);
    const item = el("li", "member");
    item.dataset.user = name;
    const avatar = el("div", "avatar small", initials(name));
    avatar.style.background = colorFor(name);
    const dot = el("span", `dot ${status}`);
    dot.title = status;
    const label = el("span", "member-name", name === state.me ? `${name} (you)` : name);
    const statusText = el("span", "member-status muted small", status);
    item.append(avatar, dot, label, statusText);
    if (name !== state.me) {
      const call = el("button", "call-button", "📞 Call");
      call.title = `Video call ${name}`;
      call.onclick = () => startCall(name);
      item.append(call);
    }
    list.append(item);
  }
}

function renderTyping() {
  const node = $("typing");
  if (state.current === null) {
    node.textContent = "";
    return;
  }
  const names = [...room(state.current).typing].filter((n) => n !== state.me).sort();
  node.textContent =
    names.length === 0
      ? ""
      : names.length === 1
        ? `${names[0]} is typing…`
        : `${names.slice(0, -1).join(", ")} and ${names[names.length - 1]} are typing…`;
}

function renderMessages(stickToBottom) {
  if (state.current === null) return;
  const box = $("messages");
  const view = room(state.current);
  const nearBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  const previousHeight = box.scrollHeight;
  const previousTop = box.scrollTop;
  const nodes = [];
  if (view.nextBefore === null) nodes.push(el("div", "notice", "This is the beginning of the room."));
  const notices = [...view.notices];
  let lastAuthor = null;
  for (const id of view.order) {
    while (notices.length && notices[0].after < id) {
      nodes.push(el("div", "notice", notices.shift().text));
      lastAuthor = null;
    }
    const message = view.messages.get(id);
    nodes.push(renderMessage(message, lastAuthor === message.user_id));
    lastAuthor = message.user_id;
  }
  for (const notice of notices) nodes.push(el("div", "notice", notice.text));
  box.replaceChildren(...nodes);
  if ((stickToBottom && nearBottom) || stickToBottom === "force") box.scrollTop = box.scrollHeight;
  else if (stickToBottom === "keep") box.scrollTop = previousTop + (box.scrollHeight - previousHeight);
  else if (stickToBottom) box.scrollTop = box.scrollHeight;
}

function renderMessage(message, continued) {
  const mine = message.user_id === state.me;
  const row = el("div", `message${mine ? " mine" : ""}${continued ? " continued" : ""}`);
  row.dataset.messageId = String(message.id);
  const avatar = el("div", "avatar small", continued ? "" : initials(message.user_id));
  if (!continued) avatar.style.background = colorFor(message.user_id);
  else avatar.classList.add("spacer");
  const body = el("div", "message-body");
  if (!continued) {
    const head = el("div", "message-head");
    head.append(el("span", "author", message.user_id), el("span", "time muted small", timeOf(message.created_at)));
    body.append(head);
  }
  const content = el("div", "content", message.content);
  if (message.edited_at) content.append(el("span", "edited muted small", " (edited)"));
  body.append(content);
  if (message.reactions.size) {
    const bar = el("div", "reactions");
    for (const [emoji, users] of message.reactions) {
      const chip = el("button", `reaction${users.has(state.me) ? " mine" : ""}`, `${emoji} ${users.size}`);
      chip.title = [...users].join(", ");
      chip.onclick = () => send("message_reaction", { message_id: message.id, emoji });
      bar.append(chip);
    }
    body.append(bar);
  }
  const actions = el("div", "message-actions");
  const react = el("button", "action react", "☺");
  react.title = "React";
  react.onclick = (event) => {
    event.stopPropagation();
    openEmojiPicker(row, message.id);
  };
  actions.append(react);
  if (mine) {
    const edit = el("button", "action edit", "✎");
    edit.title = "Edit";
    edit.onclick = () => editMessage(row, message);
    const del = el("button", "action delete", "🗑");
    del.title = "Delete";
    del.onclick = () => {
      if (confirm("Delete this message?")) send("message_delete", { message_id: message.id });
    };
    actions.append(edit, del);
  }
  row.append(avatar, body, actions);
  return row;
}

function openEmojiPicker(row, messageId) {
  document.querySelectorAll(".emoji-picker").forEach((p) => p.remove());
  const picker = el("div", "emoji-picker");
  for (const emoji of EMOJIS) {
    const button = el("button", "emoji", emoji);
    button.onclick = () => {
      send("message_reaction", { message_id: messageId, emoji });
      picker.remove();
    };
    picker.append(button);
  }
  row.append(picker);
  setTimeout(() => document.addEventListener("click", () => picker.remove(), { once: true }));
}

function editMessage(row, message) {
  const content = row.querySelector(".content");
  const form = el("form", "edit-form");
  const input = el("input", "edit-input");
  input.value = message.content;
  input.maxLength = 4000;
  const save = el("button", "primary small", "Save");
  save.type = "submit";
  const cancel = el("button", "small", "Cancel");
  cancel.type = "button";
  cancel.onclick = () => renderMessages(false);
  form.append(input, save, cancel);
  form.onsubmit = (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (text && text !== message.content) send("message_edit", { message_id: message.id, content: text });
    renderMessages(false);
  };
  content.replaceWith(form);
  input.focus();
}

// -- composing and typing ----------------------------------------------------------------------

function onInput() {
  if (state.current === null) return;
  const now = Date.now();
  if (!state.typingSent || now - state.typingLastSent > TYPING_REFRESH_MS) {
    if (send("typing", { room_id: state.current, is_typing: true })) {
      state.typingSent = true;
      state.typingLastSent = now;
    }
  }
  clearTimeout(state.typingIdleTimer);
  state.typingIdleTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
}

function stopTyping() {
  clearTimeout(state.typingIdleTimer);
  if (state.typingSent && state.current !== null) {
    send("typing", { room_id: state.current, is_typing: false });
  }
  state.typingSent = false;
}

function onSubmit(event) {
  event.preventDefault();
  const input = $("message-input");
  const text = input.value.trim();
  if (!text || state.current === null) return;
  const clientMsgId = crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`;
  state.outbox.set(clientMsgId, { room: state.current, text });
  input.value = "";
  clearTimeout(state.typingIdleTimer);
  state.typingSent = false; // the server ends typing when the message arrives
  if (!send("chat", { room_id: state.current, content: text, type: "text", client_msg_id: clientMsgId })) {
    toast("Offline — your message will be sent when the connection is back.");
  }
}

// -- calls ------------------------------------------------------------------------------------

function callUi(mode) {
  const overlay = $("call-overlay");
  overlay.hidden = mode === "hidden";
  overlay.dataset.mode = mode;
  $("accept-call").hidden = mode !== "incoming";
  $("reject-call").hidden = mode !== "incoming";
  $("hang-up").hidden = mode === "incoming" || mode === "hidden";
  $("toggle-mute").hidden = mode !== "active";
  $("toggle-camera").hidden = mode !== "active";
}

async function iceConfig() {
  try {
    return await api("/api/ice-servers");
  } catch {
    return { iceServers: [] };
  }
}

async function newPeer(call) {
  const pc = new RTCPeerConnection(await iceConfig());
  call.pc = pc;
  pc.onicecandidate = (event) => {
    if (!event.candidate) return;
    const candidate = event.candidate.toJSON();
    if (call.id) sendSignal(call, "ice_candidate", candidate);
    else call.outgoingCandidates.push(candidate);
  };
  pc.ontrack = (event) => {
    const video = $("remote-video");
    if (video.srcObject !== event.streams[0]) video.srcObject = event.streams[0];
  };
  pc.onconnectionstatechange = () => {
    if (state.call === call && pc.connectionState === "connected") {
      $("call-status").textContent = "Connected";
    }
  };
  for (const track of call.localStream.getTracks()) pc.addTrack(track, call.localStream);
  return pc;
}

async function localMedia() {
  const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
  $("local-video").srcObject = stream;
  return stream;
}

function sendSignal(call, type, data) {
  send("webrtc", { type, call_id: call.id, to_user_id: call.peer, data });
}

async function startCall(peer) {
  if (state.call) {
    toast("You are already in a call.");
    return;
  }
  const call = {
    id: null,
    peer,
    role: "caller",
    pc: null,
    localStream: null,
    outgoingCandidates: [],
    incomingCandidates: [],
  };
  state.call = call;
  $("call-title").textContent = `Calling ${peer}…`;
  $("call-status").textContent = "Ringing";
  callUi("outgoing");
  try {
    call.localStream = await localMedia();
    const pc = await newPeer(call);
    await pc.setLocalDescription(await pc.createOffer());
    if (state.call !== call) return;
    send("webrtc", { type: "offer", to_user_id: peer, data: pc.localDescription.toJSON(), media: "video" });
  } catch (error) {
    endCallLocally(null, null, `Could not start the call: ${error.message}`);
  }
}

function onCallRinging(p) {
  const call = state.call;
  if (!call || call.role !== "caller" || call.id) return;
  call.id = p.call_id;
  for (const candidate of call.outgoingCandidates) sendSignal(call, "ice_candidate", candidate);
  call.outgoingCandidates = [];
}

function onIncomingCall(p) {
  if (state.call) return; // the server answers busy for us
  state.call = {
    id: p.call_id,
    peer: p.from_user_id,
    role: "callee",
    pc: null,
    localStream: null,
    offer: null,
    outgoingCandidates: [],
    incomingCandidates: [],
  };
  $("call-title").textContent = `${p.from_user_id} is calling`;
  $("call-status").textContent = "Incoming video call";
  callUi("incoming");
}

async function acceptCall() {
  const call = state.call;
  if (!call || call.role !== "callee" || call.pc) return;
  $("call-status").textContent = "Connecting…";
  callUi("connecting");
  try {
    call.localStream = await localMedia();
    const pc = await newPeer(call);
    await waitFor(() => call.offer, 5000);
    await pc.setRemoteDescription(call.offer);
    await pc.setLocalDescription(await pc.createAnswer());
    if (state.call !== call) return;
    sendSignal(call, "answer", pc.localDescription.toJSON());
    for (const candidate of call.incomingCandidates) await pc.addIceCandidate(candidate);
    call.incomingCandidates = [];
  } catch (error) {
    send("call_end", { call_id: call.id });
    endCallLocally(null, null, `Could not answer: ${error.message}`);
  }
}

function waitFor(predicate, timeoutMs) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const poll = () => {
      if (predicate()) resolve();
      else if (Date.now() - started > timeoutMs) reject(new Error("timed out"));
      else setTimeout(poll, 20);
    };
    poll();
  });
}

async function onSignal(p) {
  const call = state.call;
  if (!call || call.id !== p.call_id) return;
  if (p.type === "offer" && call.role === "callee" && !call.pc) {
    call.offer = p.data;
    return;
  }
  const pc = call.pc;
  try {
    if (p.type === "answer" && pc) {
      await pc.setRemoteDescription(p.data);
      for (const candidate of call.incomingCandidates) await pc.addIceCandidate(candidate);
      call.incomingCandidates = [];
    } else if (p.type === "ice_candidate") {
      if (pc && pc.remoteDescription) await pc.addIceCandidate(p.data);
      else call.incomingCandidates.push(p.data);
    } else if (p.type === "offer" && pc) {
      await pc.setRemoteDescription(p.data); // renegotiation
      await pc.setLocalDescription(await pc.createAnswer());
      sendSignal(call, "answer", pc.localDescription.toJSON());
    }
  } catch (error) {
    toast(`Call signaling failed: ${error.message}`);
  }
}

function onCallActive(p) {
  const call = state.call;
  if (!call || call.id !== p.call_id) return;
  $("call-title").textContent = `In a call with ${call.peer}`;
  $("call-status").textContent = call.pc && call.pc.connectionState === "connected" ? "Connected" : "Connecting…";
  callUi("active");
}

function hangUp() {
  const call = state.call;
  if (!call) return;
  if (call.id) send("call_end", { call_id: call.id });
  endCallLocally("ended", state.me);
}

function rejectCall() {
  const call = state.call;
  if (!call) return;
  send("call_reject", { call_id: call.id });
  endCallLocally(null, null, "Call declined.");
}

function endCallLocally(reason, by, text) {
  const call = state.call;
  if (!call) return;
  state.call = null;
  if (call.pc) call.pc.close();
  if (call.localStream) call.localStream.getTracks().forEach((t) => t.stop());
  $("remote-video").srcObject = null;
  $("local-video").srcObject = null;
  $("toggle-mute").textContent = "Mute";
  $("toggle-camera").textContent = "Camera off";
  callUi("hidden");
  const describe = END_REASONS[reason];
  const message = text || (describe ? describe(call.peer, by, state.me) : "Call ended.");
  state.lastCallEnd = { reason, message };
  toast(message);
}

function toggleTrack(kind, button, onText, offText) {
  const call = state.call;
  if (!call || !call.localStream) return;
  for (const track of call.localStream.getTracks()) {
    if (track.kind === kind) track.enabled = !track.enabled;
  }
  const enabled = call.localStream.getTracks().some((t) => t.kind === kind && t.enabled);
  button.textContent = enabled ? onText : offText;
  button.classList.toggle("off", !enabled);
}

// -- misc UI ------------------------------------------------------------------------------------

let toastTimer = null;
function toast(text) {
  const node = $("toast");
  node.textContent = text;
  node.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (node.hidden = true), 5000);
}

function showLogin(error) {
  state.stopped = true;
  if (state.ws) state.ws.close();
  $("app").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = error || "";
  $("name-field").hidden = state.mode !== "open";
  $("token-field").hidden = state.mode === "open";
  $("login-name").required = state.mode === "open";
}

function start(identity) {
  state.stopped = false;
  state.everConnected = false;
  if (state.mode === "open") {
    state.me = identity;
    state.token = null;
  } else {
    state.token = identity;
    state.me = null;
  }
  localStorage.setItem("roomcast.identity", JSON.stringify({ mode: state.mode, identity }));
  $("login").hidden = true;
  $("app").hidden = false;
  if (state.me) renderMe();
  connect();
}

async function boot() {
  try {
    const info = await (await fetch("/api/info")).json();
    state.mode = info.auth;
  } catch {
    state.mode = "open";
  }
  $("login-form").onsubmit = (event) => {
    event.preventDefault();
    const value = state.mode === "open" ? $("login-name").value.trim() : $("login-token").value.trim();
    if (value) start(value);
  };
  $("composer").onsubmit = onSubmit;
  $("message-input").oninput = onInput;
  $("message-input").onblur = stopTyping;
  $("status-select").onchange = (event) => send("presence", { status: event.target.value });
  $("new-room-form").onsubmit = async (event) => {
    event.preventDefault();
    const name = $("new-room-name").value.trim();
    if (!name) return;
    try {
      const created = await api("/api/rooms", {
        method: "POST",
        body: { name, private: $("new-room-private").checked, members: [] },
      });
      $("new-room-name").value = "";
      // The newest room is on the last page: show it whatever is loaded.
      mergeRooms([created]);
      renderRooms();
      openRoom(created.id);
    } catch (error) {
      toast(`Could not create the room: ${error.message}`);
    }
  };
  let filterTimer = null;
  $("room-filter").oninput = () => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => {
      state.roomFilter = $("room-filter").value.trim();
      refreshRooms();
    }, 250);
  };
  $("more-rooms").onclick = loadMoreRooms;
  $("messages").onscroll = async () => {
    const box = $("messages");
    if (box.scrollTop > 40 || state.current === null) return;
    const view = room(state.current);
    if (view.nextBefore === null || view.loadingOlder) return;
    await loadOlder(view, false);
    renderMessages("keep");
  };
  $("accept-call").onclick = acceptCall;
  $("reject-call").onclick = rejectCall;
  $("hang-up").onclick = hangUp;
  $("toggle-mute").onclick = (e) => toggleTrack("audio", e.target, "Mute", "Unmute");
  $("toggle-camera").onclick = (e) => toggleTrack("video", e.target, "Camera off", "Camera on");
  $("logout").onclick = () => {
    localStorage.removeItem("roomcast.identity");
    state.joined.clear();
    state.rooms_state.clear();
    state.current = null;
    showLogin("");
  };
  $("open-sidebar").onclick = () => document.body.classList.add("sidebar-open");
  $("close-sidebar").onclick = () => document.body.classList.remove("sidebar-open");
  callUi("hidden");

  const saved = JSON.parse(localStorage.getItem("roomcast.identity") || "null");
  if (saved && saved.mode === state.mode && saved.identity) start(saved.identity);
  else showLogin("");
}

// Exposed for debugging and for the end-to-end tests.
window.roomcast = { state };

boot();

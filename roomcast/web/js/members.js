// Who is in the room on screen, their status, who is typing, and the user's
// own status and typing notifications.

import { on, send } from "./connection.js";
import { $, avatar, el } from "./dom.js";
import { state, view } from "./state.js";
import { addNotice } from "./timeline.js";

const TYPING_IDLE_MS = 2500;
const TYPING_REFRESH_MS = 2000;

let callHandler = () => {};
let memberActions = () => {};
let rendered = () => {};

/** ``fn(item, user)`` adds role badges and actions to a person of the list. */
export function onMemberActions(fn) {
  memberActions = fn;
}

/** ``fn()`` runs after the member list is drawn (the header shows the count). */
export function onMembersRendered(fn) {
  rendered = fn;
}

/** ``fn(user)`` starts a call (calls.js); the member list shows a Call button. */
export function onCallRequest(fn) {
  callHandler = fn;
}

const statusTexts = new Map(); // user -> the status text they set

on("room_users", (p) => {
  const v = view(p.room_id);
  v.members = new Map(p.users.map((u) => [u.user_id, u.status]));
  for (const u of p.users) statusTexts.set(u.user_id, u.status_text || "");
  if (p.room_id === state.current) renderMembers();
});

on("user_joined", (p) => {
  const v = view(p.room_id);
  v.members.set(p.user_id, "online");
  addNotice(v, `${p.user_id} joined`);
  if (p.room_id === state.current) renderMembers();
});

on("user_left", (p) => {
  const v = view(p.room_id);
  v.members.delete(p.user_id);
  v.typing.delete(p.user_id);
  addNotice(v, `${p.user_id} left`);
  if (p.room_id === state.current) {
    renderMembers();
    renderTyping();
  }
});

on("presence", (p) => {
  for (const v of state.views.values()) {
    if (v.members.has(p.user_id)) v.members.set(p.user_id, p.status);
  }
  statusTexts.set(p.user_id, p.status_text || "");
  if (p.user_id === state.me && p.status !== "offline") {
    $("status-select").value = p.status;
    if (document.activeElement !== $("status-text")) $("status-text").value = p.status_text || "";
  }
  renderMembers();
});

on("typing", (p) => {
  const v = view(p.room_id);
  if (p.is_typing) v.typing.add(p.user_id);
  else v.typing.delete(p.user_id);
  if (p.room_id === state.current) renderTyping();
});

on("chat", (p) => {
  if (p.room_id === state.current) renderTyping(); // the sender stopped typing
});

on("connected", () => {
  const status = $("status-select").value;
  if (status !== "online") send("presence", { status });
});

export function myStatus() {
  return $("status-select").value;
}

export function renderMembers() {
  const list = $("member-list");
  list.replaceChildren();
  if (state.current === null) {
    rendered();
    return;
  }
  const v = view(state.current);
  // Who is here now, then the members who are not, each once.
  const names = [...new Set([...v.members.keys(), ...v.roles.keys()])].sort((a, b) => {
    const here = Number(v.members.has(b)) - Number(v.members.has(a));
    return here || (a < b ? -1 : a > b ? 1 : 0);
  });
  for (const name of names) {
    const status = v.members.get(name) || "offline";
    const item = el("li", `member${v.members.has(name) ? "" : " away-from-room"}`);
    item.dataset.user = name;
    const dot = el("span", `dot ${status}`);
    dot.title = status;
    const label = el("span", "member-name", name === state.me ? `${name} (you)` : name);
    const label2 = status === "dnd" ? "do not disturb" : status;
    const text = statusTexts.get(name);
    const statusText = el("span", "member-status muted small", text ? `${label2} · ${text}` : label2);
    item.append(avatar(name), dot, label, statusText);
    if (name !== state.me && v.members.has(name)) {
      const call = el("button", "call-button", "📞 Call");
      call.title = `Video call ${name}`;
      call.setAttribute("aria-label", `Video call ${name}`);
      call.onclick = () => callHandler(name);
      item.append(call);
    }
    memberActions(item, name);
    list.append(item);
  }
  rendered();
}

export function renderTyping() {
  const node = $("typing");
  if (state.current === null) {
    node.textContent = "";
    return;
  }
  const names = [...view(state.current).typing].filter((n) => n !== state.me).sort();
  node.textContent =
    names.length === 0
      ? ""
      : names.length === 1
        ? `${names[0]} is typing…`
        : names.length <= 3
          ? `${names.slice(0, -1).join(", ")} and ${names[names.length - 1]} are typing…`
          : "Several people are typing…";
}

// -- the user's own typing ----------------------------------------------------------------

// Typing notifications are worth nothing late: past the typing rate they are
// skipped, never queued, and a refusal of one is never shown to the user.
let typingRoom = null;
let typingLastSent = 0;
let typingIdleTimer = null;
let typingTokens = Infinity;
let typingRate = null;
let typingRefilled = performance.now();

export function useTypingPace(rateLimits) {
  typingRate = rateLimits && rateLimits.typing ? rateLimits.typing : null;
  typingTokens = typingRate ? Math.max(1, typingRate.burst - 2) : Infinity;
}

function takeTypingToken() {
  if (!typingRate) return true;
  const now = performance.now();
  typingTokens = Math.min(typingRate.burst - 2, typingTokens + ((now - typingRefilled) / 1000) * typingRate.per_second * 0.9);
  typingRefilled = now;
  if (typingTokens < 1) return false;
  typingTokens -= 1;
  return true;
}

/** The composer changed: tell the room (at most every couple of seconds). */
export function typed() {
  if (state.current === null) return;
  const now = Date.now();
  if (typingRoom !== state.current || now - typingLastSent > TYPING_REFRESH_MS) {
    if (typingRoom !== null && typingRoom !== state.current) stopTyping();
    if (takeTypingToken() && send("typing", { room_id: state.current, is_typing: true })) {
      typingRoom = state.current;
      typingLastSent = now;
    }
  }
  clearTimeout(typingIdleTimer);
  typingIdleTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
}

export function stopTyping() {
  clearTimeout(typingIdleTimer);
  // Past the rate it is not sent: the server ends typing by itself shortly.
  if (typingRoom !== null && takeTypingToken()) {
    send("typing", { room_id: typingRoom, is_typing: false });
  }
  typingRoom = null;
}

/** A message was sent: the server ends the sender's typing itself. */
export function sentMessage() {
  clearTimeout(typingIdleTimer);
  typingRoom = null;
}

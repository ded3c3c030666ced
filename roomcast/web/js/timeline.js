// The room's timeline: stored messages, day separators, notices and the
// user's own messages still on their way (outbox.js), for the room on screen.
//
// Rendering is keyed: each message keeps its element while it does not
// change, so an edit being typed or an open picker survives other people's
// messages, and the reader's place is kept by anchoring the first visible
// element (someone posting never pulls a reader who scrolled up; a
// "New messages" button says there is more below).

import { api, on, send } from "./connection.js";
import { $, avatar, dayKey, dayLabel, el, fullDate, timeElement, toast } from "./dom.js";
import { formatMessage, isEmojiOnly } from "./format.js";
import { discard, onPendingChange, pending, retry } from "./outbox.js";
import { state, view } from "./state.js";
import { openThread } from "./threads.js";
import { markRead } from "./unread.js";

export const HISTORY_PAGE = 50;
export const REACTIONS = ["👍", "❤️", "😂", "🎉", "😮", "😢"];
const BOTTOM_SLACK_PX = 40;

let newBelow = 0; // messages that arrived below a reader who scrolled up
let noticeCount = 0;

// -- the model -------------------------------------------------------------------------

export function addMessage(v, message) {
  const reactions =
    message.reactions instanceof Map
      ? message.reactions
      : new Map(Object.entries(message.reactions || {}).map(([e, users]) => [e, new Set(users)]));
  const known = v.messages.has(message.id);
  v.messages.set(message.id, {
    thread_id: null,
    edited_at: null,
    thread: null,
    deleted_at: null,
    mentions: [],
    ...message,
    reactions,
  });
  if (!known) {
    const order = v.order;
    if (!order.length || order[order.length - 1] < message.id) order.push(message.id);
    else {
      order.push(message.id);
      order.sort((a, b) => a - b);
    }
  }
}

export function addNotice(v, text, className = "") {
  noticeCount += 1;
  v.notices.push({ after: v.lastId() || 0, text, at: Date.now(), className, key: noticeCount });
  if (v.id === state.current) render();
}

export async function loadOlder(v, initial) {
  if (v.loadingOlder || v.nextBefore === null) return;
  v.loadingOlder = true;
  try {
    const before = initial || v.nextBefore === undefined ? "" : `&before=${v.nextBefore}`;
    const page = await api(`/api/rooms/${v.id}/messages?limit=${HISTORY_PAGE}${before}`);
    for (const message of page.messages) addMessage(v, message);
    v.nextBefore = page.next_before;
  } catch (error) {
    toast(`Could not load history: ${error.message}`);
  } finally {
    v.loadingOlder = false;
  }
}

/**
 * Show the room on screen around message ``id``, highlighted: from what is
 * loaded, or from the page around it. A timeline that no longer reaches the
 * newest message is *detached* (``v.nextAfter`` set): newer pages load as the
 * reader scrolls down, and live messages wait until they do.
 */
export async function showAround(roomId, id) {
  const v = view(roomId);
  if (!v.messages.has(id)) {
    try {
      const page = await api(`/api/rooms/${roomId}/messages?around=${id}&limit=${HISTORY_PAGE}`);
      v.messages.clear();
      v.order = [];
      v.notices = [];
      v.waiting = [];
      for (const message of page.messages) addMessage(v, message);
      v.nextBefore = page.next_before;
      v.nextAfter = page.next_after;
    } catch (error) {
      toast(`Could not load the message: ${error.message}`);
      return;
    }
  }
  if (state.current !== roomId) return;
  cache.clear();
  render();
  highlightIn($("messages"), id);
}

/** Scroll message ``id`` of ``box`` into view and mark it for a moment. */
export function highlightIn(box, id) {
  const node = box.querySelector(`[data-message-id="${id}"]`);
  if (!node) return;
  node.scrollIntoView({ block: "center" });
  node.classList.add("highlighted");
  setTimeout(() => node.classList.remove("highlighted"), 4000);
}

async function loadNewer(v) {
  if (v.loadingNewer || v.nextAfter === null) return;
  v.loadingNewer = true;
  try {
    const page = await api(`/api/rooms/${v.id}/messages?after=${v.nextAfter}&limit=${HISTORY_PAGE}`);
    for (const message of page.messages) addMessage(v, message);
    v.nextAfter = page.next_after;
    if (v.nextAfter === null) {
      // Caught up: what arrived live meanwhile joins the timeline.
      for (const message of v.waiting) addMessage(v, message);
      v.waiting = [];
    }
  } catch (error) {
    toast(`Could not load newer messages: ${error.message}`);
  } finally {
    v.loadingNewer = false;
  }
}

/** Start the room's timeline over at its newest messages. */
async function reloadNewest(v) {
  v.messages.clear();
  v.order = [];
  v.notices = [];
  v.waiting = [];
  v.nextBefore = undefined;
  v.nextAfter = null;
  await loadOlder(v, true);
  if (v.id === state.current) {
    cache.clear();
    render("bottom");
  }
}

on("chat", (p) => {
  const v = view(p.room_id);
  v.typing.delete(p.user_id);
  if (p.thread_id !== null) return; // a reply: the thread's (threads.js)
  const mine = p.user_id === state.me;
  if (v.nextAfter !== null) {
    // Detached: newer pages are not loaded yet.
    v.waiting.push({ ...p, edited_at: null, reactions: {} });
    if (mine) reloadNewest(v); // the sender wants to see what they sent
    else if (p.room_id === state.current) updateJump($("messages"));
    return;
  }
  addMessage(v, { ...p, edited_at: null, reactions: {} });
  if (p.room_id !== state.current) return;
  const box = $("messages");
  if (!mine && !atBottom(box)) newBelow += 1;
  render(mine ? "bottom" : undefined);
  readIfSeen();
});

/** The room on screen is read when its newest message is in sight of a reader. */
export function readIfSeen() {
  if (state.current === null || document.visibilityState !== "visible") return;
  if (view(state.current).nextAfter !== null) return; // the newest is not on screen
  if (atBottom($("messages"))) markRead(state.current);
}

on("read_receipt", (p) => {
  if (p.thread_id !== null) return;
  const v = view(p.room_id);
  if ((v.receipts.get(p.user_id) || 0) >= p.message_id) return;
  v.receipts.set(p.user_id, p.message_id);
  if (p.room_id === state.current) render();
});

on("message_edit", (p) => {
  const message = view(p.room_id).messages.get(p.message_id);
  if (!message) return;
  message.content = p.content;
  message.edited_at = p.edited_at;
  message.mentions = p.mentions || [];
  if (p.room_id === state.current) render();
});

on("message_delete", (p) => {
  const v = view(p.room_id);
  const message = v.messages.get(p.message_id);
  if (!message) return;
  if (message.thread && message.thread.reply_count) {
    // A root keeps its place while its thread has replies.
    message.deleted_at = Date.now();
    message.content = "";
    message.reactions = new Map();
  } else {
    v.messages.delete(p.message_id);
    v.order = v.order.filter((id) => id !== p.message_id);
  }
  if (v.editing === p.message_id) v.editing = null;
  if (p.room_id === state.current) render();
});

on("message_reaction", (p) => {
  const message = view(p.room_id).messages.get(p.message_id);
  if (!message) return;
  const users = message.reactions.get(p.emoji) || new Set();
  if (p.action === "added") users.add(p.user_id);
  else users.delete(p.user_id);
  if (users.size) message.reactions.set(p.emoji, users);
  else message.reactions.delete(p.emoji);
  if (p.room_id === state.current) render();
});

on("history_gap", (p) => {
  // More was missed than the server replays: start this room over from HTTP.
  const v = view(p.room_id);
  v.messages.clear();
  v.order = [];
  v.notices = [];
  v.nextBefore = undefined;
  v.nextAfter = null;
  v.waiting = [];
  loadOlder(v, true).then(() => {
    if (p.room_id === state.current) render("bottom");
  });
});

onPendingChange((roomId) => {
  if (roomId === state.current) render();
});

// -- rendering -------------------------------------------------------------------------

const cache = new Map(); // key -> {sig, node}, for the room on screen

export function atBottom(box) {
  return box.scrollHeight - box.scrollTop - box.clientHeight < BOTTOM_SLACK_PX;
}

/** Where the reader is: the first element in sight and how far it is from the top. */
function anchorOf(box) {
  for (const node of box.children) {
    if (node.offsetTop + node.offsetHeight > box.scrollTop) {
      return { node, offset: node.offsetTop - box.scrollTop };
    }
  }
  return null;
}

function reuse(key, sig, build) {
  const hit = cache.get(key);
  if (hit && hit.sig === sig) return hit.node;
  const node = build();
  cache.set(key, { sig, node });
  return node;
}

function reactionSig(message) {
  return [...message.reactions].map(([e, users]) => `${e}:${[...users].sort().join(",")}`).join("|");
}

/**
 * Show the current room. ``mode``: "bottom" scrolls to the newest message,
 * "restore" goes back to where the reader was in this room; otherwise the
 * reader stays where they are (at the bottom if they were there).
 */
export function render(mode) {
  const box = $("messages");
  if (state.current === null) return;
  const v = view(state.current);
  const wasAtBottom = atBottom(box);
  const anchor = wasAtBottom ? null : anchorOf(box);
  const nodes = [];
  const keep = new Set();
  const push = (key, sig, build) => {
    keep.add(key);
    nodes.push(reuse(key, sig, build));
  };
  if (v.nextBefore === null) push("start", "", () => el("div", "notice", "This is the beginning of the room."));
  const notices = [...v.notices];
  let previous = null; // the message above, for grouping by author (a notice ends a group)
  let day = null; // the day of the message above: one separator per day
  let dividerShown = v.divider === null;
  const seen = seenBy(v);
  const pushNotice = (notice) => {
    push(`n${notice.key}`, "", () => el("div", `notice ${notice.className}`, notice.text));
    previous = null;
  };
  for (const id of v.order) {
    while (notices.length && notices[0].after < id) pushNotice(notices.shift());
    const message = v.messages.get(id);
    if (dayKey(message.created_at) !== day) {
      day = dayKey(message.created_at);
      push(`d${day}`, dayLabel(message.created_at), () => daySeparator(message.created_at));
      previous = null;
    }
    if (!dividerShown && id > v.divider && message.user_id !== state.me) {
      dividerShown = true;
      push(`u${v.divider}`, "", () => el("div", "new-divider", "New messages"));
      previous = null;
    }
    const continued =
      previous !== null &&
      previous.user_id === message.user_id &&
      message.created_at - previous.created_at < 5 * 60 * 1000;
    const editing = v.editing === id;
    const seenHere = seen.id === id ? seen.users : [];
    const sig = [
      message.content,
      message.edited_at,
      reactionSig(message),
      continued,
      editing,
      threadSig(message),
      message.deleted_at,
      seenHere.join(","),
    ].join("\u0000");
    push(`m${id}`, sig, () => messageRow(v, message, continued, editing, seenHere));
    previous = message;
  }
  for (const notice of notices) pushNotice(notice);
  for (const item of pending(v.id, null)) {
    push(`p${item.clientMsgId}`, `${item.status}:${item.error}`, () => pendingRow(item));
  }
  for (const key of [...cache.keys()]) if (!keep.has(key)) cache.delete(key);
  // The common case, a message arriving at the end, only appends.
  const shown = box.children;
  let prefix = shown.length <= nodes.length;
  for (let i = 0; prefix && i < shown.length; i += 1) prefix = shown[i] === nodes[i];
  if (prefix) box.append(...nodes.slice(shown.length));
  else box.replaceChildren(...nodes);
  if (mode === "bottom" || (wasAtBottom && mode !== "restore")) box.scrollTop = box.scrollHeight;
  else if (mode === "restore") box.scrollTop = v.scrollTop === null ? box.scrollHeight : v.scrollTop;
  else if (anchor && anchor.node.isConnected) box.scrollTop = anchor.node.offsetTop - anchor.offset;
  updateJump(box);
}

/** A room is leaving the screen: forget its elements, remember the reader's place. */
export function leaveRoom(v) {
  const box = $("messages");
  v.scrollTop = atBottom(box) ? null : box.scrollTop;
  cache.clear();
  newBelow = 0;
  box.replaceChildren();
}

function updateJump(box) {
  if (atBottom(box)) newBelow = 0;
  const button = $("jump-new");
  if (state.current !== null && view(state.current).nextAfter !== null) {
    button.hidden = false;
    button.textContent = "Jump to the newest ↓";
    return;
  }
  button.hidden = newBelow === 0;
  button.textContent = newBelow === 1 ? "1 new message ↓" : `${newBelow} new messages ↓`;
}

export function jumpToNewest() {
  const box = $("messages");
  if (state.current !== null && view(state.current).nextAfter !== null) {
    reloadNewest(view(state.current));
    return;
  }
  newBelow = 0;
  box.scrollTop = box.scrollHeight;
  updateJump(box);
}

export async function onScroll() {
  const box = $("messages");
  updateJump(box);
  readIfSeen();
  if (state.current !== null && atBottom(box) && view(state.current).nextAfter !== null) {
    const v = view(state.current);
    await loadNewer(v);
    if (state.current === v.id) render();
    return;
  }
  if (box.scrollTop > 40 || state.current === null) return;
  const v = view(state.current);
  if (v.nextBefore === null || v.loadingOlder) return;
  const id = v.id;
  await loadOlder(v, false);
  if (state.current === id) render();
}

function daySeparator(ms) {
  const node = el("div", "day-separator");
  node.setAttribute("role", "separator");
  node.append(el("span", "", dayLabel(ms)));
  node.title = new Date(ms).toLocaleDateString([], { dateStyle: "full" });
  return node;
}

function threadSig(message) {
  const t = message.thread;
  return t ? `${t.reply_count}:${t.last_reply_at}:${t.participants.join(",")}` : "";
}

/** Who (but the user) has read the user's newest timeline message: {id, users}. */
function seenBy(v) {
  for (let i = v.order.length - 1; i >= 0; i -= 1) {
    const message = v.messages.get(v.order[i]);
    if (message.user_id !== state.me || message.deleted_at) continue;
    const users = [...v.receipts].filter(([user, id]) => user !== state.me && id >= message.id).map(([user]) => user);
    return { id: message.id, users: users.sort() };
  }
  return { id: null, users: [] };
}

function threadSummary(v, message) {
  const t = message.thread;
  const button = el("button", "thread-summary small");
  const replies = t.reply_count === 1 ? "1 reply" : `${t.reply_count} replies`;
  button.append(el("span", "thread-count", `💬 ${replies}`));
  button.append(el("span", "muted", ` · ${t.participants.slice(0, 3).join(", ")} · `));
  button.append(timeElement(t.last_reply_at, "time muted small"));
  button.setAttribute("aria-label", `${replies}; open the thread`);
  button.onclick = () => openThread(v.id, message.id);
  return button;
}

function messageRow(v, message, continued, editing, seenHere = []) {
  if (message.deleted_at) {
    const row = el("div", "message deleted");
    row.dataset.messageId = String(message.id);
    row.append(avatar(message.user_id));
    const body = el("div", "message-body");
    body.append(el("em", "content muted", "This message was deleted."));
    if (message.thread) body.append(threadSummary(v, message));
    row.append(body);
    return row;
  }
  const mine = message.user_id === state.me;
  const emojiOnly = isEmojiOnly(message.content);
  const mentioned = (message.mentions || []).includes(state.me);
  const row = el(
    "div",
    `message${mine ? " mine" : ""}${continued ? " continued" : ""}${emojiOnly ? " emoji-only" : ""}${mentioned ? " mentions-me" : ""}`,
  );
  row.dataset.messageId = String(message.id);
  if (continued) {
    const gutter = el("div", "gutter");
    gutter.append(timeElement(message.created_at, "time gutter-time muted small"));
    row.append(gutter);
  } else row.append(avatar(message.user_id));
  const body = el("div", "message-body");
  if (!continued) {
    const head = el("div", "message-head");
    head.append(el("span", "author", message.user_id), timeElement(message.created_at));
    body.append(head);
  }
  if (editing) body.append(editForm(v, message));
  else {
    const content = el("div", "content");
    content.append(...formatMessage(message.content));
    if (message.edited_at) {
      const edited = el("span", "edited muted small", " (edited)");
      edited.title = `edited ${fullDate(message.edited_at)}`;
      content.append(edited);
    }
    body.append(content);
  }
  if (message.reactions.size) {
    const bar = el("div", "reactions");
    for (const [emoji, users] of message.reactions) {
      const chip = el("button", `reaction${users.has(state.me) ? " mine" : ""}`, `${emoji} ${users.size}`);
      chip.title = [...users].join(", ");
      chip.setAttribute("aria-label", `${emoji} from ${[...users].join(", ")}`);
      chip.setAttribute("aria-pressed", String(users.has(state.me)));
      chip.onclick = () => send("message_reaction", { message_id: message.id, emoji });
      bar.append(chip);
    }
    body.append(bar);
  }
  if (message.thread) body.append(threadSummary(v, message));
  if (seenHere.length) {
    const names = seenHere.length > 3 ? `${seenHere.slice(0, 3).join(", ")} and ${seenHere.length - 3} more` : seenHere.join(", ");
    body.append(el("div", "seen-by muted small", `Seen by ${names}`));
  }
  const actions = el("div", "message-actions");
  const reply = actionButton("reply", "💬", "Reply in thread");
  reply.onclick = () => openThread(v.id, message.id);
  actions.append(reply);
  const react = actionButton("react", "☺", "Add a reaction");
  react.onclick = (event) => {
    event.stopPropagation();
    openReactionPicker(row, message.id);
  };
  actions.append(react);
  if (mine) {
    const edit = actionButton("edit", "✎", "Edit message");
    edit.onclick = () => startEdit(message.id);
    const del = actionButton("delete", "🗑", "Delete message");
    del.onclick = () => {
      if (confirm("Delete this message?")) send("message_delete", { message_id: message.id });
    };
    actions.append(edit, del);
  }
  row.append(body, actions);
  return row;
}

function actionButton(kind, icon, label) {
  const button = el("button", `action ${kind}`, icon);
  button.title = label;
  button.setAttribute("aria-label", label);
  return button;
}

function pendingRow(item) {
  const row = el("div", `message mine pending${item.status === "failed" ? " failed" : ""}`);
  row.dataset.clientMsgId = item.clientMsgId;
  row.append(avatar(state.me));
  const body = el("div", "message-body");
  const content = el("div", "content");
  content.append(...formatMessage(item.text));
  body.append(content);
  const status = el("div", "pending-status small");
  if (item.status === "failed") {
    status.append(el("span", "error", `Not sent: ${item.error} `));
    const again = el("button", "small retry", "Retry");
    again.onclick = () => retry(item.clientMsgId);
    const drop = el("button", "small discard", "Discard");
    drop.onclick = () => discard(item.clientMsgId);
    status.append(again, drop);
  } else status.textContent = "Sending…";
  body.append(status);
  row.append(body);
  return row;
}

// -- reactions and edits -----------------------------------------------------------------

function openReactionPicker(row, messageId) {
  document.querySelectorAll(".emoji-picker").forEach((p) => p.remove());
  const picker = el("div", "emoji-picker");
  picker.setAttribute("role", "menu");
  for (const emoji of REACTIONS) {
    const button = el("button", "emoji", emoji);
    button.setAttribute("aria-label", `React with ${emoji}`);
    button.onclick = () => {
      send("message_reaction", { message_id: messageId, emoji });
      picker.remove();
    };
    picker.append(button);
  }
  row.append(picker);
  picker.querySelector("button").focus();
  setTimeout(() => document.addEventListener("click", () => picker.remove(), { once: true }));
}

/** Edit one of the user's messages in place (the composer's Up arrow does this too). */
export function startEdit(messageId) {
  const v = view(state.current);
  const message = v.messages.get(messageId);
  if (!message || message.user_id !== state.me) return;
  v.editing = messageId;
  v.editDraft = message.content;
  render();
  const input = document.querySelector(".edit-input");
  if (input) {
    input.focus();
    input.setSelectionRange(input.value.length, input.value.length);
  }
}

/** The newest message of the user in the room on screen, or null. */
export function lastOwnMessage() {
  const v = view(state.current);
  for (let i = v.order.length - 1; i >= 0; i -= 1) {
    const message = v.messages.get(v.order[i]);
    if (message.user_id === state.me) return message.id;
  }
  return null;
}

function editForm(v, message) {
  const form = el("form", "edit-form");
  const input = el("textarea", "edit-input");
  input.rows = Math.min(8, v.editDraft.split("\n").length);
  input.value = v.editDraft;
  input.maxLength = 4000;
  input.setAttribute("aria-label", "Edit message");
  input.oninput = () => (v.editDraft = input.value);
  const save = el("button", "primary small", "Save");
  save.type = "submit";
  const cancel = el("button", "small", "Cancel");
  cancel.type = "button";
  const stop = () => {
    v.editing = null;
    render();
    $("message-input").focus();
  };
  cancel.onclick = stop;
  form.onsubmit = (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (text && text !== message.content) send("message_edit", { message_id: message.id, content: text });
    stop();
  };
  input.onkeydown = (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      form.requestSubmit();
    } else if (event.key === "Escape") {
      event.preventDefault();
      stop();
    }
  };
  form.append(input, save, cancel);
  return form;
}

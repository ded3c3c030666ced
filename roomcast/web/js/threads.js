// Threads: a side panel beside the timeline with a root message, its replies
// and a composer of its own. Replies never enter the timeline; the root shows
// the thread's summary (replies, last reply, who took part) from
// ``thread_updated``. Reading the open thread moves the thread's own marker,
// which clears its notifications on every device of the user.

import { api, on } from "./connection.js";
import { $, avatar, el, timeElement, toast } from "./dom.js";
import { formatMessage } from "./format.js";
import { attachMentions, takeMentions } from "./mentions.js";
import { onPendingChange, pending, queueMessage } from "./outbox.js";
import { state, view } from "./state.js";
import { markRead } from "./unread.js";
import { render as renderTimeline } from "./timeline.js";

const PAGE = 100;

function threadOf(v, rootId) {
  if (!v.threads.has(rootId)) v.threads.set(rootId, { messages: new Map(), order: [], loaded: false });
  return v.threads.get(rootId);
}

function add(thread, message) {
  if (!thread.messages.has(message.id)) {
    thread.order.push(message.id);
    thread.order.sort((a, b) => a - b);
  }
  thread.messages.set(message.id, { edited_at: null, ...message });
}

function isOpen(roomId, rootId) {
  return state.thread !== null && state.thread.roomId === roomId && state.thread.rootId === rootId;
}

on("chat", (p) => {
  if (p.thread_id === null) return;
  const v = view(p.room_id);
  add(threadOf(v, p.thread_id), p);
  if (isOpen(p.room_id, p.thread_id)) {
    renderThread("bottom");
    readOpenThread();
  }
});

on("thread_updated", (p) => {
  const v = view(p.room_id);
  const root = v.messages.get(p.thread_id);
  if (root) {
    if (p.reply_count) {
      const last = threadOf(v, p.thread_id).order.at(-1) ?? null;
      root.thread = {
        reply_count: p.reply_count,
        last_reply_at: p.last_reply_at,
        participants: p.participants,
        last_reply_id: last,
      };
    } else {
      root.thread = null;
      if (root.deleted_at) {
        // A deleted root leaves with its last reply.
        v.messages.delete(root.id);
        v.order = v.order.filter((id) => id !== root.id);
      }
    }
    if (p.room_id === state.current) renderTimeline();
  }
  if (isOpen(p.room_id, p.thread_id)) renderThread();
});

on("message_edit", (p) => {
  if (p.thread_id === null || p.thread_id === undefined) return;
  const message = threadOf(view(p.room_id), p.thread_id).messages.get(p.message_id);
  if (!message) return;
  message.content = p.content;
  message.edited_at = p.edited_at;
  if (isOpen(p.room_id, p.thread_id)) renderThread();
});

on("message_delete", (p) => {
  const v = view(p.room_id);
  for (const [rootId, thread] of v.threads) {
    if (thread.messages.delete(p.message_id)) {
      thread.order = thread.order.filter((id) => id !== p.message_id);
      if (isOpen(p.room_id, rootId)) renderThread();
    }
  }
});

onPendingChange((roomId) => {
  if (state.thread && state.thread.roomId === roomId) renderThread("bottom");
});

/** Open the thread of ``rootId`` in room ``roomId`` beside the timeline. */
export async function openThread(roomId, rootId) {
  state.thread = { roomId, rootId };
  $("thread-panel").hidden = false;
  document.body.classList.add("thread-open");
  const v = view(roomId);
  const thread = threadOf(v, rootId);
  renderThread("bottom");
  $("thread-input").focus();
  if (!thread.loaded) {
    try {
      const page = await api(`/api/rooms/${roomId}/messages?thread_id=${rootId}&limit=${PAGE}`);
      for (const message of page.messages) add(thread, message);
      thread.loaded = true;
    } catch (error) {
      toast(`Could not load the thread: ${error.message}`);
    }
    if (!isOpen(roomId, rootId)) return;
    renderThread("bottom");
  }
  readOpenThread();
}

export function closeThread() {
  state.thread = null;
  $("thread-panel").hidden = true;
  document.body.classList.remove("thread-open");
}

function readOpenThread() {
  if (state.thread === null || document.visibilityState !== "visible") return;
  const { roomId, rootId } = state.thread;
  const thread = threadOf(view(roomId), rootId);
  markRead(roomId, thread.order.at(-1) ?? rootId, rootId);
}

function replyRow(message, pendingItem = null) {
  const row = el("div", `message${message.user_id === state.me ? " mine" : ""}${pendingItem ? " pending" : ""}`);
  if (!pendingItem) row.dataset.messageId = String(message.id);
  row.append(avatar(message.user_id));
  const body = el("div", "message-body");
  const head = el("div", "message-head");
  head.append(el("span", "author", message.user_id));
  if (message.created_at) head.append(timeElement(message.created_at));
  const content = el("div", "content");
  if (message.deleted_at) content.append(el("em", "muted", "This message was deleted."));
  else content.append(...formatMessage(message.content));
  if (message.edited_at) content.append(el("span", "edited muted small", " (edited)"));
  body.append(head, content);
  if (pendingItem) body.append(el("div", "pending-status small", pendingItem.status === "failed" ? `Not sent: ${pendingItem.error}` : "Sending…"));
  row.append(body);
  return row;
}

function renderThread(mode) {
  if (state.thread === null) return;
  const { roomId, rootId } = state.thread;
  const v = view(roomId);
  const thread = threadOf(v, rootId);
  const root = v.messages.get(rootId);
  $("thread-root").replaceChildren(root ? replyRow(root) : el("div", "muted small", "…"));
  const box = $("thread-messages");
  const rows = thread.order.map((id) => replyRow(thread.messages.get(id)));
  for (const item of pending(roomId, rootId)) rows.push(replyRow({ user_id: state.me, content: item.text }, item));
  const count = thread.order.length;
  $("thread-count").textContent = count === 1 ? "1 reply" : `${count} replies`;
  box.replaceChildren(...rows);
  if (mode === "bottom") box.scrollTop = box.scrollHeight;
}

function candidates() {
  if (state.thread === null) return [];
  const v = view(state.thread.roomId);
  return [...new Set([...v.roles.keys(), ...v.members.keys()])].filter((user) => user !== state.me);
}

export function setupThreads() {
  const input = $("thread-input");
  attachMentions(input, candidates);
  const submit = () => {
    const text = input.value.trim();
    if (!text || state.thread === null) return;
    const mentions = takeMentions(input, text);
    const extra = { thread_id: state.thread.rootId };
    if (mentions.length) extra.mentions = mentions;
    queueMessage(state.thread.roomId, text, extra);
    input.value = "";
    renderThread("bottom");
  };
  $("thread-composer").onsubmit = (event) => {
    event.preventDefault();
    submit();
  };
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submit();
    } else if (event.key === "Escape") closeThread();
  });
  $("close-thread").onclick = closeThread;
  document.addEventListener("visibilitychange", readOpenThread);
}

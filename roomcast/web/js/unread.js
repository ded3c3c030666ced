// Unread counts and read markers. The server's counts (the ``unread`` event,
// after connecting and whenever they change) are the truth; a room this tab
// is in gets its messages rather than counts, so those are counted here until
// the next ``unread`` says otherwise. Reading is sending ``read`` with the
// newest message in sight: the server moves the marker, and every tab and
// device of the user gets the new counts, so one clears the others' badges.
// The page title counts unread mentions.

import { on, send } from "./connection.js";
import { state, view } from "./state.js";

const NONE = { unread: 0, mentions: 0, last_read_id: 0, last_message_id: 0 };
const listeners = [];

/** ``fn()`` runs whenever a room's counts change (the room list shows them). */
export function onCountsChange(fn) {
  listeners.push(fn);
}

function changed() {
  let mentions = 0;
  for (const c of state.counts.values()) mentions += c.mentions;
  document.title = mentions ? `(${mentions}) roomcast` : "roomcast";
  for (const fn of listeners) fn();
}

export function counts(roomId) {
  return state.counts.get(roomId) || NONE;
}

/** The newest message of the room's timeline this user has read, as far as this tab knows. */
export function readUpTo(roomId) {
  const sent = state.views.has(roomId) ? view(roomId).lastReadSent : 0;
  return Math.max(counts(roomId).last_read_id, sent);
}

on("unread", (p) => {
  for (const room of p.rooms) state.counts.set(room.room_id, room);
  changed();
});

on("chat", (p) => {
  if (p.thread_id !== null || p.user_id === state.me) return;
  const c = { ...counts(p.room_id) };
  // Messages up to the server's last_message_id are in its count already
  // (a rejoin replays what was missed after the counts were sent).
  const counted = p.id <= c.last_message_id;
  c.last_message_id = Math.max(c.last_message_id, p.id);
  // The room on screen is read as it is seen (timeline.js sends the marker).
  if (p.room_id !== state.current && !counted && p.id > readUpTo(p.room_id)) c.unread += 1;
  state.counts.set(p.room_id, c);
  changed();
});

on("notification", (p) => {
  if (p.kind !== "mention" || p.room_id === state.current) return;
  // Counted by the server too; its next ``unread`` has the exact number.
  const c = { ...counts(p.room_id) };
  c.mentions += 1;
  state.counts.set(p.room_id, c);
  changed();
});

/**
 * The reader has seen room ``roomId`` up to its newest timeline message (or
 * thread ``threadId`` up to ``messageId``): tell the server, once per message.
 */
export function markRead(roomId, messageId = null, threadId = null) {
  const v = view(roomId);
  if (threadId !== null) {
    if (messageId !== null) send("read", { room_id: roomId, message_id: messageId, thread_id: threadId });
    return;
  }
  const newest = messageId ?? newestOther(v);
  if (newest === null) return;
  const c = counts(roomId);
  // Mentions left unread (an edit may mention the user in a message already
  // read) are read by sending the marker again.
  const again = c.mentions > 0 && Date.now() - (v.mentionsReadAt || 0) > 5000;
  if (newest <= Math.max(c.last_read_id, v.lastReadSent) && !again) {
    if (c.unread) clearLocally(roomId, c);
    return;
  }
  if (again) v.mentionsReadAt = Date.now();
  if (!send("read", { room_id: roomId, message_id: newest })) return;
  v.lastReadSent = newest;
  clearLocally(roomId, c);
}

function clearLocally(roomId, c) {
  state.counts.set(roomId, { ...c, unread: 0 });
  changed();
}

/** The newest stored message of the timeline (the user's own count too: they saw them). */
function newestOther(v) {
  for (let i = v.order.length - 1; i >= 0; i -= 1) {
    const message = v.messages.get(v.order[i]);
    if (message && !message.deleted_at) return message.id;
  }
  return null;
}

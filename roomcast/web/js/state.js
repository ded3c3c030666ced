// What the client knows: who it is, the rooms it has seen and what they hold.
// Modules read and change it directly; rendering functions turn it into DOM.

export const state = {
  mode: "open", // "open" (pick a name) or "token"
  me: null, // user id
  token: null,
  rateLimits: null, // from /api/info: {chat: {per_second, burst}, ...} or null
  connected: false,
  connections: 0, // how many times this page connected (1 + reconnects)
  rooms: [], // the room list's pages loaded so far, in id order
  roomsNext: null, // the next page's cursor (null: every room is loaded)
  roomFilter: "", // the name filter of the room list
  current: null, // room id on screen
  joined: new Set(), // rooms this client is in (re-joined after a reconnect)
  views: new Map(), // room id -> RoomView
  call: null,
  // The server's unread counts: room id -> {unread, mentions, last_read_id, last_message_id}.
  counts: new Map(),
  notifications: new Map(), // id -> notification (with read: bool), newest first when listed
  thread: null, // the thread open beside the timeline: {roomId, rootId}
};

export class RoomView {
  constructor(id) {
    this.id = id;
    this.members = new Map(); // user -> status, of those in the room now
    this.roles = new Map(); // user -> role, of the room's members (membership.js)
    this.messages = new Map(); // id -> message (reactions: Map emoji -> Set of users)
    this.order = []; // message ids ascending
    this.notices = []; // {after: message id, text, at}
    this.typing = new Set();
    this.nextBefore = undefined; // undefined: not loaded; null: no more history
    this.loadingOlder = false;
    // After a jump to an older message: the ``after`` of the next newer page
    // (null: the timeline reaches the newest message), and the live messages
    // that wait for it.
    this.nextAfter = null;
    this.loadingNewer = false;
    this.waiting = [];
    this.unread = 0; // messages that arrived while another room was on screen
    this.editing = null; // id of the own message being edited, with its draft
    this.editDraft = "";
    this.draft = ""; // what was typed in the composer, kept across room switches
    this.scrollTop = null; // where the reader was (null: at the bottom)
    this.receipts = new Map(); // user -> newest timeline message id they have read
    this.divider = null; // "new messages" go after this message id (the marker when opened)
    this.threads = new Map(); // root id -> {messages: Map, order: [], nextBefore, loaded}
    this.lastReadSent = 0; // the newest id this tab marked read here
  }

  lastId() {
    return this.order.length ? this.order[this.order.length - 1] : null;
  }
}

export function view(id) {
  if (!state.views.has(id)) state.views.set(id, new RoomView(id));
  return state.views.get(id);
}

export function roomInfo(id) {
  return state.rooms.find((info) => info.id === id) || null;
}

export function roomName(id) {
  const info = roomInfo(id);
  return info ? info.name : `Room ${id}`;
}

// The room list (a page at a time, filtered by name, kept live by
// room_created) and switching the screen from one room to another.

import { api, on, send } from "./connection.js";
import { $, el, toast } from "./dom.js";
import * as outbox from "./outbox.js";
import { roomInfo, roomName, state, view } from "./state.js";
import { renderMembers, renderTyping } from "./members.js";
import { leaveRoom, loadOlder, readIfSeen, render } from "./timeline.js";
import { showRoom as showComposerRoom } from "./composer.js";
import { closeThread } from "./threads.js";
import { counts, readUpTo } from "./unread.js";

// The server lists rooms a page at a time (by id, optionally filtered by name):
// the list starts with the first page and "More rooms" fetches the next.
const ROOM_PAGE = 50;

async function fetchRooms(after) {
  const params = new URLSearchParams({ limit: String(ROOM_PAGE) });
  if (after !== null) params.set("after", String(after));
  if (state.roomFilter) params.set("q", state.roomFilter);
  return api(`/api/rooms?${params}`);
}

export async function refreshRooms() {
  const filter = state.roomFilter;
  let page;
  try {
    page = await fetchRooms(null);
  } catch (error) {
    toast(`Could not load rooms: ${error.message}`);
    return;
  }
  if (filter !== state.roomFilter) return; // typed on meanwhile: a newer answer follows
  // Rooms this tab is in stay listed even when they are on a later page.
  const kept = state.rooms.filter((info) => state.joined.has(info.id) && matchesFilter(info));
  state.rooms = [];
  mergeRooms([...kept, ...page.rooms]);
  state.roomsNext = page.next;
  renderRooms();
}

export async function loadMoreRooms() {
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

export function mergeRooms(rooms) {
  const byId = new Map(state.rooms.map((info) => [info.id, info]));
  for (const info of rooms) byId.set(info.id, info);
  state.rooms = [...byId.values()].sort((a, b) => a.id - b.id);
}

function matchesFilter(info) {
  return !state.roomFilter || info.name.toLowerCase().includes(state.roomFilter.toLowerCase());
}

on("room_created", (p) => {
  const room = { ...p.room };
  if (room.kind === "direct") room.name = room.members.find((m) => m !== state.me) || state.me;
  if (!matchesFilter(room)) return;
  mergeRooms([room]);
  renderRooms();
});

on("connected", () => {
  refreshRooms();
});

let opened = () => {};

/** ``fn(id)`` runs when a room comes on screen (membership.js loads its roles). */
export function onRoomOpened(fn) {
  opened = fn;
}

export function renderRooms() {
  const list = $("room-list");
  const directs = $("dm-list");
  list.replaceChildren();
  directs.replaceChildren();
  $("more-rooms").hidden = state.roomsNext === null;
  const rooms = state.rooms.filter((info) => info.kind !== "direct");
  if (!rooms.length) {
    list.append(el("li", "muted small", state.roomFilter ? "No room has that name." : "No rooms yet."));
  }
  for (const info of state.rooms) {
    const item = el("li");
    const active = info.id === state.current;
    const { unread, mentions } = counts(info.id);
    const bold = unread > 0 || mentions > 0;
    const button = el("button", `room-item${active ? " active" : ""}${bold ? " unread" : ""}`);
    button.dataset.roomId = String(info.id);
    if (active) button.setAttribute("aria-current", "page");
    const mark = info.kind === "direct" ? "@" : info.private ? "🔒" : "#";
    button.append(el("span", "hash", mark), el("span", "room-label", info.name));
    if (info.archived_at) button.classList.add("archived");
    if (mentions) {
      const badge = el("span", "badge mention", `@${mentions > 99 ? "99+" : mentions}`);
      badge.setAttribute("aria-label", `${mentions} unread mention${mentions === 1 ? "" : "s"}`);
      button.append(badge);
    } else if (unread && !active) {
      const badge = el("span", "badge", unread > 999 ? "999+" : String(unread));
      badge.setAttribute("aria-label", `${unread} unread`);
      button.append(badge);
    }
    button.onclick = () => openRoom(info.id);
    item.append(button);
    (info.kind === "direct" ? directs : list).append(item);
  }
}

/**
 * Put room ``id`` on screen. Everything that names the room on screen (the
 * header, the list's highlight, the timeline, the composer's target) changes
 * here together, before anything is awaited, so they cannot disagree.
 */
export async function openRoom(id) {
  document.body.classList.remove("sidebar-open");
  if (state.current === id) {
    $("message-input").focus();
    return;
  }
  if (state.current !== null) leaveRoom(view(state.current));
  if (state.thread !== null && state.thread.roomId !== id) closeThread();
  if (!state.joined.has(id)) {
    state.joined.add(id);
    send("join_room", { room_id: id });
  }
  state.current = id;
  const v = view(id);
  // "New messages" start after the marker as it was when the room was opened.
  v.divider = counts(id).unread > 0 ? readUpTo(id) : null;
  $("room-name").textContent = roomName(id);
  $("empty-room").hidden = true;
  $("messages").hidden = false;
  renderRooms();
  renderMembers();
  renderTyping();
  showComposerRoom(v);
  opened(id);
  render("restore");
  readIfSeen();
  if (v.nextBefore === undefined) {
    await loadOlder(v, true);
    if (state.current !== id) return; // the user moved on meanwhile
    render("restore");
    readIfSeen();
  }
}

/** Alt+Up / Alt+Down: the previous or next room of the list. */
export function stepRoom(delta) {
  if (!state.rooms.length) return;
  const index = state.rooms.findIndex((info) => info.id === state.current);
  const next = state.rooms[(index + delta + state.rooms.length) % state.rooms.length];
  openRoom(next.id);
}

export function rejoinAll() {
  // After a reconnect the server replays what each room missed since the last
  // message this tab has (join_room "since"), then live traffic, each once.
  for (const id of outbox.rooms()) state.joined.add(id);
  for (const id of state.joined) {
    const since = state.views.has(id) ? view(id).lastId() : null;
    send("join_room", since === null ? { room_id: id } : { room_id: id, since });
  }
}

export async function createRoom(name, isPrivate) {
  const created = await api("/api/rooms", {
    method: "POST",
    body: { name, private: isPrivate, members: [] },
  });
  // The newest room is on the last page: show it whatever is loaded.
  mergeRooms([created]);
  renderRooms();
  openRoom(created.id);
  return created;
}

export { roomInfo };

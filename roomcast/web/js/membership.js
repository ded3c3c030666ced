// Membership in the browser: roles in the member list, inviting, removing
// and banning (owners and moderators), room settings, leaving for good,
// archiving, and direct messages. Kept live by member_added, member_removed,
// role_changed and room_updated.

import { api, on } from "./connection.js";
import { $, el, toast } from "./dom.js";
import { roomInfo, state, view } from "./state.js";
import { onMemberActions, renderMembers } from "./members.js";
import { mergeRooms, openRoom, renderRooms } from "./rooms.js";
import { addNotice } from "./timeline.js";
import { showRoom as showComposerRoom } from "./composer.js";

const RANK = { member: 0, moderator: 1, owner: 2 };

function myRole(roomId) {
  return view(roomId).roles.get(state.me) || null;
}

function runs(roomId) {
  const role = myRole(roomId);
  const info = roomInfo(roomId);
  return role !== null && RANK[role] >= RANK.moderator && !(info && info.kind === "direct");
}

/** The room's members and their roles (the first 500), for the room on screen. */
export async function loadMembers(roomId) {
  try {
    const page = await api(`/api/rooms/${roomId}/members?limit=500`);
    view(roomId).roles = new Map(page.members.map((m) => [m.user_id, m.role]));
  } catch {
    view(roomId).roles = new Map(); // a public room seen before joining: nothing yet
  }
  if (roomId === state.current) {
    renderMembers();
    renderRoomTools();
  }
}

/** The header's settings button, the invite box and the composer for an archived room. */
export function renderRoomTools() {
  const id = state.current;
  const info = id === null ? null : roomInfo(id);
  $("room-settings").hidden = id === null || !info || info.kind === "direct";
  $("invite-form").hidden = id === null || !runs(id) || (info && !info.private);
  $("settings-form").hidden = $("settings-form").hidden || $("room-settings").hidden;
  $("archive-room").hidden = myRole(id) !== "owner";
  $("settings-save").disabled = !runs(id);
  if (info && info.archived_at) {
    for (const field of ["message-input", "send-button", "emoji-button"]) $(field).disabled = true;
    $("message-input").placeholder = "This room is archived: its history stays, nothing new can be posted";
  }
  const sub = [];
  if (info && info.topic) sub.push(info.topic);
  if (id !== null) sub.push(`${view(id).members.size} online`);
  $("room-sub").textContent = sub.join(" · ");
}

// Buttons on each person in the member list, by what the user may do to them.
onMemberActions((row, name) => {
  const id = state.current;
  const item = el("div", "member-tools");
  row.append(item);
  const role = view(id).roles.get(name);
  if (role && role !== "member") item.append(el("span", `role-badge ${role}`, role));
  if (name === state.me) return;
  const dm = el("button", "member-action dm", "💬");
  dm.title = `Message ${name}`;
  dm.setAttribute("aria-label", `Direct message ${name}`);
  dm.onclick = () => startDirect(name);
  item.append(dm);
  const mine = myRole(id);
  if (!runs(id) || !role || RANK[role] > RANK[mine] || (mine === "moderator" && role === "moderator")) return;
  if (mine === "owner") {
    const promote = el("button", "member-action promote", role === "member" ? "⬆" : "⬇");
    const next = role === "member" ? "moderator" : "member";
    promote.title = `Make ${name} a ${next}`;
    promote.setAttribute("aria-label", promote.title);
    promote.onclick = () => setRole(id, name, next);
    item.append(promote);
  }
  const remove = el("button", "member-action remove", "✕");
  remove.title = `Remove ${name} from the room`;
  remove.setAttribute("aria-label", remove.title);
  remove.onclick = () => removeMember(id, name, false);
  item.append(remove);
  const ban = el("button", "member-action ban", "⛔");
  ban.title = `Ban ${name} from the room`;
  ban.setAttribute("aria-label", ban.title);
  ban.onclick = () => removeMember(id, name, true);
  item.append(ban);
});

async function act(promise, failure) {
  try {
    return await promise;
  } catch (error) {
    toast(`${failure}: ${error.message}`);
    return null;
  }
}

function setRole(roomId, user, role) {
  act(api(`/api/rooms/${roomId}/members/${encodeURIComponent(user)}/role`, { method: "PUT", body: { role } }), "Could not change the role");
}

function removeMember(roomId, user, ban) {
  const what = ban ? `Ban ${user} from this room?` : `Remove ${user} from this room?`;
  if (!confirm(what)) return;
  const query = ban ? "?ban=true" : "";
  act(api(`/api/rooms/${roomId}/members/${encodeURIComponent(user)}${query}`, { method: "DELETE" }), "Could not remove");
}

export async function startDirect(user) {
  const room = await act(api("/api/direct", { method: "POST", body: { user_id: user } }), "Could not open the conversation");
  if (!room) return;
  mergeRooms([room]);
  renderRooms();
  openRoom(room.id);
}

export function setupMembership() {
  $("invite-form").onsubmit = async (event) => {
    event.preventDefault();
    const name = $("invite-name").value.trim();
    if (!name || state.current === null) return;
    const added = await act(api(`/api/rooms/${state.current}/members`, { method: "POST", body: { user_id: name } }), "Could not invite");
    // Cleared only if it still holds that name: the next one may be typed meanwhile.
    if (added && $("invite-name").value.trim() === name) $("invite-name").value = "";
  };
  $("room-settings").onclick = () => {
    const form = $("settings-form");
    form.hidden = !form.hidden;
    $("room-settings").setAttribute("aria-expanded", String(!form.hidden));
    const info = roomInfo(state.current);
    if (!form.hidden && info) {
      $("settings-name").value = info.name;
      $("settings-topic").value = info.topic || "";
      $("settings-private").checked = info.private;
      renderRoomTools();
    }
  };
  $("settings-form").onsubmit = async (event) => {
    event.preventDefault();
    const body = { name: $("settings-name").value.trim(), topic: $("settings-topic").value, private: $("settings-private").checked };
    if (await act(api(`/api/rooms/${state.current}`, { method: "PATCH", body }), "Could not save")) $("settings-form").hidden = true;
  };
  $("leave-room").onclick = async () => {
    if (!confirm("Leave this room for good?")) return;
    await act(api(`/api/rooms/${state.current}/members/${encodeURIComponent(state.me)}`, { method: "DELETE" }), "Could not leave");
  };
  $("archive-room").onclick = async () => {
    if (!confirm("Archive this room? Its history stays; nothing new can be posted.")) return;
    if (await act(api(`/api/rooms/${state.current}`, { method: "DELETE" }), "Could not archive")) $("settings-form").hidden = true;
  };
}

// -- events ----------------------------------------------------------------------------

on("member_added", async (p) => {
  const v = view(p.room_id);
  v.roles.set(p.user_id, p.role);
  if (p.user_id === state.me) {
    // An invitation: the room appears in the list at once.
    const room = await act(api(`/api/rooms/${p.room_id}`), "Could not load the room");
    if (room) {
      mergeRooms([room]);
      renderRooms();
    }
  } else addNotice(v, `${p.by} added ${p.user_id}`);
  if (p.room_id === state.current) {
    renderMembers();
    renderRoomTools();
  }
});

on("member_removed", (p) => {
  const v = view(p.room_id);
  v.roles.delete(p.user_id);
  const mine = p.user_id === state.me;
  const why = { left: "left the room", removed: `was removed by ${p.by}`, banned: `was banned by ${p.by}` }[p.reason];
  addNotice(v, mine ? `You ${why.replace("was ", "were ").replace("left the room", "left the room for good")}` : `${p.user_id} ${why}`);
  if (mine) {
    state.joined.delete(p.room_id);
    const info = roomInfo(p.room_id);
    if (info && info.private) {
      state.rooms = state.rooms.filter((r) => r.id !== p.room_id);
      renderRooms();
    }
    if (p.room_id === state.current) {
      for (const field of ["message-input", "send-button", "emoji-button"]) $(field).disabled = true;
      $("message-input").placeholder = "You are no longer a member of this room";
    }
  }
  if (p.room_id === state.current) {
    renderMembers();
    renderRoomTools();
  }
});

on("role_changed", (p) => {
  const v = view(p.room_id);
  v.roles.set(p.user_id, p.role);
  addNotice(v, `${p.by} made ${p.user_id === state.me ? "you" : p.user_id} ${p.role === "member" ? "a member" : `a ${p.role}`}`);
  if (p.room_id === state.current) {
    renderMembers();
    renderRoomTools();
  }
});

on("room_updated", (p) => {
  mergeRooms([p.room]); // never a direct room: those have no settings to change
  renderRooms();
  if (p.room.id === state.current) {
    $("room-name").textContent = roomInfo(p.room.id).name;
    if (p.room.archived_at) addNotice(view(p.room.id), "This room was archived");
    renderRoomTools();
    if (!p.room.archived_at) showComposerRoom(view(p.room.id));
  }
});

on("user_joined", (p) => {
  // Whoever joins a public room is one of its members from then on.
  const info = roomInfo(p.room_id);
  const v = view(p.room_id);
  if (info && !info.private && !v.roles.has(p.user_id)) v.roles.set(p.user_id, "member");
  if (p.room_id === state.current) renderMembers();
});

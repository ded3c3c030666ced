// The notification list: mentions of the user and replies in threads they
// took part in, newest first, with an unread dot on the bell. Opening one
// goes to its room (and thread) and marks it read on every device; a
// notification the server takes back (its message deleted, the mention
// edited out) leaves the list at once.

import { api, on, send } from "./connection.js";
import { $, el, timeElement, toast } from "./dom.js";
import { roomName, state } from "./state.js";

let openRoomHandler = async () => {};
let openThreadHandler = () => {};

/** How a notification is opened: ``room(id)`` then, for a reply, ``thread(room, root)``. */
export function onOpenNotification(room, thread) {
  openRoomHandler = room;
  openThreadHandler = thread;
}

function unreadCount() {
  let count = 0;
  for (const n of state.notifications.values()) if (!n.read) count += 1;
  return count;
}

export function renderNotifications() {
  const count = unreadCount();
  const dot = $("notif-dot");
  dot.hidden = count === 0;
  dot.textContent = count > 99 ? "99+" : String(count);
  $("notif-button").setAttribute("aria-label", count ? `Notifications, ${count} unread` : "Notifications");
  const list = $("notif-list");
  const items = [...state.notifications.values()].sort((a, b) => b.id - a.id);
  if (!items.length) {
    list.replaceChildren(el("li", "muted small", "Nothing yet. Mentions and replies to your threads show here."));
    return;
  }
  list.replaceChildren(
    ...items.map((n) => {
      const item = el("li", `notif${n.read ? "" : " unread"}`);
      item.dataset.notificationId = String(n.id);
      const button = el("button", "notif-open");
      const what = n.kind === "mention" ? "mentioned you" : "replied in a thread";
      const head = el("div", "notif-head");
      head.append(el("strong", "", n.from_user_id), el("span", "", ` ${what} in ${roomName(n.room_id)}`));
      button.append(head, el("div", "notif-excerpt", n.excerpt), timeElement(n.created_at));
      button.onclick = () => openNotification(n);
      item.append(button);
      return item;
    }),
  );
}

async function openNotification(n) {
  $("notif-panel").hidden = true;
  $("notif-button").setAttribute("aria-expanded", "false");
  if (!n.read) send("notification_read", { ids: [n.id] });
  await openRoomHandler(n.room_id);
  if (n.thread_id !== null) openThreadHandler(n.room_id, n.thread_id);
}

async function load() {
  try {
    const page = await api("/api/notifications?limit=50");
    state.notifications.clear();
    for (const n of page.notifications) state.notifications.set(n.id, { ...n, read: n.read_at !== null });
  } catch (error) {
    toast(`Could not load notifications: ${error.message}`);
  }
  renderNotifications();
}

on("connected", load);

on("notification", (p) => {
  state.notifications.set(p.id, { ...p, read: false });
  renderNotifications();
});

on("notification_retracted", (p) => {
  if (state.notifications.delete(p.id)) renderNotifications();
});

on("notification_read", (p) => {
  for (const id of p.ids) {
    const n = state.notifications.get(id);
    if (n) n.read = true;
  }
  renderNotifications();
});

export function setupNotifications() {
  const panel = $("notif-panel");
  $("notif-button").onclick = (event) => {
    event.stopPropagation();
    panel.hidden = !panel.hidden;
    $("notif-button").setAttribute("aria-expanded", String(!panel.hidden));
  };
  $("notif-read-all").onclick = () => {
    const ids = [...state.notifications.values()].filter((n) => !n.read).map((n) => n.id);
    for (let i = 0; i < ids.length; i += 100) send("notification_read", { ids: ids.slice(i, i + 100) });
  };
  document.addEventListener("click", (event) => {
    if (!panel.hidden && !panel.contains(event.target) && event.target !== $("notif-button")) panel.hidden = true;
  });
  renderNotifications();
}

// Small DOM and formatting helpers shared by every module. User-provided text
// only ever reaches the page through textContent (see format.js for how
// message text becomes elements).

export const $ = (id) => document.getElementById(id);

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export function initials(name) {
  return (name || "?").trim().slice(0, 2).toUpperCase();
}

export function colorFor(name) {
  let hash = 0;
  for (const ch of name || "") hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return `hsl(${hash % 360} 55% 45%)`;
}

export function avatar(name, small = true) {
  const node = el("div", small ? "avatar small" : "avatar", initials(name));
  node.style.background = colorFor(name);
  node.setAttribute("aria-hidden", "true");
  return node;
}

// -- time ------------------------------------------------------------------------------

export function timeOf(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

export function fullDate(ms) {
  return new Date(ms).toLocaleString([], {
    weekday: "long",
    year: "numeric",
    month: "long",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  });
}

export function dayKey(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${d.getMonth()}-${d.getDate()}`;
}

export function dayLabel(ms, now = Date.now()) {
  const key = dayKey(ms);
  if (key === dayKey(now)) return "Today";
  if (key === dayKey(now - 86400000)) return "Yesterday";
  return new Date(ms).toLocaleDateString([], {
    weekday: "long",
    year: "numeric",
    month: "long",
    day: "numeric",
  });
}

/** A <time> element showing hours and minutes, with the full date on hover. */
export function timeElement(ms, className = "time muted small") {
  const node = el("time", className, timeOf(ms));
  node.dateTime = new Date(ms).toISOString();
  node.title = fullDate(ms);
  return node;
}

export function duration(ms) {
  const total = Math.max(0, Math.round(ms / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

// -- notices ---------------------------------------------------------------------------

let toastTimer = null;

export function toast(text) {
  const node = $("toast");
  node.textContent = text;
  node.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (node.hidden = true), 5000);
}

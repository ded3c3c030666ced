// roomcast browser client: chat, presence, typing and video calls over /ws.
//
// Plain ES modules served as they are, no framework and no build step: the
// package serves exactly what is in this folder, and a browser loads the
// modules it imports. One module per concern: connection (the link and the
// HTTP API), outbox (sending in order, paced), rooms (the list and switching),
// timeline (messages), format (message text to elements, never HTML),
// composer, members (people, status, typing), membership (roles, invites,
// settings, direct messages), search, calls, theme. This file logs in and wires them
// together.

import { connect, disconnect, on, send } from "./connection.js";
import { $, colorFor, initials, toast } from "./dom.js";
import * as outbox from "./outbox.js";
import { state, view } from "./state.js";
import { onCallRequest, onMembersRendered, renderMembers, renderTyping, useTypingPace } from "./members.js";
import { loadMembers, renderRoomTools, setupMembership } from "./membership.js";
import {
  createRoom,
  loadMoreRooms,
  onRoomOpened,
  openRoom,
  refreshRooms,
  rejoinAll,
  renderRooms,
  stepRoom,
} from "./rooms.js";
import { jumpToNewest, leaveRoom, onScroll, readIfSeen } from "./timeline.js";
import { setupComposer } from "./composer.js";
import { onCountsChange } from "./unread.js";
import { onOpenNotification, setupNotifications } from "./notifications.js";
import { closeThread, openThread, setupThreads } from "./threads.js";
import { openResult, setupSearch } from "./search.js";
import { setupCalls, startCall } from "./calls.js";
import { setupTheme } from "./theme.js";

// The identity is the tab's (sessionStorage): two windows of one browser can
// be two people. The last name typed is offered as the default in a new tab.
const IDENTITY_KEY = "roomcast.identity";
const LAST_NAME_KEY = "roomcast.lastName";
// How often input tells the server the user is active (it passes on one per 30 s).
const ACTIVITY_EVERY_MS = 20000;

function setConnState(kind, text) {
  const node = $("conn-state");
  node.dataset.state = kind;
  node.textContent = text;
}

function renderMe() {
  $("me-name").textContent = state.me;
  const avatar = $("me-avatar");
  avatar.textContent = initials(state.me);
  avatar.style.background = colorFor(state.me);
}

on("link", (p) => setConnState(p.state, p.text));

let restored = false;
on("connected", (p) => {
  state.connections += 1;
  if (p.user_id) state.me = p.user_id;
  if (!restored) {
    outbox.restore(); // in token mode the user is known only now
    restored = true;
  }
  renderMe();
  setConnState("connected", "Connected");
  rejoinAll();
  outbox.pump();
});

on("refused", () => showLogin("The server refused this identity. Check your name or token."));

on("error", (p) => {
  if (p.client_msg_id) return; // the outbox's: shown on the message itself
  // Candidates still in flight when a call ends meet a call the server has
  // already closed: expected, and not worth a message over the real reason.
  const signaling = p.type === "webrtc" || p.type === "call_end" || p.type === "call_reject";
  if (signaling && p.code === "not_found") return;
  if (p.type === "typing") return; // typing is best effort; the user did nothing wrong
  toast(p.code === "rate_limited" ? `Slow down: ${p.message}` : p.message || p.code);
});

function showLogin(error) {
  disconnect();
  $("app").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = error || "";
  $("name-field").hidden = state.mode !== "open";
  $("token-field").hidden = state.mode === "open";
  $("login-name").required = state.mode === "open";
  $("login-name").value = localStorage.getItem(LAST_NAME_KEY) || "";
}

function start(identity) {
  if (state.mode === "open") {
    state.me = identity;
    state.token = null;
    localStorage.setItem(LAST_NAME_KEY, identity);
    outbox.restore();
    restored = true;
  } else {
    state.token = identity;
    state.me = null;
    restored = false;
  }
  sessionStorage.setItem(IDENTITY_KEY, JSON.stringify({ mode: state.mode, identity }));
  $("login").hidden = true;
  $("app").hidden = false;
  if (state.me) renderMe();
  connect();
  if (state.me) refreshRooms(); // over HTTP: the list shows even before the link is up
}

function logout() {
  sessionStorage.removeItem(IDENTITY_KEY);
  outbox.clear();
  if (state.current !== null) leaveRoom(view(state.current));
  state.joined.clear();
  state.views.clear();
  state.counts.clear();
  state.notifications.clear();
  closeThread();
  state.rooms = [];
  state.current = null;
  $("room-name").textContent = "Pick a room";
  $("messages").hidden = true;
  $("empty-room").hidden = false;
  for (const id of ["message-input", "send-button", "emoji-button"]) $(id).disabled = true;
  renderRooms();
  renderMembers();
  renderTyping();
  showLogin("");
}

function wire() {
  $("login-form").onsubmit = (event) => {
    event.preventDefault();
    const value = state.mode === "open" ? $("login-name").value.trim() : $("login-token").value.trim();
    if (value) start(value);
  };
  const setStatus = () => {
    const text = $("status-text").value.trim();
    send("presence", text ? { status: $("status-select").value, status_text: text } : { status: $("status-select").value });
  };
  $("status-select").onchange = setStatus;
  $("status-text").onkeydown = (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      setStatus();
      event.target.blur();
    }
  };
  $("new-room-form").onsubmit = async (event) => {
    event.preventDefault();
    const name = $("new-room-name").value.trim();
    if (!name) return;
    try {
      await createRoom(name, $("new-room-private").checked);
      $("new-room-name").value = "";
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
  $("messages").onscroll = onScroll;
  $("jump-new").onclick = jumpToNewest;
  $("logout").onclick = logout;
  $("open-sidebar").onclick = () => document.body.classList.add("sidebar-open");
  $("close-sidebar").onclick = () => document.body.classList.remove("sidebar-open");
  document.addEventListener("keydown", (event) => {
    if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "k") {
      event.preventDefault();
      document.body.classList.add("sidebar-open");
      $("room-filter").focus();
    } else if (event.altKey && (event.key === "ArrowUp" || event.key === "ArrowDown")) {
      event.preventDefault();
      stepRoom(event.key === "ArrowUp" ? -1 : 1);
    } else if (event.key === "Escape") {
      document.body.classList.remove("sidebar-open");
    }
  });
  onCountsChange(renderRooms);
  onOpenNotification(openRoom, openThread);
  document.addEventListener("visibilitychange", readIfSeen);
  window.addEventListener("focus", readIfSeen);
  // Input seen: the user is active (ends automatic away on every device).
  let lastActivity = 0;
  const active = () => {
    const now = Date.now();
    if (now - lastActivity < ACTIVITY_EVERY_MS) return;
    if (send("activity")) lastActivity = now;
  };
  for (const type of ["keydown", "pointerdown", "focus"]) window.addEventListener(type, active, true);
  onCallRequest(startCall);
  onMembersRendered(renderRoomTools);
  onRoomOpened((id) => {
    renderRoomTools();
    loadMembers(id);
  });
  setupMembership();
  setupComposer();
  setupThreads();
  setupSearch();
  setupNotifications();
  setupCalls();
  setupTheme();
}

async function boot() {
  try {
    const info = await (await fetch("/api/info")).json();
    state.mode = info.auth;
    state.rateLimits = info.rate_limits || null;
  } catch {
    state.mode = "open";
  }
  outbox.usePacing(state.rateLimits);
  useTypingPace(state.rateLimits);
  wire();
  let saved = null;
  try {
    saved = JSON.parse(sessionStorage.getItem(IDENTITY_KEY) || "null");
  } catch {
    saved = null;
  }
  if (saved && saved.mode === state.mode && saved.identity) start(saved.identity);
  else showLogin("");
}

// Exposed for debugging and for the end-to-end tests.
window.roomcast = { state, openRoom, openThread, openResult };

boot();

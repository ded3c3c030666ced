// The composer: a growing text box (Enter sends, Shift+Enter starts a new
// line, Up on an empty box edits the user's last message), an emoji panel,
// and a draft per room that survives switching rooms.

import { $, el } from "./dom.js";
import { attachMentions, takeMentions } from "./mentions.js";
import { sentMessage, stopTyping, typed } from "./members.js";
import { queueMessage } from "./outbox.js";
import { state, view } from "./state.js";
import { lastOwnMessage, render, startEdit } from "./timeline.js";

const EMOJI = [
  "😀", "😃", "😄", "😁", "😆", "😅", "😂", "🤣", "😊", "🙂", "😉", "😍",
  "😘", "😎", "🤔", "🤨", "😐", "🙄", "😏", "😴", "😮", "😢", "😭", "😡",
  "🤯", "🥳", "😬", "🤗", "🙏", "👍", "👎", "👏", "🙌", "💪", "👋", "🤝",
  "❤️", "🧡", "💛", "💚", "💙", "💜", "🔥", "✨", "🎉", "💯", "✅", "❌",
  "⚠️", "❓", "👀", "🚀", "☕", "🍕", "🐛", "📞", "📎", "📌", "💡", "⏰",
]; // prettier-ignore

const MAX_ROWS = 8;

/** Who "@" offers: the room's members and the people in it, but the user. */
function candidates() {
  if (state.current === null) return [];
  const v = view(state.current);
  return [...new Set([...v.roles.keys(), ...v.members.keys()])].filter((user) => user !== state.me);
}

export function setupComposer() {
  const input = $("message-input");
  attachMentions(input, candidates);
  $("composer").onsubmit = (event) => {
    event.preventDefault();
    submit();
  };
  input.addEventListener("input", () => {
    grow(input);
    if (state.current !== null) view(state.current).draft = input.value;
    if (input.value) typed();
    else stopTyping();
  });
  input.addEventListener("blur", stopTyping);
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submit();
    } else if (event.key === "ArrowUp" && input.value === "" && state.current !== null) {
      const id = lastOwnMessage();
      if (id !== null) {
        event.preventDefault();
        startEdit(id);
      }
    } else if (event.key === "Escape") {
      closeEmojiPanel();
    }
  });
  const panel = $("emoji-panel");
  for (const emoji of EMOJI) {
    const button = el("button", "emoji", emoji);
    button.type = "button";
    button.setAttribute("aria-label", `Insert ${emoji}`);
    button.onclick = () => {
      insert(emoji);
      closeEmojiPanel();
    };
    panel.append(button);
  }
  panel.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      closeEmojiPanel();
      input.focus();
    }
  });
  $("emoji-button").onclick = (event) => {
    event.stopPropagation();
    if (panel.hidden) openEmojiPanel();
    else closeEmojiPanel();
  };
  document.addEventListener("click", (event) => {
    if (!panel.hidden && !panel.contains(event.target)) closeEmojiPanel();
  });
}

function openEmojiPanel() {
  const panel = $("emoji-panel");
  panel.hidden = false;
  $("emoji-button").setAttribute("aria-expanded", "true");
  panel.querySelector("button").focus();
}

function closeEmojiPanel() {
  $("emoji-panel").hidden = true;
  $("emoji-button").setAttribute("aria-expanded", "false");
}

function insert(text) {
  const input = $("message-input");
  const start = input.selectionStart ?? input.value.length;
  const end = input.selectionEnd ?? input.value.length;
  input.setRangeText(text, start, end, "end");
  input.dispatchEvent(new Event("input"));
  input.focus();
}

function grow(input) {
  input.style.height = "auto";
  const line = parseFloat(getComputedStyle(input).lineHeight) || 20;
  input.style.height = `${Math.min(input.scrollHeight, line * MAX_ROWS + 24)}px`;
}

function submit() {
  const input = $("message-input");
  const text = input.value.trim();
  if (!text || state.current === null) return;
  const mentions = takeMentions(input, text);
  queueMessage(state.current, text, mentions.length ? { mentions } : {});
  input.value = "";
  view(state.current).draft = "";
  grow(input);
  sentMessage();
  render("bottom");
}

/** The room on screen changed: its draft goes in the box, which is now usable. */
export function showRoom(v) {
  const input = $("message-input");
  stopTyping();
  input.value = v.draft;
  grow(input);
  input.disabled = false;
  $("send-button").disabled = false;
  $("emoji-button").disabled = false;
  input.placeholder = `Message #${document.getElementById("room-name").textContent}`;
  input.focus();
}

// Message search: the box in the room header, hints for from: and in:, and a
// side panel of results grouped by room (a room's group where its best hit
// ranks). A result opens its room at the message, highlighted; a reply opens
// its thread too.
//
// Snippets come HTML-escaped with <mark> around the matches; they are split on
// the markers and shown as text nodes, never set as HTML.

import { api } from "./connection.js";
import { $, el, timeElement, toast } from "./dom.js";
import { openRoom } from "./rooms.js";
import { roomName, state, view } from "./state.js";
import { highlightIn, showAround } from "./timeline.js";
import { closeThread, openThread } from "./threads.js";

const PAGE = 20;

let search = null; // {q, results, next, count}

/** Elements of a snippet: its text, with the matches in <mark> elements. */
export function snippetNodes(snippet) {
  const nodes = [];
  let marked = false;
  for (const part of snippet.split(/(<mark>|<\/mark>)/)) {
    if (part === "<mark>" || part === "</mark>") {
      marked = part === "<mark>";
      continue;
    }
    if (!part) continue;
    const text = part.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");
    nodes.push(marked ? el("mark", "", text) : document.createTextNode(text));
  }
  return nodes;
}

async function run(q, more = false) {
  const cursor = more && search && search.next ? `&cursor=${encodeURIComponent(search.next)}` : "";
  try {
    const page = await api(`/api/search?q=${encodeURIComponent(q)}&limit=${PAGE}${cursor}`);
    if (!more || !search || search.q !== q) search = { q, results: [], next: null, count: 0 };
    search.results.push(...page.results);
    search.next = page.next_cursor;
    search.count = page.count_estimate;
  } catch (error) {
    search = { q, results: [], next: null, count: 0, error: error.message };
  }
  renderResults();
}

function renderResults() {
  const panel = $("search-panel");
  panel.hidden = false;
  document.body.classList.add("search-open");
  const box = $("search-results");
  if (search.error) {
    $("search-summary").textContent = search.error;
    box.replaceChildren();
    $("search-more").hidden = true;
    return;
  }
  const count = search.count >= 1000 ? "1000+" : String(search.count);
  $("search-summary").textContent = search.count === 1 ? "1 result" : `${count} results`;
  const groups = new Map(); // room id -> hits, in the order of each room's best hit
  for (const hit of search.results) {
    if (!groups.has(hit.room_id)) groups.set(hit.room_id, []);
    groups.get(hit.room_id).push(hit);
  }
  const nodes = [];
  for (const [roomId, hits] of groups) {
    const group = el("section", "search-group");
    group.dataset.roomId = String(roomId);
    group.append(el("h4", "search-room", roomName(roomId)));
    for (const hit of hits) group.append(resultRow(hit));
    nodes.push(group);
  }
  if (!nodes.length) nodes.push(el("p", "muted", "No messages match."));
  box.replaceChildren(...nodes);
  $("search-more").hidden = !search.next;
}

function resultRow(hit) {
  const message = hit.message;
  const button = el("button", "search-hit");
  button.dataset.messageId = String(message.id);
  const head = el("div", "search-hit-head");
  head.append(el("span", "author", message.user_id), timeElement(message.created_at));
  if (message.thread_id !== null) head.append(el("span", "muted small", " · in a thread"));
  const text = el("div", "search-snippet");
  text.append(...snippetNodes(hit.snippet));
  button.append(head, text);
  button.onclick = () => openResult(message);
  return button;
}

/** Open the result's room at the message (and its thread, for a reply). */
export async function openResult(message) {
  const roomId = message.room_id;
  await openRoom(roomId);
  if (state.current !== roomId) return;
  const rootId = message.thread_id;
  await showAround(roomId, rootId ?? message.id);
  if (rootId !== null) {
    await openThread(roomId, rootId);
    highlightIn($("thread-messages"), message.id);
  }
}

export function closeSearch() {
  $("search-panel").hidden = true;
  document.body.classList.remove("search-open");
}

// -- hints --------------------------------------------------------------------------------

function currentWord(input) {
  const before = input.value.slice(0, input.selectionStart);
  const start = before.search(/\S*$/);
  return { start, word: before.slice(start) };
}

function suggestions(word) {
  const lower = word.toLowerCase();
  if (lower.startsWith("from:")) {
    const prefix = word.slice(5).replace(/^@/, "").toLowerCase();
    const v = state.current === null ? null : view(state.current);
    const people = v ? [...new Set([...v.roles.keys(), ...v.members.keys()])] : [];
    return people
      .filter((user) => user.toLowerCase().startsWith(prefix))
      .sort()
      .slice(0, 8)
      .map((user) => ({ label: `from:${user}`, text: `from:${user} ` }));
  }
  if (lower.startsWith("in:")) {
    const prefix = word.slice(3).replace(/^["#]/, "").toLowerCase();
    return state.rooms
      .filter((room) => room.name.toLowerCase().startsWith(prefix))
      .slice(0, 8)
      .map((room) => ({
        label: `in:${room.name}`,
        text: /\s/.test(room.name) ? `in:"${room.name}" ` : `in:${room.name} `,
      }));
  }
  return [
    { label: "from:someone — messages of one person", text: "from:" },
    { label: "in:room — messages of one room", text: "in:" },
    { label: '"exact phrase" — words in this order', text: '""' },
  ].filter((hint) => !word || (word.length > 1 && hint.text.startsWith(lower)));
}

function renderHints() {
  const input = $("search-input");
  const list = $("search-hints");
  const { start, word } = currentWord(input);
  const found = document.activeElement === input ? suggestions(word) : [];
  list.hidden = !found.length;
  list.replaceChildren(
    ...found.map((hint) => {
      const item = el("li", "search-hint", hint.label);
      item.setAttribute("role", "option");
      item.onmousedown = (event) => {
        event.preventDefault(); // keep the focus in the box
        // The hint takes the place of the word being typed.
        const value = input.value;
        input.value = value.slice(0, start) + hint.text + value.slice(input.selectionStart);
        const at = start + hint.text.length - (hint.text === '""' ? 1 : 0);
        input.setSelectionRange(at, at);
        renderHints();
      };
      return item;
    }),
  );
}

export function setupSearch() {
  const input = $("search-input");
  $("search-form").onsubmit = (event) => {
    event.preventDefault();
    $("search-hints").hidden = true;
    const q = input.value.trim();
    if (!q) return;
    if (state.thread !== null) closeThread(); // the results take the side column
    run(q);
  };
  input.oninput = renderHints;
  input.onfocus = renderHints;
  input.onblur = () => ($("search-hints").hidden = true);
  input.onkeydown = (event) => {
    if (event.key === "Escape") {
      input.blur();
      closeSearch();
    }
  };
  $("search-more").onclick = () => search && run(search.q, true).catch((e) => toast(e.message));
  $("close-search").onclick = closeSearch;
  document.addEventListener("keydown", (event) => {
    const typing = event.target instanceof HTMLElement && event.target.closest("input, textarea, select");
    if (event.key === "/" && !typing && !event.ctrlKey && !event.metaKey) {
      event.preventDefault();
      input.focus();
    }
  });
}

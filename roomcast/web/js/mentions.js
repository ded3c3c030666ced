// "@" autocomplete of the room's members in a text box, and the mentions a
// message carries. Mentions are explicit: only people picked from the list
// (and still named in the text when it is sent) are notified; typing a name
// by hand notifies nobody, as the server does it.

import { el } from "./dom.js";

const MAX_SHOWN = 8;

/**
 * Offer ``candidates()`` (user ids) when "@" is typed in ``input``. The picked
 * users are kept on the box until :func:`takeMentions` reads them.
 */
export function attachMentions(input, candidates) {
  input.mentions = new Set();
  const list = el("ul", "mention-list");
  list.setAttribute("role", "listbox");
  list.hidden = true;
  input.insertAdjacentElement("afterend", list);
  let choices = [];
  let chosen = 0;

  const query = () => {
    const before = input.value.slice(0, input.selectionStart ?? input.value.length);
    const match = /(^|\s)@([^\s@]*)$/.exec(before);
    return match ? { text: match[2], start: before.length - match[2].length - 1 } : null;
  };
  const close = () => {
    list.hidden = true;
    choices = [];
  };
  const pick = (user) => {
    const found = query();
    if (!found) return close();
    const end = input.selectionStart ?? input.value.length;
    input.setRangeText(`@${user} `, found.start, end, "end");
    input.mentions.add(user);
    close();
    input.dispatchEvent(new Event("input"));
    input.focus();
  };
  const show = () => {
    const found = query();
    if (!found) return close();
    const needle = found.text.toLowerCase();
    choices = candidates()
      .filter((user) => user.toLowerCase().includes(needle))
      .sort((a, b) => Number(!a.toLowerCase().startsWith(needle)) - Number(!b.toLowerCase().startsWith(needle)) || (a < b ? -1 : 1))
      .slice(0, MAX_SHOWN);
    if (!choices.length) return close();
    chosen = Math.min(chosen, choices.length - 1);
    list.replaceChildren(
      ...choices.map((user, index) => {
        const item = el("li", `mention-choice${index === chosen ? " chosen" : ""}`, `@${user}`);
        item.setAttribute("role", "option");
        item.setAttribute("aria-selected", String(index === chosen));
        item.onmousedown = (event) => {
          event.preventDefault(); // keep the focus in the box
          pick(user);
        };
        return item;
      }),
    );
    list.hidden = false;
  };
  input.addEventListener("input", show);
  input.addEventListener("blur", () => setTimeout(close, 100));
  // Registered before the box's own keys: a choice list open takes Enter and the arrows.
  input.addEventListener(
    "keydown",
    (event) => {
      if (list.hidden || !choices.length) return;
      if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        chosen = (chosen + (event.key === "ArrowDown" ? 1 : choices.length - 1)) % choices.length;
        show();
      } else if (event.key === "Enter" || event.key === "Tab") {
        pick(choices[chosen]);
      } else if (event.key === "Escape") {
        close();
      } else return;
      event.preventDefault();
      event.stopImmediatePropagation();
    },
    { capture: true },
  );
}

/** The users picked in ``input`` that ``text`` still names; the box forgets them. */
export function takeMentions(input, text) {
  const picked = [...(input.mentions || [])].filter((user) => text.includes(`@${user}`));
  if (input.mentions) input.mentions.clear();
  return picked;
}

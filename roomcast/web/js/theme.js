// Light or dark: follows the system (prefers-color-scheme) until the user
// picks one; the choice is kept in localStorage (it is the browser's, not the
// identity's).

import { $ } from "./dom.js";

const KEY = "roomcast.theme";
const ORDER = ["auto", "dark", "light"];

function apply(choice) {
  if (choice === "auto") delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = choice;
  const button = $("theme-toggle");
  button.textContent = `Theme: ${choice}`;
  button.setAttribute("aria-label", `Colour theme: ${choice} (change)`);
}

export function setupTheme() {
  let choice = localStorage.getItem(KEY) || "auto";
  if (!ORDER.includes(choice)) choice = "auto";
  apply(choice);
  $("theme-toggle").onclick = () => {
    choice = ORDER[(ORDER.indexOf(choice) + 1) % ORDER.length];
    localStorage.setItem(KEY, choice);
    apply(choice);
  };
}

// Message text to elements, never through HTML: a small subset of Markdown
// that chat users type (**bold**, *italic* or _italic_, ~~strike~~, `code`,
// ``` code blocks ```, "> " quotes) and bare links. Every piece of user text
// becomes a text node; the only attribute set from user text is a link's
// href, and only for http, https and mailto URLs that the URL parser accepts.
// Markdown's [label](url) is deliberately not supported: a link always shows
// the address it goes to.

import { el } from "./dom.js";

const SAFE_PROTOCOLS = new Set(["http:", "https:", "mailto:"]);

// One alternative per kind of span; the leftmost match wins, then the order here.
const INLINE = new RegExp(
  [
    "`([^`\\n]+)`", // 1 code
    "((?:https?:\\/\\/|mailto:)[^\\s<>\"]+)", // 2 link
    "\\*\\*(?=\\S)([^*]*?\\S)\\*\\*", // 3 bold
    "~~(?=\\S)([^~]*?\\S)~~", // 4 strike
    "(?<![\\w*])\\*(?=\\S)([^*]*?\\S)\\*(?![\\w*])", // 5 italic
    "(?<![\\w_])_(?=\\S)([^_]*?\\S)_(?![\\w_])", // 6 italic
  ].join("|"),
  "gu",
);

/** The link's target, or null when it must stay text. */
export function safeUrl(text) {
  let url;
  try {
    url = new URL(text);
  } catch {
    return null;
  }
  return SAFE_PROTOCOLS.has(url.protocol) ? url.href : null;
}

// Punctuation that ends a sentence rather than the address.
function trimLink(text) {
  let end = text.length;
  while (end > 0) {
    const ch = text[end - 1];
    if (".,;:!?'\"".includes(ch)) end -= 1;
    else if (ch === ")" && (text.slice(0, end).match(/\(/g) || []).length < (text.slice(0, end).match(/\)/g) || []).length) end -= 1;
    else break;
  }
  return text.slice(0, end);
}

function link(text) {
  const href = safeUrl(text);
  if (href === null) return document.createTextNode(text);
  const a = el("a", "link", text);
  a.href = href;
  a.target = "_blank";
  a.rel = "noopener noreferrer";
  return a;
}

export function inline(text) {
  const nodes = [];
  let at = 0;
  const re = new RegExp(INLINE.source, INLINE.flags); // inline() recurses: a regex of its own
  for (let match = re.exec(text); match; match = re.exec(text)) {
    let end = re.lastIndex;
    let node;
    if (match[1] !== undefined) node = el("code", "inline-code", match[1]);
    else if (match[2] !== undefined) {
      const url = trimLink(match[2]);
      end = match.index + url.length;
      re.lastIndex = end;
      node = link(url);
    } else {
      const [tag, inner] =
        match[3] !== undefined
          ? ["strong", match[3]]
          : match[4] !== undefined
            ? ["del", match[4]]
            : ["em", match[5] !== undefined ? match[5] : match[6]];
      node = el(tag);
      node.append(...inline(inner));
    }
    if (match.index > at) nodes.push(document.createTextNode(text.slice(at, match.index)));
    nodes.push(node);
    at = end;
  }
  if (at < text.length) nodes.push(document.createTextNode(text.slice(at)));
  return nodes;
}

/** The elements a message's text shows as. */
export function formatMessage(text) {
  const nodes = [];
  const lines = text.split("\n");
  let paragraph = [];
  const flush = () => {
    if (!paragraph.length) return;
    const span = el("span", "text");
    span.append(...inline(paragraph.join("\n")));
    nodes.push(span);
    paragraph = [];
  };
  for (let i = 0; i < lines.length; i += 1) {
    const line = lines[i];
    const single = /^```(.+)```\s*$/.exec(line);
    if (single) {
      flush();
      nodes.push(codeBlock(single[1]));
      continue;
    }
    if (line.startsWith("```")) {
      const body = [];
      let j = i + 1;
      while (j < lines.length && !lines[j].startsWith("```")) body.push(lines[j++]);
      if (j < lines.length) {
        flush();
        const first = line.slice(3).trim();
        nodes.push(codeBlock((first ? [first, ...body] : body).join("\n")));
        i = j;
        continue;
      }
    }
    if (line.startsWith(">")) {
      flush();
      const quoted = [];
      let j = i;
      while (j < lines.length && lines[j].startsWith(">")) quoted.push(lines[j++].replace(/^> ?/, ""));
      const quote = el("blockquote", "quote");
      quote.append(...inline(quoted.join("\n")));
      nodes.push(quote);
      i = j - 1;
      continue;
    }
    paragraph.push(line);
  }
  flush();
  return nodes;
}

function codeBlock(text) {
  const pre = el("pre", "code-block");
  pre.append(el("code", "", text));
  return pre;
}

const EMOJI_ONLY = /^(?:\p{Extended_Pictographic}|\p{Emoji_Modifier}|\p{Regional_Indicator}|\u200d|\ufe0f|\u20e3|[#*0-9](?=\ufe0f?\u20e3)|\s)+$/u;

/** Whether a message is a few emoji and nothing else (shown larger). */
export function isEmojiOnly(text) {
  if (!EMOJI_ONLY.test(text)) return false;
  const pictographs = text.match(/\p{Extended_Pictographic}|\p{Regional_Indicator}{2}/gu) || [];
  return pictographs.length > 0 && pictographs.length <= 6;
}

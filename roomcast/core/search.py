"""The rules of message search: what a message is indexed as, what a query
means, and how a hit is shown. No I/O; both stores index and match through these,
so SQLite and PostgreSQL find exactly the same messages.

A message is indexed as a *search document*: its text folded (compatibility
forms, accents and case removed: ``Café`` and ``CAFE`` are ``cafe``), cut into
tokens (runs of letters and digits; everything else separates), each token
preceded by two spaces. Chinese, Japanese and Korean text has no spaces
between words, so a run of those characters becomes its overlapping pairs and
its last character (``鈴虫が`` → ``鈴虫 虫が が``), as Lucene's CJK analyzer
does: any one or two characters of the run then begin a token.

Both engines index the document by trigrams (SQLite's FTS5 ``trigram``
tokenizer, PostgreSQL's ``pg_trgm``) and match *needles*, exact substrings of
it, so a query term is found

* as a word or the start of one (``deploy`` in ``deployment``, ``foo`` in
  ``foo.png``, ``3699`` in ``PLT-3699``): the needle ``"  " + term``, which is
  at least three characters for any term;
* anywhere inside a word, when the term is three characters or longer
  (``ploy`` in ``deployment``): the needle is the term itself.

A hit whose every term matched as a word ranks ahead of one that needed a
substring (:data:`WORD_RANK` over :data:`SUBSTRING_RANK`).
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass, field

#: A query's most characters and terms: enough for any search a person types,
#: and a bound on the index lookups one request makes.
QUERY_MAX_CHARS = 500
QUERY_MAX_TERMS = 10
#: Characters of a message around its first match in a snippet.
SNIPPET_BEFORE = 50
SNIPPET_CHARS = 200
#: The two ranks a hit has.
WORD_RANK = 2
SUBSTRING_RANK = 1
#: The separator before every token of a document.
GAP = "  "

#: Combining marks that are accents on Latin, Greek and Cyrillic letters; other
#: scripts' combining marks (Japanese voicing, Indic vowel signs) are letters'
#: parts and stay.
_ACCENTS = (
    (0x0300, 0x036F),
    (0x1AB0, 0x1AFF),
    (0x1DC0, 0x1DFF),
    (0x20D0, 0x20FF),
    (0xFE20, 0xFE2F),
)
#: Scripts written without spaces between words (and Hangul, whose words are
#: short): Han, kana, Hangul, in their main blocks.
_CJK = (
    (0x1100, 0x11FF),
    (0x2E80, 0x2FDF),
    (0x3040, 0x30FF),
    (0x3130, 0x318F),
    (0x31F0, 0x31FF),
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xA960, 0xA97F),
    (0xAC00, 0xD7AF),
    (0xF900, 0xFAFF),
    (0x20000, 0x3FFFF),
)


def _char_class(ranges: tuple[tuple[int, int], ...]) -> str:
    return "".join(f"{chr(low)}-{chr(high)}" for low, high in ranges)


_ACCENT = re.compile(f"[{_char_class(_ACCENTS)}]+")
_CJK_CHAR = re.compile(f"[{_char_class(_CJK)}]")
#: A word's CJK runs and the rest, alternately (the split keeps the runs).
_CJK_RUN = re.compile(f"([{_char_class(_CJK)}]+)")
#: A token's characters: letters and digits (str.isalnum), not ``_``.
_WORD = re.compile(r"[^\W_]+")
_ASCII_WORD = re.compile(r"[a-z0-9]+")


def fold(text: str) -> str:
    """``text`` with case, compatibility forms and accents folded away."""
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return unicodedata.normalize("NFC", _ACCENT.sub("", decomposed))


def tokens(folded: str, pairs: bool = True) -> list[str]:
    """The tokens of folded text, a CJK run as its pairs and last character
    (or whole, without ``pairs``)."""
    if folded.isascii():
        return _ASCII_WORD.findall(folded)
    found: list[str] = []
    for word in _WORD.findall(folded):
        if not _CJK_CHAR.search(word):
            found.append(word)
            continue
        for index, part in enumerate(_CJK_RUN.split(word)):
            if not part:
                continue
            if index % 2 and pairs:  # a CJK run
                found += [part[i : i + 2] for i in range(len(part))]
            else:
                found.append(part)
    return found


def document(content: str) -> str:
    """What a message is indexed as ("" when it has nothing to find)."""
    found = tokens(fold(content))
    return GAP + GAP.join(found) if found else ""


# -- queries ---------------------------------------------------------------------------


class QueryError(ValueError):
    """A query that cannot be searched; the message says why, for the user."""


@dataclass(frozen=True, slots=True)
class Term:
    """One word or quoted phrase of a query, as the needles that find it."""

    text: str  # folded, for highlighting
    word: str  # the needle that finds it as a word (or words) or their start
    substring: str  # the needle that finds it anywhere (``word`` when it is short)


@dataclass(frozen=True, slots=True)
class Query:
    terms: tuple[Term, ...]
    from_user: str | None = None
    in_room: str | None = None  # a room's name, or its id in digits

    @property
    def substring_needles(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(term.substring for term in self.terms))

    @property
    def word_needles(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(term.word for term in self.terms))

    @property
    def words_only(self) -> bool:
        """Whether every match is a word match (no term is long enough for substrings)."""
        return self.substring_needles == self.word_needles


def _term(text: str) -> Term | None:
    folded = fold(text)
    found = tokens(folded)
    if not found:
        return None  # punctuation only: nothing to find
    body = GAP.join(found)
    word = GAP + body
    # Three characters at least, so that a trigram index can look it up.
    substring = body if len(body) >= 3 else word
    return Term(folded, word, substring)


@dataclass(slots=True)
class _Scanner:
    text: str
    at: int = 0
    parts: list[tuple[str, bool]] = field(default_factory=list)

    def quoted(self) -> str:
        """The text up to the closing quote (the end, when there is none)."""
        end = self.text.find('"', self.at + 1)
        if end < 0:
            end = len(self.text)
        found = self.text[self.at + 1 : end]
        self.at = end + 1
        return found

    def bare(self) -> str:
        end = self.at
        while end < len(self.text) and not self.text[end].isspace():
            end += 1
        found = self.text[self.at : end]
        self.at = end
        return found

    def value(self) -> str:
        return self.quoted() if self.text.startswith('"', self.at) else self.bare()


def parse_query(q: str) -> Query:
    """A query as typed: words (all must match), ``"quoted phrases"``, and the
    filters ``from:user`` and ``in:room`` (a room name, quoted when it has
    spaces, or a room id). Any other character is text to find, never syntax.
    """
    if len(q) > QUERY_MAX_CHARS:
        raise QueryError(f"longer than {QUERY_MAX_CHARS} characters")
    q = unicodedata.normalize("NFC", q)
    scan = _Scanner(q)
    terms: dict[str, Term] = {}
    from_user = in_room = None
    while scan.at < len(q):
        if q[scan.at].isspace():
            scan.at += 1
            continue
        lowered = q[scan.at : scan.at + 5].lower()
        if lowered.startswith("from:") and scan.at + 5 < len(q) and not q[scan.at + 5].isspace():
            scan.at += 5
            from_user = scan.value().removeprefix("@") or None
            continue
        if lowered.startswith("in:") and scan.at + 3 < len(q) and not q[scan.at + 3].isspace():
            scan.at += 3
            in_room = scan.value().removeprefix("#").strip() or None
            continue
        text = scan.quoted() if q[scan.at] == '"' else scan.bare()
        term = _term(text)
        if term is not None:
            terms.setdefault(term.word, term)
    if not terms:
        raise QueryError("give a word to search for")
    if len(terms) > QUERY_MAX_TERMS:
        raise QueryError(f"more than {QUERY_MAX_TERMS} words")
    return Query(tuple(terms.values()), from_user, in_room)


@dataclass(frozen=True, slots=True)
class SearchFilters:
    """What a search is narrowed to, besides its words."""

    room_id: int | None = None
    room_name: str | None = None  # ASCII case ignored
    from_user: str | None = None
    thread_id: int | None = None  # the root and its replies
    before: int | None = None  # created_at, milliseconds
    after: int | None = None


class Tier:
    """Which hits a query asks for: all, or those of one rank."""

    ALL = "all"
    WORDS = "words"  # every term as a word
    SUBSTRINGS = "substrings"  # some term only inside a word


def in_tier(doc: str, query: Query, tier: str) -> bool:
    """Whether a document is a hit of the tier (a :class:`Tier`)."""
    if not matches(doc, query):
        return False
    if tier == Tier.ALL:
        return True
    return (rank_of(doc, query) == WORD_RANK) == (tier == Tier.WORDS)


def rank_of(doc: str, query: Query) -> int:
    """A document's rank for a query it matches."""
    return WORD_RANK if all(n in doc for n in query.word_needles) else SUBSTRING_RANK


def matches(doc: str, query: Query) -> bool:
    """Whether a document matches: what both stores' index lookups compute."""
    return all(n in doc for n in query.substring_needles)


# -- snippets --------------------------------------------------------------------------


def _folded_with_origins(content: str) -> tuple[str, list[int]]:
    """``content`` folded char by char, and each folded char's original index."""
    parts: list[str] = []
    origins: list[int] = []
    for index, ch in enumerate(content):
        folded = fold(ch)
        parts.append(folded)
        origins += [index] * len(folded)
    return "".join(parts), origins


def _pattern(term: Term) -> re.Pattern[str]:
    """Where a term is in folded text: its words with any separators between,
    at the start of a word when only a word match finds it."""
    words = tokens(term.text, pairs=False)
    body = r"[\W_]+".join(re.escape(t) for t in words)
    # Each CJK character begins a token (see document).
    at_start = term.substring == term.word and not _CJK_CHAR.match(words[0])
    return re.compile((r"(?<![^\W_])" if at_start else "") + body)


def _spans(content: str, query: Query) -> list[tuple[int, int]]:
    """Where the query's terms are in ``content`` (original indexes), merged."""
    folded, origins = _folded_with_origins(content)
    found = [
        (origins[m.start()], origins[m.end() - 1] + 1)
        for term in query.terms
        for m in _pattern(term).finditer(folded)
        if m.end() > m.start()
    ]
    found.sort()
    merged: list[tuple[int, int]] = []
    for start, end in found:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def snippet(content: str, query: Query) -> str:
    """The message's text around its first match, HTML-escaped, with each
    match inside ``<mark>…</mark>``: the only markup in it, so a client can
    split on the markers and show the rest as text (or set it as HTML)."""
    content = content.replace("\n", " ")
    spans = _spans(content, query)
    first = spans[0][0] if spans else 0
    start = max(0, first - SNIPPET_BEFORE)
    if start:
        # Begin at a word where one is near.
        space = content.find(" ", start, first)
        start = space + 1 if space >= 0 else start
    end = min(len(content), start + SNIPPET_CHARS)
    out = ["…"] if start else []
    at = start
    for span_start, span_end in spans:
        if span_end <= start or span_start >= end:
            continue
        span_start, span_end = max(span_start, at), min(span_end, end)
        out.append(html.escape(content[at:span_start], quote=False))
        out.append("<mark>" + html.escape(content[span_start:span_end], quote=False) + "</mark>")
        at = span_end
    out.append(html.escape(content[at:end], quote=False))
    if end < len(content):
        out.append("…")
    return "".join(out)

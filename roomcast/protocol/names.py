"""Names people see (user ids, room names): the rule for what may be shown as one.

A name that shows as another, or as nothing, lets one user pass for another;
:func:`visible_name` refuses those and normalises the rest, wherever a name
enters (frames, HTTP bodies, tokens).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Final, NoReturn

import msgspec

#: User ids are opaque strings chosen by the identity provider. The pattern is
#: the part of the rule a JSON schema can say (1-64 characters, no control
#: characters); :func:`visible_name` is the whole rule, applied wherever a user
#: id enters. (The lookahead ends the string in Python and in JSON Schema's
#: ECMA-262 regexes alike; ``$`` would let a trailing newline through in Python.)
USER_ID_MAX_CHARS: Final = 64
USER_ID_PATTERN: Final = r"^[^\x00-\x1f\x7f]{1,64}(?![\s\S])"
UserId = Annotated[str, msgspec.Meta(pattern=USER_ID_PATTERN)]
ROOM_NAME_MAX_CHARS: Final = 100
RoomName = Annotated[str, msgspec.Meta(min_length=1, max_length=ROOM_NAME_MAX_CHARS)]

#: What a name (a user id, a room name) may not contain: control characters
#: (Cc), format characters (Cf: zero-width spaces and joiners, bidi marks,
#: embeddings, overrides and isolates, word joiners, the BOM, ...), line and
#: paragraph separators (Zl, Zp) and lone surrogates (Cs). Each can make one
#: name show as another (``"\u202eecila"`` shows as "alice") or as nothing.
_HIDDEN_CATEGORIES: Final = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
#: Characters that show as nothing although they are no format characters
#: (Unicode's other default-ignorable code points: the combining grapheme
#: joiner, Hangul fillers, Khmer inherent vowels, Mongolian and other variation
#: selectors, tags) and code points reserved as such: ``"ali\u034fce"`` would
#: show as "alice". A variation selector is allowed right after a symbol
#: (``"\u2764\ufe0f"``) or in a keycap (``"1\ufe0f\u20e3"``), where it picks
#: how an emoji looks.
_INVISIBLE: Final = re.compile(
    "[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u2065\u3164\ufe00-\ufe0f"
    "\uffa0\ufff0-\ufff8\U000e0000-\U000e0fff]"
)
#: A character that shows as an empty space (the blank Braille pattern): a name
#: of only these and whitespace is blank.
_BLANK_LETTERS: Final = frozenset("\u2800")


def visible_name(text: str, max_chars: int) -> str:
    """``text`` in NFC, if it is fit to show as a name; else :class:`ValueError`
    saying why (without the field's name, which the caller knows).

    NFC, so that two spellings of one name (``"e\u0301"`` and ``"\u00e9"``) are
    one user or one room. Unassigned code points are allowed: they are mostly
    emoji newer than this Python's Unicode tables.
    """
    # NFC makes a text at most three times as long or short: a far longer one
    # is refused before the work of normalising it.
    if not text.isascii() and len(text) <= 4 * max_chars:
        text = unicodedata.normalize("NFC", text)
    if text and all(char.isspace() or char in _BLANK_LETTERS for char in text):
        raise ValueError("must not be blank")
    text = text.strip()  # spaces around a name show as nothing: "alice " is alice
    if not 1 <= len(text) <= max_chars:
        raise ValueError(f"expected 1-{max_chars} characters")
    if not text.isprintable():  # rare: only then look at each character
        for index, char in enumerate(text):
            category = unicodedata.category(char)
            if category in _HIDDEN_CATEGORIES and not _joins_emoji(text, index):
                _refuse_hidden(char, "control" if category == "Cc" else "invisible or bidi control")
    if not text.isascii():
        for found in _INVISIBLE.finditer(text):
            if not _selects_emoji(text, found.start()):
                _refuse_hidden(found.group(), "invisible")
    return text


def _refuse_hidden(char: str, kind: str) -> NoReturn:
    raise ValueError(f"must not contain {kind} characters (U+{ord(char):04X})")


def _selects_emoji(text: str, index: int) -> bool:
    """Whether ``text[index]`` is a variation selector choosing how the symbol
    before it looks (❤️), or in a keycap (1️⃣)."""
    if text[index] not in "\ufe0e\ufe0f" or index == 0:
        return False
    keycap = text[index + 1 : index + 2] == "\u20e3"
    return keycap or unicodedata.category(text[index - 1]) in ("So", "Sk")


def _joins_emoji(text: str, index: int) -> bool:
    """Whether ``text[index]`` is a zero-width joiner inside an emoji sequence
    (👩‍💻, 🏳️‍🌈): between two symbols it hides nothing, while between letters
    (``"al\u200dice"``) it would make one name look like another."""
    if text[index] != "\u200d" or index == 0 or index + 1 == len(text):
        return False
    before = text[index - 1]
    if before == "\ufe0f" and index > 1:  # an emoji's variation selector
        before = text[index - 2]
    return (
        unicodedata.category(before) in ("So", "Sk")
        and unicodedata.category(text[index + 1]) == "So"
    )


def _field_error(why: ValueError, path: str) -> ValueError:
    """A ``__post_init__`` refusal in msgspec's own words, so :func:`_describe`
    names the field as it does for msgspec's checks (``payload.to_user_id: ...``)."""
    return ValueError(f"{why} - at `$.{path}`")


def checked_name(text: str, max_chars: int, path: str) -> str:
    """:func:`visible_name` for a struct's field: a refusal names the field."""
    try:
        return visible_name(text, max_chars)
    except ValueError as exc:
        raise _field_error(exc, path) from None


#: A room topic's length, in characters.
TOPIC_MAX_CHARS = 250


def topic_text(text: str) -> str:
    """A room topic in NFC: any text on one or more lines, but no control,
    invisible or bidi control characters (as for names); may be empty."""
    text = unicodedata.normalize("NFC", text)
    for ch in text:
        # Newlines are the topic's own; a zero-width joiner only joins emoji.
        if ch not in "\n\u200d" and unicodedata.category(ch) in ("Cc", "Cf"):
            raise ValueError(f"contains the character U+{ord(ch):04X}, which shows as nothing")
    return text

"""The rules of search (roomcast.core.search): folding, documents, what a
query means and how a hit is shown. Both stores match with these, so what is
pinned here is what SQLite and PostgreSQL find."""

from __future__ import annotations

import pytest

from roomcast.core.search import (
    QUERY_MAX_CHARS,
    SUBSTRING_RANK,
    WORD_RANK,
    QueryError,
    document,
    fold,
    matches,
    parse_query,
    rank_of,
    snippet,
)


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("Café", "cafe"),
        ("CAFÉ", "cafe"),
        ("naïve Ünïcödé", "naive unicode"),
        ("Straße", "strasse"),
        ("\uff21\uff22\uff23\uff11\uff12\uff13", "abc123"),  # full-width ABC123
        ("ﬁle", "file"),  # a ligature
        ("İstanbul", "istanbul"),
        ("バッタ", "バッタ"),  # kana keep their voicing marks
        ("한국어", "한국어"),  # Hangul syllables stay whole
        ("Ελληνικά", "ελληνικα"),
    ],
)
def test_fold(text: str, folded: str) -> None:
    assert fold(text) == folded


def test_documents() -> None:
    assert document("see foo.png") == "  see  foo  png"
    assert document("PLT-3699") == "  plt  3699"
    assert document("snake_case") == "  snake  case"
    assert document("鈴虫が") == "  鈴虫  虫が  が"
    assert document("東京2024年") == "  東京  京  2024  年"
    assert document("!!! ... ???") == ""
    assert document("") == ""


def test_a_query_is_terms_and_filters() -> None:
    query = parse_query('  Deploy  "went FINE"  from:@bob  in:"team chat"  ')
    assert [t.text for t in query.terms] == ["deploy", "went fine"]
    assert query.substring_needles == ("deploy", "went  fine")
    assert query.word_needles == ("  deploy", "  went  fine")
    assert (query.from_user, query.in_room) == ("bob", "team chat")
    assert parse_query("in:#12 x").in_room == "12"
    # A repeated term counts once; "from:" alone is a word.
    assert len(parse_query("a a A").terms) == 1
    assert [t.text for t in parse_query("from: x").terms] == ["from:", "x"]


@pytest.mark.parametrize("q", ["", "   ", "*", '""', "- : ' ^", "from:bob", "in:general"])
def test_a_query_without_words_is_refused(q: str) -> None:
    with pytest.raises(QueryError, match="give a word to search for"):
        parse_query(q)


def test_query_bounds() -> None:
    parse_query("a" * QUERY_MAX_CHARS)
    with pytest.raises(QueryError, match="longer than 500"):
        parse_query("a" * (QUERY_MAX_CHARS + 1))
    with pytest.raises(QueryError, match="more than 10 words"):
        parse_query(" ".join(f"w{n}" for n in range(11)))


@pytest.mark.parametrize(
    ("q", "text", "found", "rank"),
    [
        ("deploy", "deployment done", True, WORD_RANK),
        ("ploy", "deployment done", True, SUBSTRING_RANK),
        ("foo", "foo.png", True, WORD_RANK),
        ("3699", "PLT-3699", True, WORD_RANK),
        ("t-shirt", "a T-Shirt", True, WORD_RANK),
        ("t shirt", "a T-Shirt", True, WORD_RANK),
        ("db.json", "db.json", True, WORD_RANK),
        ("cafe", "Café", True, WORD_RANK),
        ("鈴虫", "鈴虫が鳴く", True, WORD_RANK),
        ("虫が", "鈴虫が鳴く", True, WORD_RANK),
        ("鳴", "鈴虫が鳴く", True, WORD_RANK),
        ("バッタ", "あのバッタ", True, WORD_RANK),
        ("ok", "ok then", True, WORD_RANK),
        ("ok", "took", False, 0),  # two letters: only the start of a word
        ("ee", "see", False, 0),
        ('"went fine"', "it went fine", True, WORD_RANK),
        ('"fine went"', "it went fine", False, 0),
        ("deploy friday", "deploy on friday", True, WORD_RANK),
        ("deploy monday", "deploy on friday", False, 0),
        ("redeploy", "deploy", False, 0),
    ],
)
def test_what_matches_and_how_it_ranks(q: str, text: str, found: bool, rank: int) -> None:
    query = parse_query(q)
    doc = document(text)
    assert matches(doc, query) is found
    if found:
        assert rank_of(doc, query) == rank


def test_snippets_are_escaped_text_with_marks() -> None:
    assert (
        snippet("<b>Café</b> & co", parse_query("cafe"))
        == "&lt;b&gt;<mark>Café</mark>&lt;/b&gt; &amp; co"
    )
    assert snippet("a T-Shirt here", parse_query("t-shirt")) == "a <mark>T-Shirt</mark> here"
    # A short word marks only where words start; a substring where it is.
    assert snippet("ok took", parse_query("ok")) == "<mark>ok</mark> took"
    assert snippet("deployment", parse_query("ploy")) == "de<mark>ploy</mark>ment"
    assert snippet("鈴虫が鳴く", parse_query("鳴")) == "鈴虫が<mark>鳴</mark>く"
    # A long message is cut around its first match, at a word where one is near.
    long = "x " * 100 + "needle " + "y " * 200
    cut = snippet(long, parse_query("needle"))
    assert cut.startswith("…") and cut.endswith("…") and "<mark>needle</mark>" in cut
    assert len(cut) < 260
    assert snippet("line one\nline two", parse_query("two")) == "line one line <mark>two</mark>"

"""Search in the stores (SQLite and PostgreSQL, the fixtures of
``test_stores.py``): what each kind of query finds, the same on both engines
and the same as the rules' own model; who may find what; edits, deletes,
paging, hostile input, and the migration that indexes an existing database."""

from __future__ import annotations

import asyncio
import random
import tempfile

import pytest

from roomcast.adapters import sqlite_store
from roomcast.adapters.postgres_store import PostgresStore
from roomcast.adapters.sql import search as sql_search
from roomcast.adapters.sqlite_store import INDEX_CHUNK, INDEX_DELAY, SQLiteStore
from roomcast.core.search import (
    SUBSTRING_RANK,
    WORD_RANK,
    Query,
    SearchFilters,
    Tier,
    document,
    matches,
    parse_query,
    rank_of,
)
from roomcast.ports.store import (
    DeleteMessage,
    EditMessage,
    InsertMessage,
    Outcome,
    StoreUnavailable,
)
from tests.integration.test_stores import (
    Database,
    Store,
    database_before,
    db,
    pg,
    postgres_schema,
    store,
)

__all__ = ["db", "pg", "store"]  # fixtures, used by name

NONE = SearchFilters()


async def index_all(store: Store) -> None:
    """SQLite indexes new messages after their commit: do it now (on
    PostgreSQL the index is written with each message)."""
    if isinstance(store, SQLiteStore):
        while await store.catch_up_search() >= INDEX_CHUNK:
            pass


async def post(store: Store, room_id: int, text: str, user: str = "al", at: int = 100) -> int:
    result = await store.run(InsertMessage(room_id, user, text, "text", at))
    assert result.outcome is Outcome.DONE, result
    return result.message_id


async def found(
    store: Store,
    q: str,
    viewer: str = "al",
    filters: SearchFilters = NONE,
    tier: str = Tier.ALL,
    below: int | None = None,
    limit: int = 100,
) -> list[str]:
    hits = await store.search(viewer, parse_query(q), filters, tier, below, limit)
    return [message.content for message, _ in hits]


#: The cases the big systems fail, each with what it must find.
CORPUS = [
    "Café au lait at nine",
    "CAFE closed today",
    "see foo.png for the layout",
    "PLT-3699 is fixed",
    "who ordered the t-shirt?",
    "db.json is broken again",
    "deployment went fine",
    "we deploy on friday",
    "鈴虫が鳴いている",
    "バッタとコオロギ",
    "한국어 검색 테스트",
    "nothing to see here",
]
EXPECTED = {
    "cafe": {"Café au lait at nine", "CAFE closed today"},
    "CAFÉ": {"Café au lait at nine", "CAFE closed today"},
    "foo": {"see foo.png for the layout"},
    "foo.png": {"see foo.png for the layout"},
    "3699": {"PLT-3699 is fixed"},
    "plt-3699": {"PLT-3699 is fixed"},
    "t-shirt": {"who ordered the t-shirt?"},
    "shirt": {"who ordered the t-shirt?"},
    "db.json": {"db.json is broken again"},
    "deploy": {"deployment went fine", "we deploy on friday"},
    "ploy": {"deployment went fine", "we deploy on friday"},
    "鈴虫": {"鈴虫が鳴いている"},
    "鳴いて": {"鈴虫が鳴いている"},
    "虫": {"鈴虫が鳴いている"},
    "バッタ": {"バッタとコオロギ"},
    "コオロギ": {"バッタとコオロギ"},
    "검색": {"한국어 검색 테스트"},
    '"went fine"': {"deployment went fine"},
    '"fine went"': set(),
    "deploy friday": {"we deploy on friday"},
    "fo": {"see foo.png for the layout"},  # two letters: the start of words only
    "fr": {"we deploy on friday"},
    "ee": set(),  # two letters inside words: too short for a substring
}


async def test_each_kind_of_query_finds_what_people_type(store: Store) -> None:
    room = await store.create_room("r", True, (), "al", 0)
    for text in CORPUS:
        await post(store, room.id, text)
    for q, expected in EXPECTED.items():
        assert set(await found(store, q)) == expected, q
    # The same once SQLite's index holds them, and with half of them in it.
    await index_all(store)
    for q, expected in EXPECTED.items():
        assert set(await found(store, q)) == expected, q
    for text in CORPUS:
        await post(store, room.id, text)
    for q, expected in EXPECTED.items():
        assert len(await found(store, q)) == 2 * len(expected), q


async def test_words_rank_ahead_of_substrings(store: Store) -> None:
    room = await store.create_room("r", True, (), "al", 0)
    inside = await post(store, room.id, "redeployed it")
    word = await post(store, room.id, "deploy it")
    query = parse_query("deploy")
    words = await store.search("al", query, NONE, Tier.WORDS, None, 10)
    substrings = await store.search("al", query, NONE, Tier.SUBSTRINGS, None, 10)
    assert [(m.id, rank_of(doc, query)) for m, doc in words] == [(word, WORD_RANK)]
    assert [(m.id, rank_of(doc, query)) for m, doc in substrings] == [(inside, SUBSTRING_RANK)]
    # Newest first among all.
    assert await found(store, "deploy") == ["deploy it", "redeployed it"]


@pytest.mark.parametrize(("seed", "recent"), [(3, None), (17, None), (5, 7)])
async def test_both_engines_find_what_the_rules_say(
    seed: int, recent: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A random corpus in both engines: every query finds exactly the messages
    whose documents match by the rules' own definition, on each engine, and
    counts them so; with ``recent``, PostgreSQL's searches read that many
    newest documents in order and the rest through its index (RECENT_DOCUMENTS),
    and the two parts join without a gap or a duplicate."""
    if recent is not None:
        monkeypatch.setattr(sql_search, "RECENT_DOCUMENTS", recent)
    rng = random.Random(seed)
    pieces = ["deploy", "Café", "foo.png", "PLT-3699", "鈴虫", "が", "鳴く", "t-shirt", "ß", "ok"]
    pieces += ["x-ray", "Ünïcödé", "バッタ", "db.json", "naïve", "go", "redeploy", "国"]
    texts = [" ".join(rng.choice(pieces) for _ in range(rng.randint(1, 5))) for _ in range(150)]
    queries = {rng.choice(pieces) for _ in range(25)} | {"ploy", "cafe", "ss", "鈴", "o"}
    queries |= {f"{rng.choice(pieces)} {rng.choice(pieces)}" for _ in range(10)}
    results: dict[str, dict[str, list[str]]] = {}
    async with postgres_schema() as url:
        with tempfile.TemporaryDirectory() as folder:
            for kind, opened in (
                ("sqlite", SQLiteStore(f"sqlite:///{folder}/rc.db", lambda: 1000)),
                ("postgres", PostgresStore(url, lambda: 1000)),
            ):
                await opened.start()
                try:
                    room = await opened.create_room("r", True, (), "al", 0)
                    for text in texts[:100]:
                        await post(opened, room.id, text)
                    await index_all(opened)  # SQLite: a hundred indexed, fifty not
                    for text in texts[100:]:
                        await post(opened, room.id, text)
                    results[kind] = {q: await found(opened, q, limit=1000) for q in queries}
                    for q in queries:  # and by pages of 4, the last ones across the parts
                        paged: list[str] = []
                        below = None
                        while hits := await opened.search(
                            "al", parse_query(q), NONE, Tier.ALL, below, 4
                        ):
                            paged += [message.content for message, _ in hits]
                            below = hits[-1][0].id
                        assert paged == results[kind][q], (kind, q)
                        for cap in (3, 1000):
                            count = await opened.search_count("al", parse_query(q), NONE, cap)
                            assert count == min(cap, len(results[kind][q])), (kind, q, cap)
                    await index_all(opened)
                    indexed = {q: await found(opened, q, limit=1000) for q in queries}
                    assert indexed == results[kind]
                finally:
                    await opened.close()
    for q in queries:
        query = parse_query(q)
        model = [t for t in reversed(texts) if matches(document(t), query)]
        assert results["sqlite"][q] == model, q
        assert results["postgres"][q] == model, q


async def test_only_rooms_the_viewer_may_read_now(store: Store) -> None:
    mine = await store.create_room("mine", True, ("bo",), "al", 0)
    theirs = await store.create_room("theirs", True, ("cy",), "dee", 0)
    public = await store.create_room("public", False, (), "dee", 0)
    for room_id in (mine.id, theirs.id, public.id):
        await post(
            store, room_id, f"quokka in {room_id}", user="dee" if room_id != mine.id else "al"
        )
    assert await found(store, "quokka", "bo") == [f"quokka in {public.id}", f"quokka in {mine.id}"]
    assert await found(store, "quokka", "cy") == [
        f"quokka in {public.id}",
        f"quokka in {theirs.id}",
    ]
    # Removed from a private room: nothing of it; banned from a public one: nothing of it.
    await store.remove_member(mine.id, "bo", None, 5)
    assert await found(store, "quokka", "bo") == [f"quokka in {public.id}"]
    await store.remove_member(public.id, "bo", "dee", 6)
    assert await found(store, "quokka", "bo") == []
    assert await found(store, "quokka", "bo", SearchFilters(room_id=theirs.id)) == []
    # Counts follow the same rules (PostgreSQL counts on the index's own rows).
    assert await store.search_count("bo", parse_query("quokka"), NONE, 100) == 0
    assert await store.search_count("cy", parse_query("quokka"), NONE, 100) == 2
    in_theirs = SearchFilters(room_id=theirs.id)
    assert await store.search_count("cy", parse_query("quokka"), in_theirs, 100) == 1
    # An archived public room is its members' only.
    await store.join_public(public.id, "cy", 7)
    await store.archive_room(public.id, 8)
    assert await found(store, "quokka", "eve") == []
    assert f"quokka in {public.id}" in await found(store, "quokka", "cy")


@pytest.mark.parametrize("indexed", [True, False])
async def test_deleted_and_edited_messages(store: Store, indexed: bool) -> None:
    room = await store.create_room("r", True, (), "al", 0)
    gone = await post(store, room.id, "secret plans")
    kept = await post(store, room.id, "old wording")
    if indexed:
        await index_all(store)
    deleted = await store.run(DeleteMessage(gone, "al", frozenset({room.id}), 5))
    assert deleted.outcome is Outcome.DONE
    assert await found(store, "secret") == []
    assert await store.search_count("al", parse_query("secret"), NONE, 10) == 0
    edit = EditMessage(kept, "al", frozenset({room.id}), "new phrasing", 6)
    assert (await store.run(edit)).outcome is Outcome.DONE
    assert await found(store, "wording") == []
    assert await found(store, "phrasing") == ["new phrasing"]
    # A refused edit changes nothing in the index either.
    refused = await store.run(EditMessage(kept, "bo", frozenset({room.id}), "hijack", 7))
    assert refused.outcome is Outcome.FORBIDDEN
    assert await found(store, "hijack") == [] and await found(store, "phrasing") == ["new phrasing"]
    await index_all(store)
    assert await found(store, "secret") == [] and await found(store, "wording") == []
    assert await found(store, "phrasing") == ["new phrasing"]
    # Edited again once indexed: one hit for what both texts say, none for the
    # earlier one, and the count agrees (SQLite's index keeps every text).
    again = EditMessage(kept, "al", frozenset({room.id}), "new wording again", 8)
    assert (await store.run(again)).outcome is Outcome.DONE
    await index_all(store)
    assert await found(store, "new") == ["new wording again"]
    assert await found(store, "phrasing") == []
    assert await store.search_count("al", parse_query("new"), NONE, 10) == 1
    assert await store.search_count("al", parse_query("phrasing"), NONE, 10) == 0


async def test_filters_narrow_the_hits(store: Store) -> None:
    room = await store.create_room("Team Chat", True, ("bo",), "al", 0)
    other = await store.create_room("other", True, ("bo",), "al", 0)
    a = await post(store, room.id, "lunch plans", user="al", at=1000)
    b = await post(store, room.id, "lunch here", user="bo", at=2000)
    reply = await store.run(InsertMessage(room.id, "bo", "lunch reply", "text", 3000, thread_id=a))
    await post(store, other.id, "lunch elsewhere", user="al", at=4000)
    assert len(await found(store, "lunch")) == 4
    assert await found(store, "lunch", filters=SearchFilters(from_user="bo")) == [
        "lunch reply",
        "lunch here",
    ]
    assert await found(store, "lunch", filters=SearchFilters(room_name="team chat")) == [
        "lunch reply",
        "lunch here",
        "lunch plans",
    ]
    assert await found(store, "lunch", filters=SearchFilters(thread_id=a)) == [
        "lunch reply",
        "lunch plans",
    ]
    window = SearchFilters(after=1000, before=4000)
    assert await found(store, "lunch", filters=window) == ["lunch reply", "lunch here"]
    assert reply.outcome is Outcome.DONE and b > a


async def test_pages_have_no_duplicates_and_no_gaps(store: Store) -> None:
    room = await store.create_room("r", True, (), "al", 0)
    ids = [await post(store, room.id, f"page item {n}") for n in range(12)]
    await index_all(store)  # pages cross from unindexed messages to indexed ones
    ids += [await post(store, room.id, f"page item {n}") for n in range(12, 23)]
    seen: list[int] = []
    below = None
    while True:
        hits = await store.search("al", parse_query("item"), NONE, Tier.ALL, below, 5)
        seen += [m.id for m, _ in hits]
        if len(hits) < 5:
            break
        below = hits[-1][0].id
    assert seen == sorted(ids, reverse=True)
    assert await store.search_count("al", parse_query("item"), NONE, 10) == 10
    assert await store.search_count("al", parse_query("item"), NONE, 1000) == 23


HOSTILE = ['"', "*", "NEAR(", "-", ":", "'", '"unbalanced', "a' OR '1'='1", "foo AND", "^", "%_\\"]


async def test_syntax_in_queries_is_text_to_find(store: Store) -> None:
    room = await store.create_room("r", True, (), "al", 0)
    await post(store, room.id, "NEAR(a b) and 100% sure")
    await post(store, room.id, "the unbalanced one")
    for q in HOSTILE:
        try:
            query = parse_query(q)
        except ValueError:
            continue  # nothing to search for: the HTTP layer says so (tested there)
        hits = await store.search("al", query, NONE, Tier.ALL, None, 10)
        model = [m.content for m, doc in hits if matches(doc, query)]
        assert [m.content for m, _ in hits] == model, q
    assert await found(store, "NEAR(") == ["NEAR(a b) and 100% sure"]
    assert await found(store, '"unbalanced') == ["the unbalanced one"]
    assert await found(store, "100%") == ["NEAR(a b) and 100% sure"]


async def test_an_existing_database_is_indexed_by_the_migration(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [
        "INSERT INTO rooms (id, name, private, created_by, created_at, last_seq) "
        "VALUES (1, 'r', 1, 'al', 0, 3)",
        "INSERT INTO room_members (room_id, user_id, role, joined_at) VALUES (1, 'al', 'owner', 0)",
        "INSERT INTO messages (room_id, user_id, content, type, created_at, seq) VALUES "
        "(1, 'al', 'Café from before', 'text', 1, 1), (1, 'al', '鈴虫 before', 'text', 2, 2)",
        "INSERT INTO messages (room_id, user_id, content, type, created_at, seq, deleted_at) "
        "VALUES (1, 'al', NULL, 'text', 3, 3, 4)",
    ]
    await database_before(db, monkeypatch, 11, rows)
    upgraded = db.open()
    await upgraded.start()
    try:
        assert await found(upgraded, "cafe") == ["Café from before"]
        assert await found(upgraded, "鈴虫") == ["鈴虫 before"]
        assert await found(upgraded, "before") == ["鈴虫 before", "Café from before"]
        new = await post(upgraded, 1, "after the migration")
        assert await found(upgraded, "migration") == ["after the migration"] and new > 0
    finally:
        await upgraded.close()


def test_query_model_terms() -> None:
    """The needles a query is made of (what both engines look up)."""
    query: Query = parse_query('deploy "t-shirt" from:@al in:"team chat" 鈴虫 o')
    assert query.from_user == "al" and query.in_room == "team chat"
    assert query.substring_needles == ("deploy", "t  shirt", "鈴虫  虫", "  o")
    assert query.word_needles == ("  deploy", "  t  shirt", "  鈴虫  虫", "  o")


async def test_sqlite_indexes_new_messages_soon_after_their_commit(tmp_path: object) -> None:
    """Within INDEX_DELAY of a message, or at once for a chunk's worth; the
    index's end only moves forward, over deleted messages too."""
    import asyncio
    import sqlite3

    path = f"{tmp_path}/rc.db"
    store = SQLiteStore(f"sqlite:///{path}", lambda: 1000)
    await store.start()

    def mark() -> int:
        with sqlite3.connect(f"{path}-search") as conn:
            return int(conn.execute("SELECT indexed_through FROM search_state").fetchone()[0])

    try:
        room = await store.create_room("r", True, (), "al", 0)
        await asyncio.sleep(0.1)  # the pass at start (what an earlier run left) is over
        first = await post(store, room.id, "soon indexed")
        assert mark() < first
        await asyncio.sleep(INDEX_DELAY + 0.3)
        assert mark() == first
        gone = await post(store, room.id, "deleted before indexing")
        await store.run(DeleteMessage(gone, "al", frozenset({room.id}), 5))
        many = [post(store, room.id, f"bulk {n}") for n in range(INDEX_CHUNK + 10)]
        ids = await asyncio.gather(*many)
        await asyncio.sleep(0.1)  # a chunk's worth starts a pass at once
        assert mark() >= min(ids)
        await asyncio.sleep(INDEX_DELAY + 0.3)
        assert mark() == max(ids)
        assert await found(store, "deleted") == []
        assert len(await found(store, "bulk", limit=INDEX_CHUNK + 20)) == INDEX_CHUNK + 10
    finally:
        await store.close()


async def _sqlite_store(path: str, timeout: float = 5.0) -> SQLiteStore:
    store = SQLiteStore(f"sqlite:///{path}", lambda: 1000, timeout=timeout)
    await store.start()
    return store


async def test_sqlite_index_file_is_rebuilt_when_it_is_not_the_databases(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Missing, made for another database, or by other documents: built again
    from the messages, and searches find the same before and after."""
    import os
    import shutil

    from roomcast.adapters import sqlite_search

    path = f"{tmp_path}/rc.db"
    store = await _sqlite_store(path)
    room = await store.create_room("r", True, (), "al", 0)
    await post(store, room.id, "kept across rebuilds")
    await index_all(store)
    await store.close()

    os.remove(f"{path}-search")  # missing
    store = await _sqlite_store(path)
    assert await found(store, "rebuilds") == ["kept across rebuilds"]
    await index_all(store)
    await store.close()

    other = f"{tmp_path}/other.db"  # another database's file, same name beside it
    store = await _sqlite_store(other)
    await store.close()
    shutil.copy(f"{other}-search", f"{path}-search")
    store = await _sqlite_store(path)
    try:
        assert await found(store, "rebuilds") == ["kept across rebuilds"]
        await index_all(store)
        assert await found(store, "rebuilds") == ["kept across rebuilds"]
    finally:
        await store.close()

    monkeypatch.setattr(sqlite_search, "DOCUMENTS_VERSION", sqlite_search.DOCUMENTS_VERSION + 1)
    store = await _sqlite_store(path)
    try:
        import sqlite3

        with sqlite3.connect(f"{path}-search") as conn:
            state = conn.execute("SELECT documents_version FROM search_state").fetchone()
        assert state[0] == sqlite_search.DOCUMENTS_VERSION
        assert await found(store, "rebuilds") == ["kept across rebuilds"]
    finally:
        await store.close()


async def test_sqlite_messages_commit_while_the_index_file_is_locked(tmp_path: object) -> None:
    """The index never holds the database's write lock: with its file locked
    by another writer, messages and edits still commit and are found."""
    import sqlite3

    path = f"{tmp_path}/rc.db"
    store = await _sqlite_store(path, timeout=0.3)
    blocker = sqlite3.connect(f"{path}-search", isolation_level=None, timeout=0)
    try:
        room = await store.create_room("r", True, (), "al", 0)
        first = await post(store, room.id, "before the lock")
        await index_all(store)
        blocker.execute("BEGIN IMMEDIATE")
        second = await post(store, room.id, "during the lock")
        edit = EditMessage(first, "al", frozenset({room.id}), "edited during the lock", 6)
        assert (await store.run(edit)).outcome is Outcome.DONE
        with pytest.raises(StoreUnavailable, match="locked"):
            await store.catch_up_search()
        assert await found(store, "lock") == ["during the lock", "edited during the lock"]
        assert await found(store, "before") == []
        blocker.execute("ROLLBACK")
        await index_all(store)
        assert await found(store, "lock") == ["during the lock", "edited during the lock"]
        assert second > first
    finally:
        blocker.close()
        await store.close()


async def test_sqlite_index_takes_any_text_and_yields_the_core(tmp_path: object) -> None:
    """The index reads and writes its batches as JSON: quotes, backslashes,
    control characters, emoji and CJK come through as they are. Its thread
    runs at a lower priority than the event loop's (Linux: nice 10), and
    FTS5 merges 16 segments at a time."""
    import os
    import sqlite3
    import sys
    import threading

    path = f"{tmp_path}/rc.db"
    store = await _sqlite_store(path)
    try:
        room = await store.create_room("r", True, (), "al", 0)
        texts = [
            'say "hi" to \\\\server\\share',
            "tab\tnew\nline \x01 bell",
            "emoji 😀 and 鈴虫 and \u2019quotes\u2019",
            "[1, \"not json\"] {'a': null}",
        ]
        for text in texts:
            await post(store, room.id, text)
        await index_all(store)
        assert await found(store, '"hi"') == [texts[0]]
        assert await found(store, "share") == [texts[0]]
        assert await found(store, "bell") == [texts[1]]
        assert await found(store, "鈴虫") == [texts[2]]
        assert await found(store, "not json") == [texts[3]]
        with sqlite3.connect(f"{path}-search") as conn:
            indexed = conn.execute("SELECT indexed_through FROM search_state").fetchone()[0]
            merge = conn.execute(
                "SELECT v FROM message_search_config WHERE k = 'automerge'"
            ).fetchone()
        assert (
            indexed
            == (await store.run(InsertMessage(room.id, "al", "x", "text", 1))).message_id - 1
        )
        assert merge == (16,)

        def nice() -> int:
            return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

        own = nice()
        index = await asyncio.get_running_loop().run_in_executor(store._index_thread, nice)
        if sys.platform == "linux":
            assert index == max(own, 10)  # raised to 10 (lowering it needs privilege)
    finally:
        await store.close()


async def test_sqlite_indexing_passes_hold_a_bounded_amount_of_text(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass reads at most INDEX_CHARACTERS of text past its first message,
    says more waits when it stops there, and the passes after it take the rest."""
    import sqlite3

    monkeypatch.setattr(sql_search, "INDEX_CHARACTERS", 100)
    monkeypatch.setattr(sqlite_store, "INDEX_DELAY", 60)  # no pass but this test's
    path = f"{tmp_path}/rc.db"
    store = await _sqlite_store(path)
    try:
        room = await store.create_room("r", True, (), "al", 0)
        await index_all(store)
        ids = [await post(store, room.id, f"long{n} " + "x" * 60) for n in range(7)]
        assert await store.catch_up_search() == INDEX_CHUNK  # two of seven: more waits
        with sqlite3.connect(f"{path}-search") as conn:
            mark = conn.execute("SELECT indexed_through FROM search_state").fetchone()[0]
        assert mark == ids[1]
        await index_all(store)
        with sqlite3.connect(f"{path}-search") as conn:
            mark = conn.execute("SELECT indexed_through FROM search_state").fetchone()[0]
        assert mark == ids[-1]
        assert len(await found(store, "xxxx")) == 7
        assert await found(store, "long6") == [f"long6 {'x' * 60}"]
    finally:
        await store.close()

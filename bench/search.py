"""What message search costs on a large history, on each database.

    .venv/bin/python bench/search.py                       # both engines, 1,000,000 messages
    .venv/bin/python bench/search.py --engine sqlite --messages 200000

For each engine this fills a fresh database with ``--messages`` messages in
``--rooms`` private rooms (English-like text with a Zipf word distribution,
identifiers such as ``PLT-3699``, ``db_12.json`` and ``v1.4.2``, and Chinese and
Japanese text), written with bulk SQL into the schema the store created. Then it
indexes them the way an upgraded database is indexed, timed: on SQLite the
index file's own thread (:meth:`SQLiteStore.catch_up_search`, as for new
messages), on PostgreSQL the migration's data step
(:func:`roomcast.adapters.sql.search.backfill`); that is the cost of the
upgrade, and the documents' cost per message. The index's size on disk is the
index file (SQLite, with its WAL) or ``pg_total_relation_size`` of the table
and its trigram index (PostgreSQL).

Then it runs searches as ``GET /api/search`` runs them (first page of 20,
``order=rank``, with the ``count_estimate`` up to 1,000) for ``reader``, a
member of ``--member-of`` of the rooms, and prints p50/p99 latency per kind of
query, each kind ``--queries`` distinct queries, each run twice after a warm-up:

* word (common / medium / rare): a word of the vocabulary by its frequency rank;
* prefix: the first four letters of a medium word; substring: four letters from
  inside one (the trigram index's own case);
* identifier: the number of a ``PLT-`` id; two words: two medium words ANDed;
* CJK 2 / CJK 3: two or three consecutive characters of a Chinese or Japanese message.

What the index adds to the hot path (every message's insert) is measured by
``bench/run.py`` side by side with the commit before it (see the README).

SQLite uses a temporary directory; PostgreSQL the schema ``bench_search`` of
``--postgres-url``'s database, dropped before and after (with ``VACUUM ANALYZE``
after the fill, as autovacuum would give it).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg

from roomcast.adapters.postgres_store import PostgresStore
from roomcast.adapters.sql import search
from roomcast.adapters.sql.dialect import POSTGRES
from roomcast.adapters.sql.steps import drive_postgres
from roomcast.adapters.sqlite_store import INDEX_CHUNK, SQLiteStore
from roomcast.core.search import SearchFilters
from roomcast.features.search import SearchOrder, search_page

SCHEMA = "bench_search"
_SYLLABLES = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"] + ["th", "st", "er", "an"]
_HAN = [chr(0x4E00 + i * 37) for i in range(600)]
_KANA = [chr(c) for c in range(0x30A2, 0x30F3)] + [chr(c) for c in range(0x3042, 0x3093)]


class Corpus:
    """Deterministic messages of three kinds, and the words to query them by."""

    def __init__(self, seed: int = 1, words: int = 20000) -> None:
        self.rng = random.Random(seed)
        rng = self.rng
        vocab: set[str] = set()
        while len(vocab) < words:
            vocab.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4))))
        # By frequency rank; sorted first, since a set of str is in a different
        # order in each process.
        self.vocab = sorted(sorted(vocab), key=lambda w: rng.random())
        # Zipf weights: rank r is drawn with weight 1 / r.
        self.cum_weights = list(itertools.accumulate(1 / (rank + 1) for rank in range(words)))
        self.plt_ids: list[int] = []
        self.cjk: list[str] = []

    def words(self, count: int) -> list[str]:
        # Cumulative weights made once: choices() would sum 20,000 weights per call.
        return self.rng.choices(self.vocab, cum_weights=self.cum_weights, k=count)

    def message(self) -> str:
        rng = self.rng
        kind = rng.random()
        if kind < 0.70:
            return " ".join(self.words(rng.randint(5, 20)))
        if kind < 0.85:
            number = rng.randint(1000, 99999)
            self.plt_ids.append(number)
            ident = rng.choice(
                [f"PLT-{number}", f"db_{number}.json", f"v{number % 9}.{number % 7}.{number % 5}"]
            )
            return f"{' '.join(self.words(4))} {ident} {' '.join(self.words(3))}"
        text = "".join(
            rng.choice(_HAN if rng.random() < 0.6 else _KANA) for _ in range(rng.randint(10, 30))
        )
        if len(self.cjk) < 5000:
            self.cjk.append(text)
        return text

    def queries(self, kind: str, count: int) -> list[str]:
        rng = random.Random(kind)
        medium = self.vocab[300:3000]
        if kind == "word common":
            return rng.sample(self.vocab[:60], count)
        if kind == "word medium":
            return rng.sample(medium, count)
        if kind == "word rare":
            return rng.sample(self.vocab[10000:], count)
        if kind == "prefix":
            return [w[:4] for w in rng.sample([w for w in medium if len(w) > 5], count)]
        if kind == "substring":
            return [w[1:5] for w in rng.sample([w for w in medium if len(w) > 6], count)]
        if kind == "identifier":
            return [str(n) for n in rng.sample(self.plt_ids, count)]
        if kind == "two words":
            return [
                f"{a} {b}"
                for a, b in zip(rng.sample(medium, count), rng.sample(medium, count), strict=True)
            ]
        size = 2 if kind == "CJK 2" else 3
        picked = []
        for text in rng.sample(self.cjk, count):
            at = rng.randrange(len(text) - size)
            picked.append(text[at : at + size])
        return picked


KINDS = [
    "word common",
    "word medium",
    "word rare",
    "prefix",
    "substring",
    "identifier",
    "two words",
    "CJK 2",
    "CJK 3",
]


def rows(corpus: Corpus, messages: int, rooms: int) -> Iterator[tuple[Any, ...]]:
    seqs = [0] * (rooms + 1)
    for n in range(messages):
        room = n % rooms + 1
        seqs[room] += 1
        yield (room, f"u{n % 37}", corpus.message(), "text", 1_700_000_000_000 + n, seqs[room])


def with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query=urlencode([*parse_qsl(parts.query), *params.items()])))


async def fill_sqlite(
    store: SQLiteStore, corpus: Corpus, args: argparse.Namespace
) -> dict[str, float]:
    conn = store._w()  # the writer, between transactions: the bench owns the store
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO rooms (id, name, private, created_by, created_at) VALUES (?, ?, 1, 'u0', 0)",
        [(r, f"room {r}") for r in range(1, args.rooms + 1)],
    )
    conn.executemany(
        "INSERT INTO room_members (room_id, user_id, role, joined_at) "
        "VALUES (?, 'reader', 'member', 0)",
        [(r,) for r in range(1, args.member_of + 1)],
    )
    conn.executemany(
        "INSERT INTO messages (room_id, user_id, content, type, created_at, seq) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        rows(corpus, args.messages, args.rooms),
    )
    conn.execute("COMMIT")
    # As the store indexes new messages (and an upgraded database's history):
    # the index file's own thread, INDEX_CHUNK messages per transaction.
    started = time.perf_counter()
    while await store.catch_up_search() >= INDEX_CHUNK:
        pass
    took = time.perf_counter() - started
    size = sum(p.stat().st_size for p in Path(store.path).parent.glob("*-search*"))
    return {"index_s": took, "index_mb": size / 2**20}


async def fill_postgres(url: str, corpus: Corpus, args: argparse.Namespace) -> dict[str, float]:
    conn = await asyncpg.connect(url)
    try:
        await conn.executemany(
            "INSERT INTO rooms (id, name, private, created_by, created_at) "
            "VALUES ($1, $2, 1, 'u0', 0)",
            [(r, f"room {r}") for r in range(1, args.rooms + 1)],
        )
        await conn.executemany(
            "INSERT INTO room_members (room_id, user_id, role, joined_at) "
            "VALUES ($1, 'reader', 'member', 0)",
            [(r,) for r in range(1, args.member_of + 1)],
        )
        await conn.copy_records_to_table(
            "messages",
            records=list(rows(corpus, args.messages, args.rooms)),
            columns=["room_id", "user_id", "content", "type", "created_at", "seq"],
            schema_name=SCHEMA,
        )
        await conn.execute(
            "UPDATE rooms SET last_seq = "
            "(SELECT max(seq) FROM messages m WHERE m.room_id = rooms.id)"
        )
        started = time.perf_counter()
        async with conn.transaction():
            last, moved = -1, 0
            while moved != last:
                last = moved
                moved = await drive_postgres(conn, search.backfill(POSTGRES, last))
        took = time.perf_counter() - started
        await conn.execute("VACUUM ANALYZE")
        size = await conn.fetchval("SELECT pg_total_relation_size('message_search')")
        return {"index_s": took, "index_mb": size / 2**20}
    finally:
        await conn.close()


async def measure(
    store: SQLiteStore | PostgresStore, corpus: Corpus, args: argparse.Namespace
) -> dict[str, tuple[float, float, float]]:
    found: dict[str, tuple[float, float, float]] = {}
    for kind in KINDS:
        queries = corpus.queries(kind, args.queries)
        for q in queries[:3]:
            await search_page(store, "reader", q, SearchFilters(), SearchOrder.RANK, 20, None)
        times: list[float] = []
        hits: list[int] = []
        for _ in range(2):
            for q in queries:
                started = time.perf_counter()
                page = await search_page(
                    store, "reader", q, SearchFilters(), SearchOrder.RANK, 20, None
                )
                times.append((time.perf_counter() - started) * 1000)
                hits.append(page.count_estimate)
        times.sort()
        p99 = times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]
        found[kind] = (statistics.median(times), p99, statistics.median(hits))
    return found


async def run_engine(engine: str, args: argparse.Namespace) -> None:
    corpus = Corpus()
    started = time.perf_counter()
    if engine == "sqlite":
        folder = tempfile.TemporaryDirectory()
        store: SQLiteStore | PostgresStore = SQLiteStore(
            f"sqlite:///{folder.name}/search.db", lambda: 0
        )
        await store.start()
        fill = await fill_sqlite(store, corpus, args)  # type: ignore[arg-type]
    else:
        admin = await asyncpg.connect(args.postgres_url)
        await admin.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        url = with_query(args.postgres_url, search_path=SCHEMA)
        store = PostgresStore(url, lambda: 0)
        await store.start()
        fill = await fill_postgres(url, corpus, args)
    filled = time.perf_counter() - started
    try:
        results = await measure(store, corpus, args)
    finally:
        await store.close()
        if engine == "sqlite":
            folder.cleanup()
        else:
            await admin.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
            await admin.close()
    print(
        f"\n## {engine}: {args.messages:,} messages in {args.rooms} rooms, "
        f"reader in {args.member_of}"
    )
    print(
        f"fill and index {filled:.0f} s; index built in {fill['index_s']:.1f} s "
        f"({fill['index_s'] / args.messages * 1e6:.1f} µs/message); "
        f"index size {fill['index_mb']:.0f} MiB"
    )
    print(f"{'query':<14} {'p50 ms':>8} {'p99 ms':>8} {'hits (median, to 1000)':>24}")
    for kind, (p50, p99, hits) in results.items():
        print(f"{kind:<14} {p50:8.2f} {p99:8.2f} {hits:24.0f}")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--rooms", type=int, default=200)
    parser.add_argument("--member-of", type=int, default=50)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    for engine in ["sqlite", "postgres"] if args.engine == "both" else [args.engine]:
        asyncio.run(run_engine(engine, args))


if __name__ == "__main__":
    main()

"""Conversations in the stores (SQLite and PostgreSQL, the fixtures of
``test_stores.py``): what is counted as unread, markers, mentions kept,
notifications made and taken back, thread summaries under concurrency, and
the migration of an existing database."""

from __future__ import annotations

import asyncio
import random

import pytest

from roomcast.ports.store import (
    DeleteMessage,
    EditMessage,
    InsertMessage,
    MarkRead,
    Outcome,
    ReadNotifications,
    Result,
)
from roomcast.protocol import UNREAD_COUNT_LIMIT
from tests.integration.test_stores import Database, Store, database_before, db, pg, store

__all__ = ["db", "pg", "store"]  # fixtures, used by name


async def post(store: Store, room_id: int, user: str, text: str = "hi", **extra: object) -> Result:
    result = await store.run(InsertMessage(room_id, user, text, "text", 100, **extra))  # type: ignore[arg-type]
    assert result.outcome is Outcome.DONE, result
    return result


async def counts(store: Store, user: str) -> dict[int, tuple[int, int, int, int]]:
    return {
        c.room_id: (c.unread, c.mentions, c.last_read_id, c.last_message_id)
        for c in await store.unread(user)
    }


async def test_unread_counts_what_others_sent_after_the_marker(store: Store) -> None:
    room = await store.create_room("r", True, ("bo",), "al", 0)
    mine = await post(store, room.id, "bo", "my own")
    one = await post(store, room.id, "al", "one")
    two = await post(store, room.id, "al", "two", mentions=("bo", "nobody", "al"))
    assert two.mentions == ("bo",)  # a member, not the author; others dropped
    root = await post(store, room.id, "al", "root")
    await post(store, room.id, "al", "reply", thread_id=root.message_id, mentions=("bo",))
    # Own messages and replies are not counted; both mentions are.
    assert (await counts(store, "bo"))[room.id] == (3, 2, 0, root.message_id)
    assert (await counts(store, "al"))[room.id] == (1, 0, 0, root.message_id)
    # A deleted mention leaves both counts.
    deleted = await store.run(DeleteMessage(two.message_id, "al", frozenset({room.id}), 5))
    assert [user for user, _ in deleted.retracted] == ["bo"]
    assert (await counts(store, "bo"))[room.id] == (2, 1, 0, root.message_id)
    # Reading up to "one" leaves "root".
    read = await store.run(MarkRead("bo", room.id, None, one.message_id, 7))
    assert read.added and read.read == ()
    assert (await counts(store, "bo"))[room.id] == (1, 1, one.message_id, root.message_id)
    assert mine.outcome is Outcome.DONE
    assert await store.unread("bo", [room.id, 999]) == await store.unread("bo")
    assert await store.unread("nobody") == []


async def test_a_marker_never_moves_back_and_reads_what_it_passes(store: Store) -> None:
    room = await store.create_room("r", True, ("bo",), "al", 0)
    first = await post(store, room.id, "al", "@bo", mentions=("bo",))
    second = await post(store, room.id, "al", "more")
    moved = await store.run(MarkRead("bo", room.id, None, second.message_id, 9))
    assert moved.added and [room_id for _, room_id in moved.read] == [room.id]
    for message_id in (first.message_id, second.message_id):
        again = await store.run(MarkRead("bo", room.id, None, message_id, 10))
        assert (again.outcome, again.added, again.read) == (Outcome.DONE, False, ())
    assert (await counts(store, "bo"))[room.id] == (0, 0, second.message_id, second.message_id)
    listed = await store.notifications("bo", False, None, 10)
    assert [(n.message_id, n.read_at) for n in listed] == [(first.message_id, 9)]
    assert await store.notifications("bo", True, None, 10) == []


async def test_markers_refuse_what_is_not_the_users_to_read(store: Store) -> None:
    room = await store.create_room("r", True, ("bo",), "al", 0)
    other = await store.create_room("o", True, (), "al", 0)
    root = await post(store, room.id, "al", "root")
    reply = await post(store, room.id, "al", "reply", thread_id=root.message_id)
    elsewhere = await post(store, other.id, "al", "elsewhere")
    refused = [
        (MarkRead("bo", room.id, None, elsewhere.message_id, 1), Outcome.NOT_FOUND),
        (MarkRead("bo", room.id, None, 10**9, 1), Outcome.NOT_FOUND),
        (MarkRead("bo", room.id, None, reply.message_id, 1), Outcome.NOT_FOUND),
        (MarkRead("bo", room.id, elsewhere.message_id, root.message_id, 1), Outcome.NOT_FOUND),
        (MarkRead("cy", room.id, None, root.message_id, 1), Outcome.FORBIDDEN),
    ]
    for op, outcome in refused:
        assert (await store.run(op)).outcome is outcome, op
    assert (await counts(store, "bo"))[room.id][2] == 0
    thread = await store.run(MarkRead("bo", room.id, root.message_id, reply.message_id, 1))
    assert thread.added and thread.thread_id == root.message_id
    assert not (await store.run(MarkRead("bo", room.id, root.message_id, root.message_id, 2))).added


async def test_counting_stops_at_the_limit(store: Store) -> None:
    room = await store.create_room("r", True, ("bo",), "al", 0)
    await asyncio.gather(
        *(
            store.run(InsertMessage(room.id, "al", "x", "text", 1))
            for _ in range(UNREAD_COUNT_LIMIT + 5)
        )
    )
    assert (await counts(store, "bo"))[room.id][0] == UNREAD_COUNT_LIMIT


async def test_a_new_member_starts_at_the_newest_message(store: Store) -> None:
    room = await store.create_room("r", False, (), "al", 0)
    last = await post(store, room.id, "al", "before")
    await store.join_public(room.id, "bo", 1)
    await store.add_member(room.id, "cy", "member", 2)
    for user in ("bo", "cy"):
        assert (await counts(store, user))[room.id] == (0, 0, last.message_id, last.message_id)


async def test_replies_notify_participants_and_edits_change_mentions(store: Store) -> None:
    room = await store.create_room("r", True, ("bo", "cy", "dd"), "al", 0)
    root = await post(store, room.id, "al", "root")
    bo = await post(store, room.id, "bo", "bo here", thread_id=root.message_id)
    assert [(u, n.kind) for u, n in bo.notified] == [("al", "reply")]
    assert bo.thread is not None and (bo.thread.reply_count, bo.thread.participants) == (1, ["bo"])
    cy = await post(store, room.id, "cy", "cy", thread_id=root.message_id, mentions=("bo",))
    assert [(u, n.kind) for u, n in cy.notified] == [("bo", "mention"), ("al", "reply")]
    assert cy.thread is not None and cy.thread.participants == ["cy", "bo"]
    # An edit that adds dd and drops bo: dd notified, bo's mention retracted.
    rooms = frozenset({room.id})
    edit = await store.run(EditMessage(cy.message_id, "cy", rooms, "@dd", 5, ("dd", "al")))
    assert edit.mentions == ("dd", "al")
    assert [(u, n.kind) for u, n in edit.notified] == [("dd", "mention"), ("al", "mention")]
    assert [u for u, _ in edit.retracted] == ["bo"]
    assert edit.thread is not None and edit.thread_id == root.message_id
    # "al" had a reply notification for it; mentioned now, it is a mention (one).
    kinds = [(n.message_id, n.kind) for n in await store.notifications("al", False, None, 10)]
    assert kinds == [(cy.message_id, "mention"), (bo.message_id, "reply")]
    # Reading a notification by id, once; someone else's id reads nothing.
    [dd_note] = await store.notifications("dd", False, None, 10)
    assert (await store.run(ReadNotifications("bo", (dd_note.id,), 6))).read == ()
    assert (await store.run(ReadNotifications("dd", (dd_note.id,), 6))).read == (
        (dd_note.id, room.id),
    )
    assert (await store.run(ReadNotifications("dd", (dd_note.id,), 7))).read == ()
    # A user no longer in the room sees none of its notifications.
    await store.remove_member(room.id, "dd", None, 8)
    assert await store.notifications("dd", False, None, 10) == []


async def test_thread_summaries_stay_exact_under_concurrent_replies(db: Database) -> None:
    """Two stores (two processes) reply and delete in one thread at once: the
    summary counts what is stored."""
    first, second = db.open(), db.open()
    await first.start()
    await second.start()
    try:
        room = await first.create_room("r", False, (), "al", 0)
        root = await post(first, room.id, "al", "root")
        ops = [
            InsertMessage(room.id, f"u{i % 3}", f"r{i}", "text", i, thread_id=root.message_id)
            for i in range(40)
        ]
        results = await asyncio.gather(
            *(s.run(op) for s, op in zip([first, second] * 20, ops, strict=True))
        )
        gone = [r.message_id for r in results[::4]]
        await asyncio.gather(
            *(
                (first if i % 2 else second).run(
                    DeleteMessage(m, f"u{(i * 4) % 3}", frozenset({room.id}), 50)
                )
                for i, m in enumerate(gone)
            )
        )
        [item] = await first.threads(room.id, None, 10)
        replies = await first.history(room.id, None, 100, root.message_id)
        assert item.thread.reply_count == len(replies) == 30
        assert item.thread.last_reply_id == replies[-1].id
    finally:
        await first.close()
        await second.close()


async def test_the_migration_leaves_nothing_unread_in_an_existing_database(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [
        "INSERT INTO rooms (id, name, private, created_by, created_at) VALUES (1, 'a', 1, 'al', 0)",
        "INSERT INTO room_members (room_id, user_id, role, joined_at) VALUES "
        "(1, 'al', 'owner', 0), (1, 'bo', 'member', 0)",
        "INSERT INTO messages (room_id, user_id, content, type, created_at, seq) VALUES "
        "(1, 'al', 'old', 'text', 1, 1), (1, 'al', 'older', 'text', 2, 2)",
    ]
    await database_before(db, monkeypatch, 10, rows)
    upgraded = db.open()
    await upgraded.start()
    try:
        [state] = await upgraded.unread("bo")
        assert (state.unread, state.mentions, state.last_read_id) == (0, 0, state.last_message_id)
        history = await upgraded.history(1, None, 10)
        assert [(m.content, m.thread_id, m.mentions, m.thread) for m in history] == [
            ("old", None, [], None),
            ("older", None, [], None),
        ]
    finally:
        await upgraded.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_counts_follow_any_sequence_of_sends_edits_deletes_and_reads(
    store: Store, seed: int
) -> None:
    """A random sequence of what people do, checked after every step against
    a model of the rules: timeline messages after the marker that are not the
    reader's own and not deleted, and the reader's unread mentions."""
    rnd = random.Random(seed)
    room = await store.create_room("r", True, ("bo", "cy"), "al", 0)
    rooms = frozenset({room.id})
    live: dict[int, dict[str, object]] = {}  # id -> author, thread, mentions bo
    notes: dict[int, tuple[str, bool]] = {}  # message id -> bo's (kind, read)
    marker = 0
    participants: dict[int, set[str]] = {}  # root -> authors (root's first)
    for step in range(120):
        action = rnd.choice(["post", "post", "post", "reply", "edit", "delete", "read"])
        roots = [m for m, v in live.items() if v["thread"] is None]
        if action == "reply" and not roots:
            action = "post"
        if action in ("post", "reply"):
            author = rnd.choice(["al", "cy", "bo"])
            mention = author != "bo" and rnd.random() < 0.4
            thread = rnd.choice(roots) if action == "reply" else None
            done = await post(
                store, room.id, author, f"m{step}", thread_id=thread,
                mentions=("bo",) if mention else (),
            )  # fmt: skip
            live[done.message_id] = {"author": author, "thread": thread, "bo": mention}
            if thread is None:
                participants[done.message_id] = {author}
            else:
                earlier = participants[thread]
                if mention:
                    notes[done.message_id] = ("mention", False)
                elif "bo" in earlier and author != "bo":
                    notes[done.message_id] = ("reply", False)
                earlier.add(author)
            if thread is None and mention:
                notes[done.message_id] = ("mention", False)
        elif action == "edit" and live:
            message_id = rnd.choice(list(live))
            message = live[message_id]
            if message["author"] == "bo":
                continue
            mention = not message["bo"]
            edit = EditMessage(
                message_id,
                str(message["author"]),
                rooms,
                f"e{step}",
                step,
                ("bo",) if mention else (),
            )
            assert (await store.run(edit)).outcome is Outcome.DONE
            message["bo"] = mention
            if mention:
                notes[message_id] = ("mention", False)
            elif notes.get(message_id, ("", False))[0] == "mention":
                del notes[message_id]
        elif action == "delete" and live:
            message_id = rnd.choice(list(live))
            author = str(live.pop(message_id)["author"])
            gone = await store.run(DeleteMessage(message_id, author, rooms, step))
            assert gone.outcome is Outcome.DONE
            notes.pop(message_id, None)
        elif action == "read" and roots:
            target = rnd.choice(roots)
            moved = await store.run(MarkRead("bo", room.id, None, target, step))
            assert moved.added == (target > marker)
            marker = max(marker, target)
            # Reading up to a message reads what it passes, marker moved or not.
            for message_id, (kind, _) in list(notes.items()):
                if live[message_id]["thread"] is None and message_id <= target:
                    notes[message_id] = (kind, True)
        timeline = [m for m, v in live.items() if v["thread"] is None]
        expected = (
            sum(1 for m in timeline if m > marker and live[m]["author"] != "bo"),
            sum(1 for kind, read in notes.values() if kind == "mention" and not read),
            marker,
            max(timeline, default=0),
        )
        assert (await counts(store, "bo"))[room.id] == expected, (seed, step, action)


async def test_a_mention_edited_into_a_read_message_is_read_by_reading_again(store: Store) -> None:
    room = await store.create_room("r", True, ("bo",), "al", 0)
    old = await post(store, room.id, "al", "old news")
    await store.run(MarkRead("bo", room.id, None, old.message_id, 1))
    rooms = frozenset({room.id})
    await store.run(EditMessage(old.message_id, "al", rooms, "@bo old news", 2, ("bo",)))
    assert (await counts(store, "bo"))[room.id][:2] == (0, 1)
    again = await store.run(MarkRead("bo", room.id, None, old.message_id, 3))
    assert not again.added and [room_id for _, room_id in again.read] == [room.id]
    assert (await counts(store, "bo"))[room.id][:2] == (0, 0)


async def test_a_member_who_leaves_takes_the_rooms_notifications_along(store: Store) -> None:
    room = await store.create_room("r", True, ("bo",), "al", 0)
    await post(store, room.id, "al", "@bo", mentions=("bo",))
    assert (await counts(store, "bo"))[room.id][1] == 1
    await store.remove_member(room.id, "bo", None, 1)
    await store.add_member(room.id, "bo", "member", 2)
    assert (await counts(store, "bo"))[room.id][:2] == (0, 0)
    assert await store.notifications("bo", False, None, 10) == []


async def test_only_a_root_is_read_as_its_own_thread(store: Store) -> None:
    room = await store.create_room("r", True, ("bo",), "al", 0)
    root = await post(store, room.id, "al", "root")
    reply = await post(store, room.id, "al", "reply", thread_id=root.message_id)
    as_root = MarkRead("bo", room.id, reply.message_id, reply.message_id, 1)
    assert (await store.run(as_root)).outcome is Outcome.NOT_FOUND
    assert (await store.run(MarkRead("bo", room.id, root.message_id, root.message_id, 1))).added

"""Room listing, room creation limits and room ids, on both stores (SQLite and
PostgreSQL, as in ``test_stores.py``, whose fixtures these tests share)."""

from __future__ import annotations

import asyncio

import pytest

from roomcast.core.calls import CallRecord
from roomcast.ports.store import CallsAfter, RoomLimitReached
from roomcast.protocol import MAX_ID
from tests.integration.test_stores import Database, Store, database_before, db, pg, store

__all__ = ["db", "pg", "store"]  # fixtures, used by name


async def test_rooms_are_listed_in_pages_of_visible_rooms(store: Store) -> None:
    public = [await store.create_room(f"room {i}", False, (), "al", 0) for i in range(7)]
    mine = await store.create_room("mine", True, ("bo",), "al", 0)
    theirs = await store.create_room("theirs", True, ("cy",), "cy", 0)
    everyone = [room.id for room in public]

    async def pages(user: str | None, limit: int) -> list[list[int]]:
        found: list[list[int]] = []
        after = 0
        while page := await store.list_rooms(user, after, limit):
            found.append([room.id for room in page])
            after = page[-1].id
        return found

    assert await pages(None, 3) == [everyone[:3], everyone[3:6], everyone[6:]]
    assert [i for page in await pages("bo", 2) for i in page] == [*everyone, mine.id]
    assert [i for page in await pages("cy", 100) for i in page] == [*everyone, theirs.id]
    later = await store.list_rooms("cy", public[5].id, 2)
    assert [r.id for r in later] == [*everyone[6:], theirs.id]
    assert await store.list_rooms("cy", theirs.id, 5) == []


async def test_a_listed_private_room_shows_its_first_members_and_counts_all(
    store: Store,
) -> None:
    members = tuple(f"m{i:02d}" for i in range(12))
    room = await store.create_room("big", True, ("al", *members), "al", 0)
    assert room.member_count == 13 and len(room.members) == 13  # every one, as created
    [listed] = await store.list_rooms("m11", 0, 10, members_limit=5)
    assert listed.members == ("al", "m00", "m01", "m02", "m03")
    assert listed.member_count == 13
    [public] = [await store.create_room("open", False, (), "al", 0)]
    assert (public.members, public.member_count) == ((), 0)


async def test_room_names_filter_with_ascii_letters_in_either_case(store: Store) -> None:
    names = ["General", "GENERAL talk", "Café", "CAFÉ", "Ünïcode", "x%y", "x_y"]
    for name in names:
        await store.create_room(name, False, (), "al", 0)

    async def named(text: str, after: int = 0) -> list[str]:
        return [room.name for room in await store.list_rooms(None, after, 100, text)]

    assert await named("general") == ["General", "GENERAL talk"]
    assert await named("eNeRaL T") == ["GENERAL talk"]
    assert await named("caf") == ["Café", "CAFÉ"]
    # Beyond ASCII, letters match as they are, on both databases alike.
    assert await named("café") == ["Café"]
    assert await named("CAFÉ") == ["CAFÉ"]
    assert await named("ünï") == []
    assert await named("Ünï") == ["Ünïcode"]
    assert await named("%") == ["x%y"]
    assert await named("_") == ["x_y"]
    first = (await store.list_rooms(None, 0, 1, "general"))[0]
    assert await named("general", after=first.id) == ["GENERAL talk"]


async def test_created_rooms_count_against_the_creator_s_limit(db: Database) -> None:
    store = db.open()
    await store.start()
    await store.create_room("a", False, (), "al", 0, max_rooms=3)
    await store.ensure_room(5, "al", 0, max_rooms=3)
    await store.create_room("b", True, ("al", "bo"), "al", 0, max_rooms=3)
    with pytest.raises(RoomLimitReached) as refused:
        await store.create_room("c", False, (), "al", 0, max_rooms=3)
    assert refused.value.limit == 3
    with pytest.raises(RoomLimitReached):
        await store.ensure_room(9, "al", 0, max_rooms=3)
    assert await store.get_room(9) is None
    assert [room.name for room in await store.list_rooms("al")] == [
        "a",
        "b",
        "Room 5",
    ]  # by id: b was numbered 2
    # A room that exists is no creation, and others have counts of their own.
    assert (await store.ensure_room(5, "al", 0, max_rooms=3)).id == 5
    await store.create_room("d", False, (), "bo", 0, max_rooms=3)
    await store.ensure_room(9, "bo", 0, max_rooms=3)
    assert (await store.ensure_room(9, "al", 0, max_rooms=3)).created_by == "bo"
    # A larger limit lets the user go on; the count survives the store.
    await store.create_room("e", False, (), "al", 0, max_rooms=4)
    await store.close()
    store = db.open()
    await store.start()
    with pytest.raises(RoomLimitReached):
        await store.create_room("f", False, (), "al", 0, max_rooms=4)
    await store.close()
    assert sorted(await db.fetch("SELECT user_id, rooms FROM room_creators")) == [
        ("al", 4),
        ("bo", 2),
    ]


async def test_two_stores_creating_rooms_for_one_user_stop_at_the_limit(db: Database) -> None:
    """As two server processes on one database (two nodes of a cluster)."""
    stores = [db.open(), db.open()]
    for each in stores:
        await each.start()

    async def create(on: Store, name: str) -> bool:
        try:
            if name.startswith("join"):
                await on.ensure_room(1000 + int(name[4:]), "al", 0, max_rooms=5)
            else:
                await on.create_room(name, False, (), "al", 0, max_rooms=5)
        except RoomLimitReached:
            return False
        return True

    names = [f"{'join' if i % 3 == 0 else 'room'}{i}" for i in range(16)]
    created = await asyncio.gather(*(create(stores[i % 2], n) for i, n in enumerate(names)))
    for each in stores:
        await each.close()
    assert sum(created) == 5
    assert await db.fetch("SELECT COUNT(*) FROM rooms WHERE created_by = 'al'") == [(5,)]
    assert await db.fetch("SELECT rooms FROM room_creators WHERE user_id = 'al'") == [(5,)]


async def test_room_ids_never_pass_the_largest_id(store: Store) -> None:
    await store.ensure_room(1, "al", 0)
    await store.ensure_room(2, "al", 0)
    await store.ensure_room(4, "al", 0)
    await store.ensure_room(MAX_ID, "al", 0)
    created = [(await store.create_room(f"r{i}", False, (), "al", 0)).id for i in range(3)]
    assert created == [3, 5, 6]  # numbered on, stepping over the ids taken
    assert max(room.id for room in await store.list_rooms(None)) == MAX_ID


async def test_an_id_near_the_top_does_not_move_the_numbering(store: Store) -> None:
    await store.ensure_room(MAX_ID - 1, "al", 0)
    assert (await store.create_room("first", False, (), "al", 0)).id == 1
    assert (await store.create_room("second", False, (), "al", 0)).id == 2


async def test_calls_are_listed_in_pages_newest_first(store: Store) -> None:
    records = [
        CallRecord(f"c{i}", "al", "bo", started_at, None, started_at + 1, "ended")
        for i, started_at in enumerate([10, 20, 20, 20, 30, 40, 40])
    ]
    for record in records:
        await store.run(record)
    everything = await store.list_calls("bo", 100)
    assert [c.call_id for c in everything] == ["c5", "c6", "c4", "c1", "c2", "c3", "c0"]
    paged = []
    after: CallsAfter | None = None
    while page := await store.list_calls("bo", 2, after):
        paged += page
        after = CallsAfter(page[-1].started_at, page[-1].call_id)
    assert paged == everything
    assert await store.list_calls("al", 3, CallsAfter(20, "c1")) == everything[4:7]
    assert await store.list_calls("cy", 3) == []


async def test_room_creators_migration_counts_the_rooms_made_before_it(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    rooms = (
        "INSERT INTO rooms (id, name, private, created_by, created_at) VALUES "
        "(1, 'a', 0, 'al', 0), (2, 'b', 0, 'al', 0), (3, 'c', 1, 'bo', 0), (4, 'd', 0, NULL, 0)"
    )
    await database_before(db, monkeypatch, 6, [rooms])
    store = db.open()
    await store.start()
    try:
        assert sorted(await db.fetch("SELECT user_id, rooms FROM room_creators")) == [
            ("al", 2),
            ("bo", 1),
        ]
        with pytest.raises(RoomLimitReached):
            await store.create_room("e", False, (), "al", 0, max_rooms=2)
        await store.create_room("e", False, (), "bo", 0, max_rooms=2)
    finally:
        await store.close()

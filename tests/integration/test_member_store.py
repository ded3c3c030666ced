"""Membership in the stores (SQLite and PostgreSQL, the fixtures of ``test_stores.py``):
roles, bans, the last owner, room settings, archived and direct rooms."""

from __future__ import annotations

import asyncio

from roomcast.ports.store import Member
from tests.integration.test_stores import Store, db, pg, store

__all__ = ["db", "pg", "store"]  # fixtures, used by name


async def test_creators_own_their_rooms_and_public_joiners_become_members_once(
    store: Store,
) -> None:
    public = await store.create_room("open", False, (), "al", 10)
    private = await store.create_room("closed", True, ("bo",), "al", 20)
    assert await store.members_page(public.id, None, 10) == [Member("al", "owner", 10)]
    assert await store.members_page(private.id, None, 10) == [
        Member("al", "owner", 20),
        Member("bo", "member", 20),
    ]
    first = await store.join_public(public.id, "cy", 30)
    again = await store.join_public(public.id, "cy", 40)  # recorded once: the first time stays
    assert first.member == again.member == Member("cy", "member", 30)
    assert [m.user_id for m in await store.members_page(public.id, "al", 10)] == ["cy"]
    opened = await store.ensure_room(777, "dd", 50)  # open mode's join of a new id
    assert await store.members_page(opened.id, None, 10) == [Member("dd", "owner", 50)]


async def test_removal_ban_unban_and_the_last_owner(store: Store) -> None:
    room = await store.create_room("run", False, (), "al", 0)
    await store.add_member(room.id, "bo", "moderator", 1)
    await store.join_public(room.id, "cy", 2)
    refused = await store.remove_member(room.id, "al", None, 3)  # the only owner
    assert (refused.changed, refused.last_owner) == (False, True)
    assert (await store.set_role(room.id, "al", "member")).last_owner
    removed = await store.remove_member(room.id, "cy", "bo", 4)  # ... and banned
    assert removed.changed and removed.member == Member("cy", "member", 2)
    state = await store.member_state(room.id, "cy")
    assert (state.member, state.banned) == (None, True)
    assert (await store.join_public(room.id, "cy", 5)).member is None  # banned: not let in
    assert await store.unban(room.id, "cy") and not await store.unban(room.id, "cy")
    assert (await store.join_public(room.id, "cy", 6)).member == Member("cy", "member", 6)
    promoted = await store.set_role(room.id, "bo", "owner")
    assert promoted.changed and promoted.member == Member("bo", "owner", 1)
    assert (await store.set_role(room.id, "al", "member")).changed  # bo owns it now
    assert not (await store.remove_member(room.id, "bo", None, 7)).changed  # the last owner
    assert (await store.remove_member(room.id, "nobody", None, 7)).changed is False


async def test_two_owners_stepping_down_at_once_leave_one(store: Store) -> None:
    room = await store.create_room("pair", False, (), "al", 0)
    await store.add_member(room.id, "bo", "owner", 1)
    first, second = await asyncio.gather(
        store.set_role(room.id, "al", "member"), store.set_role(room.id, "bo", "member")
    )
    assert sorted([first.changed, second.changed]) == [False, True]
    owners = [m for m in await store.members_page(room.id, None, 10) if m.role == "owner"]
    assert len(owners) == 1


async def test_room_settings_and_archive(store: Store) -> None:
    room = await store.create_room("old name", False, (), "al", 0)
    changed = await store.update_room(room.id, "new name", "what we do", None)
    assert changed is not None
    assert (changed.name, changed.topic, changed.private) == ("new name", "what we do", False)
    closed = await store.update_room(room.id, None, None, True)
    assert closed is not None and (closed.name, closed.private) == ("new name", True)
    archived = await store.archive_room(room.id, 99)
    assert archived is not None and archived.archived_at == 99
    assert await store.archive_room(room.id, 100) is None  # once
    assert await store.update_room(room.id, "renamed", None, None) is None
    kept = await store.get_room(room.id)
    assert kept is not None and (kept.name, kept.archived_at) == ("new name", 99)


async def test_each_pair_of_users_has_one_direct_room(store: Store) -> None:
    first = await store.direct_room("al", "bo", 5)
    assert (first.kind, first.private, first.members) == ("direct", True, ("al", "bo"))
    assert (await store.direct_room("bo", "al", 6)).id == first.id
    together = await asyncio.gather(*(store.direct_room("cy", "dd", 7) for _ in range(4)))
    assert len({room.id for room in together}) == 1
    assert together[0].id != first.id
    await store.remove_member(first.id, "bo", None, 8)  # bo leaves it
    back = await store.direct_room("al", "bo", 9)  # asking again brings both back
    assert back.id == first.id and back.members == ("al", "bo")
    roles = await store.roles("al", [first.id, together[0].id])
    assert roles == {first.id: "member"}


async def test_members_page_in_code_point_order_whatever_the_collation(store: Store) -> None:
    room = await store.create_room("cased", True, ("Zed", "adam", "bob", "Émile"), "al", 0)
    seen, after = [], None
    while True:
        page = await store.members_page(room.id, after, 1)
        if not page:
            break
        seen += [m.user_id for m in page]
        after = page[-1].user_id
    assert seen == sorted(["Zed", "adam", "al", "bob", "Émile"])


async def test_a_join_and_a_ban_at_once_never_leave_a_banned_member(store: Store) -> None:
    for i in range(10):
        room = await store.create_room(f"race {i}", False, (), "al", 0)
        await asyncio.gather(
            store.join_public(room.id, "cy", 1), store.remove_member(room.id, "cy", "al", 1)
        )
        state = await store.member_state(room.id, "cy")
        assert state.banned and state.member is None, (i, state)

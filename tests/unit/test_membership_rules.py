"""The role rules as a table: every role, action and target, allowed or not."""

from __future__ import annotations

import pytest

from roomcast.core.membership import Action, Role, last_owner_refusal, refusal

OWN, MOD, MEM = Role.OWNER, Role.MODERATOR, Role.MEMBER
ALL = (OWN, MOD, MEM)

# action -> the (actor, target) pairs that are allowed; every other pair is refused.
ALLOWED: dict[Action, set[tuple[Role, Role | None]]] = {
    Action.ADD_MEMBER: {(OWN, None), (MOD, None)},
    Action.REMOVE_MEMBER: {(OWN, OWN), (OWN, MOD), (OWN, MEM), (MOD, MEM)},
    Action.BAN: {(OWN, OWN), (OWN, MOD), (OWN, MEM), (MOD, MEM)},
    Action.UNBAN: {(OWN, None), (MOD, None)},
    Action.DELETE_ANY_MESSAGE: {(OWN, OWN), (OWN, MOD), (OWN, MEM), (MOD, MOD), (MOD, MEM)},
    Action.EDIT_ROOM: {(OWN, None), (MOD, None)},
    Action.CHANGE_ROLE: {(OWN, OWN), (OWN, MOD), (OWN, MEM)},
    Action.ARCHIVE_ROOM: {(OWN, None)},
}
TARGETED = {
    Action.REMOVE_MEMBER,
    Action.BAN,
    Action.DELETE_ANY_MESSAGE,
    Action.CHANGE_ROLE,
}

CASES = [
    (action, actor, target)
    for action in Action
    for actor in (*ALL, None)
    for target in (ALL if action in TARGETED else (None,))
]


@pytest.mark.parametrize(("action", "actor", "target"), CASES)
def test_the_role_table(action: Action, actor: Role | None, target: Role | None) -> None:
    allowed = actor is not None and (actor, target) in ALLOWED[action]
    why = refusal(actor, action, target)
    assert (why is None) == allowed, (action, actor, target, why)
    if why is not None:
        assert str(action) in why  # the refusal names what was refused


@pytest.mark.parametrize("action", list(Action))
def test_nothing_can_be_run_in_a_direct_room(action: Action) -> None:
    why = refusal(Role.OWNER, action, Role.MEMBER, direct=True)
    assert why == f"nobody may {action} in a direct room"


def test_a_room_keeps_an_owner() -> None:
    assert last_owner_refusal(owners=1, losing=True) is not None
    assert last_owner_refusal(owners=2, losing=True) is None
    assert last_owner_refusal(owners=1, losing=False) is None

"""The role rules as a table: every role × action × target, allowed or not."""

from __future__ import annotations

import pytest

from roomcast.core.membership import Action, Role, last_owner_refusal, refusal

O, M, U = Role.OWNER, Role.MODERATOR, Role.MEMBER
ALL = (O, M, U)

# action -> the (actor, target) pairs that are allowed; every other pair is refused.
ALLOWED: dict[Action, set[tuple[Role, Role | None]]] = {
    Action.ADD_MEMBER: {(O, None), (M, None)},
    Action.REMOVE_MEMBER: {(O, O), (O, M), (O, U), (M, U)},
    Action.BAN: {(O, O), (O, M), (O, U), (M, U)},
    Action.UNBAN: {(O, None), (M, None)},
    Action.DELETE_ANY_MESSAGE: {(O, O), (O, M), (O, U), (M, M), (M, U)},
    Action.EDIT_ROOM: {(O, None), (M, None)},
    Action.CHANGE_ROLE: {(O, O), (O, M), (O, U)},
    Action.ARCHIVE_ROOM: {(O, None)},
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

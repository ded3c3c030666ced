"""Who may do what in a room: the role rules, as one table.

Roles are ``owner`` (the creator, and whoever an owner promotes),
``moderator`` and ``member``. Owners and moderators run the room's
membership and content; only owners change roles or close the room. Nobody
acts on someone of a higher role, and a room always keeps an owner. Direct
rooms have two members and nothing to run: no roles, no one added, no bans.

Pure: the callers look up the roles, this says yes or why not.
"""

from __future__ import annotations

import enum
from typing import Final

from roomcast.protocol.fields import Role

__all__ = ["LAST_OWNER", "LEAST_ROLE", "RANK", "Action", "Role", "last_owner_refusal", "refusal"]


class Action(enum.StrEnum):
    ADD_MEMBER = "add a member"
    REMOVE_MEMBER = "remove a member"
    BAN = "ban a user"
    UNBAN = "unban a user"
    DELETE_ANY_MESSAGE = "delete another member's message"
    EDIT_ROOM = "edit the room"
    CHANGE_ROLE = "change a member's role"
    ARCHIVE_ROOM = "delete the room"


RANK: Final[dict[Role, int]] = {Role.MEMBER: 0, Role.MODERATOR: 1, Role.OWNER: 2}

#: The least role that may take each action.
LEAST_ROLE: Final[dict[Action, Role]] = {
    Action.ADD_MEMBER: Role.MODERATOR,
    Action.REMOVE_MEMBER: Role.MODERATOR,
    Action.BAN: Role.MODERATOR,
    Action.UNBAN: Role.MODERATOR,
    Action.DELETE_ANY_MESSAGE: Role.MODERATOR,
    Action.EDIT_ROOM: Role.MODERATOR,
    Action.CHANGE_ROLE: Role.OWNER,
    Action.ARCHIVE_ROOM: Role.OWNER,
}

#: What can be done in a direct room at all (by either of its two members).
DIRECT_ACTIONS: Final[frozenset[Action]] = frozenset()


def refusal(
    actor: Role | None,
    action: Action,
    target: Role | None = None,
    *,
    direct: bool = False,
) -> str | None:
    """Why ``actor`` (None: not a member) may not take ``action`` on a member of
    role ``target``; None when it may."""
    if direct and action not in DIRECT_ACTIONS:
        return f"nobody may {action} in a direct room"
    if actor is None:
        return f"only a member of the room may {action}"
    least = LEAST_ROLE[action]
    if RANK[actor] < RANK[least]:
        return (
            f"only the room's {least}s may {action}"
            if least is Role.OWNER
            else (f"only the room's owners and moderators may {action}")
        )
    if target is not None and RANK[target] > RANK[actor]:
        return f"a {actor} may not {action} who is a {target}"
    if (
        target is not None
        and target is actor
        and actor is Role.MODERATOR
        and action
        in (
            Action.REMOVE_MEMBER,
            Action.BAN,
        )
    ):
        return f"a moderator may not {action} who is another moderator"
    return None


#: Why the last owner may not leave, be removed or step down.
LAST_OWNER = "a room keeps at least one owner: make another member an owner first"


def last_owner_refusal(owners: int, losing: bool) -> str | None:
    """A room keeps at least one owner: the last one cannot leave, be removed or
    step down while it is the only one."""
    return LAST_OWNER if losing and owners <= 1 else None

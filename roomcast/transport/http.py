"""HTTP API: health, rooms, room users, message history, the AsyncAPI document.

Authentication is the same as on the WebSocket: ``Authorization: Bearer`` when
a secret is configured, otherwise open mode's ``?user_id=``. Errors use the
WebSocket error codes in ``{"error": {"code", "message"}}`` bodies.
"""

from __future__ import annotations

import math
import time
import unicodedata
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from roomcast import __version__
from roomcast.asyncapi import asyncapi_document
from roomcast.auth import Authenticator, AuthError
from roomcast.config import Settings, url_list
from roomcast.core.search import SearchFilters
from roomcast.features.membership import Membership
from roomcast.features.notifications import Notifications
from roomcast.features.rooms import Rooms, room_info
from roomcast.features.search import MessageSearch, SearchOrder
from roomcast.ice import ice_servers
from roomcast.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from roomcast.node.node import Node
from roomcast.ports.broker import BrokerState
from roomcast.ports.store import CallsAfter, Room, Store, StoreUnavailable
from roomcast.protocol import (
    MAX_ID,
    ROOM_NAME_MAX_CHARS,
    USER_ID_MAX_CHARS,
    AddMember,
    CreateRoom,
    DirectRequest,
    ErrorCode,
    HistoryPage,
    NotificationPage,
    ProtocolError,
    Role,
    RoomMember,
    RoomMembersPage,
    RoomPage,
    RoomUsersPage,
    SetRole,
    ThreadPage,
    UpdateRoom,
    decode_body,
    encode_json,
    visible_name,
)

_STATUS = {
    ErrorCode.INVALID_JSON: 400,
    ErrorCode.INVALID_MESSAGE: 400,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.INTERNAL: 500,
}

#: The browser client, shipped inside the package.
WEB_ROOT = Path(__file__).resolve().parent.parent / "web"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=encode_json(value), status=status, content_type="application/json")


def error_response(
    code: ErrorCode, message: str, retry_after_ms: int | None = None
) -> web.Response:
    """An error body; a rate limit's also says when to try again, in the body
    (``retry_after_ms``, as on the WebSocket) and in ``Retry-After`` (seconds)."""
    error: dict[str, Any] = {"code": code, "message": message}
    if retry_after_ms is None:
        return json_response({"error": error}, _STATUS[code])
    error["retry_after_ms"] = retry_after_ms
    response = json_response({"error": error}, _STATUS[code])
    response.headers["Retry-After"] = str(max(1, math.ceil(retry_after_ms / 1000)))
    return response


@web.middleware
async def protocol_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ProtocolError as exc:
        return error_response(exc.code, exc.message, exc.retry_after_ms)
    except StoreUnavailable:
        return error_response(ErrorCode.INTERNAL, "storage is unavailable")
    except web.HTTPRequestEntityTooLarge as exc:
        return error_response(ErrorCode.TOO_LARGE, exc.text or "request body too large")


#: Members shown with each private room of a room list (all of them:
#: ``GET /api/rooms/{id}/members``), so that a page's size has a bound.
ROOM_LIST_MEMBERS = 20
#: The ``limit`` of a list when none is asked for.
DEFAULT_PAGE = 50
#: The most search hits one page holds.
SEARCH_PAGE_MAX = 50


class HttpApi:
    def __init__(self, node: Node, store: Store, auth: Authenticator, settings: Settings) -> None:
        self.node = node
        self.rooms: Rooms = node.feature(Rooms)
        self.membership: Membership = node.feature(Membership)
        self.notifications: Notifications = node.feature(Notifications)
        self.search: MessageSearch = node.feature(MessageSearch)
        self.store = store
        self.auth = auth
        self.settings = settings

    def routes(self) -> list[web.AbstractRouteDef]:
        return [
            web.get("/", self.index),
            web.static("/static", WEB_ROOT, append_version=False),
            web.get("/api/info", self.info),
            web.get("/health", self.health),
            web.get("/metrics", self.metrics),
            web.get("/asyncapi.json", self.asyncapi),
            web.get("/api/rooms", self.list_rooms),
            web.post("/api/rooms", self.create_room),
            web.get("/api/rooms/{room_id}/users", self.room_users),
            web.get("/api/rooms/{room_id}", self.get_room),
            web.patch("/api/rooms/{room_id}", self.update_room),
            web.delete("/api/rooms/{room_id}", self.archive_room),
            web.get("/api/rooms/{room_id}/members", self.room_members),
            web.post("/api/rooms/{room_id}/members", self.add_member),
            web.delete("/api/rooms/{room_id}/members/{user_id}", self.remove_member),
            web.put("/api/rooms/{room_id}/members/{user_id}/role", self.set_role),
            web.delete("/api/rooms/{room_id}/bans/{user_id}", self.unban),
            web.post("/api/direct", self.direct_room),
            web.get("/api/rooms/{room_id}/messages", self.room_messages),
            web.get("/api/rooms/{room_id}/threads", self.room_threads),
            web.get("/api/notifications", self.list_notifications),
            web.get("/api/search", self.search_messages),
            web.get("/api/calls", self.list_calls),
            web.get("/api/ice-servers", self.ice_servers),
        ]

    # -- helpers --------------------------------------------------------------------

    def viewer(self, request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else None
        try:
            return self.auth.resolve(token, request.query.get("user_id"))
        except AuthError as exc:
            raise ProtocolError(ErrorCode.UNAUTHENTICATED, str(exc)) from None

    def user(self, request: web.Request) -> str:
        user = self.viewer(request)
        if user is None:
            raise ProtocolError(ErrorCode.UNAUTHENTICATED, "name a user with ?user_id=")
        return user

    async def _visible_room(self, request: web.Request) -> tuple[Room, str | None]:
        viewer = self.viewer(request)
        return await self.readable_room(self.room_id(request), viewer), viewer

    async def readable_room(self, room_id: int, viewer: str | None) -> Room:
        """The room, if ``viewer`` may read it now (``forbidden`` otherwise)."""
        room = await self.store.get_room(room_id)
        if room is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"room {room_id} does not exist")
        if not room.admits(viewer):
            raise ProtocolError(ErrorCode.FORBIDDEN, f"room {room_id} is private")
        if not room.private:
            # A public room is anyone's but its banned users'; archived, its members'.
            state = None if viewer is None else await self.store.member_state(room.id, viewer)
            if state is not None and state.banned:
                raise ProtocolError(ErrorCode.FORBIDDEN, f"you are banned from room {room_id}")
            if room.archived_at is not None and (state is None or state.member is None):
                raise ProtocolError(ErrorCode.FORBIDDEN, f"room {room_id} is archived")
        return room

    def room_id(self, request: web.Request) -> int:
        """The room id in the path."""
        return _int_param(request.match_info["room_id"], "room_id", minimum=1)

    def _member_id(self, request: web.Request) -> str:
        return _user_param(request.match_info["user_id"], "user_id")

    def _limit(self, request: web.Request) -> int:
        """A list's page size: ``?limit=``, at most ``--list-page-max``."""
        return _int_param(
            request.query.get("limit", str(DEFAULT_PAGE)), "limit", 1, self.settings.list_page_max
        )

    # -- handlers ---------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        """Database and broker state; 503 only when messages cannot be stored.

        A database that answers can still refuse every write (disk full,
        locked by another process): ``failing`` from the first failed group
        commit until one succeeds again, a probe write of the health check's own
        included. A node whose broker is away still
        serves its own users, so it stays in a load balancer's rotation and
        reports ``degraded``.
        """
        node = self.node
        body: dict[str, str] = {"status": "ok", "database": "ok", "broker": node.broker_state()}
        body["node"] = node.node_id
        try:
            await self.store.ping()
        except StoreUnavailable:
            body.update(status="unavailable", database="unreachable")
            return json_response(body, 503)
        # After failures, a write nobody reads says whether writes commit again.
        if self.node.metrics.commit_failing and not await self.node.writes_work():
            body.update(status="unavailable", database="failing")
            return json_response(body, 503)
        if not self.node.ready:
            # Still learning who is where from the other nodes: not for traffic yet.
            body["status"] = "starting"
            return json_response(body, 503)
        if node.broker_state() is BrokerState.DEGRADED:
            body["status"] = "degraded"
        return json_response(body)

    async def index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(WEB_ROOT / "index.html")

    async def info(self, request: web.Request) -> web.Response:
        """What a client needs before it can log in, and the rates it should keep to
        (each connection's, by message class; ``null`` when limits are off), so a
        client can pace itself instead of learning them from refusals."""
        limiter = self.node.parts.limiter
        rates = None
        if limiter is not None:
            rates = {
                cls.value: {"per_second": rate.per_second, "burst": rate.burst}
                for cls, rate in limiter.rates.items()
            }
        return json_response(
            {
                "name": "roomcast",
                "version": __version__,
                "auth": "open" if self.auth.open_mode else "token",
                "rate_limits": rates,
            }
        )

    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus text format."""
        return web.Response(
            body=self.node.metrics.render(), headers={"Content-Type": METRICS_CONTENT_TYPE}
        )

    async def asyncapi(self, request: web.Request) -> web.Response:
        return json_response(asyncapi_document())

    async def list_rooms(self, request: web.Request) -> web.Response:
        """One page of the rooms the viewer may see, in id order, optionally by name."""
        viewer = self.viewer(request)
        limit = self._limit(request)
        after = _int_param(request.query.get("after", "0"), "after", 0)
        name = request.query.get("q") or None  # an empty filter box filters nothing
        if name is not None:
            if len(name) > ROOM_NAME_MAX_CHARS:
                raise ProtocolError(
                    ErrorCode.INVALID_MESSAGE, f"q: longer than {ROOM_NAME_MAX_CHARS} characters"
                )
            name = unicodedata.normalize("NFC", name)  # as room names are stored
        mine = _flag_param(request.query.get("mine", "false"), "mine")
        if mine and viewer is None:
            raise ProtocolError(ErrorCode.UNAUTHENTICATED, "name a user with ?user_id=")
        # One more than asked: a full page is the last one unless something follows.
        rooms = await self.store.list_rooms(
            viewer, after, limit + 1, name, ROOM_LIST_MEMBERS, mine=mine
        )
        more = len(rooms) > limit
        rooms = rooms[:limit]
        roles = await self.store.roles(viewer, [r.id for r in rooms]) if mine and viewer else {}
        page = RoomPage(
            rooms=[room_info(room, viewer, roles.get(room.id)) for room in rooms],
            next=rooms[-1].id if more else None,
        )
        return json_response(page)

    async def create_room(self, request: web.Request) -> web.Response:
        user = self.user(request)
        body: CreateRoom = decode_body(await request.read(), CreateRoom)
        room = await self.rooms.create_room(user, request.remote or "?", body)
        return json_response(room_info(room, user), 201)

    async def room_users(self, request: web.Request) -> web.Response:
        """Who is in the room now, by user id, one page at a time."""
        room, _ = await self._visible_room(request)
        limit = self._limit(request)
        after = _user_cursor(request.query.get("after"))
        page, more = self.node.room_users_page(room.id, after, limit)
        return json_response(RoomUsersPage(room.id, page, page[-1].user_id if more else None))

    async def room_members(self, request: web.Request) -> web.Response:
        """A room's members with their roles, by user id, one page at a time."""
        room, _ = await self._visible_room(request)
        limit = self._limit(request)
        after = _user_cursor(request.query.get("after"))
        found = await self.store.members_page(room.id, after, limit + 1)
        page = [RoomMember(m.user_id, Role(m.role), m.joined_at) for m in found[:limit]]
        more = len(found) > limit
        return json_response(RoomMembersPage(room.id, page, page[-1].user_id if more else None))

    async def add_member(self, request: web.Request) -> web.Response:
        actor = self.user(request)
        body: AddMember = decode_body(await request.read(), AddMember)
        member = await self.membership.add(self.room_id(request), actor, body)
        return json_response(RoomMember(member.user_id, Role(member.role), member.joined_at), 201)

    async def remove_member(self, request: web.Request) -> web.Response:
        actor = self.user(request)
        ban = _flag_param(request.query.get("ban", "false"), "ban")
        await self.membership.remove(self.room_id(request), actor, self._member_id(request), ban)
        return web.Response(status=204)

    async def unban(self, request: web.Request) -> web.Response:
        actor = self.user(request)
        await self.membership.unban(self.room_id(request), actor, self._member_id(request))
        return web.Response(status=204)

    async def set_role(self, request: web.Request) -> web.Response:
        actor = self.user(request)
        body: SetRole = decode_body(await request.read(), SetRole)
        member = await self.membership.set_role(
            self.room_id(request), actor, self._member_id(request), body.role
        )
        return json_response(RoomMember(member.user_id, Role(member.role), member.joined_at))

    async def get_room(self, request: web.Request) -> web.Response:
        """One room, for whom it admits, with the viewer's role when they are a member."""
        room, viewer = await self._visible_room(request)
        role = None
        if viewer is not None:
            member = (await self.store.member_state(room.id, viewer)).member
            role = None if member is None else member.role
        return json_response(room_info(room, viewer, role))

    async def update_room(self, request: web.Request) -> web.Response:
        actor = self.user(request)
        body: UpdateRoom = decode_body(await request.read(), UpdateRoom)
        room = await self.membership.update(self.room_id(request), actor, body)
        return json_response(room_info(room, actor))

    async def archive_room(self, request: web.Request) -> web.Response:
        actor = self.user(request)
        room = await self.membership.archive(self.room_id(request), actor)
        return json_response(room_info(room, actor))

    async def direct_room(self, request: web.Request) -> web.Response:
        user = self.user(request)
        body: DirectRequest = decode_body(await request.read(), DirectRequest)
        # A new direct room is a new room: as limited as creating one.
        address = request.remote or "?"
        self.rooms.check_creation(user, address)
        room, created = await self.membership.direct(user, body.user_id)
        if created:
            self.rooms.charge_creation(user, address)
        return json_response(room_info(room, user))

    async def room_messages(self, request: web.Request) -> web.Response:
        """A page of the timeline (or of a thread): the newest, the one before
        ``before``, the one after ``after``, or the one ``around`` a message
        (that message and about as many older as newer ones)."""
        room, _ = await self._visible_room(request)
        limit = _int_param(
            request.query.get("limit", "50"), "limit", 1, self.settings.history_page_max
        )
        before = _optional_id(request, "before")
        after = _optional_id(request, "after", minimum=0)
        around = _optional_id(request, "around")
        thread = _optional_id(request, "thread_id")
        if sum(value is not None for value in (before, after, around)) > 1:
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, "give one of before, after and around")
        history = self.store.history
        more_older = more_newer = False
        if after is not None:
            items = await history(room.id, None, limit + 1, thread, after=after)
            more_newer = len(items) > limit
            items = items[:limit]
        elif around is None:
            items = await history(room.id, before, limit + 1, thread)
            more_older = len(items) > limit
            items = items[-limit:]
        else:
            # The message and older ones, then newer ones: about half the page
            # each, the other side filling in near either end. One more each
            # way than shown says whether a side has a next page.
            older = await history(room.id, around + 1, limit + 1, thread)
            newer = await history(room.id, None, limit + 1, thread, after=around)
            newer_shown = min(len(newer), limit - min(len(older), (limit - 1) // 2 + 1))
            older_shown = min(len(older), limit - newer_shown)
            more_older, more_newer = len(older) > older_shown, len(newer) > newer_shown
            items = older[len(older) - older_shown :] + newer[:newer_shown]
        page = HistoryPage(
            messages=items,
            next_before=items[0].id if more_older else None,
            next_after=items[-1].id if more_newer else None,
        )
        return json_response(page)

    async def search_messages(self, request: web.Request) -> web.Response:
        """Messages the caller may read, by what they contain (see features/search.py)."""
        user = self.user(request)
        query = request.query
        q = query.get("q")
        if q is None or not q.strip():
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, "q: give a word to search for")
        order_text = query.get("order", "rank")
        try:
            order = SearchOrder(order_text)
        except ValueError:
            raise ProtocolError(
                ErrorCode.INVALID_MESSAGE, "order: expected rank or recent"
            ) from None
        named = query.get("from_user_id")
        filters = SearchFilters(
            room_id=_optional_id(request, "room_id"),
            from_user=None if named is None else _user_param(named, "from_user_id"),
            thread_id=_optional_id(request, "thread_id"),
            before=_optional_id(request, "before", minimum=0),
            after=_optional_id(request, "after", minimum=0),
        )
        limit = _int_param(query.get("limit", "20"), "limit", 1, SEARCH_PAGE_MAX)
        page = await self.search.search(user, q, filters, order, limit, query.get("cursor"))
        return json_response(page)

    async def room_threads(self, request: web.Request) -> web.Response:
        """The room's threads by last activity; ``before`` is the previous page's ``next``."""
        room, _ = await self._visible_room(request)
        limit = self._limit(request)
        before_text = request.query.get("before")
        before = None if before_text is None else _int_param(before_text, "before", minimum=1)
        threads = await self.store.threads(room.id, before, limit + 1)
        more = len(threads) > limit
        threads = threads[:limit]
        return json_response(
            ThreadPage(threads, threads[-1].thread.last_reply_id if more else None)
        )

    async def list_notifications(self, request: web.Request) -> web.Response:
        """The caller's notifications, newest first (``?unread=true``: unread ones)."""
        user = self.user(request)
        unread = _flag_param(request.query.get("unread", "false"), "unread")
        limit = self._limit(request)
        before_text = request.query.get("before")
        before = None if before_text is None else _int_param(before_text, "before", minimum=1)
        found = await self.notifications.listing(user, unread, before, limit + 1)
        more = len(found) > limit
        found = found[:limit]
        return json_response(NotificationPage(found, found[-1].id if more else None))

    async def list_calls(self, request: web.Request) -> web.Response:
        user = self.user(request)
        named = request.query.get("user_id")
        if named is not None and _user_param(named, "user_id") != user:
            raise ProtocolError(ErrorCode.FORBIDDEN, "you can only list your own calls")
        limit = self._limit(request)
        after = _calls_cursor(request.query.get("after"))
        records = await self.store.list_calls(user, limit + 1, after)
        more = len(records) > limit
        records = records[:limit]
        last = records[-1] if more else None
        cursor = None if last is None else f"{last.started_at}.{last.call_id}"
        return json_response({"calls": records, "next": cursor})

    async def ice_servers(self, request: web.Request) -> web.Response:
        user = self.user(request)
        settings = self.settings
        return json_response(
            ice_servers(
                user,
                int(time.time()),
                url_list(settings.stun_urls),
                url_list(settings.turn_urls),
                settings.turn_secret,
                settings.turn_ttl,
            )
        )


def _user_param(text: str, name: str) -> str:
    """A user id from the query, in NFC, as user ids are everywhere."""
    try:
        return visible_name(text, USER_ID_MAX_CHARS)
    except ValueError as exc:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"{name}: {exc}") from None


def _user_cursor(text: str | None) -> str | None:
    """``?after=`` of a list by user id: the last user id of the previous page."""
    return None if text is None else _user_param(text, "after")


def _calls_cursor(text: str | None) -> CallsAfter | None:
    """``?after=`` of the call list: ``<started_at>.<call_id>`` of the previous page's last call."""
    if text is None:
        return None
    started_at, dot, call_id = text.partition(".")
    if (
        dot
        and started_at.isascii()
        and started_at.isdigit()
        and 1 <= len(call_id) <= 64
        and int(started_at) <= MAX_ID
    ):
        return CallsAfter(int(started_at), call_id)
    raise ProtocolError(
        ErrorCode.INVALID_MESSAGE, "after: expected the next cursor of a previous page"
    )


def _optional_id(request: web.Request, name: str, minimum: int = 1) -> int | None:
    text = request.query.get(name)
    return None if text is None else _int_param(text, name, minimum)


def _flag_param(text: str, name: str) -> bool:
    if text not in ("true", "false"):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"{name}: expected true or false")
    return text == "true"


def _int_param(text: str, name: str, minimum: int, maximum: int = MAX_ID) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"{name}: expected an integer") from None
    if not minimum <= value <= maximum:
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE, f"{name}: expected a value in {minimum}..{maximum}"
        )
    return value

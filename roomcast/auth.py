"""Who is on the other end: JWT verification, or open mode's stated identity."""

from __future__ import annotations

import re

import jwt

from roomcast.protocol import USER_ID_PATTERN

_USER_ID = re.compile(USER_ID_PATTERN)


class AuthError(Exception):
    pass


def valid_user_id(user_id: str) -> bool:
    return bool(_USER_ID.match(user_id))


def issue_token(secret: str, user_id: str, ttl: int, now: float) -> str:
    """A token that :meth:`Authenticator.user_from_token` accepts for ``user_id``.

    HS256 with ``sub``, ``iat`` and an ``exp`` ``ttl`` seconds after ``now``.
    """
    if not secret:
        raise AuthError("tokens need an auth secret")
    if not valid_user_id(user_id):
        raise AuthError("user_id must be 1-64 characters without control characters")
    claims = {"sub": user_id, "iat": int(now), "exp": int(now) + ttl}
    return jwt.encode(claims, secret, algorithm="HS256")


class Authenticator:
    """Resolves a token (or, in open mode, a stated user id) to a user id."""

    def __init__(self, secret: str | None) -> None:
        self._secret = secret

    @property
    def open_mode(self) -> bool:
        return not self._secret

    def user_from_token(self, token: str) -> str:
        if not self._secret:
            raise AuthError("tokens are not configured on this server")
        try:
            # Only HS256: an "alg" the server did not choose is never accepted.
            claims = jwt.decode(
                token, self._secret, algorithms=["HS256"], options={"require": ["sub"]}
            )
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid token: {exc}") from None
        sub = claims["sub"]
        if not isinstance(sub, str) or not valid_user_id(sub):
            raise AuthError("invalid token: bad subject")
        return sub

    def resolve(self, token: str | None, stated_user: str | None) -> str | None:
        """The user for a request: from its token, or (open mode) as stated.

        Returns ``None`` in open mode when no user is stated yet.
        """
        if not self.open_mode:
            if not token:
                raise AuthError("a token is required")
            return self.user_from_token(token)
        if token:
            raise AuthError("tokens are not configured on this server")
        if stated_user is None:
            return None
        if not valid_user_id(stated_user):
            raise AuthError("user_id must be 1-64 characters without control characters")
        return stated_user

"""Who is on the other end: JWT verification, or open mode's stated identity."""

from __future__ import annotations

import jwt

from roomcast.protocol import USER_ID_MAX_CHARS, visible_name


class AuthError(Exception):
    pass


def user_id(text: str) -> str:
    """``text`` as a user id (in NFC), or :class:`ValueError` saying why it is none.

    The same rule as in payloads (:func:`roomcast.protocol.visible_name`), so a
    token's subject or a stated ``?user_id=`` is the user its payloads name.
    """
    return visible_name(text, USER_ID_MAX_CHARS)


def issue_token(secret: str, subject: str, ttl: int, now: float) -> str:
    """A token that :meth:`Authenticator.user_from_token` accepts for ``subject``.

    HS256 with ``sub`` (the user id, in NFC), ``iat`` and an ``exp`` ``ttl``
    seconds after ``now``.
    """
    if not secret:
        raise AuthError("tokens need an auth secret")
    try:
        subject = user_id(subject)
    except ValueError as exc:
        raise AuthError(f"user_id: {exc}") from None
    claims = {"sub": subject, "iat": int(now), "exp": int(now) + ttl}
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
        if not isinstance(sub, str):
            raise AuthError("invalid token: bad subject: expected a string")
        try:
            return user_id(sub)
        except ValueError as exc:
            raise AuthError(f"invalid token: bad subject: {exc}") from None

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
        try:
            return user_id(stated_user)
        except ValueError as exc:
            raise AuthError(f"user_id: {exc}") from None

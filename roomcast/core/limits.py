"""Rate limits: token buckets per connection and per user, by message class.

Each class of message has its own bucket, so a flood of chat cannot starve
typing indicators or call signaling. A bucket holds ``burst`` tokens and
refills at ``rate`` tokens a second; a message takes one token or is refused
with the time until one is available. The per-user buckets (``user_factor``
times the per-connection ones) stop a user from multiplying their allowance
by opening more tabs.

Refusals are strikes: a connection that keeps sending past its limits
empties its strike bucket and is disconnected. Time is passed in; nothing
here reads a clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class MessageClass(enum.StrEnum):
    CHAT = "chat"
    TYPING = "typing"
    SIGNALING = "signaling"
    MEMBERSHIP = "membership"
    CONTROL = "control"  # WebSocket pings and pongs
    OTHER = "other"
    #: Creating rooms (``POST /api/rooms``, open mode's ``join_room`` of a new
    #: id): per user only, see :class:`CreationLimiter`.
    ROOMS = "rooms"


@dataclass(frozen=True, slots=True)
class Rate:
    per_second: float
    burst: float


#: Defaults that a fast human never meets (30 chat messages at once pass) but a
#: script does. Signaling is generous: one call trickles dozens of candidates.
DEFAULT_RATES: dict[MessageClass, Rate] = {
    MessageClass.CHAT: Rate(5, 30),
    MessageClass.TYPING: Rate(5, 20),
    MessageClass.SIGNALING: Rate(50, 200),
    # A reconnecting client re-joins all its rooms at once (up to 100 by default).
    MessageClass.MEMBERSHIP: Rate(5, 100),
    # Clients ping every few seconds at most; a burst of thousands is an attack.
    MessageClass.CONTROL: Rate(10, 50),
    MessageClass.OTHER: Rate(10, 50),
    # Rooms outlive the request: one a second, after the first 20.
    MessageClass.ROOMS: Rate(1, 20),
}


def parse_rates(spec: str) -> dict[MessageClass, Rate]:
    """``"chat=5/30,typing=5/20"``: per-second rate and burst per class; others keep defaults."""
    rates = dict(DEFAULT_RATES)
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, value = part.partition("=")
        per_second, _, burst = value.partition("/")
        try:
            rate = Rate(float(per_second), float(burst))
            rates[MessageClass(name.strip())] = rate
        except ValueError:
            raise ValueError(f"bad rate limit {part!r}; expected class=rate/burst") from None
        if not (rate.per_second > 0 and rate.burst >= 1):
            raise ValueError(f"bad rate limit {part!r}: the rate must be > 0 and the burst >= 1")
    return rates


@dataclass(slots=True)
class TokenBucket:
    rate: Rate
    tokens: float
    updated: float

    def wait(self, now: float) -> float:
        """Seconds until a token is available (0 when one is), after refilling to ``now``."""
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.rate.burst, self.tokens + elapsed * self.rate.per_second)
        self.updated = now
        if self.tokens >= 1:
            return 0.0
        if self.rate.per_second <= 0:
            return float("inf")
        return (1 - self.tokens) / self.rate.per_second

    def take(self) -> None:
        self.tokens -= 1


@dataclass(slots=True)
class _Holder:
    buckets: dict[MessageClass, TokenBucket] = field(default_factory=dict)
    strikes: TokenBucket | None = None


class RateLimiter:
    def __init__(
        self,
        rates: dict[MessageClass, Rate],
        user_factor: float = 2.0,
        flood_strikes: int = 50,
    ) -> None:
        self.rates = rates
        self.user_rates = {
            cls: Rate(r.per_second * user_factor, r.burst * user_factor) for cls, r in rates.items()
        }
        # One strike refills a second: a client that stays over its limit for
        # long enough to be refused flood_strikes times (net) is cut off.
        self.strike_rate = Rate(1.0, float(flood_strikes))
        self._connections: dict[str, _Holder] = {}
        self._users: dict[str, _Holder] = {}

    def _bucket(
        self, holder: _Holder, cls: MessageClass, rates: dict[MessageClass, Rate], now: float
    ) -> TokenBucket:
        bucket = holder.buckets.get(cls)
        if bucket is None:
            rate = rates[cls]
            bucket = holder.buckets[cls] = TokenBucket(rate, rate.burst, now)
        return bucket

    def check(self, conn_id: str, user_id: str | None, cls: MessageClass, now: float) -> float:
        """0 if the message may pass (its tokens are taken), else seconds to wait."""
        conn = self._connections.setdefault(conn_id, _Holder())
        conn_bucket = self._bucket(conn, cls, self.rates, now)
        wait = conn_bucket.wait(now)
        user_bucket = None
        if user_id is not None:
            user = self._users.setdefault(user_id, _Holder())
            user_bucket = self._bucket(user, cls, self.user_rates, now)
            wait = max(wait, user_bucket.wait(now))
        if wait > 0:
            return wait
        conn_bucket.take()
        if user_bucket is not None:
            user_bucket.take()
        return 0.0

    def strike(self, conn_id: str, now: float) -> bool:
        """Record a refusal; returns True when the connection is flooding and must go."""
        holder = self._connections.setdefault(conn_id, _Holder())
        if holder.strikes is None:
            holder.strikes = TokenBucket(self.strike_rate, self.strike_rate.burst, now)
        if holder.strikes.wait(now) > 0:
            return True
        holder.strikes.take()
        return False

    def forget_connection(self, conn_id: str) -> None:
        self._connections.pop(conn_id, None)

    def forget_user(self, user_id: str) -> None:
        """Drop a user's buckets once their last connection is gone (bounded memory)."""
        self._users.pop(user_id, None)


class CreationLimiter:
    """Token buckets for creating rooms, over HTTP and WebSocket alike: one per
    user, and one per client address at ``address_factor`` times the rate
    (in open mode a user id is whatever the client says, so only the address
    holds a client that keeps naming new users).

    Unlike :class:`RateLimiter`'s per-user buckets, these do not end with the
    user's last connection (rooms are created over HTTP too, and reconnecting
    must not refill the bucket). Memory stays bounded all the same: a bucket
    that has refilled is the same as none, so full buckets are dropped
    whenever the table has doubled since the last sweep.
    """

    def __init__(self, rate: Rate, address_factor: float = 5.0) -> None:
        self.rate = rate
        self.address_rate = Rate(rate.per_second * address_factor, rate.burst * address_factor)
        self._buckets: dict[str, TokenBucket] = {}
        self._sweep_at = 1024

    def check(self, user_id: str, address: str, now: float) -> float:
        """0 if the user may create a room now from ``address`` (the tokens are
        taken), else seconds to wait."""
        wait = self.wait(user_id, address, now)
        if not wait:
            self.take(user_id, address, now)
        return wait

    def wait(self, user_id: str, address: str, now: float) -> float:
        """Seconds until the user may create a room from ``address`` (0: now);
        nothing is taken (see :meth:`take`)."""
        user = self._bucket("u:" + user_id, self.rate, now)
        place = self._bucket("a:" + address, self.address_rate, now)
        return max(user.wait(now), place.wait(now))

    def take(self, user_id: str, address: str, now: float) -> None:
        """A room was created: take its tokens (after :meth:`wait` said there were)."""
        self._bucket("u:" + user_id, self.rate, now).take()
        self._bucket("a:" + address, self.address_rate, now).take()

    def _bucket(self, key: str, rate: Rate, now: float) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._sweep_at:
                self._sweep(now)
            bucket = self._buckets[key] = TokenBucket(rate, rate.burst, now)
        return bucket

    def _sweep(self, now: float) -> None:
        def refilled(bucket: TokenBucket) -> bool:
            bucket.wait(now)  # refills it to now
            return bucket.tokens >= bucket.rate.burst

        self._buckets = {k: b for k, b in self._buckets.items() if not refilled(b)}
        self._sweep_at = max(1024, 2 * len(self._buckets))

    def __len__(self) -> int:
        return len(self._buckets)

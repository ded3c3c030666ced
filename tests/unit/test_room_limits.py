"""The room-creation rate limiter: a token bucket per user and per address, with
bounded memory.
Times are passed in: nothing here reads a clock."""

from __future__ import annotations

import pytest

from roomcast.core.limits import CreationLimiter, MessageClass, Rate, parse_rates


def test_room_creation_has_a_bucket_per_user() -> None:
    limiter = CreationLimiter(Rate(1, 3))
    assert [limiter.check("al", "10.0.0.1", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.check("al", "10.0.0.1", 0.0) == pytest.approx(1.0)
    assert limiter.check("al", "10.0.0.1", 0.5) == pytest.approx(0.5)  # a refusal takes nothing
    assert limiter.check("bo", "10.0.0.1", 0.5) == 0.0
    assert limiter.check("al", "10.0.0.1", 1.0) == 0.0
    assert limiter.check("al", "10.0.0.2", 1.0) == pytest.approx(1.0)  # the user's, anywhere


def test_an_address_that_keeps_naming_new_users_is_limited_too() -> None:
    """Open mode: a user id is what the client says, so the address holds."""
    limiter = CreationLimiter(Rate(1, 3), address_factor=2)
    assert [limiter.check(f"user{n}", "10.0.0.1", 0.0) for n in range(6)] == [0.0] * 6
    assert limiter.check("user6", "10.0.0.1", 0.0) == pytest.approx(0.5)
    assert limiter.check("user6", "10.0.0.2", 0.0) == 0.0


def test_room_creation_buckets_that_refilled_are_forgotten() -> None:
    limiter = CreationLimiter(Rate(1, 2))
    for n in range(5000):  # one room each, a millisecond apart
        limiter.check(f"user{n}", "10.0.0.1", n / 1000)
    # Only those that have not refilled by then are kept (one second's worth).
    assert len(limiter) <= 2 * 1024
    limiter.check("late", "10.0.0.1", 100.0)
    limiter.check("later", "10.0.0.1", 100.0)
    for n in range(2048):
        limiter.check(f"again{n}", "10.0.0.1", 200.0)
    assert len(limiter) <= 4096


def test_room_creation_rate_is_a_rate_limit_class() -> None:
    assert parse_rates("")[MessageClass.ROOMS] == Rate(1, 20)
    assert parse_rates("rooms=2/5")[MessageClass.ROOMS] == Rate(2, 5)

"""The rules of conversations: who a message notifies, markers, receipt pacing,
and the presence book's statuses."""

from __future__ import annotations

from roomcast.core.conversations import (
    EXCERPT_CHARS,
    ReceiptPacer,
    excerpt,
    kept_mentions,
    marker_moves,
    reply_recipients,
)
from roomcast.core.presence import PresenceBook
from roomcast.protocol import MAX_MENTIONS


def test_mentions_keep_members_but_the_author_once_in_order() -> None:
    members = ["al", "bo", "cy", "di"]
    assert kept_mentions(["cy", "zed", "al", "bo", "cy"], members, "al") == ("cy", "bo")
    assert kept_mentions([], members, "al") == ()
    assert kept_mentions(["al"], members, "al") == ()  # oneself notifies nobody


def test_mentions_stop_at_the_most_a_message_keeps() -> None:
    many = [f"u{i}" for i in range(MAX_MENTIONS + 5)]
    kept = kept_mentions(["outsider", *many], many, "author")
    assert kept == tuple(many[:MAX_MENTIONS])


def test_a_reply_notifies_participants_but_its_author_and_the_mentioned() -> None:
    participants = ["root-author", "bo", "cy", "bo"]
    assert reply_recipients(participants, "cy", ["bo"]) == ("root-author",)
    assert reply_recipients(participants, "dd", []) == ("root-author", "bo", "cy")
    assert reply_recipients(["root-author"], "root-author", []) == ()


def test_a_marker_moves_only_forward() -> None:
    assert marker_moves(5, 6)
    assert not marker_moves(5, 5)
    assert not marker_moves(5, 4)


def test_an_excerpt_is_one_line_and_bounded() -> None:
    assert excerpt("hello\n\n  there\tyou") == "hello there you"
    long = excerpt("x" * 500)
    assert len(long) == EXCERPT_CHARS and long.endswith("…")
    assert excerpt("x" * EXCERPT_CHARS) == "x" * EXCERPT_CHARS


def test_receipts_are_sent_at_once_then_paced_with_the_newest_winning() -> None:
    pacer = ReceiptPacer(interval=1.0)
    key = (7, "bo", None)
    assert pacer.offer(key, 10, now=0.0)  # the first goes at once
    assert not pacer.offer(key, 11, now=0.2)
    assert not pacer.offer(key, 12, now=0.5)  # newer: replaces 11
    assert pacer.next_deadline() == 1.0
    assert pacer.due(0.9) == []
    assert pacer.due(1.0) == [(key, 12)]
    assert pacer.next_deadline() is None
    assert not pacer.offer(key, 13, now=1.5)  # within a second of the last sent
    assert pacer.due(2.0) == [(key, 13)]
    assert pacer.due(3.5) == []  # nothing waiting: forgotten
    assert pacer.offer(key, 14, now=3.6)


def test_receipts_of_other_users_rooms_and_threads_do_not_wait_for_each_other() -> None:
    pacer = ReceiptPacer(interval=1.0)
    assert pacer.offer((7, "bo", None), 1, now=0.0)
    assert pacer.offer((7, "cy", None), 1, now=0.1)
    assert pacer.offer((8, "bo", None), 1, now=0.1)
    assert pacer.offer((7, "bo", 3), 4, now=0.1)
    assert not pacer.offer((7, "bo", None), 2, now=0.1)


# -- presence ------------------------------------------------------------------------


def test_automatic_away_counts_from_the_last_activity_or_connection() -> None:
    book = PresenceBook(away_after_ms=1000)
    book.connect("bo")
    assert book.active("bo", 0, shown=False) is False  # a connection, not shown
    seen = book.view("bo")
    assert seen is not None and seen.last_active is None
    assert book.next_deadline() == 1000
    assert book.time_passed(999) == [] and book.status("bo") == "online"
    assert book.time_passed(1000) == ["bo"] and book.status("bo") == "away"
    assert book.next_deadline() is None
    assert book.active("bo", 1500) and book.status("bo") == "online"
    assert book.next_deadline() == 2500


def test_a_chosen_status_outlasts_idleness_and_ends_at_its_time() -> None:
    book = PresenceBook(away_after_ms=1000)
    book.connect("bo")
    book.active("bo", 0)
    assert book.choose("bo", "dnd", "focus", until=5000)
    assert book.time_passed(2000) == [] and book.status("bo") == "dnd"  # idle, but chosen
    assert book.time_passed(5000) == ["bo"]
    seen = book.view("bo")
    assert seen is not None and (seen.status, seen.text, seen.until) == ("away", None, None)
    assert not book.choose("bo", "online")  # automatic already, and away: no change shown
    assert book.active("bo", 6000) and book.status("bo") == "online"


def test_presence_starts_afresh_with_the_next_connection() -> None:
    book = PresenceBook()
    book.connect("bo")
    book.connect("bo")
    book.choose("bo", "busy", "away from keyboard")
    assert not book.disconnect("bo") and book.status("bo") == "busy"
    assert book.disconnect("bo") and book.status("bo") == "offline"
    book.connect("bo")
    assert book.status("bo") == "online"


def test_a_snapshot_restores_automatic_away_without_making_anyone_active() -> None:
    book = PresenceBook(away_after_ms=1000)
    book.connect("bo")
    assert book.restore("bo", last_active=100, idle_since=100, away=True)
    seen = book.view("bo")
    assert seen is not None and (seen.status, seen.last_active) == ("away", 100)
    assert book.next_deadline() is None  # away already: nothing to wait for
    assert not book.restore("bo", last_active=100, idle_since=100, away=True)
    book.restore("bo", last_active=100, idle_since=500, away=False)
    assert book.status("bo") == "online" and book.next_deadline() == 1500

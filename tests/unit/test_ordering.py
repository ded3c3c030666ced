"""RoomSequencer: per-room delivery in sequence order, with hold-back and gap fill."""

from __future__ import annotations

from roomcast.core.ordering import Gap, RoomSequencer


def test_in_order_arrivals_go_straight_through() -> None:
    seq: RoomSequencer[str] = RoomSequencer(gap_wait=0.2)
    seq.start(1, floor=4)
    assert seq.offer(1, 5, "m5", now=0.0) == ["m5"]
    assert seq.offer(1, 6, "m6", now=0.0) == ["m6"]
    assert seq.delivered(1) == 6
    assert seq.next_deadline() is None


def test_a_message_waits_for_its_predecessor() -> None:
    seq: RoomSequencer[str] = RoomSequencer(gap_wait=0.2)
    seq.start(1, floor=0)
    assert seq.offer(1, 2, "m2", now=1.0) == []
    assert seq.next_deadline() == 1.2
    assert seq.offer(1, 3, "m3", now=1.05) == []
    assert seq.offer(1, 1, "m1", now=1.1) == ["m1", "m2", "m3"]
    assert seq.next_deadline() is None


def test_duplicates_are_dropped() -> None:
    seq: RoomSequencer[str] = RoomSequencer(gap_wait=0.2)
    seq.start(1, floor=0)
    assert seq.offer(1, 1, "m1", now=0.0) == ["m1"]
    assert seq.offer(1, 1, "m1 again", now=0.0) == []
    assert seq.offer(1, 3, "m3", now=0.0) == []
    assert seq.offer(1, 3, "m3 again", now=0.0) == []


def test_an_overdue_gap_is_filled_from_the_database_skipping_deleted() -> None:
    seq: RoomSequencer[str] = RoomSequencer(gap_wait=0.2)
    seq.start(7, floor=10)
    assert seq.offer(7, 14, "m14", now=0.0) == []
    assert seq.overdue(now=0.1) == []
    assert seq.overdue(now=0.2) == [Gap(room=7, after=10, through=14)]
    # 12 was deleted meanwhile: the database has 11, 13 and 14.
    found = [(11, "m11"), (13, "m13"), (14, "m14 from the database")]
    assert seq.fill(7, found, through=14, now=0.3) == ["m11", "m13", "m14"]
    assert seq.delivered(7) == 14
    # The log's late copies change nothing.
    assert seq.offer(7, 11, "late", now=0.4) == []


def test_a_paused_room_holds_everything_until_resumed() -> None:
    seq: RoomSequencer[str] = RoomSequencer(gap_wait=0.2)
    seq.start(1, floor=0)
    seq.pause(1)
    assert seq.offer(1, 1, "m1", now=0.0) == []
    assert seq.overdue(now=5.0) == []  # a paused room is not a gap
    assert seq.resume(1, now=5.0) == ["m1"]


def test_a_room_first_seen_starts_at_its_first_message() -> None:
    seq: RoomSequencer[str] = RoomSequencer(gap_wait=0.2)
    assert seq.offer(3, 42, "m42", now=0.0) == ["m42"]
    assert seq.offer(3, 43, "m43", now=0.0) == ["m43"]
    # start() does not rewind a room already counted.
    seq.start(3, floor=0)
    assert seq.delivered(3) == 43


def test_rooms_are_independent() -> None:
    seq: RoomSequencer[str] = RoomSequencer(gap_wait=0.2)
    seq.start(1, floor=0)
    seq.start(2, floor=0)
    assert seq.offer(1, 2, "a2", now=0.0) == []
    assert seq.offer(2, 1, "b1", now=0.0) == ["b1"]
    assert seq.overdue(now=1.0) == [Gap(room=1, after=0, through=2)]


def test_one_read_settles_every_gap_behind_the_newest_message() -> None:
    seq: RoomSequencer[str] = RoomSequencer(gap_wait=0.2)
    seq.start(1, floor=0)
    for n in (2, 4, 6):  # every other message never arrives (the log is down)
        assert seq.offer(1, n, f"m{n}", now=0.0) == []
    assert seq.overdue(now=0.2) == [Gap(room=1, after=0, through=6)]
    found = [(n, f"db{n}") for n in range(1, 7)]
    assert seq.fill(1, found, through=6, now=0.2) == ["db1", "m2", "db3", "m4", "db5", "m6"]


def test_a_paused_room_sets_no_deadline() -> None:
    seq: RoomSequencer[str] = RoomSequencer(gap_wait=0.2)
    seq.start(1, floor=0)
    assert seq.offer(1, 2, "m2", now=0.0) == []
    seq.pause(1)  # a gap fill is reading
    assert seq.next_deadline() is None
    seq.resume(1, now=0.1)
    assert seq.next_deadline() == 0.2


def test_what_arrives_during_a_gap_read_is_delivered_after_it() -> None:
    seq: RoomSequencer[str] = RoomSequencer(gap_wait=0.2)
    seq.start(1, floor=4)
    assert seq.offer(1, 6, "m6", now=0.0) == []
    assert seq.offer(1, 7, "m7", now=0.0) == []
    gap = seq.overdue(now=0.2)[0]
    seq.pause(1)  # the read begins
    assert seq.offer(1, 5, "m5 from the log", now=0.25) == []
    assert seq.fill(1, [(5, "m5 from db")], gap.through, now=0.3) == []  # still paused
    assert seq.resume(1, now=0.3) == ["m5 from the log", "m6", "m7"]
    assert seq.offer(1, 8, "m8", now=0.4) == ["m8"]

"""RoomSequencer: per-room delivery in sequence order, with hold-back and gap fill."""

from __future__ import annotations

from roomcast.core.ordering import Gap, RoomSequencer


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def sequencer() -> tuple[RoomSequencer[str], Clock]:
    clock = Clock()
    return RoomSequencer(gap_wait=0.2, clock=clock), clock


def test_in_order_arrivals_go_straight_through() -> None:
    seq, _ = sequencer()
    seq.start(1, floor=4)
    assert seq.offer(1, 5, "m5") == ["m5"]
    assert seq.offer(1, 6, "m6") == ["m6"]
    assert seq.delivered(1) == 6
    assert seq.next_deadline() is None


def test_a_message_waits_for_its_predecessor() -> None:
    seq, clock = sequencer()
    seq.start(1, floor=0)
    clock.now = 1.0
    assert seq.offer(1, 2, "m2") == []
    assert seq.next_deadline() == 1.2
    clock.now = 1.05
    assert seq.offer(1, 3, "m3") == []
    assert seq.offer(1, 1, "m1") == ["m1", "m2", "m3"]
    assert seq.next_deadline() is None


def test_duplicates_are_dropped() -> None:
    seq, _ = sequencer()
    seq.start(1, floor=0)
    assert seq.offer(1, 1, "m1") == ["m1"]
    assert seq.offer(1, 1, "m1 again") == []
    assert seq.offer(1, 3, "m3") == []
    assert seq.offer(1, 3, "m3 again") == []


def test_an_overdue_gap_is_filled_from_the_database_skipping_deleted() -> None:
    seq, clock = sequencer()
    seq.start(7, floor=10)
    assert seq.offer(7, 14, "m14") == []
    clock.now = 0.1
    assert seq.overdue() == []
    clock.now = 0.2
    assert seq.overdue() == [Gap(room=7, after=10, through=14)]
    # 12 was deleted meanwhile: the database has 11, 13 and 14.
    found = [(11, "m11"), (13, "m13"), (14, "m14 from the database")]
    assert seq.fill(7, found, through=14) == ["m11", "m13", "m14"]
    assert seq.delivered(7) == 14
    # The log's late copies change nothing.
    assert seq.offer(7, 11, "late") == []


def test_a_paused_room_holds_everything_until_resumed() -> None:
    seq, clock = sequencer()
    seq.start(1, floor=0)
    seq.pause(1)
    assert seq.offer(1, 1, "m1") == []
    clock.now = 5.0
    assert seq.overdue() == []  # a paused room is not a gap
    assert seq.resume(1) == ["m1"]


def test_a_room_first_seen_starts_at_its_first_message() -> None:
    seq, _ = sequencer()
    assert seq.offer(3, 42, "m42") == ["m42"]
    assert seq.offer(3, 43, "m43") == ["m43"]
    # start() does not rewind a room already counted.
    seq.start(3, floor=0)
    assert seq.delivered(3) == 43


def test_rooms_are_independent() -> None:
    seq, clock = sequencer()
    seq.start(1, floor=0)
    seq.start(2, floor=0)
    assert seq.offer(1, 2, "a2") == []
    assert seq.offer(2, 1, "b1") == ["b1"]
    clock.now = 1.0
    assert seq.overdue() == [Gap(room=1, after=0, through=2)]


def test_one_read_settles_every_gap_behind_the_newest_message() -> None:
    seq, clock = sequencer()
    seq.start(1, floor=0)
    for n in (2, 4, 6):  # every other message never arrives (the log is down)
        assert seq.offer(1, n, f"m{n}") == []
    clock.now = 0.2
    assert seq.overdue() == [Gap(room=1, after=0, through=6)]
    found = [(n, f"db{n}") for n in range(1, 7)]
    assert seq.fill(1, found, through=6) == ["db1", "m2", "db3", "m4", "db5", "m6"]


def test_a_paused_room_sets_no_deadline() -> None:
    seq, clock = sequencer()
    seq.start(1, floor=0)
    assert seq.offer(1, 2, "m2") == []
    seq.pause(1)  # a gap fill is reading
    assert seq.next_deadline() is None
    clock.now = 0.1
    seq.resume(1)
    assert seq.next_deadline() == 0.2


def test_what_arrives_during_a_gap_read_is_delivered_after_it() -> None:
    seq, clock = sequencer()
    seq.start(1, floor=4)
    assert seq.offer(1, 6, "m6") == []
    assert seq.offer(1, 7, "m7") == []
    clock.now = 0.2
    gap = seq.overdue()[0]
    seq.pause(1)  # the read begins
    assert seq.offer(1, 5, "m5 from the log") == []
    assert seq.fill(1, [(5, "m5 from db")], gap.through) == []  # still paused
    assert seq.resume(1) == ["m5 from the log", "m6", "m7"]
    assert seq.offer(1, 8, "m8") == ["m8"]

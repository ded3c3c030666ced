"""Admission: every connection counted, by address and in all; room made when full."""

from __future__ import annotations

from roomcast.transport.admission import ADDRESS_FULL, SERVER_FULL, Admission


class Door:
    """A connection without a request head yet, as the admission sees it."""

    def __init__(self, admission: Admission, address: str) -> None:
        self.admission = admission
        self.address = address
        self.displaced = False

    def displace(self) -> None:
        self.displaced = True
        self.admission.not_waiting(self)
        self.admission.release(self.address)


def test_each_address_has_its_limit_and_gets_it_back_on_release() -> None:
    admission = Admission(capacity=100, per_address=2, refusing=4)
    assert admission.admit("a", 0) is None
    assert admission.admit("a", 0) is None
    assert admission.admit("a", 0) is ADDRESS_FULL
    assert admission.admit("b", 0) is None
    admission.release("a")
    assert admission.admit("a", 0) is None
    assert admission.open == 3


def test_a_full_server_refuses_unless_a_connection_waited_long_for_its_head() -> None:
    admission = Admission(capacity=2, per_address=10, refusing=4)
    assert admission.admit("a", 0) is None
    early = Door(admission, "a")
    admission.waiting(early, since=0.0)
    assert admission.admit("b", 0) is None
    fresh = Door(admission, "b")
    admission.waiting(fresh, since=0.5)
    assert admission.admit("c", 0.6) is SERVER_FULL  # nobody has waited a second yet
    assert admission.admit("c", 1.2) is None  # the oldest waiter makes room
    assert early.displaced and not fresh.displaced
    assert admission.open == 2
    assert admission.admit("d", 1.3) is SERVER_FULL  # the next waiter is too young


def test_connections_busy_with_requests_are_never_displaced() -> None:
    admission = Admission(capacity=1, per_address=10, refusing=4)
    assert admission.admit("a", 0) is None
    busy = Door(admission, "a")
    admission.waiting(busy, since=0.0)
    admission.not_waiting(busy)  # its head arrived
    assert admission.admit("b", 100) is SERVER_FULL
    assert not busy.displaced


def test_refusals_in_progress_are_bounded() -> None:
    admission = Admission(capacity=1, per_address=10, refusing=2)
    assert admission.can_refuse() and admission.can_refuse()
    assert not admission.can_refuse()
    admission.refused()
    assert admission.can_refuse()


def test_capacity_keeps_descriptors_in_reserve() -> None:
    admission = Admission.for_process(100_000, 1000, reserved=256, limit=20_000)
    assert admission.capacity == 20_000 - 256
    assert admission.max_refusing == 128
    assert Admission.for_process(50, 1000, reserved=256, limit=20_000).capacity == 50

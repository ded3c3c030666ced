"""Prometheus metrics, cheap enough for the per-message path.

Counting through ``prometheus_client`` objects costs a lock and a label
lookup per increment, which adds up at hundreds of thousands of deliveries a
second. The hot path therefore bumps plain integers here, and a collector
registered with the official client library turns them into metric families
only when ``/metrics`` is scraped. Gauges (connections, users, rooms, calls)
are read from the live state at scrape time.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Tally:
    """A histogram as plain numbers: per-bucket counts, total count and sum."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = list(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.sum += value

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip([*self.bounds, float("inf")], self.counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=self.sum)


class Metrics(Collector):
    def __init__(self) -> None:
        self.messages_in: Counter[str] = Counter()
        self.messages_out: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.rate_limited: Counter[str] = Counter()
        self.slow_consumer_disconnects = 0
        self.flood_disconnects = 0
        self.gap_fills = 0
        self.log_unreadable_entries = 0
        self.fanout = Tally((1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 5000))
        self.commit_seconds = Tally(
            (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
        )
        self.commit_batch = Tally((1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500))
        self.commit_failures = 0
        # TCP connections refused by the admission limits, by why ("address",
        # "full", or "dropped": no descriptor to spare for telling them), and
        # connections without a request head dropped to make room.
        self.connections_refused: Counter[str] = Counter()
        self.connections_displaced = 0
        # Whether the most recent group commit failed: /health answers 503 meanwhile.
        self.commit_failing = False
        self._gauges: list[tuple[str, str, Callable[[], float]]] = []
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A value read from live state whenever metrics are scraped."""
        self._gauges.append((name, documentation, read))

    def observe_commit(self, batch_size: int, seconds: float, ok: bool) -> None:
        self.commit_batch.observe(batch_size)
        self.commit_seconds.observe(seconds)
        if not ok:
            self.commit_failures += 1
        self.commit_failing = not ok

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        for name, documentation, read in self._gauges:
            yield GaugeMetricFamily(name, documentation, value=read())
        yield _labelled(
            "roomcast_messages_received", "Client messages by type.", "type", self.messages_in
        )
        yield _labelled(
            "roomcast_messages_sent",
            "Messages delivered to connections by type (one per recipient).",
            "type",
            self.messages_out,
        )
        yield _labelled("roomcast_errors", "Error replies by code.", "code", self.errors)
        yield _labelled(
            "roomcast_rate_limited",
            "Messages refused by rate limits, by class.",
            "class",
            self.rate_limited,
        )
        yield CounterMetricFamily(
            "roomcast_slow_consumer_disconnects",
            "Connections cut because they did not read their traffic.",
            value=self.slow_consumer_disconnects,
        )
        yield CounterMetricFamily(
            "roomcast_flood_disconnects",
            "Connections cut for flooding past their rate limits.",
            value=self.flood_disconnects,
        )
        yield _labelled(
            "roomcast_connections_refused",
            "TCP connections refused by the connection limits, by reason.",
            "reason",
            self.connections_refused,
        )
        yield CounterMetricFamily(
            "roomcast_connections_displaced",
            "Connections without a request head dropped to make room on a full server.",
            value=self.connections_displaced,
        )
        yield CounterMetricFamily(
            "roomcast_gap_fills",
            "Room sequence gaps read from the database (messages missed from the log).",
            value=self.gap_fills,
        )
        yield CounterMetricFamily(
            "roomcast_log_unreadable_entries",
            "Cluster log entries that could not be decoded (each resynchronises the node).",
            value=self.log_unreadable_entries,
        )
        yield CounterMetricFamily(
            "roomcast_db_commit_failures",
            "Group commits that failed (their senders got an internal error).",
            value=self.commit_failures,
        )
        yield GaugeMetricFamily(
            "roomcast_db_commit_failing",
            "1 while the most recent group commit failed (writes are failing), else 0.",
            value=int(self.commit_failing),
        )
        yield self.commit_seconds.family(
            "roomcast_db_commit_seconds", "Duration of one group commit."
        )
        yield self.commit_batch.family(
            "roomcast_db_commit_batch_size", "Operations committed in one transaction."
        )
        yield self.fanout.family(
            "roomcast_broadcast_fanout", "Recipients of one room broadcast on this node."
        )


def _labelled(name: str, documentation: str, label: str, counts: Counter[str]) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value, count in sorted(counts.items()):
        family.add_metric([value], count)
    return family

"""Prometheus metrics of a worker, read from its runners' own counters at scrape time.

Needs ``prometheus-client`` (the ``actorsource[prometheus]`` extra); nothing else in the
package imports this module. :class:`WorkerCollector` adds nothing to the data path: a scrape
reads what the runners count anyway (:class:`~.status.ActorStats`, the journal's position
and outbox, the progress :class:`~.health.Health` last read), in the scraping thread. The
durations are the histograms the runners keep per batch (:class:`~.status.Durations`).

Every metric has an ``actor`` label (a partition of a partitioned actor is an actor here).
Counters count since the worker started, across the restarts of an actor.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .._errors import ActorsourceError
from .health import Health
from .status import DURATION_BUCKETS, ActorStats, Durations

__all__ = ["WorkerCollector"]

_COUNTERS = (
    ("events_applied", "Events applied to the state and committed.", "applied"),
    ("duplicates", "Messages acknowledged without being applied (seen before).", "duplicates"),
    ("dead_letters", "Messages recorded as dead letters.", "dead_letters"),
)
_GAUGES = (
    ("lag", "Events the consumer has not delivered plus those delivered, not yet handled."),
    ("journal_position", "The last journal position applied to the state."),
    ("stream_sequence", "The stream sequence the journal holds up to."),
    ("outbox_pending", "Committed messages JetStream has not confirmed yet."),
    ("resident_entities", "Entities held in memory (entity actors only)."),
    ("running", "1 while the actor is running, else 0."),
)
_HISTOGRAMS = (
    ("apply_duration_seconds", "Decoding and applying one batch.", "apply_seconds"),
    (
        "commit_duration_seconds",
        "One journal transaction (a batch or a group of them).",
        "commit_seconds",
    ),
    ("snapshot_duration_seconds", "One snapshot: encoding and commit.", "snapshot_seconds"),
)


class WorkerCollector(Collector):
    """Collects ``actorsource_*`` metrics of the worker ``health`` watches."""

    def __init__(self, health: Health) -> None:
        self._health = health

    def collect(self) -> Iterator[Metric]:
        worker = self._health.worker
        names = worker.hosted()
        counters = {
            key: CounterMetricFamily(f"actorsource_{name}", doc, labels=["actor"])
            for name, doc, key in _COUNTERS
        }
        restarts = CounterMetricFamily(
            "actorsource_restarts",
            "Times an actor was restarted after a failure.",
            labels=["actor"],
        )
        gauges = {
            name: GaugeMetricFamily(f"actorsource_{name}", doc, labels=["actor"])
            for name, doc in _GAUGES
        }
        histograms = {
            key: HistogramMetricFamily(f"actorsource_{name}", doc, labels=["actor"])
            for name, doc, key in _HISTOGRAMS
        }
        for name in names:
            stats = worker.totals(name)
            for key, family in counters.items():
                family.add_metric([name], getattr(stats, key))
            restarts.add_metric([name], worker.restarts.get(name, 0))
            for key, histogram in histograms.items():
                buckets, total = _buckets(getattr(stats, key))
                histogram.add_metric([name], buckets, total)
            for gauge, value in self._gauges(name, stats).items():
                gauges[gauge].add_metric([name], value)
        yield from counters.values()
        yield restarts
        yield from gauges.values()
        yield from histograms.values()

    def _gauges(self, name: str, stats: ActorStats) -> dict[str, float]:
        worker = self._health.worker
        runner = worker.runners.get(name)
        out: dict[str, float] = {}
        running = runner is not None and runner.status.value == "running"
        out["running"] = 1.0 if running and name not in worker.halted else 0.0
        if runner is None:
            return out
        lag = self._health.lag(name)
        if lag is not None:
            out["lag"] = lag
        out["journal_position"] = runner.journal_pos
        journal: Any
        try:
            journal = runner.journal
        except ActorsourceError:
            journal = None  # not open (yet, or any more)
        if journal is not None:
            out["stream_sequence"] = journal.stream_positions.get(runner.stream or "", 0)
            out["outbox_pending"] = journal.unsent
        if runner.definition.entity is not None:
            try:
                out["resident_entities"] = len(runner.entities.resident)
            except ActorsourceError:
                pass  # not running
        return out


def _buckets(durations: Durations) -> tuple[list[tuple[str, float]], float]:
    """Prometheus' cumulative buckets (``le`` bounds, ``+Inf`` last) and the sum."""
    out: list[tuple[str, float]] = []
    seen = 0
    counts = list(durations.counts)  # a copy: the loop may count one more meanwhile
    for bound, count in zip((*DURATION_BUCKETS, float("inf")), counts, strict=True):
        seen += count
        out.append(("+Inf" if bound == float("inf") else repr(bound), seen))
    return out, durations.total

"""The vocabulary of a hosted actor's life: its status, its counters, and crash points."""

from __future__ import annotations

import enum
import time
from bisect import bisect_left
from dataclasses import dataclass, field, fields
from typing import Literal

__all__ = [
    "CRASH_POINTS",
    "DURATION_BUCKETS",
    "ActorStats",
    "ActorStatus",
    "CrashPoint",
    "CrashSwitch",
    "Durations",
    "SimulatedCrash",
]

#: Where a runner can be made to crash: around its journal commit and acknowledgement, and
#: around the outbox publishing what was committed (before sending; sent but not marked),
#: and half-way through a large snapshot written in parts (some parts in, no header);
#: in cluster mode, after a batch was admitted (appended to the partition's replicated
#: record) and before its SQLite commit.
CRASH_POINTS = (
    "before_commit",
    "after_admit",
    "after_commit",
    "after_ack",
    "before_publish",
    "after_publish",
    "between_snapshot_parts",
)
CrashPoint = Literal[
    "before_commit",
    "after_admit",
    "after_commit",
    "after_ack",
    "before_publish",
    "after_publish",
    "between_snapshot_parts",
]


class ActorStatus(enum.StrEnum):
    """The life cycle of a hosted actor."""

    STARTING = "starting"
    RECOVERING = "recovering"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


class SimulatedCrash(Exception):
    """Raised at an armed crash point: the actor stops at once, acknowledging nothing more."""

    def __init__(self, point: str) -> None:
        super().__init__(f"simulated crash at {point}")
        self.point = point


class CrashSwitch:
    """Arms a named crash point in a runner (used by the test harness)."""

    def __init__(self) -> None:
        self.armed: str | None = None

    def arm(self, point: CrashPoint) -> None:
        """Make the runner crash the next time it reaches ``point``."""
        if point not in CRASH_POINTS:
            raise ValueError(f"unknown crash point {point!r}; choose one of {CRASH_POINTS}")
        self.armed = point

    def check(self, point: str) -> None:
        """Raise SimulatedCrash if ``point`` is armed (once)."""
        if self.armed == point:
            self.armed = None
            raise SimulatedCrash(point)


#: The upper bounds, in seconds, of the buckets the durations of batches are counted in.
DURATION_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class Durations:
    """How long something took, counted in :data:`DURATION_BUCKETS` (the last count is
    for longer ones), and the sum: a histogram that costs a bisection to observe.

    Observed once per batch (a commit, the application of a batch, a snapshot), never per
    event; read as it stands by whoever reports it (a metrics scrape)."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(DURATION_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        """Count one duration of ``seconds``."""
        self.counts[bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.total += seconds

    @property
    def count(self) -> int:
        """How many durations were observed."""
        return sum(self.counts)

    def plus(self, other: Durations) -> Durations:
        """The durations of both, in a new object."""
        out = Durations()
        out.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        out.total = self.total + other.total
        return out


@dataclass
class ActorStats:
    """Counters of a running actor (since this runner started, at ``since``: monotonic).

    ``apply_seconds`` times the decoding and applying of each batch, ``commit_seconds`` each
    journal transaction, ``snapshot_seconds`` each snapshot (encoding and commit).
    """

    applied: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    ignored: int = 0
    batches: int = 0
    snapshots: int = 0
    retries: int = 0
    rebuilds: int = 0
    commit_failures: int = 0
    last_snapshot_pos: int = 0
    last_snapshot_at: float = 0.0
    since: float = field(default_factory=time.monotonic)
    apply_seconds: Durations = field(default_factory=Durations)
    commit_seconds: Durations = field(default_factory=Durations)
    snapshot_seconds: Durations = field(default_factory=Durations)

    def plus(self, other: ActorStats) -> ActorStats:
        """The counters and durations of both summed (what several runners of one actor did,
        one after the other); the other fields are ``other``'s."""
        out = ActorStats()
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if isinstance(mine, Durations):
                setattr(out, f.name, mine.plus(theirs))
            elif f.name in _SUMMED:
                setattr(out, f.name, mine + theirs)
            else:
                setattr(out, f.name, theirs)
        return out


_SUMMED = frozenset(
    {
        "applied",
        "duplicates",
        "dead_letters",
        "ignored",
        "batches",
        "snapshots",
        "retries",
        "rebuilds",
        "commit_failures",
    }
)

"""The vocabulary of a hosted actor's life: its status, its counters, and crash points."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "CRASH_POINTS",
    "ActorStats",
    "ActorStatus",
    "CrashPoint",
    "CrashSwitch",
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


@dataclass
class ActorStats:
    """Counters of a running actor (since this runner started, at ``since``: monotonic)."""

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

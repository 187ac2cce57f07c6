"""When a running actor plans a snapshot: by count, by time, once, and not for a bad state.

The clock is ``time.monotonic``, replaced by a hand-moved one in the synchronous tests.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from actorsource import actor, handles
from actorsource._log import get_logger
from actorsource._model.actor import ActorDefinition, definition_of
from actorsource._runtime.snapshot_schedule import SnapshotSchedule
from actorsource._runtime.status import ActorStats
from actorsource.journal import SQLiteJournal


@dataclass
class Added:
    amount: int


class Tally:
    """A state that counts its encodings and can be made impossible to encode."""

    def __init__(self) -> None:
        self.total = 0
        self.broken = False
        self.encoded = 0

    @handles(Added)
    def added(self, e: Added) -> None:
        self.total += e.amount

    def snapshot_state(self) -> dict[str, Any]:
        self.encoded += 1
        if self.broken:
            raise ValueError("this state cannot be written")
        return {"total": self.total}

    def restore_state(self, data: dict[str, Any]) -> None:
        self.total = data["total"]


@actor("tally", subjects=["tally.>"], snapshot_every=10)
class Counted(Tally):
    pass


@actor("timed", subjects=["timed.>"], snapshot_every=None, snapshot_interval=60)
class Timed(Tally):
    pass


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(time, "monotonic", clock)
    return clock


def schedule(cls: type, stats: ActorStats | None = None) -> SnapshotSchedule:
    definition: ActorDefinition = definition_of(cls)
    return SnapshotSchedule(definition, stats or ActorStats(), get_logger(actor=definition.name))


def snapshot_failures(caplog: pytest.LogCaptureFixture) -> int:
    return sum(r.getMessage() == "snapshot failed" for r in caplog.records)


# -- by count ------------------------------------------------------------------------------


def test_a_snapshot_is_due_once_every_events_were_applied_since_the_last(clock: Clock) -> None:
    s, state = schedule(Counted), Counted()
    state.total = 42
    assert s.due(9, state) is None
    snapshot = s.due(10, state)
    assert snapshot is not None
    assert snapshot.pos == 10
    assert json.loads(snapshot.state) == {"total": 42}


def test_a_planned_snapshot_is_not_planned_again_before_it_is_committed(clock: Clock) -> None:
    s, state = schedule(Counted), Counted()
    assert s.due(10, state) is not None
    assert s.due(15, state) is None  # 15 events since the last committed one, 5 since planned
    snapshot = s.due(20, state)
    assert snapshot is not None
    assert snapshot.pos == 20


def test_a_committed_snapshot_restarts_the_count_and_is_counted(clock: Clock) -> None:
    stats = ActorStats()
    s, state = schedule(Counted, stats), Counted()
    s.taken(10)
    assert (stats.snapshots, stats.last_snapshot_pos) == (1, 10)
    assert s.due(19, state) is None
    assert s.due(20, state) is not None


# -- by time -------------------------------------------------------------------------------


def test_a_snapshot_is_due_once_the_interval_passed_with_new_events(clock: Clock) -> None:
    s, state = schedule(Timed), Timed()
    clock.now += 59.9
    assert s.due(1, state) is None
    clock.now += 0.1
    snapshot = s.due(1, state)
    assert snapshot is not None
    assert snapshot.pos == 1


def test_no_snapshot_is_due_by_time_without_new_events(clock: Clock) -> None:
    s, state = schedule(Timed), Timed()
    s.restored(5)
    clock.now += 3_600
    assert s.due(5, state) is None


def test_planning_a_snapshot_restarts_the_interval(clock: Clock) -> None:
    s, state = schedule(Timed), Timed()
    clock.now += 60
    assert s.due(1, state) is not None
    clock.now += 30
    assert s.due(2, state) is None
    clock.now += 30
    assert s.due(2, state) is not None


# -- a state that cannot be encoded --------------------------------------------------------


def test_a_state_that_cannot_be_encoded_is_logged_and_not_tried_until_due_again(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    s, state = schedule(Counted), Counted()
    state.broken = True
    assert s.due(10, state) is None
    assert snapshot_failures(caplog) == 1
    for pos in range(11, 20):
        assert s.due(pos, state) is None
    assert state.encoded == 1
    assert snapshot_failures(caplog) == 1
    assert s.due(20, state) is None
    assert state.encoded == 2
    assert snapshot_failures(caplog) == 2


def test_a_state_that_can_be_encoded_again_is_snapshotted_when_next_due(clock: Clock) -> None:
    s, state = schedule(Counted), Counted()
    state.broken = True
    assert s.due(10, state) is None
    state.broken = False
    assert s.due(15, state) is None
    snapshot = s.due(20, state)
    assert snapshot is not None
    assert snapshot.pos == 20


# -- restored ------------------------------------------------------------------------------


def test_restoring_counts_events_from_the_restored_snapshot(clock: Clock) -> None:
    stats = ActorStats()
    s, state = schedule(Counted, stats), Counted()
    s.restored(50)
    assert stats.last_snapshot_pos == 50
    assert s.due(59, state) is None
    assert s.due(60, state) is not None


def test_restoring_forgets_a_snapshot_planned_but_never_committed(clock: Clock) -> None:
    s, state = schedule(Counted), Counted()
    assert s.due(10, state) is not None  # planned; its batch is then set aside, say
    s.restored(None)
    snapshot = s.due(10, state)
    assert snapshot is not None
    assert snapshot.pos == 10


def test_restoring_restarts_the_interval(clock: Clock) -> None:
    s, state = schedule(Timed), Timed()
    clock.now += 50
    s.restored(None)
    clock.now += 50
    assert s.due(1, state) is None
    clock.now += 10
    assert s.due(1, state) is not None


# -- take_now ------------------------------------------------------------------------------


async def test_take_now_writes_a_snapshot_on_its_own_and_counts_it(tmp_path: Path) -> None:
    stats = ActorStats()
    s, state = schedule(Counted, stats), Counted()
    state.total = 7
    async with SQLiteJournal(tmp_path / "tally.journal.sqlite", actor="tally") as journal:
        await s.take_now(journal, anyio.Lock(), state, 0)
        [info] = await journal.snapshots()
        snapshot = await journal.read_snapshot(info.id)
    assert snapshot is not None
    assert json.loads(snapshot.state) == {"total": 7}
    assert stats.snapshots == 1


async def test_take_now_writes_nothing_for_a_state_that_cannot_be_encoded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stats = ActorStats()
    s, state = schedule(Counted, stats), Counted()
    state.broken = True
    async with SQLiteJournal(tmp_path / "tally.journal.sqlite", actor="tally") as journal:
        await s.take_now(journal, anyio.Lock(), state, 0)
        assert await journal.snapshots() == []
    assert stats.snapshots == 0
    assert snapshot_failures(caplog) == 1

"""Spacing a large state's snapshots by their cost: the budget, the floor, the bound.

Costs are made up (``SnapshotSpacing``) or made by a hand-moved clock that the state's own
``snapshot_state`` advances (``SnapshotSchedule``): nothing here depends on the machine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest

from actorsource import ActorDefinitionError, SnapshotPolicy, actor, handles
from actorsource._log import get_logger
from actorsource._model.actor import definition_of
from actorsource._model.snapshots import SMALL_STATE_BYTES, STRETCH_LIMIT
from actorsource._runtime.snapshot_schedule import SnapshotSchedule
from actorsource._runtime.snapshot_spacing import SnapshotSpacing
from actorsource._runtime.status import ActorStats

BIG = 2 * SMALL_STATE_BYTES


# -- the spacing on its own ----------------------------------------------------------------


def test_before_any_snapshot_the_policy_alone_decides() -> None:
    assert SnapshotSpacing(SnapshotPolicy(every=10)).allows(10, 0.0)


def test_a_large_snapshot_is_followed_by_one_no_sooner_than_its_cost_over_the_budget() -> None:
    spacing = SnapshotSpacing(SnapshotPolicy(every=1_000, budget=0.1))
    spacing.encoded(0.05, BIG)
    spacing.committed(0.15)
    assert spacing.gap == pytest.approx(2.0)
    assert not spacing.allows(5_000, 1.99)
    assert spacing.allows(5_000, 2.0)


def test_the_encoding_counts_before_the_commit_is_known() -> None:
    spacing = SnapshotSpacing(SnapshotPolicy(every=1_000, budget=0.5))
    spacing.encoded(0.2, BIG)
    assert spacing.gap == pytest.approx(0.4)


def test_a_small_snapshot_is_never_spaced_out_whatever_it_cost() -> None:
    spacing = SnapshotSpacing(SnapshotPolicy(every=10, budget=0.1))
    spacing.encoded(0.5, SMALL_STATE_BYTES - 1)
    spacing.committed(1.0)
    assert spacing.gap == 0.0
    assert spacing.allows(10, 0.0)


def test_without_a_budget_no_snapshot_is_spaced_out() -> None:
    spacing = SnapshotSpacing(SnapshotPolicy(every=10, budget=None))
    spacing.encoded(0.5, BIG)
    spacing.committed(1.0)
    assert spacing.allows(10, 0.0)


def test_a_snapshot_is_due_after_stretch_limit_times_every_events_whatever_it_costs() -> None:
    spacing = SnapshotSpacing(SnapshotPolicy(every=10, budget=0.1))
    spacing.encoded(10.0, BIG)
    assert not spacing.allows(STRETCH_LIMIT * 10 - 1, 1.0)
    assert spacing.allows(STRETCH_LIMIT * 10, 1.0)


def test_a_policy_by_time_only_is_spaced_by_cost_without_a_bound_in_events() -> None:
    spacing = SnapshotSpacing(SnapshotPolicy(every=None, interval=1.0, budget=0.1))
    spacing.encoded(1.0, BIG)
    assert spacing.limit is None
    assert not spacing.allows(10**9, 9.9)
    assert spacing.allows(1, 10.0)


def test_a_cheaper_snapshot_brings_the_next_one_closer_again() -> None:
    spacing = SnapshotSpacing(SnapshotPolicy(every=10, budget=0.1))
    spacing.encoded(1.0, BIG)
    spacing.encoded(0.01, BIG)
    spacing.committed(0.0)
    assert spacing.allows(10, 0.1)


# -- the policy option ---------------------------------------------------------------------


@pytest.mark.parametrize("budget", [0, -0.1, 1.5, True, "0.1", float("nan")])
def test_a_bad_snapshot_budget_is_refused(budget: Any) -> None:
    with pytest.raises(ActorDefinitionError, match="snapshot_budget"):
        SnapshotPolicy(budget=budget)


@pytest.mark.parametrize("budget", [None, 0.01, 1, 1.0])
def test_a_snapshot_budget_is_a_share_of_time_or_none(budget: float | None) -> None:
    assert SnapshotPolicy(budget=budget).budget == budget


def test_the_default_snapshot_budget_is_a_tenth() -> None:
    assert SnapshotPolicy().budget == 0.1


def test_the_actor_decorator_passes_its_snapshot_budget_on() -> None:
    @actor("budgeted", subjects=["budgeted.>"], snapshot_budget=0.25)
    class Budgeted:
        @handles(Grown)
        def grown(self, e: Grown) -> None:
            pass

    assert definition_of(Budgeted).snapshots.budget == 0.25


def test_a_snapshot_budget_beside_a_whole_policy_is_refused() -> None:
    with pytest.raises(ActorDefinitionError, match="not both"):
        actor("both", subjects=["both.>"], snapshots=SnapshotPolicy(), snapshot_budget=0.5)


# -- the schedule measures -----------------------------------------------------------------


@dataclass
class Grown:
    size: int


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


CLOCK: list[Clock] = []


class Sized:
    """A state of ``size`` bytes whose encoding takes ``encode_seconds`` of the fake clock."""

    def __init__(self) -> None:
        self.size = 10
        self.encode_seconds = 0.0

    @handles(Grown)
    def grown(self, e: Grown) -> None:
        self.size = e.size

    def snapshot_state(self) -> str:
        CLOCK[0].now += self.encode_seconds
        return "x" * self.size

    def restore_state(self, data: str) -> None:
        self.size = len(data)


@actor("sized", subjects=["sized.>"], snapshot_every=10, snapshot_budget=0.1)
class SizedActor(Sized):
    pass


def sized_schedule(clock: Clock) -> tuple[SnapshotSchedule, SizedActor]:
    CLOCK[:] = [clock]
    definition = definition_of(SizedActor)
    schedule = SnapshotSchedule(definition, ActorStats(), get_logger(actor=definition.name))
    return schedule, SizedActor()


def test_a_large_state_is_snapshotted_again_only_once_its_measured_cost_fits_the_budget(
    clock: Clock,
) -> None:
    s, state = sized_schedule(clock)
    state.size, state.encode_seconds = BIG, 0.02
    assert s.due(10, state) is not None
    clock.now += 0.03  # its commit
    s.taken(10)
    assert s.spacing.gap == pytest.approx(0.5)  # (0.02 + 0.03) / 0.1
    clock.now += 0.4
    assert s.due(20, state) is None
    assert s.due(500, state) is None
    clock.now += 0.1
    snapshot = s.due(510, state)
    assert snapshot is not None
    assert snapshot.pos == 510


def test_a_small_state_snapshots_every_n_events_however_slow_its_snapshots(clock: Clock) -> None:
    s, state = sized_schedule(clock)
    state.encode_seconds = 1.0
    for pos in (10, 20, 30):
        assert s.due(pos - 1, state) is None
        assert s.due(pos, state) is not None
        clock.now += 1.0
        s.taken(pos)


def test_a_large_state_is_snapshotted_after_the_bound_in_events_however_costly(
    clock: Clock,
) -> None:
    s, state = sized_schedule(clock)
    state.size, state.encode_seconds = BIG, 60.0
    assert s.due(10, state) is not None
    s.taken(10)
    assert s.due(10 + STRETCH_LIMIT * 10 - 1, state) is None
    assert s.due(10 + STRETCH_LIMIT * 10, state) is not None

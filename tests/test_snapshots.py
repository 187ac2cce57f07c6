"""Snapshot policy and state serialization."""

from __future__ import annotations

import math

import anyio
import pytest
from actors import Added

from actorsource import ActorDefinitionError, Context, SnapshotError, SnapshotPolicy, actor, handles
from actorsource._model.actor import definition_of
from actorsource.testing import ActorKit


def test_a_snapshot_is_due_after_every_n_events() -> None:
    policy = SnapshotPolicy(every=10)
    assert not policy.due(9, last_at=0.0, now=1e9)
    assert policy.due(10, last_at=0.0, now=1e9)


def test_a_snapshot_is_due_after_the_interval_only_when_events_arrived() -> None:
    policy = SnapshotPolicy(every=None, interval=5.0)
    assert not policy.due(0, last_at=0.0, now=100.0)
    assert not policy.due(3, last_at=98.0, now=100.0)
    assert policy.due(3, last_at=90.0, now=100.0)


def test_a_bad_policy_is_refused() -> None:
    with pytest.raises(ActorDefinitionError, match="snapshot_every"):
        SnapshotPolicy(every=0)
    with pytest.raises(ActorDefinitionError, match="keep_snapshots"):
        SnapshotPolicy(keep=0)


def test_an_actor_takes_its_snapshot_policy_whole() -> None:
    policy = SnapshotPolicy(every=None, interval=30.0, keep=5)

    @actor("policed", subjects=["policed.>"], snapshots=policy)
    class Policed:
        @handles(Added)
        def added(self, event: Added) -> None:
            pass

    assert definition_of(Policed).snapshots is policy


def test_a_snapshot_policy_and_snapshot_keywords_together_are_refused() -> None:
    with pytest.raises(ActorDefinitionError, match="not both"):
        actor("both", subjects=["both.>"], snapshots=SnapshotPolicy(), snapshot_every=5)


def test_snapshots_must_be_a_snapshot_policy() -> None:
    with pytest.raises(ActorDefinitionError, match="snapshots must be a SnapshotPolicy"):
        actor("loose", subjects=["loose.>"], snapshots=100)  # type: ignore[arg-type]


@actor("typed", subjects=["typed.>"])
class Typed:
    by_number: dict[int, str]
    pair: tuple[int, int]
    plain: dict[str, int]

    def __init__(self) -> None:
        self.by_number = {}
        self.pair = (0, 0)
        self.plain = {}

    @handles(Added)
    def added(self, event: Added) -> None:
        self.by_number[event.amount] = event.key
        self.pair = (self.pair[0] + 1, event.amount)


def test_annotated_attributes_are_restored_with_their_exact_types() -> None:
    codec = definition_of(Typed).state_codec
    state = Typed()
    state.added(Added("a", 7))
    fresh = Typed()
    codec.restore(fresh, codec.encode(state))
    assert fresh.by_number == {7: "a"}
    assert fresh.pair == (1, 7)


@actor("untyped", subjects=["untyped.>"])
class Untyped:
    def __init__(self) -> None:
        self.by_number: dict[int, str] = {}

    @handles(Added)
    def added(self, event: Added) -> None:
        self.by_number[event.amount] = event.key


def test_an_unannotated_attribute_that_would_not_round_trip_is_refused_naming_it() -> None:
    codec = definition_of(Untyped).state_codec
    state = Untyped()
    state.added(Added("a", 7))
    with pytest.raises(SnapshotError, match=r"attribute 'by_number' of Untyped .* annotate it"):
        codec.encode(state)


@actor("prices", subjects=["prices.>"], snapshot_every=1)
class Prices:
    """A typed float that starts at infinity (the lowest price seen so far) and a maybe-float."""

    lowest: float
    last: dict[str, float | None]

    def __init__(self) -> None:
        self.lowest = math.inf
        self.last = {}

    @handles(Added)
    def added(self, event: Added) -> None:
        price = math.nan if event.amount < 0 else float(event.amount)
        self.last[event.key] = price
        if event.amount >= 0:
            self.lowest = min(self.lowest, price)


def test_a_typed_float_holding_inf_or_nan_is_refused_naming_where_it_is() -> None:
    codec = definition_of(Prices).state_codec
    state = Prices()
    with pytest.raises(SnapshotError, match=r"attribute 'lowest' of Prices holds inf: JSON has"):
        codec.encode(state)
    state.added(Added("a", 5))
    state.added(Added("b", -1))  # nan: msgspec would write null, restored as None
    with pytest.raises(SnapshotError, match=r"attribute 'last' of Prices holds nan at last\['b'\]"):
        codec.encode(state)
    state.last["b"] = None
    fresh = Prices()
    codec.restore(fresh, codec.encode(state))
    assert (fresh.lowest, fresh.last) == (5.0, {"a": 5.0, "b": None})


async def test_a_state_holding_inf_is_never_snapshotted_and_recovers_exactly_by_replay(
    actor_kit: ActorKit,
) -> None:
    async with actor_kit.start(Prices) as prices:
        await actor_kit.publish("prices.a", Added("a", -1))  # lowest stays inf
        await prices.settled()
        assert await prices.snapshots() == []  # refused, not written as null
        await prices.crash()
        assert prices.recovery.snapshot_pos is None
        assert prices.recovery.replayed == 1
        assert prices.state.lowest == math.inf
        assert math.isnan(prices.state.last["a"] or 0.0)


@actor("custom", subjects=["custom.>"])
class Custom:
    def __init__(self) -> None:
        self.seen: set[str] = set()

    def snapshot_state(self) -> object:
        return sorted(self.seen)

    def restore_state(self, data: list[str]) -> None:
        self.seen = set(data)

    @handles(Added)
    def added(self, event: Added) -> None:
        self.seen.add(event.key)


def test_a_class_can_take_over_its_snapshot_format() -> None:
    codec = definition_of(Custom).state_codec
    state = Custom()
    state.added(Added("b", 1))
    state.added(Added("a", 1))
    fresh = Custom()
    codec.restore(fresh, codec.encode(state))
    assert fresh.seen == {"a", "b"}


def test_defining_only_one_of_the_snapshot_hooks_is_refused() -> None:
    with pytest.raises(ActorDefinitionError, match="only one of snapshot_state/restore_state"):

        @actor("half", subjects=["half.>"])
        class Half:
            def snapshot_state(self) -> object:
                return None

            @handles(Added)
            def added(self, event: Added) -> None: ...


@actor("timed", subjects=["timed.>"], snapshot_every=None, snapshot_interval=0.5)
class Timed:
    total: int

    def __init__(self) -> None:
        self.total = 0

    @handles(Added)
    def added(self, event: Added) -> None:
        self.total += event.amount


async def test_snapshots_are_taken_by_time_when_events_keep_arriving(actor_kit: ActorKit) -> None:
    async with actor_kit.start(Timed) as timed:
        await actor_kit.publish("timed.a", Added("a", 1))
        await timed.settled()
        assert await timed.snapshots() == []
        await anyio.sleep(0.6)  # the policy is about elapsed time: let it elapse
        await actor_kit.publish("timed.a", Added("a", 2))
        await timed.settled()
        assert [s.pos for s in await timed.snapshots()] == [2]


async def test_an_undecodable_snapshot_with_a_valid_checksum_is_skipped(
    actor_kit: ActorKit,
) -> None:
    from actorsource._model.snapshots import CODEC_NAME
    from actorsource.journal import SQLiteJournal

    async with actor_kit.start(Timed) as timed:
        await actor_kit.publish("timed.a", Added("a", 5))
        await timed.settled()
        await timed.stop()
        # A snapshot that verifies but whose bytes do not fit the state's shape.
        async with SQLiteJournal(timed.journal_path, actor="timed") as journal:
            await journal.save_snapshot(
                pos=1, model_version=1, codec=CODEC_NAME, state=b'{"total": "five"}', keep=3
            )
        await timed.start()
        [(pos, why)] = timed.recovery.skipped
        assert pos == 1
        assert why.startswith("cannot decode")
        assert timed.recovery.snapshot_pos == 1  # the valid one written at the graceful stop
        assert timed.state.total == 5


HOLD = {"gate": anyio.Event()}


@actor("held", subjects=["held.>"], snapshot_every=None)
class Held:
    """Changes its state, then awaits a gate on events keyed "hold" (a slow async handler)."""

    totals: dict[str, int]

    def __init__(self) -> None:
        self.totals = {}

    @handles(Added)
    async def added(self, event: Added, ctx: Context) -> None:
        self.totals[event.key] = self.totals.get(event.key, 0) + event.amount
        if event.key == "hold" and not ctx.replaying:
            await HOLD["gate"].wait()


async def test_a_snapshot_asked_in_the_middle_of_a_batch_waits_for_its_commit(
    actor_kit: ActorKit,
) -> None:
    HOLD["gate"] = anyio.Event()
    definition = definition_of(Held)
    async with actor_kit.start(Held) as held:
        await actor_kit.publish("held.a", Added("a", 1))
        await held.settled()
        await actor_kit.publish("held.hold", Added("hold", 5))
        with anyio.fail_after(10):
            while "hold" not in held.state.totals:  # applied, not yet committed
                await anyio.sleep(0.01)
        taken: list[int] = []
        async with anyio.create_task_group() as tg:

            async def take() -> None:
                taken.append(await held.snapshot())

            tg.start_soon(take)
            await anyio.wait_all_tasks_blocked()
            assert taken == []  # not while the state is ahead of the journal
            HOLD["gate"].set()
        assert taken == [2]
        [info] = await held.snapshots()
        snapshot = await held.journal.read_snapshot(info.id)
        assert snapshot is not None
        state = definition.new_state()
        definition.state_codec.restore(state, snapshot.state)
        assert state.totals == (await held.fold()).totals == {"a": 1, "hold": 5}

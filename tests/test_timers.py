"""``@every``: what time makes happen is recorded in the journal, and replays without a timer."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import anyio
import pytest

from actorsource import ActorDefinitionError, Context, actor, every, handles
from actorsource.journal import SQLiteJournal
from actorsource.testing import ActorKit


@dataclass
class Opened:
    order_id: str
    ttl: float


@dataclass
class Expired:
    order_id: str
    at: float


@dataclass
class Deadlines:
    """Holds that expire ``ttl`` seconds after they were opened."""

    deadlines: dict[str, float] = field(default_factory=dict)
    expired: dict[str, float] = field(default_factory=dict)

    @handles(Opened)
    def opened(self, e: Opened, ctx: Context) -> None:
        # The journal's receive time, not the clock: the same on every replay.
        self.deadlines[e.order_id] = ctx.entry.received_at + e.ttl

    @handles(Expired)
    def expire(self, e: Expired) -> None:
        self.deadlines.pop(e.order_id, None)
        self.expired[e.order_id] = e.at

    def due(self, now: float) -> list[Expired]:
        return [Expired(oid, now) for oid, due in sorted(self.deadlines.items()) if due <= now]


@actor("holds", subjects=["holds.>"])
@dataclass
class Holds(Deadlines):
    """Deadlines checked every 50 ms."""

    ticks: int = 0

    @every(0.05)
    def check(self, now: float) -> list[Expired]:
        self.ticks += 1  # a timer should only read the state; this shows it is not replayed
        return self.due(now)


async def test_events_a_timer_returns_are_journaled_applied_and_replayed_without_it(
    actor_kit: ActorKit,
) -> None:
    async with actor_kit.start(Holds) as holds:
        await actor_kit.publish("holds.a", Opened("a", 0.1))
        await actor_kit.publish("holds.b", Opened("b", 60.0))
        await actor_kit.publish("holds.c", Opened("c", 0.2))
        with anyio.fail_after(10):
            while len(holds.state.expired) < 2:
                await anyio.sleep(0.01)
        await holds.settled()
        live = dict(holds.state.expired)
        assert sorted(live) == ["a", "c"]
        assert list(holds.state.deadlines) == ["b"]
        entries = await holds.entries()
        recorded = [e for e in entries if e.type == "Expired"]
        assert [e.subject for e in recorded] == ["@recorded", "@recorded"]
        assert all(e.stream is None and e.msg_id is None for e in recorded)
        await holds.stop()
        async with SQLiteJournal(holds.journal_path, actor="holds") as journal:
            await journal.delete_snapshots()
        await holds.start()
        assert holds.state.expired == live  # the times came back from the journal
        assert holds.state.ticks == 0  # and no timer ran during the replay
        assert await holds.fold() == holds.state
        await anyio.sleep(0.2)  # ticks go on live, and find nothing more to expire
        assert holds.state.ticks > 0
        assert len(await holds.entries()) == len(entries)


@dataclass
class Armed:
    key: str


@dataclass
class Fired:
    key: str


BROKEN = {"on": True}


@actor("fuse", subjects=["fuse.>"])
@dataclass
class Fuse:
    armed: list[str] = field(default_factory=list)
    fired: list[str] = field(default_factory=list)

    @handles(Armed)
    def arm(self, e: Armed) -> None:
        self.armed.append(e.key)

    @handles(Fired)
    def fire(self, e: Fired) -> None:
        self.armed.remove(e.key)
        self.fired.append(e.key)
        if BROKEN["on"]:
            raise RuntimeError("a bug in the handler of a timer's event")

    @every(0.05)
    def tick(self, now: float) -> Fired | None:
        return Fired(self.armed[0]) if self.armed else None


async def test_a_failing_timer_leaves_no_trace_and_is_tried_again_at_its_next_tick(
    actor_kit: ActorKit, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="actorsource")
    BROKEN["on"] = True
    try:
        async with actor_kit.start(Fuse) as fuse:
            await actor_kit.publish("fuse.x", Armed("x"))
            with anyio.fail_after(10):
                while not any(r.getMessage() == "timer failed" for r in caplog.records):
                    await anyio.sleep(0.01)
            await fuse.settled()
            assert fuse.state.armed == ["x"]  # the half-applied change was rolled back
            assert fuse.state.fired == []
            assert [e.type for e in await fuse.entries()] == ["Armed"]
            BROKEN["on"] = False
            with anyio.fail_after(10):
                while not fuse.state.fired:
                    await anyio.sleep(0.01)
            await fuse.settled()
            assert fuse.state.fired == ["x"]
            assert [e.type for e in await fuse.entries()] == ["Armed", "Fired"]
    finally:
        BROKEN["on"] = False


def test_a_timer_is_declared_with_a_positive_interval_and_the_right_signature() -> None:
    with pytest.raises(ActorDefinitionError, match="seconds > 0"):
        every(0)

    with pytest.raises(ActorDefinitionError, match=r"def tick\(self, now: float\)"):

        @actor("bad-timer", subjects=["bad.>"])
        class Bad:
            @handles(Armed)
            def arm(self, e: Armed) -> None: ...

            @every(1)
            def tick(self) -> None: ...


@actor("reminders", subjects=["reminders.>"])
@dataclass
class Reminders(Deadlines):
    """Deadlines with a timer that would not fire by itself during a test."""

    @every(3_600)
    def check(self, now: float) -> list[Expired]:
        return self.due(now)


async def test_a_test_drives_a_timer_at_the_times_it_chooses(actor_kit: ActorKit) -> None:
    async with actor_kit.start(Reminders) as reminders:
        await actor_kit.publish("reminders.a", Opened("a", 60.0))
        await actor_kit.publish("reminders.b", Opened("b", 600.0))
        await reminders.settled()
        opened_at = (await reminders.entries())[0].received_at
        assert await reminders.tick(now=opened_at + 59) == 0  # not due yet
        assert await reminders.tick(now=opened_at + 61) == 1
        assert reminders.state.expired == {"a": opened_at + 61}
        assert await reminders.tick(now=opened_at + 61) == 0  # already expired
        assert [e.type for e in await reminders.entries()] == ["Opened", "Opened", "Expired"]
        await reminders.crash()  # committed: it survives a crash
        assert reminders.state.expired == {"a": opened_at + 61}
        assert list(reminders.state.deadlines) == ["b"]

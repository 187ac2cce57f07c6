"""Small actors used across the tests."""

from __future__ import annotations

import time
from dataclasses import dataclass

import anyio

from actorsource import Context, ErrorPolicy, actor, handles
from actorsource.testing import ActorProbe


@dataclass
class Added:
    key: str
    amount: int


@dataclass
class Boom:
    key: str


@actor("counter", subjects=["count.>"], snapshot_every=10, keep_snapshots=3)
class Counter:
    """Sums amounts per key and remembers the order it saw them in."""

    totals: dict[str, int]
    order: list[int]

    def __init__(self) -> None:
        self.totals = {}
        self.order = []

    @handles(Added)
    def added(self, event: Added, ctx: Context) -> None:
        self.totals[event.key] = self.totals.get(event.key, 0) + event.amount
        self.order.append(event.amount)

    @handles(Boom)
    def boom(self, event: Boom) -> None:
        # Changes state, then fails: the runtime must not keep the half-applied change.
        self.totals[event.key] = self.totals.get(event.key, 0) + 1_000_000
        raise RuntimeError(f"boom on {event.key}")


def expected_totals(events: list[Added]) -> dict[str, int]:
    """An independent fold of exactly what was published."""
    totals: dict[str, int] = {}
    for e in events:
        totals[e.key] = totals.get(e.key, 0) + e.amount
    return totals


@actor("slow-counter", subjects=["slow.>"])
class SlowCounter:
    """Awaits a second over its first event: longer than the tests' ack_wait."""

    totals: dict[str, int]

    def __init__(self) -> None:
        self.totals = {}

    @handles(Added)
    async def added(self, event: Added) -> None:
        if not self.totals:
            await anyio.sleep(1.0)
        self.totals[event.key] = self.totals.get(event.key, 0) + event.amount


@actor("blocking-counter", subjects=["blocking.>"])
class BlockingCounter:
    """Blocks the event loop for a second over its first event (a CPU-bound handler)."""

    totals: dict[str, int]

    def __init__(self) -> None:
        self.totals = {}

    @handles(Added)
    def added(self, event: Added) -> None:
        if not self.totals:
            time.sleep(1.0)
        self.totals[event.key] = self.totals.get(event.key, 0) + event.amount


async def assert_exactly_once(probe: ActorProbe[Counter], events: list[Added]) -> None:
    """The three invariants at once: nothing lost, nothing applied twice, state = fold."""
    assert probe.state.totals == expected_totals(events)  # an independent fold of the input
    entries = await probe.entries()
    assert len(entries) == len(events)
    assert len({e.stream_seq for e in entries}) == len(entries)
    assert (await probe.fold()).totals == probe.state.totals


FRAGILE = {"broken": False}


@actor("fragile", subjects=["fragile.>"], errors=ErrorPolicy(retries=0))
class Fragile:
    """Its handler fails while FRAGILE says it is broken (a bug, fixed later)."""

    totals: dict[str, int]

    def __init__(self) -> None:
        self.totals = {}

    @handles(Added)
    def added(self, event: Added, ctx: Context) -> None:
        if FRAGILE["broken"] and not ctx.replaying:
            raise ValueError("a bug in the handler")
        self.totals[event.key] = self.totals.get(event.key, 0) + event.amount


@dataclass
class Nap:
    seconds: float
    block: bool  # True: time.sleep, blocking the event loop; False: await anyio.sleep


@actor("napper", subjects=["nap.>"])
class Napper:
    """Naps as each event says: awaiting (the actor lags, the loop runs) or blocking the loop."""

    naps: int

    def __init__(self) -> None:
        self.naps = 0

    @handles(Nap)
    async def nap(self, event: Nap, ctx: Context) -> None:
        if not ctx.replaying:
            if event.block:
                time.sleep(event.seconds)  # blocking the loop: what the test is about
            else:
                await anyio.sleep(event.seconds)
        self.naps += 1

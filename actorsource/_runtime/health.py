"""Whether a worker is alive and ready, as health probes ask: a heartbeat and a progress view.

Probes are answered from another thread (:mod:`.probe_server`), which must answer even while
the event loop is blocked: so it never waits for the loop. The loop leaves what they need
where that thread can read it:

- the **heartbeat**: a task stamps the monotonic clock every ``beat_every`` seconds; a stamp
  older than ``stale_after`` means the event loop is stuck (a handler blocking it, a long
  synchronous call), and the worker is not alive;
- the **progress** of each hosted actor's consumer (:func:`~.progress.read_progress`, one
  consumer info request per actor), read every ``refresh_every`` seconds.

A worker is **ready** when every hosted actor is running, not halted, and its lag (what its
consumer has not delivered plus what is delivered and not handled yet) is at most ``max_lag``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import anyio

from .progress import Progress, read_progress
from .runner import ActorRunner
from .status import ActorStats, ActorStatus

__all__ = ["Health", "HealthOptions", "Hosting", "Verdict"]


class Hosting(Protocol):
    """What health and metrics read of a worker (:class:`~.worker.Worker`)."""

    @property
    def runners(self) -> Mapping[str, ActorRunner]: ...
    @property
    def restarts(self) -> Mapping[str, int]: ...
    @property
    def halted(self) -> Mapping[str, BaseException]: ...
    def hosted(self) -> list[str]: ...
    def totals(self, name: str) -> ActorStats: ...


@dataclass(frozen=True)
class HealthOptions:
    """``stale_after``: seconds without a heartbeat after which the worker is not alive;
    ``max_lag``: the most events an actor may lag behind its stream and be ready;
    ``refresh_every``: seconds between two readings of the consumers' progress."""

    stale_after: float = 10.0
    max_lag: int = 1_000
    refresh_every: float = 1.0

    def __post_init__(self) -> None:
        if self.stale_after <= 0 or self.refresh_every <= 0 or self.max_lag < 0:
            raise ValueError("stale_after and refresh_every must be positive, max_lag zero or more")


@dataclass(frozen=True)
class Verdict:
    """A probe's answer: ``ok``, and in one line why (or why not)."""

    ok: bool
    reason: str


class Health:
    """The liveness and readiness of one worker; :meth:`run` keeps them fresh (on the loop),
    :meth:`alive` and :meth:`ready` may be asked from any thread."""

    def __init__(self, worker: Hosting, options: HealthOptions | None = None) -> None:
        self.worker = worker
        self.options = options or HealthOptions()
        self.beat = time.monotonic()
        # Per actor: the runner its progress was read from, and what was read (None: could
        # not be). Replaced whole, so that another thread reads one consistent dict.
        self.progress: dict[str, tuple[ActorRunner, Progress | None]] = {}

    async def run(self) -> None:
        """Beat and read the consumers' progress until cancelled."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._beat)
            while True:
                await self._refresh()
                await anyio.sleep(self.options.refresh_every)

    async def _beat(self) -> None:
        every = min(1.0, self.options.stale_after / 4)
        while True:
            self.beat = time.monotonic()
            await anyio.sleep(every)

    async def _refresh(self) -> None:
        fresh: dict[str, tuple[ActorRunner, Progress | None]] = {}
        for name, runner in list(self.worker.runners.items()):
            fresh[name] = (runner, await read_progress(runner))
        self.progress = fresh

    def lag(self, name: str) -> int | None:
        """What actor ``name`` had left to handle when last read (None: not known)."""
        runner = self.worker.runners.get(name)
        runner_then, progress = self.progress.get(name, (None, None))
        if runner is None or runner_then is not runner or progress is None:
            return None
        return progress.pending + progress.buffered

    def alive(self) -> Verdict:
        """Alive: the event loop stamped its heartbeat within ``stale_after`` seconds."""
        age = time.monotonic() - self.beat
        limit = self.options.stale_after
        if age > limit:
            return Verdict(False, f"event loop unresponsive for {age:.1f} s (limit {limit:g} s)")
        return Verdict(True, f"event loop responsive ({age:.2f} s since its heartbeat)")

    def ready(self) -> Verdict:
        """Ready: alive, and every hosted actor running with a lag of at most ``max_lag``."""
        alive = self.alive()
        if not alive.ok:
            return alive
        names: Sequence[str] = self.worker.hosted()
        if not names:
            return Verdict(False, "no actor hosted yet")
        worker = self.worker
        for name in names:
            if name in worker.halted:
                return Verdict(False, f"actor {name} halted: {worker.halted[name]}")
            runner = worker.runners.get(name)
            if runner is None or runner.status is not ActorStatus.RUNNING:
                state = "starting" if runner is None else runner.status.value
                return Verdict(False, f"actor {name} is {state}")
            lag = self.lag(name)
            if lag is None:
                return Verdict(False, f"actor {name}: its consumer has not been read yet")
            if lag > self.options.max_lag:
                return Verdict(
                    False, f"actor {name} lags {lag:,} events (at most {self.options.max_lag:,})"
                )
        return Verdict(True, f"{len(names)} actors running and caught up")

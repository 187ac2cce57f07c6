"""The worker side of ``bench/chaos.py`` (and ``bench/shop_chaos.py``): worker processes,
what their JSON logs say, and the loop that kills them with SIGKILL at seeded moments."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import nats.js.errors
from nats.js import JetStreamContext

__all__ = [
    "ACTOR",
    "STREAM",
    "TARGET",
    "ChaosError",
    "Fleet",
    "Progress",
    "Say",
    "WorkerProcess",
    "consumer_info",
    "kill_loop",
    "reap",
    "settle",
    "wait_for_phase",
]

ROOT = Path(__file__).resolve().parent.parent
ACTOR = "accounts"
STREAM = "ACCOUNTS"
TARGET = "examples.bank:Accounts"
WORKER_DEADLINE = 30.0  # a worker that takes longer to log a phase is stuck, not slow

Say = Callable[[str], None]


class ChaosError(Exception):
    """The run could not be carried out: a worker misbehaved or a deadline passed."""


# -- worker processes ------------------------------------------------------------------------


@dataclass
class WorkerProcess:
    """One ``actorsource run`` process and what its JSON log has said so far."""

    number: int
    process: subprocess.Popen[bytes]
    log_path: Path
    spawned_at: float
    events: list[dict[str, Any]] = field(default_factory=list)
    names: set[str] = field(default_factory=set)
    _offset: int = 0
    _partial: bytes = b""

    def read_log(self) -> None:
        """Take in the log lines written since the last call."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                self.events.append(record)
                self.names.add(str(record.get("event")))

    @property
    def phase(self) -> str:
        """How far the worker got, from its log: starting, recovering or running."""
        if "actor running" in self.names:
            return "running"
        if "recovering" in self.names:
            return "recovering"
        return "starting"

    def tail(self, lines: int = 15) -> str:
        """The end of the worker's output, for error messages."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


class Fleet:
    """Spawns workers and makes sure none outlives the run."""

    def __init__(
        self, url: str, data_dir: Path, logs: Path, *, target: str = TARGET, actor: str = ACTOR
    ) -> None:
        self.url = url
        self.data_dir = data_dir
        self.logs = logs
        self.target = target
        self.actor = actor
        self.started: list[WorkerProcess] = []

    def spawn(self) -> WorkerProcess:
        """Start a worker hosting ``target`` (cwd and PYTHONPATH at the repo root)."""
        number = len(self.started) + 1
        log_path = self.logs / f"worker-{number:04d}.log"
        pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "actorsource",
                    "run",
                    self.target,
                    "--nats",
                    self.url,
                    "--data-dir",
                    str(self.data_dir),
                    "--log-format",
                    "json",
                ],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": pythonpath, "PYTHONUNBUFFERED": "1"},
            )
        worker = WorkerProcess(number, process, log_path, time.monotonic())
        self.started.append(worker)
        return worker

    def kill_all(self) -> None:
        """SIGKILL and reap every worker still alive (cleanup on any exit)."""
        for worker in self.started:
            if worker.process.poll() is None:
                worker.process.kill()
            try:
                worker.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


async def wait_for_phase(worker: WorkerProcess, phase: str) -> None:
    """Wait until the worker's log shows ``phase`` (recovering or running)."""
    order = ("starting", "recovering", "running")
    with anyio.move_on_after(WORKER_DEADLINE):
        while True:
            worker.read_log()
            if order.index(worker.phase) >= order.index(phase):
                return
            if worker.process.poll() is not None:
                raise ChaosError(
                    f"worker {worker.number} exited ({worker.process.returncode}) before "
                    f"{phase}:\n{worker.tail()}"
                )
            await anyio.sleep(0.002)
    raise ChaosError(
        f"worker {worker.number} did not reach {phase} in {WORKER_DEADLINE} s:\n{worker.tail()}"
    )


async def reap(worker: WorkerProcess, timeout: float) -> int | None:
    """Wait (in a thread, not blocking the loop) for the worker to exit; its status, or None."""
    try:
        return await anyio.to_thread.run_sync(worker.process.wait, timeout)
    except subprocess.TimeoutExpired:
        return None


async def consumer_info(js: JetStreamContext, actor: str) -> Any:
    """The actor's consumer info, or None while it does not exist."""
    try:
        return await js.consumer_info(STREAM, actor)
    except nats.js.errors.NotFoundError:
        return None


# -- the kill loop ---------------------------------------------------------------------------


@dataclass
class Progress:
    """What the publisher and the kill loop share."""

    kills: int = 0
    kill_made: list[anyio.Event] = field(default_factory=list)
    cycle_s: float = 0.4  # moving average of a kill cycle, to spread the publishing over it
    published: int = 0
    retries: int = 0
    phases: Counter[str] = field(default_factory=Counter)
    plans: Counter[str] = field(default_factory=Counter)
    published_at: dict[int, float] = field(default_factory=dict)  # event index -> when acked
    stored_duplicates: list[int] = field(default_factory=list)  # their stream sequences
    refused_duplicates: int = 0  # re-published too early: the broker's own window caught it


def plan_kill(rng: random.Random, first: bool) -> tuple[str, float]:
    """When to kill the next worker: (what to wait for, then how long to wait after it).

    A fifth of the kills wait nothing but a random time after the spawn (they land while the
    interpreter starts, connects or recovers), a fifth come within 15 ms of the recovery's
    start, the rest after an exponential delay (mean 30 ms) from the consumer's start: while
    batches are in flight, or once the worker has caught up and idles between them.
    """
    r = rng.random()
    if first or r >= 0.4:
        return "running", min(rng.expovariate(1 / 0.03), 0.5)
    if r < 0.2:
        return "spawn", rng.uniform(0.0, 0.45)
    return "recovering", rng.uniform(0.0, 0.015)


async def kill_phase(worker: WorkerProcess, js: JetStreamContext, actor: str) -> str:
    """Where the worker is right now: its log phase, refined by the consumer for a runner."""
    worker.read_log()
    phase = worker.phase
    if phase != "running":
        return phase
    info = await consumer_info(js, actor)
    if info is None:
        return "running"
    if info.num_ack_pending:
        return "in-flight"  # delivered and not acknowledged: in hand, mid-batch
    return "backlog" if info.num_pending else "idle"


async def kill_loop(
    fleet: Fleet,
    first: WorkerProcess,
    js: JetStreamContext,
    kills: int,
    rng: random.Random,
    progress: Progress,
    say: Say,
) -> None:
    """Kill the worker ``kills`` times with SIGKILL, starting a new one after each kill."""
    worker: WorkerProcess | None = first
    for k in range(kills):
        cycle_started = time.monotonic()
        if worker is None:
            worker = fleet.spawn()
        what, delay = plan_kill(rng, first=worker is first)
        if what != "spawn":
            await wait_for_phase(worker, what)
        else:
            delay = max(0.0, delay - (time.monotonic() - worker.spawned_at))
        await anyio.sleep(delay)
        if worker.process.poll() is not None:
            raise ChaosError(
                f"worker {worker.number} exited by itself ({worker.process.returncode}):\n"
                f"{worker.tail()}"
            )
        phase = await kill_phase(worker, js, fleet.actor)
        worker.process.send_signal(signal.SIGKILL)
        if await reap(worker, 10.0) is None:
            raise ChaosError(f"worker {worker.number} survived SIGKILL")
        worker.read_log()
        progress.plans[what] += 1
        progress.phases[phase] += 1
        progress.kills = k + 1
        progress.kill_made[k].set()
        progress.cycle_s = 0.8 * progress.cycle_s + 0.2 * (time.monotonic() - cycle_started)
        worker = None
        if (k + 1) % 25 == 0 or k + 1 == kills:
            say(
                f"kill -9 {k + 1:>5}/{kills}  published {progress.published:>7}  "
                f"phases {dict(sorted(progress.phases.items()))}"
            )


async def settle(js: JetStreamContext, worker: WorkerProcess, last_seq: int, actor: str) -> None:
    """Wait until the consumer has nothing pending and acknowledged up to ``last_seq``."""
    with anyio.move_on_after(120):
        while True:
            if worker.process.poll() is not None:
                raise ChaosError(
                    f"the final worker exited ({worker.process.returncode}) while catching up:\n"
                    f"{worker.tail()}"
                )
            info = await consumer_info(js, actor)
            if (
                info is not None
                and info.num_pending == 0
                and info.num_ack_pending == 0
                and info.ack_floor.stream_seq >= last_seq
            ):
                return
            await anyio.sleep(0.02)
    raise ChaosError(f"the final worker did not catch up in 120 s:\n{worker.tail()}")

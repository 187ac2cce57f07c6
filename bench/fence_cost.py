"""What the fence costs: a partitioned actor in cluster mode against the same actor plain.

    python bench/fence_cost.py [--events N] [--partitions P] [--rounds R] [--json]

One run, one machine. On a single nats-server (R1), the same events (N, over 1,000 keys,
pre-published to a fresh stream before each phase) are consumed, round after round (R
rounds, the phases alternated within each), by:

* ``unpartitioned``: the actor without partitions on a plain worker (no cluster mode);
* ``partitioned``: the actor with ``partitions=P`` on a plain worker (P runners, no fence);
* ``fenced``: the partitioned actor on one worker in cluster mode: leases, per-epoch
  consumers, and every batch appended to its partition's journal subject inside its
  SQLite transaction, before its commit;
* ``memory_unpartitioned`` and ``memory_fenced``: the first and the last again, their
  input stream kept in memory instead of files (the journal subject, the buckets and
  SQLite stay on disk). nats-server's file store walks, for each message it delivers to
  a consumer whose filter is narrower than its stream's subjects (a partition's), the
  subjects of the stream that match the filter; its memory store does not
  (``bench/filtered_delivery.py``). These two phases measure the fence without that
  walk: a diagnosis, not a way to run (an input stream belongs on disk);
* ``few_keys_unpartitioned`` and ``few_keys_fenced``: the first and the third again, the
  events spread over one key per partition instead of 1,000 (the same number of events,
  partitions, batches and journal appends). Each partition's filter then matches one
  stored subject, so the walk above is one step: the fence and the partitions without it,
  on disk.

Then on a 3-node cluster (R3 streams and journal subjects) ``unpartitioned`` and ``fenced``
once. Each figure is events/s from the worker's start (connection, recovery, leases
included) until every event is committed, and ``*_steady`` from the moment every runner
was consuming (start-up left out: on R3, creating the buckets, leases and per-epoch
consumers of 8 partitions takes seconds). Rates are the medians over the rounds; each
ratio is the median of the rounds' own ratios (both phases of a ratio ran in the same
round, side by side): ``ratio_r1`` is fenced / unpartitioned on R1 (the target is >= 0.8,
``ratios_r1`` lists the rounds), ``ratio_r1_partitioned`` partitioned / unpartitioned,
``ratio_r1_memory_input`` memory_fenced / memory_unpartitioned,
``ratio_r1_key_per_partition`` few_keys_fenced / few_keys_unpartitioned, ``ratio_r3`` fenced /
unpartitioned on R3, ``ratio_*_steady`` the same once consuming.

Beside each rate, the CPU time spent per event (``/proc``: user + system, so Linux only):
``*_worker_cpu_us`` by this process (the worker runs in it) and ``*_server_cpu_us`` by the
nats-servers, from the worker's start until every event is committed (the stop and its
final checkpoints left out; medians). On a shared 2-core machine these are steadier
than the rates, and they say where a difference goes: ``cpu_ratio_r1`` = (worker + server)
per event, fenced over unpartitioned. The last line on stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, NamedTuple

import _scaffold  # noqa: F401  (puts the checkout on sys.path)
import anyio
import msgspec
from _scaffold import ROOT, BenchError, Say, cpu_seconds, median, quiet_library, run_bench
from nats.aio.client import Client as NATS
from nats.js.api import StorageType, StreamConfig

from actorsource import NatsOptions, Worker
from actorsource._cluster.node import ClusterWorker
from actorsource._mailbox.partitioned import partitioned_stream_config
from actorsource._model.actor import definition_of
from actorsource._model.partitions import Partitioning
from actorsource.testing import NatsCluster

KEYS = 1_000


def _actors(partitions: int) -> tuple[type, type]:
    os.environ["FENCE_COST_P"] = str(partitions)
    sys.path.insert(0, str(ROOT / "bench"))
    from _fence_cost_actors import Plain, Split

    return Plain, Split


def _keys(partitioning: Partitioning, few: bool) -> list[str]:
    """The keys the events go to: :data:`KEYS` of them, or (``few``) one per partition of
    ``partitioning``, the first names that land each in a partition of its own."""
    if not few:
        return [f"k{i}" for i in range(KEYS)]
    by_partition: dict[int, str] = {}
    i = 0
    while len(by_partition) < partitioning.count:
        by_partition.setdefault(partitioning.partition_of_key(f"k{i}"), f"k{i}")
        i += 1
    return sorted(by_partition.values())


async def _prefill(nc: NATS, subject: str, n: int, keys: list[str]) -> None:
    js = nc.jetstream(timeout=10)
    encode = msgspec.json.encode
    for start in range(0, n, 500):
        await asyncio.gather(
            *(
                js.publish(
                    f"{subject}.{keys[i % len(keys)]}",
                    encode({"key": keys[i % len(keys)], "amount": 1}),
                    headers={"Event-Type": "Bumped", "Nats-Msg-Id": f"{subject}-{i}"},
                )
                for i in range(start, min(start + 500, n))
            )
        )


async def _consume(
    worker: Worker, n: int, stall: float = 60.0, at_end: Callable[[], None] = lambda: None
) -> tuple[float, float]:
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
                at_end()  # before the stop (its final checkpoint is not the run's)
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


#: What runs around a phase's consumption (given the phase's name): nothing by default;
#: ``bench/fence_server_profile.py`` samples nats-server there.
During = Callable[[str], AbstractAsyncContextManager[object]]


def _nothing(_: str) -> AbstractAsyncContextManager[object]:
    return contextlib.nullcontext()


async def _measured(
    out: dict[str, float],
    phase: str,
    worker: Worker,
    n: int,
    servers: list[int | None],
    during: During = _nothing,
) -> None:
    """:func:`_consume` ``worker`` into ``out[phase]`` and ``out[phase + "_steady"]``, with
    the CPU microseconds per event of this process and of ``servers``."""
    async with during(phase):
        me, them = time.process_time(), sum(map(cpu_seconds, servers))

        def at_end() -> None:
            out[f"{phase}_worker_cpu_us"] = (time.process_time() - me) / n * 1e6
            out[f"{phase}_server_cpu_us"] = (sum(map(cpu_seconds, servers)) - them) / n * 1e6

        out[phase], out[f"{phase}_steady"] = await _consume(worker, n, at_end=at_end)


class Phase(NamedTuple):
    """One way of consuming the events."""

    name: str
    split: bool  # the partitioned actor
    clustered: bool  # on a cluster-mode worker (leases, the fence)
    in_memory: bool  # the input stream in memory
    few_keys: bool = False  # one key per partition instead of KEYS


UNPARTITIONED = Phase("unpartitioned", split=False, clustered=False, in_memory=False)
PARTITIONED = Phase("partitioned", split=True, clustered=False, in_memory=False)
FENCED = Phase("fenced", split=True, clustered=True, in_memory=False)
MEMORY_UNPARTITIONED = Phase("memory_unpartitioned", split=False, clustered=False, in_memory=True)
MEMORY_FENCED = Phase("memory_fenced", split=True, clustered=True, in_memory=True)
FEW_UNPARTITIONED = Phase(
    "few_keys_unpartitioned", split=False, clustered=False, in_memory=False, few_keys=True
)
FEW_FENCED = Phase("few_keys_fenced", split=True, clustered=True, in_memory=False, few_keys=True)
#: The phases of a round, in the order they run.
R1_PHASES = (
    UNPARTITIONED,
    PARTITIONED,
    FENCED,
    MEMORY_UNPARTITIONED,
    MEMORY_FENCED,
    FEW_UNPARTITIONED,
    FEW_FENCED,
)
R3_PHASES = (UNPARTITIONED, FENCED)
#: The ratios reported: (name, the server set, numerator phase, denominator phase).
RATIOS = (
    ("ratio_r1", "r1", FENCED, UNPARTITIONED),
    ("ratio_r1_partitioned", "r1", PARTITIONED, UNPARTITIONED),
    ("ratio_r1_memory_input", "r1", MEMORY_FENCED, MEMORY_UNPARTITIONED),
    ("ratio_r1_key_per_partition", "r1", FEW_FENCED, FEW_UNPARTITIONED),
    ("ratio_r3", "r3", FENCED, UNPARTITIONED),
)


async def _phase(
    urls: tuple[str, ...],
    data: Path,
    args: argparse.Namespace,
    replicas: int,
    phase: Phase,
    servers: list[int | None],
    during: During = _nothing,
) -> dict[str, float]:
    """One phase on a server emptied first (every stream, bucket and journal subject of the
    phases before goes): its input stream created and filled, then consumed."""
    name, split, clustered, in_memory, few_keys = phase
    plain, split_actor = _actors(args.partitions)
    partitioning = definition_of(split_actor).partitions
    assert partitioning is not None
    keys = _keys(partitioning, few_keys)
    options = NatsOptions(servers=urls)
    nc = NATS()
    await nc.connect(servers=list(urls))
    try:
        js = nc.jetstream(timeout=10)
        for info in await js.streams_info():
            await js.delete_stream(info.config.name)
        storage = StorageType.MEMORY if in_memory else StorageType.FILE
        if split:
            config = partitioned_stream_config("FCSPLIT", partitioning, replicas=replicas)
            config.storage = storage
            await js.add_stream(config)
            await _prefill(nc, "fcsplit", args.events, keys)
        else:
            await js.add_stream(
                StreamConfig(
                    name="FCPLAIN", subjects=["fcplain.*"], num_replicas=replicas, storage=storage
                )
            )
            await _prefill(nc, "fcplain", args.events, keys)
        worker: Worker
        if clustered:
            worker = ClusterWorker(
                [split_actor],
                nats=options,
                data_dir=data,
                replicas=replicas,
                lease_time=10.0,
                join_delay=0.0,
                hold=0.0,
                name="bench",
            )
        else:
            worker = Worker([split_actor if split else plain], nats=options, data_dir=data)
        out: dict[str, float] = {}
        await _measured(out, name, worker, args.events, servers, during)
        return out
    finally:
        await nc.close()


async def run_rounds(
    urls: tuple[str, ...],
    root: Path,
    args: argparse.Namespace,
    replicas: int,
    phases: tuple[Phase, ...],
    rounds: int,
    say: Say,
    servers: list[int | None],
    during: During = _nothing,
) -> list[dict[str, float]]:
    """``rounds`` rounds of ``phases`` in turn; each round's figures."""
    out = []
    for n in range(rounds):
        figures: dict[str, float] = {}
        for phase in phases:
            figures |= await _phase(
                urls, root / f"{n}-{phase.name}", args, replicas, phase, servers, during
            )
            say(f"R{replicas} round {n + 1} {phase.name}: {figures[phase.name]:,.0f} events/s")
        out.append(figures)
    return out


async def round_r1(urls: tuple[str, ...], root: Path, args: argparse.Namespace) -> dict[str, float]:
    """``unpartitioned`` and ``fenced`` on one R1 server (``bench/fence_append.py``)."""
    phases = (UNPARTITIONED, FENCED)
    return (await run_rounds(urls, root, args, 1, phases, 1, lambda _: None, []))[0]


def _summary(rounds: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    """Medians of the figures over the rounds, and of each round's own ratios."""
    result: dict[str, Any] = {}
    for name, figures in rounds.items():
        for key in figures[0]:
            value = median([f[key] for f in figures])
            if key.endswith("_cpu_us"):
                result[f"{name}_{key}_per_event"] = round(value, 1)
            else:
                result[f"{name}_{key}_events_per_s"] = round(value)
    for ratio, servers, top, bottom in RATIOS:
        for suffix in ("", "_steady"):
            each = [f[top.name + suffix] / f[bottom.name + suffix] for f in rounds[servers]]
            result[ratio + suffix] = round(median(each), 3)
            if ratio == "ratio_r1":
                result[f"ratios_r1{suffix}"] = [round(r, 3) for r in each]
    r1 = rounds["r1"]
    result["cpu_ratio_r1"] = round(
        median(
            [
                (f["fenced_worker_cpu_us"] + f["fenced_server_cpu_us"])
                / (f["unpartitioned_worker_cpu_us"] + f["unpartitioned_server_cpu_us"])
                for f in r1
            ]
        ),
        3,
    )
    return result


async def bench(args: argparse.Namespace, root: Path, say: Say) -> dict[str, Any]:
    quiet_library()
    result: dict[str, Any] = {
        "events": args.events,
        "partitions": args.partitions,
        "rounds": args.rounds,
    }
    rounds: dict[str, list[dict[str, float]]] = {}
    async with NatsCluster(root / "r1", size=1) as single:
        servers = [s.pid for s in single.servers]
        rounds["r1"] = await run_rounds(
            single.urls, root / "r1-data", args, 1, R1_PHASES, args.rounds, say, servers
        )
    async with NatsCluster(root / "r3", size=3) as cluster:
        servers = [s.pid for s in cluster.servers]
        rounds["r3"] = await run_rounds(
            cluster.urls, root / "r3-data", args, 3, R3_PHASES, 1, say, servers
        )
    result |= _summary(rounds)
    result["states_equal"] = True  # every phase committed exactly N events (checked there)
    return result


def options(doc: str, *, events: int, rounds: int | None = 3) -> argparse.ArgumentParser:
    """The options of the fence's benches: ``--events``, ``--partitions``, ``--rounds``
    (unless ``rounds`` is None) and ``--json``; described by ``doc``'s first line."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--events", type=int, default=events)
    parser.add_argument("--partitions", type=int, default=8)
    if rounds is not None:
        parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--json", action="store_true", help="print only the JSON line on stdout")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return options(__doc__, events=200_000).parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_bench("fence-cost", bench, args)


if __name__ == "__main__":
    sys.exit(main())

"""Chaos on a cluster: workers killed and paused, servers killed, while events are published.

    python bench/partition_chaos.py [--workers 3] [--cluster] [--partitions 8]
                                    [--seconds S] [--seed N] [--lease-time L] [--rate R]
                                    [--wipe-share F] [--checkpoint-every N]
                                    [--json] [--keep DIR]

``--cluster`` runs a 3-node JetStream cluster on loopback (R3 streams, buckets and journal
subjects); without it, one server (R1). ``--workers`` worker processes run the actor of
``bench/_partition_chaos_actor.py`` (``partitions=P``) in cluster mode (``actorsource run
--cluster``). For S seconds events are published at about R per second to 64 keys, each
with a deterministic ``Nats-Msg-Id`` and retried until acknowledged; meanwhile, one at a
time at seeded random moments: a worker is killed with SIGKILL (restarted 0.5-3 s later; a share F
of those kills also wipe its data directory, so that it restores its partitions from the
checkpoints and the compacted journal subjects), a worker is paused with SIGSTOP past its lease (L + 1-4 s, then SIGCONT), and (with
``--cluster``) a server is killed with SIGKILL (restarted 2-8 s later). Then the workers
catch up and are stopped with SIGTERM.

What every partition committed is its journal subject (each batch is appended there before
its SQLite commit, whoever owned the partition). The owners checkpoint every N events
(``--checkpoint-every``) and compact the subjects, so the history is read from a mirror of
the journal stream that the bench creates first (a purge is not mirrored). Read back, per
partition and in total:

* ``lost``: acknowledged events missing from the committed history;
* ``duplicated``: events committed more than once, plus entries nobody published;
* ``out_of_order``: a key's events committed in another order than published, plus breaks
  in the journal positions (1, 2, 3 ... across owners);
* ``diverged``: keys whose state, as the last owner's journal file recovers it (newest
  snapshot and later entries, the runtime's own recovery), differs from an independent fold
  of the acknowledged events;
* ``fenced``: ownerships that ended refused (a conditional append refused, or the lease
  lost so the owner stopped before committing), from the workers' logs.

At the end it reports the storage the journal stream and the checkpoints bucket hold
(``journal_stream_bytes``, ``checkpoint_bytes``; ``history_bytes`` is the uncompacted mirror
for comparison) and, from the workers' logs, the checkpoints uploaded and restored.

The last line on stdout is one JSON object (with ``--json``, the only one). The exit status
is 0 only if lost, duplicated, out_of_order and diverged are all 0.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import _scaffold  # noqa: F401  (puts the checkout on sys.path)
import anyio
import nats.errors
from _partition_chaos_check import (
    HISTORY_STREAM,
    check,
    checkpoint_counts,
    mirror_journal,
    storage_sizes,
)
from _scaffold import ROOT, BenchError, Say, connect_cluster, emit, say_to_stderr, scratch
from nats.aio.client import Client as NATS

from actorsource._cluster.batches import decode_batch
from actorsource._cluster.fence import JournalFence
from actorsource._errors import ClusterError
from actorsource._journal.journal import SQLiteJournal
from actorsource._journal.recovery import restore_state
from actorsource._journal.storage import journal_path
from actorsource._model.actor import definition_of
from actorsource.testing import NatsCluster, WorkerProcess

KEYS = [f"key{i}" for i in range(64)]
DROPPED = "partition dropped"


class Publisher:
    """Publishes ``chaos.<key>`` events in order, each retried until acknowledged."""

    def __init__(self, nc: NATS, rate: float, rng: random.Random) -> None:
        self._js = nc.jetstream(timeout=2)
        self._rate = rate
        self._rng = rng
        self.acked: list[tuple[str, int]] = []
        self.retries = 0
        self._next: dict[str, int] = {}

    async def publish_one(self) -> None:
        key = self._rng.choice(KEYS)
        n = self._next.get(key, 0)
        self._next[key] = n + 1
        payload = json.dumps({"key": key, "n": n}).encode()
        headers = {"Event-Type": "Ticked", "Nats-Msg-Id": f"{key}:{n}"}
        with anyio.fail_after(110):  # inside the stream's 2 min duplicate window
            while True:
                try:
                    await self._js.publish(f"chaos.{key}", payload, headers=headers)
                    break
                except (nats.errors.Error, OSError):
                    self.retries += 1
                    await anyio.sleep(0.1)
        self.acked.append((key, n))

    async def run(self, until: float) -> None:
        interval = 1.0 / self._rate
        next_at = time.monotonic()
        while time.monotonic() < until:
            await self.publish_one()
            next_at += interval
            await anyio.sleep(max(0.0, next_at - time.monotonic()))


async def _chaos(
    args: argparse.Namespace,
    cluster: NatsCluster,
    workers: list[WorkerProcess],
    until: float,
    rng: random.Random,
    say: Say,
) -> dict[str, int]:
    actions = {"kill_worker": 0, "wipe_worker": 0, "pause_worker": 0, "kill_server": 0}
    kinds = ["kill_worker", "pause_worker"] + (["kill_server"] if args.cluster else [])
    while True:
        await anyio.sleep(rng.uniform(1.0, 4.0))
        if time.monotonic() >= until:
            return actions
        kind = rng.choice(kinds)
        actions[kind] += 1
        if kind == "kill_worker":
            worker = rng.choice(workers)
            say(f"SIGKILL worker {worker.data_dir.name}")
            worker.kill()
            if args.wipe_share > 0 and rng.random() < args.wipe_share:
                say(f"wiping {worker.data_dir}")
                shutil.rmtree(worker.data_dir, ignore_errors=True)
                actions["wipe_worker"] += 1
            await anyio.sleep(rng.uniform(0.5, 3.0))
            worker.start()
        elif kind == "pause_worker":
            worker = rng.choice(workers)
            pause = args.lease_time + rng.uniform(1.0, 4.0)
            say(f"SIGSTOP worker {worker.data_dir.name} for {pause:.1f} s")
            worker.pause()
            await anyio.sleep(pause)
            worker.resume()
        else:
            index = rng.randrange(len(cluster.servers))
            say(f"SIGKILL server n{index + 1}")
            await cluster.kill(index)
            await anyio.sleep(rng.uniform(2.0, 8.0))
            await cluster.restart(index)


class History:
    """Every batch of every ``asj.chaos.<k>`` subject, in order, read incrementally (direct
    gets from each subject's last read sequence on: no consumer to set up or to stall)."""

    def __init__(self, nc: NATS, partitions: int) -> None:
        self._js = nc.jetstream(timeout=5)
        self.batches: dict[int, list[Any]] = {k: [] for k in range(partitions)}
        self._after = dict.fromkeys(range(partitions), 0)

    @property
    def committed(self) -> int:
        return sum(len(b.entries) for batches in self.batches.values() for b in batches)

    async def refresh(self) -> None:
        for k in self.batches:
            with anyio.fail_after(120):
                fence = JournalFence(self._js, "chaos", k, stream=HISTORY_STREAM)
                async for record in fence.tail(self._after[k]):
                    self._after[k] = record.seq
                    if record.kind == "batch":
                        self.batches[k].append(decode_batch(record.data))


async def _last_owner_state(root: Path, workers: int, k: int) -> dict[str, list[int]] | None:
    """The partition's state as its last owner's journal file recovers it."""
    from _partition_chaos_actor import Ticks

    unit = definition_of(Ticks).for_partition(k)
    best: tuple[int, Path] | None = None
    for i in range(workers):
        path = journal_path(root / f"w{i + 1}", unit.name)
        if not path.exists():
            continue
        async with SQLiteJournal(path, actor=unit.name) as journal:
            at = journal.stream_positions.get(f"asj.chaos.{k}", 0)
        if best is None or at > best[0]:
            best = (at, path)
    if best is None:
        return None
    async with SQLiteJournal(best[1], actor=unit.name) as journal:
        state, _ = await restore_state(unit, journal)
    seen: dict[str, list[int]] = state.seen
    return seen


def _fenced(workers: list[WorkerProcess]) -> tuple[dict[int, int], int]:
    """Per partition, the ownerships that ended refused; and how many of them by the
    fence itself (an append refused) rather than by the owner's own lease check."""
    out: dict[int, int] = {}
    by_fence = 0
    for worker in workers:
        for entry in worker.logs():
            if entry.get("event") == DROPPED:
                k = int(str(entry.get("actor", "chaos-p-1")).rsplit("-p", 1)[1])
                out[k] = out.get(k, 0) + 1
                by_fence += entry.get("reason") == "fenced"
    return out, by_fence


async def bench(args: argparse.Namespace, root: Path, say: Say) -> dict[str, Any]:
    rng = random.Random(args.seed)
    cluster = NatsCluster(root / "nats", size=3 if args.cluster else 1)
    replicas = "3" if args.cluster else "1"
    await cluster.start()
    workers = [
        WorkerProcess(
            ["_partition_chaos_actor:Ticks"],
            urls=cluster.urls,
            data_dir=root / f"w{i + 1}",
            args=[
                *("--cluster", "--replicas", replicas, "--lease-time", str(args.lease_time)),
                *("--worker-id", f"w{i + 1}", "--log-level", "INFO"),
                *("--checkpoint-every", str(args.checkpoint_every)),
            ],
            pythonpath=[ROOT / "bench", ROOT],
        )
        for i in range(args.workers)
    ]
    nc: NATS | None = None
    storage: dict[str, int] = {}
    try:
        nc = await connect_cluster(cluster.urls)
        js = nc.jetstream(timeout=5)
        await mirror_journal(js, int(replicas))
        for worker in workers:
            worker.start()
        with anyio.fail_after(60):
            while True:
                try:
                    await js.stream_info("CHAOS")
                    break
                except (nats.errors.Error, OSError):
                    await anyio.sleep(0.2)
        say(f"{args.workers} workers up; publishing for {args.seconds} s with chaos")
        publisher = Publisher(nc, args.rate, random.Random(args.seed + 1))
        started = time.monotonic()
        until = started + args.seconds
        actions: dict[str, int] = {}
        async with anyio.create_task_group() as tg:

            async def chaos() -> None:
                actions.update(await _chaos(args, cluster, workers, until, rng, say))

            tg.start_soon(chaos)
            await publisher.run(until)
        say(f"published {len(publisher.acked)}; waiting for the workers to catch up")
        caught_up_at = time.monotonic() + 180
        history = History(nc, args.partitions)
        while time.monotonic() < caught_up_at:
            try:
                await history.refresh()
            except (nats.errors.Error, OSError, TimeoutError, ClusterError) as exc:
                say(f"cannot read the journal subjects yet: {exc!r}")
            say(f"committed {history.committed} of {len(publisher.acked)}")
            if history.committed >= len(publisher.acked):
                break
            await anyio.sleep(1.0)
        await anyio.sleep(2 * args.lease_time)  # a stale owner would append now, if it could
        with anyio.fail_after(60):
            while True:
                try:
                    await history.refresh()
                    break
                except ClusterError as exc:  # a server restarting: the mirror's leader
                    say(f"cannot read the journal subjects yet: {exc!r}")
                    await anyio.sleep(1.0)
        storage = await storage_sizes(js)
    finally:
        say("stopping the workers")
        for worker in workers:
            await worker.stop(timeout=30)
        if nc is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await nc.close()
        say("stopping the servers")
        await cluster.stop()
    say("checking the partitions")
    states = {k: await _last_owner_state(root, args.workers, k) for k in range(args.partitions)}
    fenced, by_fence = _fenced(workers)
    result = check(history.batches, publisher.acked, states, fenced)
    result["fenced_by_append"] = by_fence
    result.update(storage)
    result.update(checkpoint_counts(workers))
    ok = all(result[k] == 0 for k in ("lost", "duplicated", "out_of_order", "diverged"))
    return {
        "workers": args.workers,
        "partitions": args.partitions,
        "cluster": args.cluster,
        "seconds": args.seconds,
        "seed": args.seed,
        "wipe_share": args.wipe_share,
        "checkpoint_every": args.checkpoint_every,
        "lease_time": args.lease_time,
        "published": len(publisher.acked),
        "publish_retries": publisher.retries,
        "actions": actions,
        **result,
        "ok": ok,
        "states_equal": ok,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--cluster", action="store_true", help="a 3-node cluster, R3")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--lease-time", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=300.0, help="events published per second")
    parser.add_argument(
        "--wipe-share",
        type=float,
        default=0.0,
        help="share of the worker kills that also wipe the worker's data directory",
    )
    parser.add_argument(
        "--checkpoint-every", type=int, default=1000, help="the workers' --checkpoint-every"
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON line on stdout")
    parser.add_argument("--keep", type=Path, help="run in DIR (new or empty) and keep it")
    args = parser.parse_args(argv)
    if args.workers < 1 or args.partitions < 2:
        parser.error("--workers must be >= 1 and --partitions >= 2")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["PARTITION_CHAOS_P"] = str(args.partitions)
    sys.path.insert(0, str(ROOT / "bench"))
    began = time.monotonic()

    def run(root: Path) -> dict[str, Any]:
        try:
            return anyio.run(bench, args, root, say_to_stderr)
        except (BenchError, BaseExceptionGroup) as exc:
            from _scaffold import bench_error

            error = bench_error(exc)
            if error is None:
                raise
            return {"error": str(error), "ok": False, "states_equal": False}

    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = run(args.keep)
    else:
        with scratch("actorsource-partition-chaos-") as root:
            result = run(root)
            if not result.get("ok"):
                kept = Path(f"{root}-failed")
                shutil.copytree(root, kept, dirs_exist_ok=True)
                say_to_stderr(f"kept the failed run's files in {kept}")
    result["total_seconds"] = round(time.monotonic() - began, 2)
    summary = [f"{k}: {v}" for k, v in result.items() if k != "per_partition"]
    emit(result, json_only=args.json, summary=summary)
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())

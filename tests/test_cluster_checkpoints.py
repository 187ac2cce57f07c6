"""Checkpoints on a real 3-node JetStream cluster with real worker processes: a worker
killed and restarted with an empty data directory takes its partitions back from the
checkpoints (an R3 object store) and the compacted journal subjects."""

from __future__ import annotations

import json
import shutil
import sys
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
from cluster_processes import KEYS, PARTITIONS, connect, orders_worker, publish, until, wait_spread
from partitioned_actors import Orders, Placed, fold

from actorsource._cluster.checkpoints import CheckpointStore, checkpoint_store
from actorsource._cluster.fence import JournalFence
from actorsource._model.actor import definition_of
from actorsource.journal import SQLiteJournal, journal_path, restore_state
from actorsource.testing import NatsCluster, WorkerProcess


def _worker(cluster: NatsCluster, tmp_path: Path, worker_id: str) -> WorkerProcess:
    worker = orders_worker(cluster, tmp_path, worker_id)
    worker.command += ["--checkpoint-every", "10"]
    return worker


async def _last_owners_state(dirs: list[Path]) -> dict[str, list[int]]:
    """Every partition's state as the journal file that got furthest recovers it."""
    union: dict[str, list[int]] = {}
    for k in range(PARTITIONS):
        unit = definition_of(Orders).for_partition(k)
        best: tuple[int, Path] | None = None
        for data in dirs:
            path = journal_path(data, unit.name)
            if path.exists():
                async with SQLiteJournal(path, actor=unit.name) as journal:
                    at = journal.stream_positions.get(f"asj.porders.{k}", 0)
                if best is None or at > best[0]:
                    best = (at, path)
        assert best is not None, f"partition {k} has no journal"
        async with SQLiteJournal(best[1], actor=unit.name) as journal:
            state, _ = await restore_state(unit, journal)
        union.update(state.seen)
    return union


async def test_a_wiped_worker_takes_its_partitions_back_from_the_checkpoints(
    nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    """Checkpoints every 10 events (R3 object store), the journal subjects compacted: a
    worker killed and restarted with an empty data directory restores its partitions."""
    published = [Placed(KEYS[i % len(KEYS)], i) for i in range(200)]
    async with AsyncExitStack() as stack:
        nc = await stack.enter_async_context(connect(nats_cluster))
        js = nc.jetstream(timeout=5)
        w1 = await stack.enter_async_context(_worker(nats_cluster, tmp_path, "w1"))
        w2 = await stack.enter_async_context(_worker(nats_cluster, tmp_path, "w2"))
        await wait_spread(js, "w1", "w2")
        for e in published[:100]:
            await publish(js, e)
        bucket = await checkpoint_store(js)
        stores = [CheckpointStore(js, bucket, f"porders-p{k}") for k in range(PARTITIONS)]

        async def checkpointed() -> bool:
            return all([await each.stored() for each in stores])

        await until(checkpointed, 20, "a checkpoint of every partition")
        w1.kill()
        shutil.rmtree(w1.data_dir)
        for e in published[100:150]:
            await publish(js, e)
        w1.start()  # empty: its partitions come back from the checkpoints and the subjects
        await wait_spread(js, "w1", "w2")
        for e in published[150:]:
            await publish(js, e)

        async def restored() -> bool:
            return any(entry.get("event") == "checkpoint restored" for entry in w1.logs())

        await until(restored, 30, "the wiped worker restored a checkpoint")
        compacted = [await JournalFence(js, "porders", k).compacted_to() for k in range(4)]
        assert any(compacted), compacted  # without the checkpoints, nothing could recover

        async def applied() -> bool:
            status = await anyio.run_process(
                [
                    sys.executable,
                    "-m",
                    "actorsource",
                    "status",
                    "--json",
                    "--nats",
                    ",".join(nats_cluster.urls),
                ],
                check=False,
            )
            if status.returncode != 0:
                return False
            pos: dict[str, int] = {}
            for report in json.loads(status.stdout):
                for a in report["actors"]:
                    pos[a["actor"]] = max(pos.get(a["actor"], 0), a["journal_pos"])
            return sum(pos.values()) == len(published)

        await until(applied, 30, "every event applied")
        await w1.stop()
        await w2.stop()
    assert await _last_owners_state([w1.data_dir, w2.data_dir]) == fold(published)

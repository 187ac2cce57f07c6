"""`actorsource status` and `wait --caught-up` for a partitioned actor: partition by
partition, on one worker or spread over the workers of a cluster (with their epochs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from partitioned_actors import Orders, Placed

from actorsource import NatsOptions, Worker
from actorsource._cluster.node import ClusterWorker
from actorsource.testing import ActorKit, NatsServer

TESTS = Path(__file__).resolve().parent


async def _cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    return await anyio.run_process(
        [sys.executable, "-m", "actorsource", *args], check=False, env=env
    )


@asynccontextmanager
async def _running(*workers: Worker) -> AsyncIterator[None]:
    async with anyio.create_task_group() as tg:
        for worker in workers:
            await tg.start(worker.run)
            with anyio.fail_after(15):
                await worker.ready.wait()
        yield
        for worker in workers:
            worker.stop()


async def _publish(actor_kit: ActorKit, count: int) -> None:
    for i in range(count):
        e = Placed(f"k{i % 19}", i)
        await actor_kit.publish(f"porders.{e.key}", e)


async def test_wait_and_status_cover_every_partition_on_one_worker(
    actor_kit: ActorKit, nats_server: NatsServer, tmp_path: Path
) -> None:
    worker = Worker([Orders], nats=NatsOptions(servers=(nats_server.url,)), data_dir=tmp_path)
    async with _running(worker):
        await _publish(actor_kit, 120)
        waited = await _cli("wait", "porders", "--caught-up", "--nats", nats_server.url)
        assert waited.returncode == 0, waited.stderr
        lines = waited.stdout.decode().splitlines()
        assert [line.split()[0] for line in lines] == [f"porders-p{k}" for k in range(4)]
        assert sum(r.journal_pos for r in worker.runners.values()) == 120
        out = await _cli("status", "--nats", nats_server.url, "--json")
        [report] = json.loads(out.stdout)
        parts = sorted((a["partition"], a["of"], a["partitions"]) for a in report["actors"])
        assert parts == [(k, "porders", 4) for k in range(4)]
        assert all(a["epoch"] is None and a["caught_up"] for a in report["actors"])


async def test_status_shows_which_worker_owns_each_partition_under_which_epoch(
    actor_kit: ActorKit, nats_server: NatsServer, tmp_path: Path
) -> None:
    workers = [
        ClusterWorker(
            [Orders],
            nats=NatsOptions(servers=(nats_server.url,)),
            data_dir=tmp_path / name,
            name=name,
            lease_time=3.0,
            join_delay=0.5,
            hold=0.2,
        )
        for name in ("wa", "wb")
    ]
    async with _running(*workers):
        with anyio.fail_after(20):
            while sorted(n for w in workers for n in w.hosted()) != [
                f"porders-p{k}" for k in range(4)
            ] or not all(w.hosted() for w in workers):
                await anyio.sleep(0.05)
        await _publish(actor_kit, 80)
        waited = await _cli("wait", "porders", "--caught-up", "--nats", nats_server.url)
        assert waited.returncode == 0, waited.stderr
        out = await _cli("status", "--nats", nats_server.url, "--json")
        owners = {
            a["actor"]: (report["worker"], a["epoch"])
            for report in json.loads(out.stdout)
            for a in report["actors"]
        }
        assert owners == {
            name: (w.name, w.partitions[name].epoch) for w in workers for name in w.hosted()
        }
        table = (await _cli("status", "--nats", nats_server.url)).stdout.decode()
        assert "porders: 4/4 partitions running on 2 workers, lag 0, caught up" in table

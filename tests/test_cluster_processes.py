"""Cluster mode with real worker processes on a real 3-node JetStream cluster (R3): a worker
killed with SIGKILL, a worker paused past its lease. The history every partition committed
is its journal subject (each batch appended there before its SQLite commit): it must hold
each published event exactly once, in publish order per key, with positions 1, 2, 3 ...
whoever owned the partition when."""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from cluster_processes import (
    KEYS,
    LEASE,
    PARTITIONS,
    check_exactly_once_in_order,
    committed_history,
    connect,
    lease_holders,
    orders_worker,
    publish,
    total_committed,
    until,
    wait_spread,
)
from partitioned_actors import Placed

from actorsource._cluster.lease import Leases
from actorsource.testing import NatsCluster


async def test_a_killed_workers_partitions_are_owned_again_and_nothing_is_lost_or_doubled(
    nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    published = [Placed(KEYS[i % len(KEYS)], i) for i in range(160)]
    async with AsyncExitStack() as stack:
        nc = await stack.enter_async_context(connect(nats_cluster))
        js = nc.jetstream(timeout=5)
        w1 = await stack.enter_async_context(orders_worker(nats_cluster, tmp_path, "w1"))
        w2 = await stack.enter_async_context(orders_worker(nats_cluster, tmp_path, "w2"))
        holders = await wait_spread(js, "w1", "w2")
        for e in published[:80]:
            await publish(js, e)
        w1.kill()
        killed_at = time.monotonic()
        for e in published[80:]:
            await publish(js, e)

        async def all_w2() -> bool:
            return set((await lease_holders(js)).values()) == {"w2"}

        await until(all_w2, 4 * LEASE + 15, "w2 owns w1's partitions")
        moved = time.monotonic() - killed_at

        async def applied() -> bool:
            return await total_committed(js) == len(published)

        await until(applied, 40, "every event committed")
        check_exactly_once_in_order(await committed_history(js), published)
        assert any(h == "w1" for h in holders.values())
        await w2.stop()
    # Taken over after the lease ran out (plus the assignment's hold), not at once.
    assert moved >= LEASE * 0.5, moved


async def test_a_worker_paused_past_its_lease_commits_nothing_and_ends_fenced(
    nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    published = [Placed(KEYS[i % len(KEYS)], i) for i in range(240)]
    async with AsyncExitStack() as stack:
        nc = await stack.enter_async_context(connect(nats_cluster))
        js = nc.jetstream(timeout=5)
        w1 = await stack.enter_async_context(orders_worker(nats_cluster, tmp_path, "w1"))
        w2 = await stack.enter_async_context(orders_worker(nats_cluster, tmp_path, "w2"))
        holders = await wait_spread(js, "w1", "w2")
        paused_partitions = sorted(k for k, h in holders.items() if h == "w1")
        for e in published[:60]:
            await publish(js, e)
        w1.pause()  # with whatever it has in hand
        for e in published[60:140]:
            await publish(js, e)

        async def taken_over() -> bool:
            now = await lease_holders(js)
            return all(now[k] == "w2" for k in paused_partitions)

        await until(taken_over, 4 * LEASE + 15, "w2 owns the paused worker's partitions")
        for e in published[140:200]:
            await publish(js, e)
        w1.resume()
        for e in published[200:]:
            await publish(js, e)

        async def applied() -> bool:
            return await total_committed(js) == len(published)

        await until(applied, 40, "every event committed")

        async def dropped() -> bool:
            logs = w1.logs()
            ended = {
                entry.get("actor") for entry in logs if entry.get("event") == "partition dropped"
            }
            return {f"porders-p{k}" for k in paused_partitions} <= ended

        await until(dropped, 40, "the paused worker dropped each partition it held")
        check_exactly_once_in_order(await committed_history(js), published)
        await w1.stop()
        await w2.stop()


@pytest.mark.slow
async def test_the_stream_leaders_server_killed_loses_doubles_and_reorders_nothing(
    nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    """An election (5-8 s here) stalls appends, renewals and consumer requests; with
    L = 15 s no lease runs out (a runner whose consumer request timed out restarts on its
    worker under a new epoch), and consumption resumes once a new leader is elected."""
    published = [Placed(KEYS[i % len(KEYS)], i) for i in range(200)]
    lease = "15"
    async with AsyncExitStack() as stack:
        nc = await stack.enter_async_context(connect(nats_cluster))
        js = nc.jetstream(timeout=5)
        workers = []
        for name in ("w1", "w2"):
            worker = orders_worker(nats_cluster, tmp_path, name)
            worker.command[worker.command.index("--lease-time") + 1] = lease
            workers.append(await stack.enter_async_context(worker))

        async def spread() -> bool:
            leases = Leases(js, ttl=float(lease))
            held = [await leases.holder(f"porders-p{k}") for k in range(PARTITIONS)]
            return {h[0] for h in held if h} == {"w1", "w2"} and all(held)

        await until(spread, 60, "the partitions spread over both workers")
        for e in published[:80]:
            await publish(js, e)
        leader = await nats_cluster.stream_leader("PORDERS")
        await nats_cluster.kill(leader)
        for e in published[80:]:
            await publish(js, e)

        async def applied() -> bool:
            return await total_committed(js) == len(published)

        await until(applied, 90, "every event committed after the election")
        check_exactly_once_in_order(await committed_history(js), published)
        for worker in workers:
            await worker.stop()

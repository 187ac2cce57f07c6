"""Planned hand-offs with real worker processes on a real 3-node JetStream cluster (R3): a
worker stopped with SIGTERM, a third worker joining. The old owner stops its partitions at
a batch boundary and releases their leases; the new owner, watching the lease bucket, takes
each one at once rather than after the lease time. Nothing is lost or doubled: every
partition's committed history (its journal subject) holds each published event exactly
once, in publish order per key, checked against an independent fold."""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
from cluster_processes import (
    KEYS,
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

from actorsource._cluster.assignment import assign
from actorsource.testing import NatsCluster, WorkerProcess

#: Long enough that a partition taken over only when its lease ran out shows.
LEASE = 8.0


def _at(entries: list[dict[str, Any]], event: str, actor: str) -> list[float]:
    return [
        datetime.fromisoformat(e["timestamp"]).timestamp()
        for e in entries
        if e.get("event") == event and e.get("actor") == actor
    ]


def _dropped(worker: WorkerProcess) -> list[dict[str, Any]]:
    return [e for e in worker.logs() if e.get("event") == "partition dropped"]


async def test_a_stopped_workers_partitions_consume_on_the_other_well_within_the_lease_time(
    nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    published = [Placed(KEYS[i % len(KEYS)], i) for i in range(120)]
    async with AsyncExitStack() as stack:
        nc = await stack.enter_async_context(connect(nats_cluster))
        js = nc.jetstream(timeout=5)
        w1 = await stack.enter_async_context(
            orders_worker(nats_cluster, tmp_path, "w1", lease=LEASE)
        )
        w2 = await stack.enter_async_context(
            orders_worker(nats_cluster, tmp_path, "w2", lease=LEASE)
        )
        holders = await wait_spread(js, "w1", "w2", lease=LEASE)
        for e in published[:60]:
            await publish(js, e)

        async def applied(n: int) -> bool:
            return await total_committed(js) == n

        await until(lambda: applied(60), 40, "the first half committed")
        stopped_at = time.monotonic()
        async with anyio.create_task_group() as tg:
            tg.start_soon(w1.stop)  # SIGTERM
            for e in published[60:]:
                await publish(js, e)
            await until(lambda: applied(len(published)), 40, "every event committed")
            moved = time.monotonic() - stopped_at
        assert w1.process is not None
        assert w1.process.returncode == 0
        assert set((await lease_holders(js, LEASE)).values()) == {"w2"}
        check_exactly_once_in_order(await committed_history(js), published)
        assert _dropped(w1) == []
        assert _dropped(w2) == []
        assert "w1" in holders.values()
        await w2.stop()
    # Released at the stop and taken at once: not after the lease ran out.
    assert moved < LEASE, moved


async def test_a_joining_worker_takes_the_partitions_handed_back_to_it_at_once(
    nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    published = [Placed(KEYS[i % len(KEYS)], i) for i in range(120)]
    async with AsyncExitStack() as stack:
        nc = await stack.enter_async_context(connect(nats_cluster))
        js = nc.jetstream(timeout=5)
        workers = {
            name: await stack.enter_async_context(
                orders_worker(nats_cluster, tmp_path, name, lease=LEASE)
            )
            for name in ("w1", "w2")
        }
        before = await wait_spread(js, "w1", "w2", lease=LEASE)
        for e in published[:60]:
            await publish(js, e)
        workers["w3"] = await stack.enter_async_context(
            orders_worker(nats_cluster, tmp_path, "w3", lease=LEASE)
        )
        for e in published[60:90]:
            await publish(js, e)
        # Where the assignment over the three puts each partition (w2 may get none).
        salted = {f"porders/{w}": w for w in workers}
        expected = {k: salted[m] for k, m in assign(len(before), salted).items()}
        assert "w3" in expected.values()
        after: dict[int, str | None] = {}

        async def rebalanced() -> bool:
            nonlocal after
            after = await lease_holders(js, LEASE)
            return after == expected

        await until(rebalanced, 40, f"the partitions spread as {expected}")
        for e in published[90:]:
            await publish(js, e)

        async def applied() -> bool:
            return await total_committed(js) == len(published)

        await until(applied, 40, "every event committed")
        check_exactly_once_in_order(await committed_history(js), published)
        logs = {name: w.logs() for name, w in workers.items()}
        moved = {k: (before[k], after[k]) for k in after if before[k] != after[k]}
        assert any(new == "w3" for _, new in moved.values())
        gaps = []
        for k, (old, new) in moved.items():
            assert old is not None
            assert new is not None
            handed_back = _at(logs[old], "partition handed back", f"porders-p{k}")
            owned = _at(logs[new], "partition owned", f"porders-p{k}")
            assert handed_back, (k, old)
            assert owned, (k, new)
            gaps.append(owned[-1] - handed_back[-1])
        for w in workers.values():
            assert _dropped(w) == []
            await w.stop()
    # Each new owner took its partition as soon as the old one let go: not a lease time later.
    assert all(0 < gap < LEASE for gap in gaps), gaps

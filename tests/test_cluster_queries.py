"""Keyed queries follow the key, with real worker processes on a real 3-node JetStream cluster:
``ask(nc, actor, query, key=K)`` reaches the worker that owns K's partition (the partition
the stream stores K's messages in), and a query asked while that partition moves is asked
again until it is answered, never by a worker whose ownership ended."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import pytest
from cluster_processes import (
    KEYS,
    committed_history,
    connect,
    orders_worker,
    publish,
    total_committed,
    until,
    wait_spread,
)
from nats.js import JetStreamContext
from partitioned_actors import Placed, fold

import actorsource
from actorsource._errors import QueryArgumentsError
from actorsource._model.query_wire import partition_of_key
from actorsource.testing import NatsCluster

PARTITIONS = 4
LEASE = 8.0
BOTH = ("partitioned_actors:Orders", "partitioned_actors:Cart")


async def test_a_keyed_query_is_answered_by_the_owner_of_the_keys_partition(
    nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    published = [Placed(KEYS[i % len(KEYS)], i) for i in range(96)]
    async with AsyncExitStack() as stack:
        nc = await stack.enter_async_context(connect(nats_cluster))
        js = nc.jetstream(timeout=5)
        for name in ("w1", "w2"):
            await stack.enter_async_context(
                orders_worker(nats_cluster, tmp_path, name, lease=LEASE, targets=BOTH)
            )
        await wait_spread(js, "w1", "w2", lease=LEASE)
        last = 0
        for e in published:
            await publish(js, e)
            last = await publish(js, e, prefix="pcart")

        async def applied() -> bool:
            return await total_committed(js) == len(published)

        await until(applied, 40, "every event committed")
        expected = fold(published)
        for key in KEYS:
            k = partition_of_key(key, PARTITIONS)
            answer = await actorsource.ask(nc, "porders", "values", key=key, timeout=10)
            assert answer.actor == f"porders-p{k}"
            assert answer.value[key] == expected[key]
            # Only the keys of that partition are there: it is the partition's own state.
            assert {partition_of_key(other, PARTITIONS) for other in answer.value} == {k}
            cart = await actorsource.ask(
                nc, "pcarts", "cart_total", key=key, after_seq=last, timeout=10
            )
            assert cart.actor == f"pcarts-p{partition_of_key(key, 3)}"
            assert cart.key == key
            assert cart.value == sum(expected[key])
        # A partition asked by name with a key that is not in it says so.
        wrong = f"porders-p{(partition_of_key('k1', PARTITIONS) + 1) % PARTITIONS}"
        with pytest.raises(QueryArgumentsError, match="is in partition"):
            await actorsource.ask(nc, wrong, "values", key="k1", timeout=10)


async def test_queries_asked_while_their_partitions_move_are_answered_and_never_go_back(
    nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    """A worker stopped (SIGTERM) while a client keeps asking for the keys of every
    partition: each query is answered within its timeout (asked again while its partition
    has no owner), and no answer reflects less of a partition's journal than an earlier
    one (no answer from an owner that had stopped owning it)."""
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
        await wait_spread(js, "w1", "w2", lease=LEASE)
        for e in published[:60]:
            await publish(js, e)
        await until(lambda: _applied(js, 60), 40, "the first half committed")
        positions: dict[str, list[int]] = {}
        answered = 0
        stop = anyio.Event()

        async def keep_asking() -> None:
            nonlocal answered
            while not stop.is_set():
                for key in KEYS:
                    answer = await actorsource.ask(nc, "porders", "values", key=key, timeout=30)
                    positions.setdefault(answer.actor, []).append(answer.pos)
                    answered += 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(keep_asking)
            await anyio.sleep(0.5)
            before = answered
            tg.start_soon(w1.stop)
            for e in published[60:]:
                await publish(js, e)
            await until(lambda: _applied(js, len(published)), 40, "every event committed")
            await anyio.sleep(0.5)
            stop.set()
        assert answered > before  # the asking went on through the move
        for partition, seen in positions.items():
            assert seen == sorted(seen), partition
        # And the last answers hold everything.
        expected = fold(published)
        for key in KEYS:
            answer = await actorsource.ask(nc, "porders", "values", key=key, timeout=10)
            assert answer.value[key] == expected[key]
        assert len(await committed_history(js)) == PARTITIONS
        await w2.stop()


async def _applied(js: JetStreamContext, n: int) -> bool:
    return await total_committed(js) == n

"""Queries of an unpartitioned actor in cluster mode, with real worker processes on a real
3-node JetStream cluster: the actor is one partition, and only the worker holding its lease
answers it (a slow answer of the owner never loses to another worker's ``not-running``);
while it moves, ``ask`` asks again until its timeout; a worker whose lease lapsed never
answers it. And inside one process: the owner whose lease lapsed unsubscribes at once."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import nats.errors
import pytest
from cluster_processes import KEYS, connect, orders_worker, publish, until
from nats.aio.client import Client
from nats.js import JetStreamContext
from partitioned_actors import Placed, Tally, fold

import actorsource
from actorsource import NatsOptions, QueryAnswer, QueryError, QueryNotRunningError
from actorsource._cluster.lease import Leases
from actorsource._cluster.node import ClusterWorker
from actorsource.testing import ActorKit, NatsCluster, NatsServer, WorkerProcess

TALLY = ("partitioned_actors:Tally",)


async def _holder(js: JetStreamContext, lease: float) -> str | None:
    try:
        held = await Leases(js, ttl=lease).holder("ptally")
    except (nats.errors.Error, OSError):
        return None
    return held[0] if held else None


async def _held(js: JetStreamContext, lease: float, among: set[str]) -> str:
    """Wait until one of ``among`` holds the singleton's lease; its id."""
    holder: str | None = None

    async def held() -> bool:
        nonlocal holder
        holder = await _holder(js, lease)
        return holder in among

    await until(held, 40, f"the singleton held by one of {sorted(among)}")
    assert holder is not None
    return holder


async def _publish_all(js: JetStreamContext, events: list[Placed]) -> int:
    last = 0
    for e in events:
        last = await publish(js, e, prefix="ptally")
    return last


async def _ask(nc: Client, after_seq: int | None = None) -> QueryAnswer:
    # Long enough for a hand-off that falls back to the lease running out (lease 8 s).
    return await actorsource.ask(nc, "ptally", "values", after_seq=after_seq, timeout=30)


async def test_a_singletons_queries_reach_its_owner_alone(
    nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    lease = 8.0
    published = [Placed(KEYS[i % 6], i) for i in range(20)]
    async with AsyncExitStack() as stack:
        nc = await stack.enter_async_context(connect(nats_cluster))
        js = nc.jetstream(timeout=5)
        for name in ("w1", "w2"):
            await stack.enter_async_context(
                orders_worker(nats_cluster, tmp_path, name, lease=lease, targets=TALLY)
            )
        await _held(js, lease, {"w1", "w2"})
        last = await _publish_all(js, published)
        answer = await _ask(nc, after_seq=last)
        assert answer.actor == "ptally"
        assert answer.value == fold(published)
        for _ in range(20):  # never the other worker's "not-running"
            assert (await _ask(nc)).value == fold(published)
        # The owner takes a second to apply this one: its answer still wins.
        slow = Placed("slow", -1)
        answer = await _ask(nc, after_seq=await publish(js, slow, prefix="ptally"))
        assert answer.value == fold([*published, slow])


async def test_a_singletons_queries_are_answered_through_a_hand_off(
    nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    """Its owner stopped (SIGTERM) while a client keeps asking: every query is answered
    within its timeout (asked again while the actor has no owner), by the new owner once it
    moved, and no answer reflects less of the journal than an earlier one."""
    lease = 8.0
    published = [Placed(KEYS[i % 6], i) for i in range(60)]
    async with AsyncExitStack() as stack:
        nc = await stack.enter_async_context(connect(nats_cluster))
        js = nc.jetstream(timeout=5)
        workers = {
            name: await stack.enter_async_context(
                orders_worker(nats_cluster, tmp_path, name, lease=lease, targets=TALLY)
            )
            for name in ("w1", "w2")
        }
        owner = await _held(js, lease, set(workers))
        await _publish_all(js, published[:30])
        positions: list[int] = []
        stop = anyio.Event()

        async def keep_asking() -> None:
            while not stop.is_set():
                positions.append((await _ask(nc)).pos)

        async with anyio.create_task_group() as tg:
            tg.start_soon(keep_asking)
            await until(lambda: _more(positions, 10), 20, "queries answered")
            before = len(positions)
            tg.start_soon(workers[owner].stop)
            (other,) = set(workers) - {owner}
            await _held(js, lease, {other})
            last = await _publish_all(js, published[30:])
            answer = await _ask(nc, after_seq=last)
            after = len(positions)
            await until(lambda: _more(positions, after + 10), 20, "queries answered")
            stop.set()
        assert positions == sorted(positions)
        assert len(positions) > before
        assert answer.value == fold(published)
        assert positions[-1] == answer.pos
        assert not workers[owner].running()


async def test_a_singletons_owner_whose_lease_lapsed_never_answers_it(
    nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    """The owner paused past its lease: the other worker takes the actor over and applies
    more; once the old owner runs again, every answer still holds all of it."""
    lease = 3.0
    published = [Placed(KEYS[i % 6], i) for i in range(30)]
    async with AsyncExitStack() as stack:
        nc = await stack.enter_async_context(connect(nats_cluster))
        js = nc.jetstream(timeout=5)
        workers: dict[str, WorkerProcess] = {
            name: await stack.enter_async_context(
                orders_worker(nats_cluster, tmp_path, name, lease=lease, targets=TALLY)
            )
            for name in ("w1", "w2")
        }
        owner = await _held(js, lease, set(workers))
        (other,) = set(workers) - {owner}
        last = await _publish_all(js, published[:15])
        assert (await _ask(nc, after_seq=last)).value == fold(published[:15])
        workers[owner].pause()
        try:
            await _held(js, lease, {other})
            # A query that reaches only the paused worker gets no answer (the caller's
            # timeout): wait for the new owner to serve the actor.
            await until(lambda: _answered(nc), 20, "the new owner answering")
            last = await _publish_all(js, published[15:])
            assert (await _ask(nc, after_seq=last)).value == fold(published)
        finally:
            workers[owner].resume()
        with anyio.fail_after(20):
            while not any(e.get("event") == "partition dropped" for e in workers[owner].logs()):
                assert (await _ask(nc)).value == fold(published)
        for _ in range(10):
            assert (await _ask(nc)).value == fold(published)


async def test_an_owner_whose_lease_lapsed_unsubscribes_the_singletons_queries(
    actor_kit: ActorKit, nats_server: NatsServer, tmp_path: Path
) -> None:
    """While its renewals stop succeeding, the owner no longer serves the actor's query
    subject (nobody answers: the caller asks again, then gives up with ``not-running``),
    even while its runner still runs."""
    worker = ClusterWorker(
        [Tally],
        nats=NatsOptions(servers=(nats_server.url,)),
        data_dir=tmp_path / "a",
        name="wa",
        lease_time=30.0,  # no renewal during the test
        join_delay=0.2,
        hold=0.2,
    )
    nc = actor_kit.nc
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        with anyio.fail_after(10):
            await worker.ready.wait()
        seq = await actor_kit.publish("ptally.k1", Placed("k1", 1))
        answer = await actorsource.ask(nc, "ptally", "values", after_seq=seq, timeout=5)
        assert answer.value == {"k1": [1]}
        lease = worker.partitions["ptally"].lease
        assert lease is not None
        lease._renewed_at -= 30.0  # as if no renewal had succeeded for a lease time
        assert worker.runners["ptally"].ready.is_set()
        # (5 s: under load the first attempt may reach the subscription before it goes)
        with pytest.raises(QueryNotRunningError):
            await actorsource.ask(nc, "ptally", "values", timeout=5)
        worker.stop()


async def _answered(nc: Client) -> bool:
    try:
        await actorsource.ask(nc, "ptally", "values", timeout=1)
    except QueryError:
        return False
    return True


async def _more(seen: list[int], n: int) -> bool:
    return len(seen) > n

"""A cluster worker's start on a real 3-node JetStream cluster that cannot answer yet: its
set-up (the journal stream, the buckets, the actor's stream) and its join are asked again,
and its watch of the members started again, until JetStream answers, rather than ending the
worker."""

from __future__ import annotations

from pathlib import Path

import anyio
import nats
from cluster_processes import connect
from partitioned_actors import Tally

import actorsource
from actorsource import NatsOptions
from actorsource._cluster.membership import Membership
from actorsource._cluster.node import ClusterWorker
from actorsource.testing import NatsCluster


async def test_a_worker_started_while_jetstream_cannot_answer_waits_for_it(
    nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    """Two of the three servers paused: there is no meta leader, so every set-up request of
    the worker (connected to the third) times out or is refused. Once they run again, the
    worker sets up, joins and serves the singleton."""
    worker = ClusterWorker(
        [Tally],
        nats=NatsOptions(servers=(nats_cluster.urls[0],)),
        data_dir=tmp_path / "a",
        name="wa",
        replicas=3,
        lease_time=3.0,
        join_delay=0.2,
        hold=0.2,
    )
    nats_cluster.pause(1)
    nats_cluster.pause(2)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            # Longer than a JetStream request's timeout (5 s): the set-up has failed once.
            await anyio.sleep(7)
            assert not worker.ready.is_set()
            nats_cluster.resume(1)
            nats_cluster.resume(2)
            with anyio.fail_after(40):
                await worker.ready.wait()
            assert worker.nc is not None
            published = await worker.nc.jetstream(timeout=5).publish(
                "ptally.k1", b'{"key": "k1", "n": 1}', headers={"Event-Type": "Placed"}
            )
            answer = await actorsource.ask(
                worker.nc, "ptally", "values", after_seq=published.seq, timeout=30
            )
            assert answer.value == {"k1": [1]}
            worker.stop()
    finally:
        nats_cluster.resume(1)
        nats_cluster.resume(2)


async def test_a_join_while_jetstream_cannot_answer_waits_for_it(
    nats_cluster: NatsCluster,
) -> None:
    """The members bucket is opened (created) and the worker's key claimed once JetStream
    answers again, however long the first requests took to fail."""
    async with connect(nats_cluster) as nc:
        membership = Membership(nc.jetstream(timeout=2), "wa", ttl=3.0, replicas=3)
        nats_cluster.pause(1)
        nats_cluster.pause(2)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(membership.join)
                await anyio.sleep(5)  # more than two requests' timeout
                assert membership.revision == 0
                nats_cluster.resume(1)
                nats_cluster.resume(2)
            assert membership.revision > 0
            assert set(await membership.members()) == {"wa"}
        finally:
            nats_cluster.resume(1)
            nats_cluster.resume(2)


async def test_the_members_watch_is_started_again_while_jetstream_cannot_answer(
    nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    """The watch of the members bucket that the worker's assignment follows fails while
    two of the three servers are paused (the bucket's consumer cannot be created); it is
    started again rather than ending the worker, and once the servers run again the
    assignment is computed over the members it sees."""
    nc = await nats.connect(nats_cluster.urls[0])  # the server that stays up
    try:
        membership = Membership(nc.jetstream(timeout=1), "wa", ttl=10.0, replicas=3)
        await membership.join()
        worker = ClusterWorker(
            [Tally],
            nats=NatsOptions(servers=(nats_cluster.urls[0],)),
            data_dir=tmp_path,
            name="wa",
            lease_time=10.0,
            join_delay=0.2,
            hold=0.2,
        )
        nats_cluster.pause(1)
        nats_cluster.pause(2)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker._follower.follow, membership)
                await anyio.sleep(3.5)  # the watch has failed (a 1 s timeout) more than once
                assert worker.members == frozenset()
                nats_cluster.resume(1)
                nats_cluster.resume(2)
                with anyio.fail_after(30):
                    while worker.members != {"wa"}:
                        await anyio.sleep(0.05)
                assert worker.partitions["ptally"].wanted
                tg.cancel_scope.cancel()
        finally:
            nats_cluster.resume(1)
            nats_cluster.resume(2)
    finally:
        await nc.close()

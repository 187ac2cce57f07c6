"""The ``nats_cluster`` fixture: three routed nats-servers that act as one JetStream cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StreamConfig

from actorsource.testing import NatsCluster


async def _quiet(exc: Exception) -> None:
    pass


@asynccontextmanager
async def connected(cluster: NatsCluster, *only: int) -> AsyncIterator[Client]:
    nc = Client()
    await nc.connect(
        servers=[url for i, url in enumerate(cluster.urls) if not only or i in only],
        reconnect_time_wait=0.1,
        max_reconnect_attempts=-1,
        error_cb=_quiet,
    )
    try:
        yield nc
    finally:
        with anyio.move_on_after(2, shield=True):
            await nc.close()


async def add_r3_stream(nc: Client) -> None:
    """Create stream ``R3`` (``r3.>``, three replicas), retrying: creating it takes a Raft
    round on three servers, and a request made while the meta group settles after the
    start may get no answer at all (the same config again is accepted)."""
    with anyio.fail_after(40):
        while True:
            try:
                await nc.jetstream(timeout=5).add_stream(
                    StreamConfig(name="R3", subjects=["r3.>"], num_replicas=3)
                )
                return
            except nats.errors.TimeoutError:
                continue


async def publish_until_stored(js: JetStreamContext, subject: str, msg_id: str) -> int:
    """Publish with a message id, retrying through an election; the stored sequence."""
    with anyio.fail_after(30):
        while True:
            try:
                ack = await js.publish(subject, msg_id.encode(), headers={"Nats-Msg-Id": msg_id})
                return int(ack.seq)
            except (nats.errors.Error, OSError):
                await anyio.sleep(0.1)


async def test_the_cluster_answers_jetstream_on_every_server_and_replicates_a_stream(
    nats_cluster: NatsCluster,
) -> None:
    assert len(nats_cluster.urls) == 3
    async with connected(nats_cluster) as nc:
        js = nc.jetstream()
        info = await js.add_stream(StreamConfig(name="R3", subjects=["r3.>"], num_replicas=3))
        assert info.cluster is not None
        assert len(info.cluster.replicas or []) == 2
        leader = await nats_cluster.stream_leader("R3")
        assert nats_cluster.names[leader] == info.cluster.leader


async def test_a_follower_paused_and_restarted_keeps_the_stream_and_its_messages(
    nats_cluster: NatsCluster,
) -> None:
    async with connected(nats_cluster) as nc:
        await nc.jetstream().add_stream(StreamConfig(name="R3", subjects=["r3.>"], num_replicas=3))
    leader = await nats_cluster.stream_leader("R3")
    follower = (leader + 1) % 3
    # A client of the paused server would get no answer at all: talk to the leader.
    async with connected(nats_cluster, leader) as nc:
        js = nc.jetstream(timeout=5)
        nats_cluster.pause(follower)
        # A quorum (the leader and one follower) is enough to store.
        for i in range(5):
            await js.publish("r3.a", str(i).encode())
        nats_cluster.resume(follower)
        await nats_cluster.restart(follower)
        assert nats_cluster.servers[follower].pid is not None
        info = await js.stream_info("R3")
        assert info.state.messages == 5


async def test_killing_the_stream_leader_loses_nothing_acknowledged_and_publishes_resume(
    nats_cluster: NatsCluster,
) -> None:
    async with connected(nats_cluster) as nc:
        js = nc.jetstream(timeout=1)  # publishes retry: a short timeout sees the election
        await add_r3_stream(nc)
        acked = [await publish_until_stored(js, "r3.a", f"m{i}") for i in range(20)]
        leader = await nats_cluster.stream_leader("R3")
        await nats_cluster.kill(leader)
        # Publishes fail during the election and then go through; the ids deduplicate any
        # publish that was stored although its ack was lost.
        acked += [await publish_until_stored(js, "r3.a", f"m{i}") for i in range(20, 30)]
        new_leader = await nats_cluster.stream_leader("R3", excluding=[leader])
        assert new_leader != leader

        # Right after an election the new leader may still be settling (and when the killed
        # server led the meta group, the consumer's creation waits for its election too):
        # subscribe and read with retries.
        with anyio.fail_after(40):
            while True:
                try:
                    sub = await nc.jetstream(timeout=5).pull_subscribe("r3.a", stream="R3")
                    break
                except nats.errors.TimeoutError:
                    continue
        seen: list[bytes] = []
        with anyio.fail_after(20):
            while len(seen) < 30:
                try:
                    batch = await sub.fetch(30, timeout=2)
                except (nats.errors.TimeoutError, nats.js.errors.ServiceUnavailableError):
                    continue  # (503: the stream's new leader not elected yet)
                for msg in batch:
                    seen.append(msg.data)
                    await msg.ack()
        assert seen == [f"m{i}".encode() for i in range(30)]
        assert acked == sorted(acked)
        info = await nc.jetstream(timeout=10).stream_info("R3")
        assert info.state.messages == 30


@pytest.mark.slow
async def test_the_old_leader_restarted_catches_up_and_the_stream_survives_a_second_kill(
    nats_cluster: NatsCluster,
) -> None:
    async with connected(nats_cluster) as nc:
        js = nc.jetstream(timeout=1)
        await add_r3_stream(nc)
        for i in range(10):
            await publish_until_stored(js, "r3.a", f"m{i}")
        first = await nats_cluster.stream_leader("R3")
        await nats_cluster.kill(first)
        for i in range(10, 20):
            await publish_until_stored(js, "r3.a", f"m{i}")
        await nats_cluster.restart(first)
        second = await nats_cluster.stream_leader("R3", excluding=[first])
        await nats_cluster.kill(second)
        for i in range(20, 30):
            await publish_until_stored(js, "r3.a", f"m{i}")
        info = await js.stream_info("R3")
        assert info.state.messages == 30
        assert info.state.last_seq == 30

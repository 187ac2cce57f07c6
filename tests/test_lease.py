"""Partition leases by KV compare-and-set, against real nats-servers."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import aclosing

import anyio
import nats
import pytest
from nats.aio.client import Client

from actorsource._cluster.lease import Lease, Leases
from actorsource._errors import LeaseHeld, LeaseLost
from actorsource.testing import NatsCluster, NatsServer


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(nats_server.url)
    try:
        yield client
    finally:
        await client.close()


async def acquire_when_free(leases: Leases, key: str, owner: str, timeout: float) -> Lease:
    with anyio.fail_after(timeout):
        while True:
            try:
                return await leases.acquire(key, owner)
            except LeaseHeld:
                await anyio.sleep(0.05)


async def test_a_second_acquire_fails_while_the_lease_is_held(nc: Client) -> None:
    leases = Leases(nc.jetstream(), ttl=30)
    held = await leases.acquire("orders-p3", "worker-a")
    with pytest.raises(LeaseHeld, match="'orders-p3' is held by 'worker-a'") as refused:
        await leases.acquire("orders-p3", "worker-b")
    assert refused.value.owner == "worker-a"
    assert refused.value.revision == held.revision
    await held.renew()
    with pytest.raises(LeaseHeld):
        await leases.acquire("orders-p3", "worker-b")
    assert await leases.holder("orders-p3") == ("worker-a", held.revision)


async def test_an_expired_lease_is_taken_over_with_a_higher_epoch(nc: Client) -> None:
    leases = Leases(nc.jetstream(), ttl=1)
    first = await leases.acquire("orders-p3", "worker-a")
    started = time.monotonic()
    second = await acquire_when_free(leases, "orders-p3", "worker-b", timeout=5)
    assert time.monotonic() - started >= 0.9  # not before the lease time
    assert second.epoch > first.epoch
    assert not first.valid()
    with pytest.raises(LeaseLost, match="was lost"):
        await first.renew()
    assert first.lost
    await second.renew()
    assert second.valid()


async def test_a_renewal_on_a_stale_revision_is_refused(nc: Client) -> None:
    leases = Leases(nc.jetstream(), ttl=30)
    lease = await leases.acquire("orders-p3", "worker-a")
    stale = Lease(leases, lease.key, lease.owner, lease.revision, time.monotonic())
    await lease.renew()
    with pytest.raises(LeaseLost):
        await stale.renew()
    await lease.renew()  # the current holder is not disturbed
    assert lease.valid()


async def test_a_release_lets_the_next_owner_in_at_once(nc: Client) -> None:
    leases = Leases(nc.jetstream(), ttl=30)
    first = await leases.acquire("orders-p3", "worker-a")
    await first.release()
    await first.release()  # idempotent
    assert not first.valid()
    second = await leases.acquire("orders-p3", "worker-b")
    assert second.epoch > first.epoch
    await first.release()  # does not touch the new owner's key
    assert await leases.holder("orders-p3") == ("worker-b", second.revision)


async def test_the_watch_of_freed_leases_reports_a_release_and_a_lease_run_out(
    nc: Client,
) -> None:
    """What lets a waiting worker take a lease the moment it is free: the watch sees the
    release (a delete) and the expiry (the bucket's limit marker), and nothing else."""
    leases = Leases(nc.jetstream(), ttl=1)
    released = await leases.acquire("orders-p1", "worker-a")
    expiring = await leases.acquire("orders-p2", "worker-a")
    seen: list[str] = []
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            async with aclosing(leases.freed()) as freed:
                async for key in freed:
                    seen.append(key)

        tg.start_soon(watch)
        await anyio.sleep(0.3)
        assert seen == []  # held leases are not reported
        await released.renew()
        await anyio.sleep(0.2)
        assert seen == []  # nor renewals
        await released.release()
        with anyio.fail_after(5):
            while len(seen) < 2:
                await anyio.sleep(0.02)
        tg.cancel_scope.cancel()
    assert seen == ["orders-p1", "orders-p2"]  # released first
    assert not expiring.valid()
    await leases.acquire("orders-p2", "worker-b")  # free, as reported


async def test_a_holder_stops_trusting_its_lease_a_margin_before_it_expires(nc: Client) -> None:
    leases = Leases(nc.jetstream(), ttl=10, margin=2)
    lease = await leases.acquire("orders-p3", "worker-a")
    now = time.monotonic()
    assert lease.valid(now)
    assert lease.valid(now + 7.5)
    assert not lease.valid(now + 8.5)
    await lease.renew()
    assert lease.valid(time.monotonic() + 7.5)


async def test_a_kept_lease_outlives_its_lease_time(nc: Client) -> None:
    leases = Leases(nc.jetstream(), ttl=1, margin=0.2)
    lease = await leases.acquire("orders-p3", "worker-a")
    async with anyio.create_task_group() as tg:
        await tg.start(lease.keep)
        with anyio.fail_after(5):
            while lease.revision < lease.epoch + 4:  # four renewals: over a second
                await anyio.sleep(0.05)
        assert lease.valid()
        with pytest.raises(LeaseHeld):
            await leases.acquire("orders-p3", "worker-b")
        tg.cancel_scope.cancel()


async def test_leases_on_a_replicated_bucket_in_a_cluster(nats_cluster: NatsCluster) -> None:
    client = await nats.connect(servers=list(nats_cluster.urls))
    try:
        leases = Leases(client.jetstream(), ttl=15, replicas=3)
        lease = await leases.acquire("orders-p0", "worker-a")
        info = await client.jetstream().stream_info("KV_actorsource_leases")
        assert info.config.num_replicas == 3
        with pytest.raises(LeaseHeld):
            await leases.acquire("orders-p0", "worker-b")
        await lease.renew()
        await lease.release()
        assert (await leases.acquire("orders-p0", "worker-b")).epoch > lease.revision
    finally:
        await client.close()


@pytest.mark.slow
async def test_a_kept_lease_survives_the_election_after_its_bucket_leader_is_killed(
    nats_cluster: NatsCluster,
) -> None:
    client = await nats.connect(
        servers=list(nats_cluster.urls), reconnect_time_wait=0.1, max_reconnect_attempts=-1
    )
    try:
        js = client.jetstream(timeout=2)
        leases = Leases(js, ttl=15, replicas=3)
        lease = await leases.acquire("orders-p0", "worker-a")
        async with anyio.create_task_group() as tg:
            await tg.start(lease.keep)
            leader = await nats_cluster.stream_leader("KV_actorsource_leases")
            await nats_cluster.kill(leader)
            await nats_cluster.stream_leader("KV_actorsource_leases", excluding=[leader])
            before = lease.revision
            with anyio.fail_after(15):
                while lease.revision == before:
                    assert lease.valid()
                    await anyio.sleep(0.1)
            assert not lease.lost
            tg.cancel_scope.cancel()
    finally:
        await client.close()

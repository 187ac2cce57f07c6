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


async def renew_with_the_reply_lost(nats_server: NatsServer, leases: Leases, lease: Lease) -> int:
    """A renewal the server stores but whose reply never comes back: sent while the server
    is paused, it times out; the server stores it once it runs again. Its revision."""
    known = lease.revision
    nats_server.pause()
    try:
        with pytest.raises(nats.errors.TimeoutError):
            await lease.renew()
    finally:
        nats_server.resume()
    with anyio.fail_after(5):
        while True:
            held = await leases.holder(lease.key)
            if held is not None and held[1] != known:
                break
            await anyio.sleep(0.02)
    assert held == (lease.owner, held[1])  # its own renewal, a revision it does not know
    assert lease.revision == known
    return held[1]


async def test_a_renewal_stored_whose_reply_was_lost_keeps_the_lease(
    nats_server: NatsServer,
) -> None:
    """The next renewal, on the revision the holder knows, is refused; the key holds the
    holder's own renewal, so the lease goes on from its revision (the epoch unchanged)
    rather than being dropped as lost."""
    client = await nats.connect(nats_server.url)
    try:
        leases = Leases(client.jetstream(timeout=0.5), ttl=30)
        lease = await leases.acquire("orders-p3", "worker-a")
        epoch = lease.epoch
        stored = await renew_with_the_reply_lost(nats_server, leases, lease)
        await lease.renew()
        assert not lease.lost
        assert lease.valid()
        assert lease.epoch == epoch
        assert lease.revision > stored  # renewed again, on the stored renewal's revision
        assert await leases.holder("orders-p3") == ("worker-a", lease.revision)
        await lease.renew()  # and from there on as usual
        assert await leases.holder("orders-p3") == ("worker-a", lease.revision)
        with pytest.raises(LeaseHeld):
            await leases.acquire("orders-p3", "worker-b")
    finally:
        await client.close()


async def test_a_release_after_a_renewal_whose_reply_was_lost_frees_the_key(
    nats_server: NatsServer,
) -> None:
    """The delete on the revision the holder knows is refused; the key holds the holder's
    own renewal, so it is deleted on that one: the next owner need not wait out L."""
    client = await nats.connect(nats_server.url)
    try:
        leases = Leases(client.jetstream(timeout=0.5), ttl=30)
        lease = await leases.acquire("orders-p3", "worker-a")
        await renew_with_the_reply_lost(nats_server, leases, lease)
        await lease.release()
        assert await leases.holder("orders-p3") is None
        second = await leases.acquire("orders-p3", "worker-b")
        assert second.epoch > lease.epoch
    finally:
        await client.close()


async def test_a_renewal_refused_for_another_holders_value_is_lost(nc: Client) -> None:
    """A refused renewal is taken for the holder's own only if the key holds exactly one
    of its renewals: the same owner's name with another value (a namesake's acquisition
    after the key expired) means the lease is lost."""
    leases = Leases(nc.jetstream(), ttl=30)
    lease = await leases.acquire("orders-p3", "worker-a")
    kv = await leases.kv()
    await kv.put("orders-p3", b'{"owner": "worker-a", "acquired_at": 1.0}')
    with pytest.raises(LeaseLost, match="was lost"):
        await lease.renew()
    assert lease.lost
    assert not lease.valid()


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

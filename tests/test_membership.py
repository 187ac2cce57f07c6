"""Workers' membership in a KV bucket with a TTL, against a real nats-server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import aclosing

import anyio
import msgspec
import nats
import pytest
from nats.aio.client import Client

from actorsource._cluster.membership import MEMBERS_BUCKET, MemberInfo, Membership
from actorsource._errors import ClusterError, WorkerIdTaken
from actorsource.testing import NatsServer


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(nats_server.url)
    try:
        yield client
    finally:
        await client.close()


async def wait_for(
    member: Membership, condition: Callable[[dict[str, MemberInfo]], bool], timeout: float = 5
) -> dict[str, MemberInfo]:
    with anyio.fail_after(timeout):
        async with aclosing(member.watch()) as updates:
            async for live in updates:
                if condition(live):
                    return live
    raise AssertionError("the watch ended")


async def test_members_see_each_other_join_and_leave_at_once(nc: Client) -> None:
    js = nc.jetstream()
    a, b = Membership(js, "a", ttl=30), Membership(js, "b", ttl=30)
    await a.join()
    await b.join()
    live = await a.members()
    assert set(live) == {"a", "b"}
    assert live["b"].pid == b.info.pid
    await b.leave()
    assert set(await wait_for(a, lambda live: "b" not in live, timeout=1)) == {"a"}


async def test_a_member_that_stops_heartbeating_expires_and_may_join_again_at_once(
    nc: Client,
) -> None:
    js = nc.jetstream()
    a, b = Membership(js, "a", ttl=1), Membership(js, "b", ttl=1)
    async with anyio.create_task_group() as tg:
        await tg.start(a.run)
        await b.join()  # and never a heartbeat
        await wait_for(a, lambda live: set(live) == {"a", "b"})
        await wait_for(a, lambda live: set(live) == {"a"})
        # Its key aged out with a marker; joining again does not wait for the marker to go.
        await b.join()
        await wait_for(a, lambda live: set(live) == {"a", "b"}, timeout=1)
        tg.cancel_scope.cancel()


async def test_a_heartbeating_member_outlives_its_ttl(nc: Client) -> None:
    js = nc.jetstream()
    a = Membership(js, "a", ttl=1)
    async with anyio.create_task_group() as tg:
        await tg.start(a.run)
        first = a.revision
        with anyio.fail_after(5):
            while a.revision < first + 4:  # four heartbeats: over a second
                await anyio.sleep(0.05)
        assert set(await a.members()) == {"a"}
        tg.cancel_scope.cancel()
    # run() left on its way out
    assert await Membership(js, "observer", ttl=1).members() == {}


async def test_a_second_worker_with_a_live_id_is_refused(nc: Client) -> None:
    js = nc.jetstream()
    await Membership(js, "a", ttl=30).join()
    with pytest.raises(WorkerIdTaken, match="worker id 'a' is in use by a live worker"):
        await Membership(js, "a", ttl=30).join()


async def test_workers_must_agree_on_the_ttl(nc: Client) -> None:
    js = nc.jetstream()
    await Membership(js, "a", ttl=30).join()
    with pytest.raises(ClusterError, match=r"keeps keys 30\.0s, but this worker is configured for"):
        await Membership(js, "b", ttl=10).join()


async def test_a_heartbeat_stored_whose_reply_was_lost_leaves_the_member_joined(
    nc: Client,
) -> None:
    """The bucket holds a newer revision of the member's own announcement than the member
    knows (a heartbeat that timed out on the way back but was stored): the next heartbeat
    is refused, and joining again finds the key is its own, not another worker's."""
    js = nc.jetstream()
    a = Membership(js, "a", ttl=30)
    await a.join()
    kv = await js.key_value(MEMBERS_BUCKET)
    stored = await kv.put("a", msgspec.json.encode(a.info))
    await a.heartbeat()
    assert a.revision == stored
    await a.heartbeat()  # and renews it from there
    assert a.revision > stored
    assert set(await a.members()) == {"a"}

"""The stream of a partitioned actor, against a real nats-server: the server's partition is
ours, every partition's filter reads exactly its messages, and a stream that is not the
actor's own (or not with its partition count) is refused, naming it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import ConsumerConfig, StreamConfig

from actorsource import MailboxError, actor, handles
from actorsource._mailbox.partitioned import ensure_partitioned_stream
from actorsource._model.partitions import Partitioning
from actorsource._model.query_wire import partition_of_key
from actorsource.testing import ActorKit, NatsServer

ORDERS = Partitioning(8, "orders.*", 1)


@dataclass
class Placed:
    order: str


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(nats_server.url)
    try:
        yield client
    finally:
        await client.close()


async def test_the_server_stores_each_key_in_the_partition_we_compute(nc: Client) -> None:
    js = nc.jetstream()
    await ensure_partitioned_stream(js, "ORDERS", ORDERS, actor="orders")
    keys = [f"order-{i}" for i in range(500)]
    for key in keys:
        await js.publish(f"orders.{key}", b"{}")
    for seq, key in enumerate(keys, start=1):
        stored = (await js.get_msg("ORDERS", seq=seq)).subject
        assert stored == f"orders.{ORDERS.partition_of_key(key)}.{key}"
        assert ORDERS.published(stored) == f"orders.{key}"


async def test_a_query_is_routed_to_the_partition_the_server_stores_its_key_in(
    nc: Client,
) -> None:
    """The client computes a keyed query's partition (query_wire.partition_of_key): it must
    be the one nats-server's {{partition(P, n)}} transform stores the key's messages in,
    for every key, whatever P."""
    js = nc.jetstream()
    keys = [f"{prefix}{i}" for i in range(400) for prefix in ("o-", "Z", "key_", "é")]
    for count in (3, 16):
        partitioning = Partitioning(count, f"route{count}.*", 1)
        await ensure_partitioned_stream(js, f"ROUTE{count}", partitioning, actor=f"r{count}")
        for key in keys:
            ack = await js.publish(f"route{count}.{key}", b"{}")
            stored = (await js.get_msg(f"ROUTE{count}", seq=ack.seq)).subject
            assert stored == f"route{count}.{partition_of_key(key, count)}.{key}"


async def test_each_partition_filter_reads_exactly_its_own_messages(nc: Client) -> None:
    js = nc.jetstream()
    await ensure_partitioned_stream(js, "ORDERS", ORDERS, actor="orders")
    for i in range(100):
        await js.publish(f"orders.k{i}", b"{}")
    seen: set[str] = set()
    for k in range(ORDERS.count):
        consumer = f"orders-p{k}"
        await js.add_consumer(
            "ORDERS", ConsumerConfig(durable_name=consumer, filter_subject=ORDERS.filter_subject(k))
        )
        info = await js.consumer_info("ORDERS", consumer)
        if not info.num_pending:
            continue
        sub = await js.pull_subscribe_bind(consumer, stream="ORDERS")
        for msg in await sub.fetch(info.num_pending, timeout=2):
            assert ORDERS.partition_of_stored(msg.subject) == k
            seen.add(ORDERS.published(msg.subject))
    assert seen == {f"orders.k{i}" for i in range(100)}


async def test_ensuring_the_stream_again_keeps_it(nc: Client) -> None:
    js = nc.jetstream()
    first = await ensure_partitioned_stream(js, "ORDERS", ORDERS, actor="orders")
    again = await ensure_partitioned_stream(js, "ORDERS", ORDERS, actor="orders")
    assert again.created == first.created


async def test_another_partition_count_for_the_stream_is_refused_naming_it(nc: Client) -> None:
    js = nc.jetstream()
    await ensure_partitioned_stream(js, "ORDERS", ORDERS, actor="orders")
    with pytest.raises(MailboxError, match=r"stream 'ORDERS' is partitioned as .* fixed for its"):
        await ensure_partitioned_stream(
            js, "ORDERS", Partitioning(16, "orders.*", 1), actor="orders"
        )
    info = await js.stream_info("ORDERS")
    assert info.config.subject_transform is not None
    assert info.config.subject_transform.dest == ORDERS.destination()


async def test_a_stream_that_stores_other_subjects_is_refused(nc: Client) -> None:
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="SHOP", subjects=["orders.*", "carts.*"]))
    with pytest.raises(MailboxError, match=r"stream 'SHOP' stores \['orders.\*', 'carts.\*'\]"):
        await ensure_partitioned_stream(js, "SHOP", ORDERS, actor="orders")


async def test_a_stream_without_the_transform_is_refused(nc: Client) -> None:
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="ORDERS", subjects=["orders.*"]))
    with pytest.raises(MailboxError, match="stream 'ORDERS' exists without a partition"):
        await ensure_partitioned_stream(js, "ORDERS", ORDERS, actor="orders")


async def test_subjects_already_stored_in_another_stream_are_refused(nc: Client) -> None:
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="EVERYTHING", subjects=["orders.>"]))
    with pytest.raises(MailboxError, match="already stored in stream 'EVERYTHING'"):
        await ensure_partitioned_stream(js, "ORDERS", ORDERS, actor="orders")


async def test_an_unpartitioned_actor_cannot_read_a_partitioned_stream(
    actor_kit: ActorKit,
) -> None:
    await ensure_partitioned_stream(actor_kit.js, "ORDERS", ORDERS, actor="orders")

    @actor("audit", subjects=["orders.*"])
    class Audit:
        @handles(Placed)
        def placed(self, event: Placed) -> None:
            pass

    @actor("audit-named", subjects=["orders.*"], stream="ORDERS")
    class AuditNamed:
        @handles(Placed)
        def placed(self, event: Placed) -> None:
            pass

    for cls in (Audit, AuditNamed):
        with pytest.raises(MailboxError, match="stream 'ORDERS' is the partitioned stream"):
            await actor_kit.prepare(cls)

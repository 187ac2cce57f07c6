"""A delivery lost in transit (the connection dropped with it in flight) must not be
acknowledged by the acknowledgement of a later one (the consumer acks ``all``): the mailbox
sees the consumer sequence skip, and the runner re-creates the consumer at the journal's
position, so the lost message is delivered again. Against a real nats-server."""

from __future__ import annotations

import json

import anyio
import pytest
from actors import Added, Counter, expected_totals
from nats.aio.subscription import Subscription

from actorsource._mailbox.mailbox import ConsumerGone, JetStreamMailbox
from actorsource.testing import ActorKit


def _mailbox(actor_kit: ActorKit) -> JetStreamMailbox:
    return JetStreamMailbox(
        actor_kit.nc,
        durable="lossy",
        subjects=["lossy.>"],
        stream=None,
        default_stream="LOSSY",
        ack_wait=30.0,
        max_batch=16,
        max_ack_pending=1_000,
    )


async def _steal_one(actor_kit: ActorKit, stream: str, durable: str) -> Subscription:
    """Have the consumer deliver its next message to an inbox nobody reads: as if the
    connection had dropped with that delivery in flight."""
    # The server delivers only to a reply subject someone listens on: listen, then drop it.
    nowhere = await actor_kit.nc.subscribe(actor_kit.nc.new_inbox())
    await actor_kit.nc.publish(
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}",
        json.dumps({"batch": 1, "expires": 5_000_000_000}).encode(),
        reply=nowhere.subject,
    )
    await actor_kit.nc.flush()
    return nowhere


async def _take_until_something(mailbox: JetStreamMailbox) -> None:
    with anyio.fail_after(10):
        while not await mailbox.take():
            await anyio.sleep(0.01)


async def test_a_skipped_consumer_sequence_stops_the_mailbox_before_the_later_delivery(
    actor_kit: ActorKit,
) -> None:
    mailbox = _mailbox(actor_kit)
    stream = await mailbox.ensure()
    for i in range(3):
        await actor_kit.publish_raw(f"lossy.k{i}", b"{}", headers={"Event-Type": "Added"})
    stolen = await _steal_one(actor_kit, stream, "lossy")
    assert (await stolen.next_msg(timeout=5)).subject == "lossy.k0"
    async with mailbox:
        with pytest.raises(ConsumerGone, match="lost in transit"):
            await _take_until_something(mailbox)
        await mailbox.ensure(1)  # what the runner does: re-create at the journal's position
        taken = []
        with anyio.fail_after(10):
            while len(taken) < 3:
                taken += await mailbox.take()
                await anyio.sleep(0.01)
    assert [d.stream_seq for d in taken] == [1, 2, 3]


async def test_an_actor_applies_a_message_whose_delivery_was_lost(actor_kit: ActorKit) -> None:
    async with actor_kit.start(Counter) as counter:
        first = Added("a", 1)
        await actor_kit.publish("count.a", first)
        await counter.settled()
        [stream] = counter.journal.stream_positions
        # The runner's mailbox has pull requests waiting: a request sent now waits behind
        # them, so it steals a delivery only once theirs are served or expire. Publish
        # until it has stolen one, then a few more.
        stolen = await _steal_one(actor_kit, stream, "counter")
        rest: list[Added] = []
        with anyio.fail_after(20):
            while not stolen.pending_msgs:
                e = Added("b", len(rest) + 2)
                rest.append(e)
                await actor_kit.publish(f"count.{e.key}", e)
                await anyio.sleep(0.05)
        for e in [Added("a", 100), Added("c", 101)]:
            rest.append(e)
            await actor_kit.publish(f"count.{e.key}", e)
        await counter.settled()
        assert counter.state.totals == expected_totals([first, *rest])

"""The fence at the commit point: conditional appends to a partition's journal subject,
against real nats-servers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from actorsource._cluster.batches import decode_batch, encode_batch
from actorsource._cluster.fence import JournalFence, ensure_journal_stream, journal_subject
from actorsource._errors import ClusterError, Fenced
from actorsource._journal.schema import OutboxMessage
from actorsource.journal import DeadLetter, JournalBatch, JournalEntry, SQLiteJournal
from actorsource.testing import NatsCluster, NatsServer


@pytest.fixture
async def js(nats_server: NatsServer) -> AsyncIterator[JetStreamContext]:
    client: Client = await nats.connect(nats_server.url)
    try:
        context = client.jetstream()
        await ensure_journal_stream(context)
        yield context
    finally:
        await client.close()


async def records(fence: JournalFence, after: int = 0) -> list[tuple[int, str, bytes]]:
    return [(r.epoch, r.kind, r.data) async for r in fence.tail(after)]


def test_the_journal_subject_names_the_actor_and_partition() -> None:
    assert journal_subject("orders", 3) == "asj.orders.3"


async def test_a_stale_writer_is_refused_after_the_new_owners_epoch_marker(
    js: JetStreamContext,
) -> None:
    old = JournalFence(js, "orders", 3)
    await old.open(epoch=5)
    await old.append(b"batch-1")
    new = JournalFence(js, "orders", 3)
    await new.open(epoch=9)
    with pytest.raises(Fenced, match="append of epoch 5 refused") as refused:
        await old.append(b"batch-2")
    assert refused.value.epoch == 5
    assert old.fenced
    with pytest.raises(Fenced):  # and every later append too
        await old.append(b"batch-3")
    await new.append(b"batch-2'")
    assert await records(new) == [
        (5, "epoch", b""),
        (5, "batch", b"batch-1"),
        (9, "epoch", b""),
        (9, "batch", b"batch-2'"),
    ]


async def test_an_owner_cannot_open_after_a_newer_epoch(js: JetStreamContext) -> None:
    await JournalFence(js, "orders", 3).open(epoch=9)
    with pytest.raises(
        Fenced, match="epoch 5 is stale, the journal subject already carries epoch 9"
    ):
        await JournalFence(js, "orders", 3).open(epoch=5)


async def test_of_two_simultaneous_appends_exactly_one_wins(js: JetStreamContext) -> None:
    first = JournalFence(js, "orders", 3)
    await first.open(epoch=5)
    # A second handle with the same view of the subject: two writers that both believe
    # they may append after the marker.
    second = JournalFence(js, "orders", 3)
    second.epoch, second.last_seq = 6, first.last_seq
    outcomes: dict[str, object] = {}

    async def append(name: str, fence: JournalFence) -> None:
        try:
            outcomes[name] = await fence.append(name.encode())
        except Fenced as exc:
            outcomes[name] = exc

    async with anyio.create_task_group() as tg:
        tg.start_soon(append, "first", first)
        tg.start_soon(append, "second", second)
    won = [name for name, outcome in outcomes.items() if isinstance(outcome, int)]
    assert len(won) == 1
    assert [data for _, kind, data in await records(first) if kind == "batch"] == [won[0].encode()]


async def test_of_two_simultaneous_claims_exactly_one_can_append(js: JetStreamContext) -> None:
    await JournalFence(js, "orders", 3).open(epoch=1)
    fences = {epoch: JournalFence(js, "orders", 3) for epoch in (5, 6)}

    async def claim(epoch: int) -> None:
        try:
            await fences[epoch].open(epoch)
        except Fenced:
            pass

    async with anyio.create_task_group() as tg:
        for epoch in fences:
            tg.start_soon(claim, epoch)
    appended = []
    for epoch, fence in fences.items():
        try:
            await fence.append(b"x")
            appended.append(epoch)
        except Fenced:
            pass
    assert appended == [6]


async def test_the_tail_returns_exactly_what_was_appended_in_order(js: JetStreamContext) -> None:
    fence = JournalFence(js, "orders", 3)
    other = JournalFence(js, "orders", 4)  # another partition, interleaved
    marker = await fence.open(epoch=2)
    await other.open(epoch=3)
    sequences = []
    for i in range(25):
        sequences.append(await fence.append(f"batch-{i}".encode()))
        await other.append(b"other")
    assert sequences == sorted(sequences)
    tail = [r async for r in fence.tail(marker)]
    assert [r.data for r in tail] == [f"batch-{i}".encode() for i in range(25)]
    assert [r.seq for r in tail] == sequences
    assert [r.data for r in [r async for r in fence.tail(sequences[19])]] == [
        f"batch-{i}".encode() for i in range(20, 25)
    ]
    assert [r async for r in fence.tail(sequences[-1])] == []


async def test_an_append_whose_reply_was_lost_can_be_sent_again(js: JetStreamContext) -> None:
    fence = JournalFence(js, "orders", 3)
    marker = await fence.open(epoch=2)
    seq = await fence.append(b"batch-1")
    fence.last_seq = marker  # as if the reply had not arrived: the same append again
    assert await fence.append(b"batch-1") == seq
    assert [data for _, kind, data in await records(fence) if kind == "batch"] == [b"batch-1"]


async def test_an_append_before_open_is_refused(js: JetStreamContext) -> None:
    with pytest.raises(ClusterError, match="append before open"):
        await JournalFence(js, "orders", 3).append(b"x")


async def test_the_fence_holds_on_a_replicated_journal_stream(nats_cluster: NatsCluster) -> None:
    client = await nats.connect(servers=list(nats_cluster.urls))
    try:
        js = client.jetstream()
        await ensure_journal_stream(js, replicas=3)
        assert (await js.stream_info("ACTORSOURCE_JOURNAL")).config.num_replicas == 3
        old, new = JournalFence(js, "orders", 0), JournalFence(js, "orders", 0)
        await old.open(epoch=1)
        await old.append(b"a")
        await new.open(epoch=2)
        with pytest.raises(Fenced):
            await old.append(b"b")
        assert [r.data async for r in new.tail()] == [b"", b"a", b""]
    finally:
        await client.close()


async def test_a_batch_imported_from_the_tail_rebuilds_the_journal_it_came_from(
    js: JetStreamContext, tmp_path: Path
) -> None:
    batch = JournalBatch(
        entries=[
            JournalEntry(1, "orders.a", "Placed", b'{"n":1}', 1.5, "ORDERS", 7, "id-7"),
            JournalEntry(2, "actorsource.recorded", "Noted", b"{}", 1.6, headers={"X": "y"}),
        ],
        positions={"ORDERS": 7},
        dead_letters=[
            DeadLetter(subject="orders.x", payload=b"?", reason="undecodable", error="E", at=2.0)
        ],
        outbox=[OutboxMessage(subject="alerts.a", msg_id="orders-p3:1:0", payload=b"{}", pos=1)],
    )
    fence = JournalFence(js, "orders", 3)
    marker = await fence.open(epoch=4)
    await fence.append(encode_batch(batch))
    async with SQLiteJournal(tmp_path / "orders-p3.db", actor="orders-p3") as journal:
        async for record in fence.tail(marker):
            await journal.append(decode_batch(record.data))
        assert [e async for part in journal.entries(0) for e in part] == batch.entries
        assert journal.stream_positions == {"ORDERS": 7}
        assert await journal.dead_letters() == batch.dead_letters
        assert [(m.subject, m.msg_id, m.payload, m.pos) for m in await journal.unsent_outbox()] == [
            ("alerts.a", "orders-p3:1:0", b"{}", 1)
        ]

"""A journal batch survives its trip through the journal subject's encoding."""

from __future__ import annotations

import msgspec
import pytest

from actorsource._cluster.batches import decode_batch, encode_batch
from actorsource._journal.schema import DeadLetter, JournalBatch, NewSnapshot, OutboxMessage
from actorsource._model.events import JournalEntry


def _batch() -> JournalBatch:
    return JournalBatch(
        entries=[
            JournalEntry(
                1,
                "orders.a",
                "Placed",
                b'{"n":1}',
                1.5,
                "ORDERS",
                7,
                "id-7",
                {"Event-Type": "Placed", "Nats-Msg-Id": "id-7"},
            ),
            JournalEntry(
                2,
                "orders.b",
                "Placed",
                b'{"n":2}',
                1.6,
                "ORDERS",
                8,
                None,
                {"Event-Type": "Placed", "Event-Version": "2", "Trace": "t-1"},
                version=2,
                entity="b",
            ),
            # recorded by the actor itself: no stream message behind it
            JournalEntry(3, "actorsource.recorded", "Noted", b"{}", 1.7, entity="b"),
            JournalEntry(4, "orders.c", "Placed", b"\x00\xff", 1.8, "ORDERS", 9, raw_headers=None),
            # two headers that look usual and are not: they travel as they are
            JournalEntry(
                5,
                "orders.d",
                "Placed",
                b"{}",
                1.9,
                "ORDERS",
                11,
                "id-11",
                {"Event-Type": "Placed", "Nats-Msg-Id": "id-other"},
            ),
            JournalEntry(
                6,
                "orders.e",
                "Placed",
                b"{}",
                2.0,
                "ORDERS",
                12,
                "id-12",
                {"Event-Type": "Shipped", "Nats-Msg-Id": "id-12"},
            ),
            JournalEntry(
                7,
                "orders.f",
                "Placed",
                b"{}",
                2.1,
                "ORDERS",
                13,
                None,
                {"Event-Type": "Placed", "Trace": "t-2"},
            ),
        ],
        positions={"ORDERS": 10},
        dead_letters=[
            DeadLetter(
                subject="orders.x",
                payload=b"not json",
                reason="undecodable",
                error="ValueError: nope",
                type="Placed",
                stream="ORDERS",
                stream_seq=10,
                msg_id="id-10",
                headers={"Event-Type": "Placed"},
                at=2.0,
            )
        ],
        outbox=[
            OutboxMessage(subject="alerts.big", msg_id="orders-p3:2:0", payload=b"{}", pos=2),
            OutboxMessage(
                subject="alerts.big", msg_id="orders-p3:2:1", payload=b"[]", headers={"A": "b"}
            ),
        ],
        snapshot=NewSnapshot(state=b"state", pos=4, model_version=1, codec="json"),
    )


def test_a_batch_comes_back_whole_except_its_snapshots() -> None:
    batch = _batch()
    back = decode_batch(encode_batch(batch))
    assert back.entries == batch.entries
    assert [dict(e.headers) for e in back.entries] == [dict(e.headers) for e in batch.entries]
    assert back.positions == batch.positions
    assert back.dead_letters == batch.dead_letters
    assert back.outbox == batch.outbox
    assert back.snapshot is None
    assert back.entity_snapshots == []


def test_an_empty_batch_comes_back_empty() -> None:
    back = decode_batch(encode_batch(JournalBatch(entries=[], positions={}, dead_letters=[])))
    assert (back.entries, back.positions, back.dead_letters, back.outbox) == ([], {}, [], [])


def test_bytes_that_are_not_a_batch_are_refused() -> None:
    with pytest.raises(msgspec.DecodeError):
        decode_batch(b"\x93garbage")
    wire = msgspec.msgpack.decode(encode_batch(_batch()))
    wire["v"] = 99
    with pytest.raises(msgspec.DecodeError, match="format 99"):
        decode_batch(msgspec.msgpack.encode(wire))

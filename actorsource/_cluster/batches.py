"""A journal batch as bytes, for the partition's journal subject.

What a batch must carry to be rebuilt on another machine, where the input stream cannot
recreate it: every entry with all its columns (events the actor recorded itself have no
stream message behind them), the dead letters, the outbox rows (their message ids are
deterministic, so a new owner publishes what the old one may not have) and the stream
positions reached. Snapshots are not carried: they are a cache of the fold, rebuilt from
the entries (checkpoints travel another way).

msgpack via msgspec, rows as arrays: compact, and bytes stay bytes. Each field is
positional, so new fields go at the end with a default; ``v`` is the format's version.
"""

from __future__ import annotations

import msgspec

from .._journal.schema import DeadLetter, JournalBatch, OutboxMessage
from .._model.events import EVENT_TYPE_HEADER, MSG_ID_HEADER, JournalEntry

__all__ = ["FORMAT_VERSION", "decode_batch", "encode_batch"]

FORMAT_VERSION = 1


class _Entry(msgspec.Struct, array_like=True):
    pos: int
    subject: str
    type: str
    payload: bytes
    received_at: float
    stream: str | None
    stream_seq: int | None
    msg_id: str | None
    #: None when the headers are only the usual ones (type, version, message id).
    headers: dict[str, str] | None
    version: int
    entity: str | None


class _DeadLetter(msgspec.Struct, array_like=True):
    subject: str
    payload: bytes
    reason: str
    error: str
    type: str | None
    stream: str | None
    stream_seq: int | None
    msg_id: str | None
    headers: dict[str, str] | None
    at: float


class _Outbox(msgspec.Struct, array_like=True):
    subject: str
    msg_id: str
    payload: bytes
    headers: dict[str, str] | None
    pos: int | None


class _Batch(msgspec.Struct):
    v: int
    entries: list[_Entry]
    positions: dict[str, int]
    dead_letters: list[_DeadLetter]
    outbox: list[_Outbox]


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Batch)


def _entries(entries: list[JournalEntry]) -> list[tuple[object, ...]]:
    """The entries as :class:`_Entry` arrays, built as tuples (msgspec writes a tuple and an
    ``array_like`` Struct alike): a Struct and a call per entry cost twice as much, on the
    partition's loop, before every commit."""
    rows: list[tuple[object, ...]] = []
    append = rows.append
    for e in entries:
        headers = e.headers
        msg_id = e.msg_id
        if (
            e.version == 1
            and msg_id is not None
            and len(headers) == 2
            and headers.get(MSG_ID_HEADER) == msg_id
            and headers.get(EVENT_TYPE_HEADER) == e.type
        ):
            wire_headers = None  # the usual case, checked inline
        else:
            wire_headers = None if e.has_usual_headers() else dict(headers)
        append(
            (
                e.pos,
                e.subject,
                e.type,
                e.payload,
                e.received_at,
                e.stream,
                e.stream_seq,
                msg_id,
                wire_headers,
                e.version,
                e.entity,
            )
        )
    return rows


def encode_batch(batch: JournalBatch) -> bytes:
    """The bytes of ``batch`` without its snapshots."""
    return _encoder.encode(
        _Batch(
            v=FORMAT_VERSION,
            entries=_entries(batch.entries),  # type: ignore[arg-type]
            positions=dict(batch.positions),
            dead_letters=[
                _DeadLetter(
                    d.subject,
                    d.payload,
                    d.reason,
                    d.error,
                    d.type,
                    d.stream,
                    d.stream_seq,
                    d.msg_id,
                    d.headers,
                    d.at,
                )
                for d in batch.dead_letters
            ],
            outbox=[
                _Outbox(m.subject, m.msg_id, m.payload, m.headers, m.pos) for m in batch.outbox
            ],
        )
    )


def decode_batch(data: bytes) -> JournalBatch:
    """The :class:`JournalBatch` ``data`` encodes (no snapshots). Raises
    ``msgspec.DecodeError`` for bytes that are not a batch of a known format."""
    wire = _decoder.decode(data)
    if wire.v != FORMAT_VERSION:
        raise msgspec.DecodeError(f"journal batch format {wire.v} is not {FORMAT_VERSION}")
    return JournalBatch(
        entries=[
            JournalEntry(
                e.pos,
                e.subject,
                e.type,
                e.payload,
                e.received_at,
                e.stream,
                e.stream_seq,
                e.msg_id,
                e.headers,
                version=e.version,
                entity=e.entity,
            )
            for e in wire.entries
        ],
        positions=dict(wire.positions),
        dead_letters=[
            DeadLetter(
                subject=d.subject,
                payload=d.payload,
                reason=d.reason,
                error=d.error,
                type=d.type,
                stream=d.stream,
                stream_seq=d.stream_seq,
                msg_id=d.msg_id,
                headers=d.headers,
                at=d.at,
            )
            for d in wire.dead_letters
        ],
        outbox=[
            OutboxMessage(
                subject=m.subject, msg_id=m.msg_id, payload=m.payload, headers=m.headers, pos=m.pos
            )
            for m in wire.outbox
        ],
    )

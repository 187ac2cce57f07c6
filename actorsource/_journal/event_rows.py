"""How journal entries become rows of the ``events`` table, and the insert of a batch's rows.

Runs on the journal's SQLite thread (:func:`insert_events`, called by the batch writer).

What a row costs is mostly what the ``sqlite3`` module does with each parameter: an ``int``,
``float``, ``str`` or ``bytearray`` is bound at once, but ``None`` and ``bytes`` go through
its adaptation protocol first, which looks for an adapter, then for ``__adapt__`` on its
protocol type and formats an ``AttributeError`` it throws away (CPython 3.11: about 2,400
instructions a parameter, four of them in a usual row, more than everything else the row
costs). So the usual row (a message with its type and id only, at version 1) is written
with literal ``NULL`` s and its payload as a ``bytearray`` (the same blob, bound the same
way), with its entity key and previous position in an entity actor; any other row goes in
as before, with every column bound.
"""

from __future__ import annotations

import functools
import sqlite3
from typing import Any

import msgspec

from .._model.events import JournalEntry
from .._model.headers import EVENT_TYPE_HEADER, MSG_ID_HEADER
from .entity_heads import StagedHeads, chain_entities

__all__ = ["ENTRY_COLUMNS", "entry_row", "insert_events"]

ENTRY_COLUMNS = (
    "pos, subject, type, payload, received_at, stream, stream_seq, msg_id, headers, version, entity"
)

_headers_encoder = msgspec.json.Encoder()

# Rows go in as multi-row INSERTs rather than executemany: executemany steps once per row,
# and every step releases and re-takes the GIL, which under a busy event loop costs far more
# than the insert itself (measured: 24 us vs 5 us a row). Each statement holds a power of
# two of rows (256, 128, ... 1: a batch of 300 is 256 + 32 + 8 + 4), so that there are few
# of them and the sqlite3 module's statement cache keeps every one prepared: a statement
# for each batch size would be parsed again for most batches (4,000 instructions a row).
_MAX_ROWS_PER_INSERT = 256


def entry_row(e: JournalEntry) -> tuple[Any, ...]:
    """Every column of ``e``'s row, in :data:`ENTRY_COLUMNS` order."""
    # Headers that only repeat the type and message id (the usual case) are not stored
    # again: NULL means exactly those two, and JournalEntry rebuilds them when asked.
    version = e.version
    return (
        e.pos,
        e.subject,
        e.type,
        e.payload,
        e.received_at,
        e.stream,
        e.stream_seq,
        e.msg_id,
        None if e.has_usual_headers() else _headers_encoder.encode(e.headers),
        None if version == 1 else version,
        e.entity,
    )


def _usual_params(chunk: list[JournalEntry]) -> list[Any] | None:
    """The first eight columns of each row, if every entry of ``chunk`` has a usual row:
    from a stream, with a message id, at version 1, of no entity, its headers the type
    and id only (the last three columns NULL). None otherwise."""
    params: list[Any] = []
    extend = params.extend
    for e in chunk:
        msg_id = e.msg_id
        stream_seq = e.stream_seq
        stream = e.stream
        if (
            msg_id is None
            or stream_seq is None
            or stream is None
            or e.version != 1
            or e.entity is not None
        ):
            return None
        headers = e.headers
        if (
            len(headers) != 2
            or headers.get(MSG_ID_HEADER) != msg_id
            or headers.get(EVENT_TYPE_HEADER) != e.type
        ):
            return None
        extend(
            (
                e.pos,
                e.subject,
                e.type,
                bytearray(e.payload),
                e.received_at,
                stream,
                stream_seq,
                msg_id,
            )
        )
    return params


def _usual_chained_params(chunk: list[JournalEntry], prevs: list[int | None]) -> list[Any] | None:
    """:func:`_usual_params` for an entity's rows: with their key and previous position
    (the last two columns) instead of NULLs. None unless every row is usual that way."""
    params: list[Any] = []
    extend = params.extend
    for e, prev in zip(chunk, prevs, strict=True):
        msg_id = e.msg_id
        stream_seq = e.stream_seq
        stream = e.stream
        entity = e.entity
        if msg_id is None or stream_seq is None or stream is None or entity is None:
            return None
        headers = e.headers
        if (
            e.version != 1
            or len(headers) != 2
            or headers.get(MSG_ID_HEADER) != msg_id
            or headers.get(EVENT_TYPE_HEADER) != e.type
        ):
            return None
        extend(
            (
                e.pos,
                e.subject,
                e.type,
                bytearray(e.payload),
                e.received_at,
                stream,
                stream_seq,
                msg_id,
                entity,
                prev,
            )
        )
    return params


@functools.lru_cache(maxsize=16)
def _insert_sql(rows: int) -> str:
    values = ",".join(["(?,?,?,?,?,?,?,?,?,?,?)"] * rows)
    return f"INSERT INTO events ({ENTRY_COLUMNS}) VALUES {values}"


@functools.lru_cache(maxsize=16)
def _insert_chained_sql(rows: int) -> str:
    values = ",".join(["(?,?,?,?,?,?,?,?,?,?,?,?)"] * rows)
    return f"INSERT INTO events ({ENTRY_COLUMNS}, prev_pos) VALUES {values}"


@functools.lru_cache(maxsize=16)
def _insert_usual_chained_sql(rows: int) -> str:
    values = ",".join(["(?,?,?,?,?,?,?,?,NULL,NULL,?,?)"] * rows)
    return f"INSERT INTO events ({ENTRY_COLUMNS}, prev_pos) VALUES {values}"


@functools.lru_cache(maxsize=16)
def _insert_usual_sql(rows: int) -> str:
    values = ",".join(["(?,?,?,?,?,?,?,?,NULL,NULL,NULL)"] * rows)
    return f"INSERT INTO events ({ENTRY_COLUMNS}) VALUES {values}"


def insert_events(
    conn: sqlite3.Connection, entries: list[JournalEntry], staged: StagedHeads
) -> tuple[dict[str, int], int]:
    """Insert the rows of ``entries`` (inside the caller's transaction); an entity's rows
    are chained to its previous one (:func:`.entity_heads.chain_entities`). Returns the
    heads moved and how many entity rows there were (for ``staged``, once committed)."""
    heads: dict[str, int] = {}
    keyed = 0
    i, n = 0, len(entries)
    while i < n:
        size = min(_MAX_ROWS_PER_INSERT, 1 << ((n - i).bit_length() - 1))
        chunk = entries[i : i + size]
        i += size
        usual = _usual_params(chunk)
        if usual is not None:
            conn.execute(_insert_usual_sql(len(chunk)), usual)
            continue
        params: list[Any] = []
        if any(e.entity is not None for e in chunk):
            prevs = chain_entities(conn, chunk, heads, staged)
            keyed += len(chunk) - prevs.count(None)
            usual = _usual_chained_params(chunk, prevs)
            if usual is not None:
                conn.execute(_insert_usual_chained_sql(len(chunk)), usual)
                continue
            for e, prev in zip(chunk, prevs, strict=True):
                params.extend(entry_row(e))
                params.append(prev)
            conn.execute(_insert_chained_sql(len(chunk)), params)
            continue
        for e in chunk:
            params.extend(entry_row(e))
        conn.execute(_insert_sql(len(chunk)), params)
    return heads, keyed

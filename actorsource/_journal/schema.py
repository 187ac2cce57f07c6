"""The journal's SQL: its tables, how rows are encoded, the batch writer and its errors.

Everything here is synchronous and runs either on the journal's SQLite thread
(:func:`write_batch`) or once at open time; :mod:`actorsource._journal.journal` wraps it in the
async :class:`~actorsource._journal.journal.SQLiteJournal`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from .._errors import (
    DuplicateMessageIdError,
    JournalAccessError,
    JournalCorruptError,
    JournalError,
    JournalOrderError,
)
from .._model.effects import OutboxMessage
from .._model.events import JournalEntry
from .._model.snapshots import NewSnapshot, snapshot_checksum
from .entity_heads import HORIZON_MIGRATION, StagedHeads, flush_heads
from .entity_store import (
    CHAIN_MIGRATION,
    ENTITY_MIGRATION,
    ENTITY_SCHEMA,
    NewEntitySnapshot,
    write_entity_snapshots,
)
from .event_rows import ENTRY_COLUMNS, entry_row, insert_events
from .snapshot_parts import PARTS_MIGRATION, PARTS_SCHEMA
from .storage import is_access_error, os_error

__all__ = [
    "DEAD_LETTER_COLUMNS",
    "ENTRY_COLUMNS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "DeadLetter",
    "check_continues",
    "corrupt",
    "MIGRATIONS",
    "DuplicateMessageIdError",
    "JournalBatch",
    "NewEntitySnapshot",
    "NewSnapshot",
    "OutboxMessage",
    "REPLAY_COLUMNS",
    "entry_columns",
    "entry_row",
    "headers_decoder",
    "headers_encoder",
    "open_failure",
    "row_dead_letter",
    "row_entry",
    "translate",
    "write_batch",
]


SCHEMA_VERSION = 6

#: Statements that bring a journal of schema ``n`` to ``n + 1``, each run in one transaction.
MIGRATIONS = {
    # Event versions (schema evolution): NULL is version 1, which is what every event
    # journaled before had.
    1: "ALTER TABLE events ADD COLUMN version INTEGER;",
    # Keyed entities: the entity an event belongs to (NULL in a singleton actor's journal,
    # and for every event journaled before), its index and the entities' snapshots.
    2: ENTITY_MIGRATION,
    # Large snapshots in parts (snapshot_parts.py): the parts' table, and a header's part
    # count and size; every snapshot written before is one blob (NULL parts).
    3: PARTS_MIGRATION,
    # Entity chains (entity_store.py): each entity row's previous row of its entity, each
    # entity's head; the (entity, pos) index goes.
    4: CHAIN_MIGRATION,
    # Staged entity heads (entity_heads.py): the heads table is complete up to a horizon;
    # a journal of schema 5 wrote every head with its batch, so up to its last row.
    5: HORIZON_MIGRATION,
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    pos         INTEGER PRIMARY KEY,
    subject     TEXT    NOT NULL,
    type        TEXT    NOT NULL,
    payload     BLOB    NOT NULL,
    received_at REAL    NOT NULL,
    stream      TEXT,
    stream_seq  INTEGER,
    msg_id      TEXT,
    headers     BLOB,
    version     INTEGER,
    entity      TEXT,
    prev_pos    INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS events_by_stream_seq
    ON events (stream, stream_seq) WHERE stream_seq IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS events_by_msg_id
    ON events (msg_id) WHERE msg_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS positions (
    stream   TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL,
    created  TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshots (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    pos           INTEGER NOT NULL,
    model_version INTEGER NOT NULL,
    codec         TEXT    NOT NULL,
    checksum      TEXT    NOT NULL,
    state         BLOB    NOT NULL,
    created_at    REAL    NOT NULL,
    parts         INTEGER,
    size          INTEGER
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    stream      TEXT,
    stream_seq  INTEGER,
    subject     TEXT    NOT NULL,
    type        TEXT,
    msg_id      TEXT,
    headers     BLOB,
    payload     BLOB    NOT NULL,
    reason      TEXT    NOT NULL,
    error       TEXT    NOT NULL,
    at          REAL    NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_by_stream_seq
    ON dead_letters (stream, stream_seq) WHERE stream_seq IS NOT NULL;
CREATE TABLE IF NOT EXISTS outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    pos        INTEGER,
    subject    TEXT    NOT NULL,
    msg_id     TEXT    NOT NULL UNIQUE,
    headers    BLOB,
    payload    BLOB    NOT NULL,
    created_at REAL    NOT NULL,
    sent_at    REAL
);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (id) WHERE sent_at IS NULL;
"""
SCHEMA += ENTITY_SCHEMA  # the entities' heads and snapshots (entity_store.py)
SCHEMA += PARTS_SCHEMA  # large snapshots' parts (snapshot_parts.py)

headers_encoder = msgspec.json.Encoder()
headers_decoder = msgspec.json.Decoder(dict[str, str])


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message the actor refused (undecodable, unknown type, failing handler), kept as received."""

    subject: str
    payload: bytes
    reason: str
    error: str
    type: str | None = None
    stream: str | None = None
    stream_seq: int | None = None
    msg_id: str | None = None
    headers: dict[str, str] | None = None
    at: float = 0.0


@dataclass(slots=True)
class JournalBatch:
    """What one transaction writes: events, the stream position reached, dead letters, a
    snapshot, and the snapshots of the entities the batch brought to their snapshot point."""

    entries: list[JournalEntry]
    positions: dict[str, int]
    dead_letters: list[DeadLetter]
    outbox: list[OutboxMessage] = field(default_factory=list)
    snapshot: NewSnapshot | None = None
    entity_snapshots: list[NewEntitySnapshot] = field(default_factory=list)


def check_continues(
    batch: JournalBatch, last_pos: int, positions: dict[str, int], path: Path
) -> None:
    """Refuse a batch that does not continue the journal: its entries' ``pos`` must run on
    from ``last_pos``, and every stream message in it (entry or dead letter) must come after
    what the journal already handled of its stream, entries and dead letters each in
    increasing stream order. Raises :class:`JournalError` / :class:`JournalOrderError`.
    """
    for i, entry in enumerate(batch.entries):
        if entry.pos != last_pos + 1 + i:
            raise JournalError(
                f"batch for {path} does not continue the journal: entry {i} has pos "
                f"{entry.pos}, expected {last_pos + 1 + i}",
                path=path,
            )
    for rows in (batch.entries, batch.dead_letters):
        seen: dict[str, int] = {}
        for row in rows:
            seq, stream = row.stream_seq, row.stream
            if seq is None or stream is None:
                continue  # an event the actor recorded itself
            floor = seen.get(stream) or positions.get(stream, 0)
            if seq <= floor:
                raise JournalOrderError(
                    f"batch for {path} breaks stream order: {stream} sequence {seq} after "
                    f"{floor}; nothing of it was stored",
                    path=path,
                )
            seen[stream] = seq


DEAD_LETTER_COLUMNS = (
    "subject, payload, reason, error, type, stream, stream_seq, msg_id, headers, at"
)


def row_dead_letter(r: sqlite3.Row | tuple[Any, ...]) -> DeadLetter:
    """A dead letter from a row of :data:`DEAD_LETTER_COLUMNS`."""
    return DeadLetter(
        subject=r[0],
        payload=r[1],
        reason=r[2],
        error=r[3],
        type=r[4],
        stream=r[5],
        stream_seq=r[6],
        msg_id=r[7],
        headers=headers_decoder.decode(r[8]) if r[8] else None,
        at=r[9],
    )


def row_entry(row: sqlite3.Row | tuple[Any, ...]) -> JournalEntry:
    return JournalEntry(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        row[6],
        row[7],
        raw_headers=row[8],
        version=row[9] or 1,
        entity=row[10],
    )


#: What replay reads of every entry. The other columns (subject, time, stream, message id,
#: headers) are read only for the entries whose handler asks its Context for them: fetching a
#: column builds a Python object per row, and that was most of what reading a journal cost
#: (measured: 755k rows/s with every column, 1.2M/s with these).
REPLAY_COLUMNS = "pos, type, payload, version"


def entry_columns(schema_version: int) -> str:
    """:data:`ENTRY_COLUMNS` for a journal of ``schema_version`` (read-only tools read older
    journals as they are: before schema 2, every event was version 1; before 3, no event
    belonged to an entity)."""
    columns = ENTRY_COLUMNS
    if schema_version < 3:
        columns = columns.replace("entity", "NULL")
    if schema_version < 2:
        columns = columns.replace("version", "NULL")
    return columns


def write_batch(
    conn: sqlite3.Connection,
    batch: JournalBatch,
    staged: StagedHeads,
    admit: Callable[[], None] | None = None,
) -> None:
    """Write ``batch`` in one ``BEGIN IMMEDIATE`` transaction (runs on the journal's thread);
    ``staged`` learns the entity heads it committed (stored with it when they are due: see
    :mod:`.entity_heads`), and nothing of a batch that fails.

    ``admit`` (a fenced owner's append, see :meth:`.journal.SQLiteJournal.append`) is called
    once the events are in, so after the unique index refused any message id the journal
    holds, and before the positions (it may add one) and the ``COMMIT``; if it raises,
    nothing is stored."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        moved, keyed = insert_events(conn, batch.entries, staged)
        flushed = bool(moved) and staged.due(moved, keyed)
        if flushed:
            flush_heads(conn, staged, moved, batch.entries[-1].pos)
        if admit is not None:
            admit()
        if batch.positions:
            conn.executemany(
                "INSERT INTO positions (stream, last_seq) VALUES (?, ?) ON CONFLICT (stream) "
                "DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)",
                list(batch.positions.items()),
            )
        now = time.time()
        if batch.dead_letters:
            conn.executemany(
                "INSERT INTO dead_letters (stream, stream_seq, subject, type, msg_id, "
                "headers, payload, reason, error, at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        d.stream,
                        d.stream_seq,
                        d.subject,
                        d.type,
                        d.msg_id,
                        headers_encoder.encode(d.headers) if d.headers else None,
                        d.payload,
                        d.reason,
                        d.error,
                        d.at or now,
                    )
                    for d in batch.dead_letters
                ],
            )
        if batch.outbox:
            conn.executemany(
                "INSERT INTO outbox (pos, subject, msg_id, headers, payload, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (msg_id) DO NOTHING",
                [
                    (
                        m.pos,
                        m.subject,
                        m.msg_id,
                        headers_encoder.encode(m.headers) if m.headers else None,
                        m.payload,
                        now,
                    )
                    for m in batch.outbox
                ],
            )
        snap = batch.snapshot
        if snap is not None:
            checksum = snapshot_checksum(snap.model_version, snap.pos, snap.codec, snap.state)
            conn.execute(
                "INSERT INTO snapshots (pos, model_version, codec, checksum, state, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (snap.pos, snap.model_version, snap.codec, checksum, snap.state, now),
            )
            conn.execute(
                "DELETE FROM snapshots WHERE id NOT IN "
                "(SELECT id FROM snapshots ORDER BY pos DESC, id DESC LIMIT ?)",
                (snap.keep,),
            )
        if batch.entity_snapshots:
            write_entity_snapshots(conn, batch.entity_snapshots, now)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    if moved:
        staged.committed(moved, keyed, flushed=flushed)


def translate(exc: sqlite3.Error, path: Path, doing: str) -> JournalError:
    """Map a sqlite3 error to the journal's error tree (corruption gets its own class)."""
    text = str(exc)
    if is_access_error(exc):
        return JournalAccessError(f"cannot {doing} {path}: {text}", path=path)
    if isinstance(exc, sqlite3.DatabaseError) and (
        "malformed" in text or "not a database" in text or type(exc) is sqlite3.DatabaseError
    ):
        return corrupt(path, f"is corrupt ({doing}: {text})")
    return JournalError(f"cannot {doing} {path}: {text}", path=path)


def corrupt(path: Path, problem: str) -> JournalCorruptError:
    """The journal at ``path`` cannot be trusted (``problem`` says why), and what to do."""
    return JournalCorruptError(
        f"{path} {problem}; nothing more is acknowledged from it. Restore the file from a "
        "backup, or move it away and let the actor rebuild its journal from the stream",
        path=path,
    )


def open_failure(exc: OSError | sqlite3.Error, path: Path) -> JournalError:
    """Why the journal at ``path`` could not be opened, as a journal error."""
    if isinstance(exc, OSError):
        return os_error(exc, path, "open the journal")
    return translate(exc, path, "open the journal")

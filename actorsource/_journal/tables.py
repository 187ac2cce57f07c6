"""The journal's queries beside the batch writer: entries, what is known, snapshots, dead
letters and the outbox.

Plain functions of a ``sqlite3.Connection``, each run as one call on the journal's thread by
:class:`~actorsource._journal.journal.SQLiteJournal`, which translates their errors.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from .._model.events import JournalEntry
from .._model.snapshots import SnapshotInfo
from .schema import (
    DEAD_LETTER_COLUMNS,
    ENTRY_COLUMNS,
    DeadLetter,
    OutboxMessage,
    headers_decoder,
    row_dead_letter,
    row_entry,
)

__all__ = [
    "bind_stream",
    "dead_letters",
    "delete_entity_snapshots",
    "delete_snapshots",
    "entries_after",
    "fetchall",
    "known",
    "mark_sent",
    "snapshots",
    "unsent_outbox",
]

# SQLite's default limit on the host parameters of one statement is far above this.
_IN_CHUNK = 500


def fetchall(
    conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()
) -> list[tuple[Any, ...]]:
    """Every row of one statement, as tuples."""
    return [tuple(r) for r in conn.execute(sql, params).fetchall()]


def known(
    conn: sqlite3.Connection, stream: str, seqs: list[int], msg_ids: list[str]
) -> tuple[set[int], set[str]]:
    """Which of these sequences of ``stream`` are journaled or dead-lettered, and which of
    these message ids are journaled."""
    found_seqs: set[int] = set()
    found_ids: set[str] = set()
    for i in range(0, len(seqs), _IN_CHUNK):
        part = seqs[i : i + _IN_CHUNK]
        marks = ",".join("?" * len(part))
        rows = conn.execute(
            f"SELECT stream_seq FROM events WHERE stream = ? AND stream_seq IN ({marks}) "
            f"UNION SELECT stream_seq FROM dead_letters "
            f"WHERE stream = ? AND stream_seq IN ({marks})",
            (stream, *part, stream, *part),
        )
        found_seqs.update(r[0] for r in rows)
    for i in range(0, len(msg_ids), _IN_CHUNK):
        part_ids = msg_ids[i : i + _IN_CHUNK]
        marks = ",".join("?" * len(part_ids))
        rows = conn.execute(f"SELECT msg_id FROM events WHERE msg_id IN ({marks})", part_ids)
        found_ids.update(r[0] for r in rows)
    return found_seqs, found_ids


def entries_after(conn: sqlite3.Connection, after: int, limit: int) -> list[JournalEntry]:
    """Up to ``limit`` entries with ``pos > after``, in order."""
    rows = conn.execute(
        f"SELECT {ENTRY_COLUMNS} FROM events WHERE pos > ? ORDER BY pos LIMIT ?", (after, limit)
    )
    return [row_entry(r) for r in rows]


def snapshots(conn: sqlite3.Connection) -> list[SnapshotInfo]:
    """Every snapshot's metadata (not its state), newest first (position, then id)."""
    rows = conn.execute(
        "SELECT id, pos, model_version, codec, coalesce(size, length(state)), created_at "
        "FROM snapshots "
        "ORDER BY pos DESC, id DESC"
    )
    return [SnapshotInfo(*row) for row in rows]


def delete_snapshots(conn: sqlite3.Connection) -> int:
    """Delete every snapshot (and every part of one), in one transaction; how many there were."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        deleted = conn.execute("DELETE FROM snapshots").rowcount
        conn.execute("DELETE FROM snapshot_parts")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return deleted


def delete_entity_snapshots(conn: sqlite3.Connection) -> int:
    """Delete every entity snapshot; how many there were."""
    return conn.execute("DELETE FROM entity_snapshots").rowcount


def dead_letters(conn: sqlite3.Connection) -> list[DeadLetter]:
    """Every dead letter, oldest first."""
    rows = conn.execute(f"SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters ORDER BY id")
    return [row_dead_letter(r) for r in rows]


def unsent_outbox(conn: sqlite3.Connection, limit: int) -> list[OutboxMessage]:
    """Up to ``limit`` outbox messages not yet confirmed as published, oldest first."""
    rows = conn.execute(
        "SELECT id, pos, subject, msg_id, headers, payload FROM outbox "
        "WHERE sent_at IS NULL ORDER BY id LIMIT ?",
        (limit,),
    )
    return [
        OutboxMessage(
            id=r[0],
            pos=r[1],
            subject=r[2],
            msg_id=r[3],
            headers=headers_decoder.decode(r[4]) if r[4] else None,
            payload=r[5],
        )
        for r in rows
    ]


def mark_sent(conn: sqlite3.Connection, ids: Sequence[int]) -> None:
    """Record, in one transaction, that these outbox messages were published."""
    now = time.time()
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(
            "UPDATE outbox SET sent_at = ? WHERE id = ? AND sent_at IS NULL",
            [(now, i) for i in ids],
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def bind_stream(conn: sqlite3.Connection, stream: str, created: str) -> str | None:
    """Record the creation time of ``stream`` unless one is recorded; return the one before."""
    row = conn.execute("SELECT created FROM positions WHERE stream = ?", (stream,)).fetchone()
    known_created = row[0] if row else None
    if known_created is None:
        conn.execute(
            "INSERT INTO positions (stream, last_seq, created) VALUES (?, 0, ?) "
            "ON CONFLICT (stream) DO UPDATE SET created = excluded.created",
            (stream, created),
        )
    return str(known_created) if known_created is not None else None

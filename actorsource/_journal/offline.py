"""Reading a journal file from outside its actor: summaries and entries, read-only.

Tools (``actorsource journal ...``) use this. It opens the file with SQLite's read-only
mode and takes no lock, so it works while a worker holds the journal (WAL lets a reader see
the last committed state) and can never write to it.
"""

from __future__ import annotations

import base64
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._errors import JournalError
from .._model.events import JournalEntry
from .._model.snapshots import SnapshotInfo
from .schema import (
    DEAD_LETTER_COLUMNS,
    SCHEMA_VERSION,
    DeadLetter,
    entry_columns,
    row_dead_letter,
    row_entry,
    translate,
)

__all__ = [
    "JournalSummary",
    "entry_as_dict",
    "entry_from_dict",
    "open_read_only",
    "read_dead_letters",
    "read_entries",
    "read_entry",
    "summarize",
]


@dataclass(frozen=True)
class JournalSummary:
    """What ``actorsource journal info`` prints."""

    path: Path
    actor: str | None
    schema_version: int
    events: int
    first_pos: int | None
    last_pos: int | None
    first_received_at: float | None
    last_received_at: float | None
    streams: dict[str, int]
    size_bytes: int
    snapshots: list[SnapshotInfo]
    dead_letters: int
    unsent_outbox: int


def open_read_only(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A read-only connection to an existing journal (a clear error if it is not one)."""
    p = Path(path)
    if not p.is_file():
        raise JournalError(f"no journal at {p}", path=p)
    try:
        db = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
        version = db.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.Error as exc:
        raise translate(exc, p, "open") from exc
    if version == 0 or version > SCHEMA_VERSION:
        db.close()
        raise JournalError(f"{p} is not an actorsource journal (schema {version})", path=p)
    return db


def summarize(path: str | os.PathLike[str]) -> JournalSummary:
    """Read a journal's summary without locking or changing it."""
    p = Path(path)
    db = open_read_only(p)
    try:

        def one(sql: str) -> Any:
            return db.execute(sql).fetchone()

        actor = one("SELECT value FROM meta WHERE key = 'actor'")
        count, first, last = one("SELECT count(*), min(pos), max(pos) FROM events")
        first_at = one("SELECT received_at FROM events ORDER BY pos LIMIT 1")
        last_at = one("SELECT received_at FROM events ORDER BY pos DESC LIMIT 1")
        (schema,) = one("PRAGMA user_version")
        size = "coalesce(size, length(state))" if schema >= 4 else "length(state)"
        snapshots = [
            SnapshotInfo(*row)
            for row in db.execute(
                f"SELECT id, pos, model_version, codec, {size}, created_at "
                "FROM snapshots ORDER BY pos DESC, id DESC"
            )
        ]
        return JournalSummary(
            path=p,
            actor=actor[0] if actor else None,
            schema_version=schema,
            events=count,
            first_pos=first,
            last_pos=last,
            first_received_at=first_at[0] if first_at else None,
            last_received_at=last_at[0] if last_at else None,
            streams=dict(db.execute("SELECT stream, last_seq FROM positions").fetchall()),
            size_bytes=sum(
                f.stat().st_size
                for f in p.parent.glob(p.name + "*")
                if not f.name.endswith(".lock")
            ),
            snapshots=snapshots,
            dead_letters=one("SELECT count(*) FROM dead_letters")[0],
            unsent_outbox=one("SELECT count(*) FROM outbox WHERE sent_at IS NULL")[0],
        )
    except sqlite3.Error as exc:
        raise translate(exc, p, "read") from exc
    finally:
        db.close()


def read_entries(
    path: str | os.PathLike[str], *, after: int = 0, last: int | None = None
) -> Iterator[JournalEntry]:
    """Entries with ``pos > after`` in order; with ``last``, only the last ``last`` of them."""
    p = Path(path)
    db = open_read_only(p)
    try:
        if last is not None:
            (top,) = db.execute("SELECT coalesce(max(pos), 0) FROM events").fetchone()
            after = max(after, top - last)
        (schema,) = db.execute("PRAGMA user_version").fetchone()
        cursor = db.execute(
            f"SELECT {entry_columns(schema)} FROM events WHERE pos > ? ORDER BY pos", (after,)
        )
        while rows := cursor.fetchmany(1_000):
            yield from (row_entry(r) for r in rows)
    except sqlite3.Error as exc:
        raise translate(exc, p, "read") from exc
    finally:
        db.close()


def read_entry(path: str | os.PathLike[str], pos: int) -> JournalEntry | None:
    """The entry at ``pos``, or None."""
    for entry in read_entries(path, after=pos - 1):
        return entry if entry.pos == pos else None
    return None


def entry_as_dict(entry: JournalEntry) -> dict[str, Any]:
    """A JSON-ready, lossless view of an entry: the payload as UTF-8 text when it is,
    else base64 under ``payload_b64``; ``entity`` for an entity actor's entries."""
    extra: dict[str, Any] = {}
    if entry.entity is not None:
        extra["entity"] = entry.entity
    try:
        payload: Any = entry.payload.decode()
    except UnicodeDecodeError:
        payload = None
        extra["payload_b64"] = base64.b64encode(entry.payload).decode()
    return {
        "pos": entry.pos,
        "type": entry.type,
        "subject": entry.subject,
        "stream": entry.stream,
        "stream_seq": entry.stream_seq,
        "msg_id": entry.msg_id,
        "version": entry.version,
        "received_at": entry.received_at,
        "headers": dict(entry.headers),
        "payload": payload,
        **extra,
    }


def entry_from_dict(data: dict[str, Any]) -> JournalEntry:
    """The inverse of :func:`entry_as_dict` (raises KeyError/TypeError/ValueError on bad input)."""
    b64 = data.get("payload_b64")
    payload = base64.b64decode(b64) if b64 is not None else str(data["payload"]).encode()
    return JournalEntry(
        pos=int(data["pos"]),
        subject=str(data["subject"]),
        type=str(data["type"]),
        payload=payload,
        received_at=float(data["received_at"]),
        stream=data.get("stream"),
        stream_seq=data.get("stream_seq"),
        msg_id=data.get("msg_id"),
        headers={str(k): str(v) for k, v in (data.get("headers") or {}).items()},
        version=int(data.get("version", 1)),
        entity=None if data.get("entity") is None else str(data["entity"]),
    )


def read_dead_letters(path: str | os.PathLike[str]) -> list[tuple[int, DeadLetter]]:
    """Every dead letter of a journal with its id, oldest first (read-only)."""
    p = Path(path)
    db = open_read_only(p)
    try:
        rows = db.execute(
            f"SELECT id, {DEAD_LETTER_COLUMNS} FROM dead_letters ORDER BY id"
        ).fetchall()
    except sqlite3.Error as exc:
        raise translate(exc, p, "read") from exc
    finally:
        db.close()
    return [(r[0], row_dead_letter(r[1:])) for r in rows]

"""Opening a journal file: WAL mode, its schema created or upgraded step by step, its owner
checked. Runs on the journal's thread, once (:meth:`SQLiteJournal.open
<actorsource._journal.journal.SQLiteJournal.open>`).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._errors import JournalError, JournalLockedError
from .._log import get_logger
from . import snapshot_parts
from .schema import MIGRATIONS, SCHEMA, SCHEMA_VERSION, corrupt, open_failure
from .storage import is_access_error

__all__ = ["Opened", "prepare"]


@dataclass(frozen=True, slots=True)
class Opened:
    """What :func:`_prepare` found in the journal."""

    version: int
    last_pos: int
    unsent: int
    positions: dict[str, int]


def prepare(conn: sqlite3.Connection, path: Path, actor: str, synchronous: str) -> Opened:
    """Put the file in WAL mode, create or upgrade its schema and check its owner."""
    try:
        return _prepare_checked(conn, path, actor, synchronous)
    except sqlite3.DatabaseError as exc:
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            raise JournalLockedError(f"{path} is locked: {exc}", path=path) from exc
        if is_access_error(exc):
            raise open_failure(exc, path) from exc
        raise corrupt(path, f"is not a usable actorsource journal: {exc}") from exc


def _prepare_checked(conn: sqlite3.Connection, path: Path, actor: str, synchronous: str) -> Opened:
    def scalar(sql: str) -> Any:
        row = conn.execute(sql).fetchone()
        return row[0] if row else None

    version = int(scalar("PRAGMA user_version"))
    mode = scalar("PRAGMA journal_mode=WAL")
    if str(mode).lower() != "wal":
        raise JournalError(f"cannot put {path} in WAL mode (got {mode})", path=path)
    conn.execute(f"PRAGMA synchronous={synchronous}")
    # Debian's SQLite zeroes every page it frees (secure_delete=ON): pruning a snapshot then
    # wrote as many bytes as writing it. FAST zeroes only what it writes anyway; what pruned
    # snapshots held is still in the journal's events.
    conn.execute("PRAGMA secure_delete=FAST")
    if version == 0:
        # One transaction for the schema, the owner and the version stamp: a process killed
        # half-way leaves either an empty file or a complete journal.
        owner_sql = actor.replace("'", "''")
        conn.executescript(
            "BEGIN IMMEDIATE;"
            + SCHEMA
            + "INSERT OR IGNORE INTO meta (key, value) VALUES "
            + f"('actor', '{owner_sql}'), ('created_at', '{time.time()!r}');"
            + f"PRAGMA user_version={SCHEMA_VERSION}; COMMIT;"
        )
    elif version < SCHEMA_VERSION:
        # One step per transaction, each stamping its version: a kill in between is safe.
        for step in range(version, SCHEMA_VERSION):
            conn.executescript(
                "BEGIN IMMEDIATE;" + MIGRATIONS[step] + f"PRAGMA user_version={step + 1}; COMMIT;"
            )
            get_logger(actor=actor).info("journal schema upgraded", path=str(path), schema=step + 1)
    elif version > SCHEMA_VERSION:
        raise JournalError(
            f"{path} has journal schema {version}, newer than this actorsource "
            f"({SCHEMA_VERSION}): upgrade actorsource",
            path=path,
        )
    owner = scalar("SELECT value FROM meta WHERE key = 'actor'")
    if owner is None and not scalar("SELECT count(*) FROM events"):
        # Created by an older version that stamped the owner in a second step, and killed in
        # between: nothing was ever journaled, so finish the stamp.
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('actor', ?), ('created_at', ?)",
            (actor, repr(time.time())),
        )
        owner = actor
    if owner != actor:
        raise JournalError(f"{path} is the journal of actor {owner!r}, not {actor!r}", path=path)
    positions = dict(conn.execute("SELECT stream, last_seq FROM positions").fetchall())
    # The parts of a snapshot whose writing was cut short, or whose pruning was.
    snapshot_parts.delete_orphans(conn)
    return Opened(
        version=version,
        last_pos=int(scalar("SELECT coalesce(max(pos), 0) FROM events")),
        unsent=int(scalar("SELECT count(*) FROM outbox WHERE sent_at IS NULL")),
        positions=positions,
    )

"""The journal's entity part: per-entity snapshots, and reading one entity's rows.

An entity actor writes the key of each event in the ``entity`` column of ``events`` (NULL
in a singleton actor's journal); the partial index ``events_by_entity`` on
``(entity, pos)`` finds one entity's rows without a scan, and costs singletons nothing.
``entity_snapshots`` holds, per entity, its newest snapshots: the state bytes at a journal
position, with the model version and a checksum that binds them to the entity key, like an
actor's snapshots (:func:`~actorsource._model.snapshots.snapshot_checksum`).

:func:`write_entity_snapshots` runs inside a batch's transaction (the journal's thread);
:class:`~actorsource._journal.entity_reader.EntityReader` reads one entity back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from .._model.snapshots import snapshot_checksum

__all__ = [
    "ENTITY_MIGRATION",
    "ENTITY_SCHEMA",
    "EntitySnapshot",
    "NewEntitySnapshot",
    "entity_checksum",
    "write_entity_snapshots",
]

ENTITY_TABLES = """
CREATE INDEX IF NOT EXISTS events_by_entity ON events (entity, pos) WHERE entity IS NOT NULL;
CREATE TABLE IF NOT EXISTS entity_snapshots (
    entity     TEXT    NOT NULL,
    pos        INTEGER NOT NULL,
    version    INTEGER NOT NULL,
    codec      TEXT    NOT NULL,
    checksum   TEXT    NOT NULL,
    data       BLOB    NOT NULL,
    created_at REAL    NOT NULL,
    PRIMARY KEY (entity, pos)
);
"""

#: Part of a new journal's schema (the ``entity`` column is in ``events`` itself).
ENTITY_SCHEMA = ENTITY_TABLES

#: Brings a journal of schema 2 to 3. ``ADD COLUMN`` only rewrites the table's definition,
#: not its rows: old journals open at once, and their events have no entity (NULL).
ENTITY_MIGRATION = "ALTER TABLE events ADD COLUMN entity TEXT;" + ENTITY_TABLES


@dataclass(frozen=True, slots=True)
class NewEntitySnapshot:
    """One entity's state bytes at journal position ``pos``, to store with a batch."""

    entity: str
    pos: int
    version: int
    codec: str
    data: bytes
    keep: int = 2


@dataclass(frozen=True, slots=True)
class EntitySnapshot:
    """A stored entity snapshot."""

    entity: str
    pos: int
    version: int
    codec: str
    checksum: str
    data: bytes

    def verifies(self) -> bool:
        """Tell whether the stored checksum matches the stored bytes and key."""
        if not isinstance(self.data, bytes) or not isinstance(self.checksum, str):
            return False  # a row changed behind SQLite's type affinity: not ours
        return self.checksum == entity_checksum(
            self.entity, self.version, self.pos, self.codec, self.data
        )


def entity_checksum(entity: str, version: int, pos: int, codec: str, data: bytes) -> str:
    """The actor snapshot checksum over the key and the bytes: a snapshot moved to another
    entity does not verify."""
    return snapshot_checksum(version, pos, codec, entity.encode() + b"\x00" + data)


def write_entity_snapshots(
    conn: sqlite3.Connection, snapshots: Sequence[NewEntitySnapshot], now: float
) -> None:
    """Store ``snapshots`` and prune each entity to its newest ``keep`` (inside the caller's
    transaction)."""
    conn.executemany(
        "INSERT OR REPLACE INTO entity_snapshots "
        "(entity, pos, version, codec, checksum, data, created_at) VALUES (?,?,?,?,?,?,?)",
        [
            (
                s.entity,
                s.pos,
                s.version,
                s.codec,
                entity_checksum(s.entity, s.version, s.pos, s.codec, s.data),
                s.data,
                now,
            )
            for s in snapshots
        ],
    )
    conn.executemany(
        "DELETE FROM entity_snapshots WHERE entity = ? AND pos NOT IN "
        "(SELECT pos FROM entity_snapshots WHERE entity = ? ORDER BY pos DESC LIMIT ?)",
        [(s.entity, s.entity, s.keep) for s in snapshots],
    )

"""The journal's entity part: each entity's chain of rows, and per-entity snapshots.

An entity actor writes the key of each event in the ``entity`` column of ``events`` (NULL
in a singleton actor's journal) and, in ``prev_pos``, the position of the entity's row
before it (0 for its first): an entity's rows form a chain, newest first, whose head is
in ``entity_heads`` or staged in memory (:mod:`.entity_heads`). Finding an entity's rows
after its newest snapshot walks that chain down by the primary key, so the cost is the
entity's rows, not the journal's; and writing a row appends it, nothing else. (Until schema 5,
an index on ``(entity, pos)`` found the rows: every event inserted at a random place of
it, about fifteen times the bytes of the rows themselves were written to the WAL, and an
entity actor over 1,000 keys wrote at a quarter of a singleton's rate.)

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
    "CHAIN_MIGRATION",
    "ENTITY_MIGRATION",
    "ENTITY_SCHEMA",
    "EntitySnapshot",
    "NewEntitySnapshot",
    "entity_checksum",
    "write_entity_snapshots",
]

_SNAPSHOTS_TABLE = """
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

_HEADS_TABLE = """
CREATE TABLE IF NOT EXISTS entity_heads (
    entity TEXT    PRIMARY KEY,
    pos    INTEGER NOT NULL
) WITHOUT ROWID;
"""

#: Part of a new journal's schema (the ``entity`` and ``prev_pos`` columns are in ``events``).
ENTITY_SCHEMA = _SNAPSHOTS_TABLE + _HEADS_TABLE

#: Brings a journal of schema 2 to 3. ``ADD COLUMN`` only rewrites the table's definition,
#: not its rows: old journals open at once, and their events have no entity (NULL).
ENTITY_MIGRATION = (
    "ALTER TABLE events ADD COLUMN entity TEXT;"
    "CREATE INDEX IF NOT EXISTS events_by_entity ON events (entity, pos) "
    "WHERE entity IS NOT NULL;" + _SNAPSHOTS_TABLE
)

#: Brings a journal of schema 4 to 5: each entity row learns its entity's row before it
#: (found by the old index, once), each entity its head, and the index goes. A singleton's
#: journal has no entity row: only the column and the empty table are added.
CHAIN_MIGRATION = (
    "ALTER TABLE events ADD COLUMN prev_pos INTEGER;"
    + _HEADS_TABLE
    + "UPDATE events SET prev_pos = ifnull((SELECT max(e.pos) FROM events AS e "
    "WHERE e.entity = events.entity AND e.pos < events.pos), 0) WHERE entity IS NOT NULL;"
    "INSERT INTO entity_heads (entity, pos) "
    "SELECT entity, max(pos) FROM events WHERE entity IS NOT NULL GROUP BY entity;"
    "DROP INDEX IF EXISTS events_by_entity;"
)


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

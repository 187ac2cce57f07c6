"""The journal's entity part: each entity's chain of rows, and per-entity snapshots.

An entity actor writes the key of each event in the ``entity`` column of ``events`` (NULL
in a singleton actor's journal) and, in ``prev_pos``, the position of the entity's row
before it (0 for its first): an entity's rows form a chain, newest first, whose head is
in ``entity_heads``. Finding an entity's rows after its newest snapshot walks that chain
down by the primary key, so the cost is the entity's rows, not the journal's; and writing
a row moves only its entity's head, one small row per entity per batch. (Until schema 5,
an index on ``(entity, pos)`` found the rows: every event inserted at a random place of
it, about fifteen times the bytes of the rows themselves were written to the WAL, and an
entity actor over 1,000 keys wrote at a quarter of a singleton's rate.)

``entity_snapshots`` holds, per entity, its newest snapshots: the state bytes at a journal
position, with the model version and a checksum that binds them to the entity key, like an
actor's snapshots (:func:`~actorsource._model.snapshots.snapshot_checksum`).

:func:`chain_entities`, :func:`write_heads` and :func:`write_entity_snapshots` run inside a
batch's transaction (the journal's thread);
:class:`~actorsource._journal.entity_reader.EntityReader` reads one entity back.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from .._model.events import JournalEntry
from .._model.snapshots import snapshot_checksum

__all__ = [
    "CHAIN_MIGRATION",
    "ENTITY_MIGRATION",
    "ENTITY_SCHEMA",
    "EntitySnapshot",
    "HeadCache",
    "NewEntitySnapshot",
    "chain_entities",
    "entity_checksum",
    "write_entity_snapshots",
    "write_heads",
]

#: Keys asked for in one ``IN (...)`` (SQLite allows 32,766 parameters; a batch has fewer).
_KEYS_PER_QUERY = 512

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


class HeadCache:
    """The committed heads of the entities written lately, kept by the journal's writer so
    that a batch reads from ``entity_heads`` only the keys it has not written lately.

    Only the journal's own writer moves heads, so a head here is the table's as long as it
    is updated after each commit (:meth:`committed`) and dropped on any failed one
    (:meth:`forget`). Bounded: emptied when it would hold more than ``limit`` keys."""

    __slots__ = ("heads", "limit")

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self.heads: dict[str, int] = {}

    def committed(self, heads: dict[str, int]) -> None:
        """The heads a batch just committed."""
        if len(self.heads) + len(heads) > self.limit:
            self.heads.clear()
        self.heads.update(heads)

    def forget(self) -> None:
        """Drop everything (a batch failed: what it moved is not known to be stored)."""
        self.heads.clear()


def chain_entities(
    conn: sqlite3.Connection,
    entries: Sequence[JournalEntry],
    heads: dict[str, int],
    cache: HeadCache | None = None,
) -> list[int | None]:
    """``prev_pos`` of each of ``entries`` (None for one of no entity), in order: its
    entity's head before it. ``heads`` carries the heads across the chunks of one batch
    (taken from ``cache`` or read from ``entity_heads`` on first need, then moved to each
    entry); write them back with :func:`write_heads` (inside the caller's transaction)."""
    missing = {e.entity for e in entries if e.entity is not None and e.entity not in heads}
    if missing and cache is not None and cache.heads:
        known = cache.heads
        for hit in [k for k in missing if k in known]:
            heads[hit] = known[hit]
            missing.discard(hit)
    if missing:
        keys = list(missing)
        for start in range(0, len(keys), _KEYS_PER_QUERY):
            some = keys[start : start + _KEYS_PER_QUERY]
            marks = ",".join("?" * len(some))
            heads.update(
                conn.execute(
                    f"SELECT entity, pos FROM entity_heads WHERE entity IN ({marks})", some
                ).fetchall()
            )
    prevs: list[int | None] = []
    for e in entries:
        key = e.entity
        if key is None:
            prevs.append(None)
            continue
        prevs.append(heads.get(key, 0))
        heads[key] = e.pos
    return prevs


def write_heads(conn: sqlite3.Connection, heads: dict[str, int]) -> None:
    """Store ``heads`` (entity -> its newest row's position) in ``entity_heads``.

    In multi-row statements of a power of two rows (kept prepared), as the rows themselves
    (:mod:`.event_rows`): ``executemany`` steps once per row and takes the GIL back at each
    step, which a busy event loop makes dear."""
    items = list(heads.items())
    i, n = 0, len(items)
    while i < n:
        size = min(_KEYS_PER_QUERY, 1 << ((n - i).bit_length() - 1))
        params: list[object] = []
        for key, pos in items[i : i + size]:
            params.append(key)
            params.append(pos)
        i += size
        conn.execute(_upsert_heads_sql(size), params)


@functools.lru_cache(maxsize=16)
def _upsert_heads_sql(rows: int) -> str:
    values = ",".join(["(?,?)"] * rows)
    return (
        f"INSERT INTO entity_heads (entity, pos) VALUES {values} "
        "ON CONFLICT (entity) DO UPDATE SET pos = excluded.pos"
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

"""Reading one entity of an entity actor's journal: its snapshots and its rows.

Opened by the runtime once per running entity actor (and by tools), on a read-only
connection of its own used from the calling thread: each query is one short read
transaction that sees committed rows only, and walks the entity's chain of rows down from
its head by the primary key (:mod:`.entity_store`), so it costs that entity's rows, not the
journal's. The head is the one its journal's writer staged (:mod:`.entity_heads`), or else
the one in ``entity_heads``; a reader with no writer beside it finds the staged heads
itself when it opens (one scan of the rows after the heads table's horizon).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .._model.events import JournalEntry
from .entity_heads import StagedHeads, staged_after_horizon
from .entity_store import EntitySnapshot
from .reader import Kind, code_sql
from .schema import ENTRY_COLUMNS, REPLAY_COLUMNS, row_entry, translate
from .storage import ENTITY_CACHE_KIB, set_cache

__all__ = ["EntityReader", "EntityRows"]


_SNAPSHOT_COLUMNS = "entity, pos, version, codec, checksum, data"
_NEWEST_SNAPSHOT = (
    f"SELECT {_SNAPSHOT_COLUMNS} FROM entity_snapshots WHERE entity = ? ORDER BY pos DESC LIMIT 1"
)
_NEWEST_SNAPSHOT_BEFORE = (
    f"SELECT {_SNAPSHOT_COLUMNS} FROM entity_snapshots WHERE entity = ? AND pos < ? "
    "ORDER BY pos DESC LIMIT 1"
)


#: The start of an entity's chain: its head in the table (parameter: the key), or a head
#: already known (parameter: that position).
_HEAD_BY_KEY = "SELECT pos FROM entity_heads WHERE entity = ?"
_HEAD_GIVEN = "SELECT ?"


def _chain_sql(columns: str, head: str) -> str:
    """``columns`` of an entity's rows in ``after < pos <= last``, in order: the rows from
    ``head`` down, by each row's ``prev_pos`` (parameters: what ``head`` needs, ``after``,
    what ``columns`` needs, ``after``, ``last``)."""
    # CROSS JOIN keeps the chain outside: the planner would otherwise read ``events`` by
    # the position range and look each row up in the chain (the whole journal's rows).
    return (
        f"WITH RECURSIVE chain(at) AS ({head} "
        "UNION ALL SELECT prev_pos FROM chain CROSS JOIN events ON events.pos = chain.at "
        "WHERE prev_pos > ?) "
        f"SELECT {columns} FROM chain CROSS JOIN events ON events.pos = chain.at "
        "WHERE chain.at > ? AND chain.at <= ? ORDER BY chain.at"
    )


def _newest_sql(code: str, head: str) -> str:
    """An entity's newest snapshot and its rows after it up to ``last``, in one statement
    (one read transaction, one call into SQLite: most loads need nothing else). Rows of
    ``(0, pos, version, codec, checksum, data)`` for the snapshot if there is one, then
    ``(1, pos, code, payload, NULL, NULL)`` per row in order (parameters: the key, what
    ``head`` needs, what ``code`` needs, ``last``)."""
    after = "(SELECT ifnull(max(pos), 0) FROM snap)"
    return (
        "WITH RECURSIVE snap AS (SELECT pos, version, codec, checksum, data "
        "FROM entity_snapshots WHERE entity = ? ORDER BY pos DESC LIMIT 1), "
        f"chain(at) AS ({head} "
        "UNION ALL SELECT prev_pos FROM chain CROSS JOIN events ON events.pos = chain.at "
        f"WHERE prev_pos > {after}) "
        "SELECT 0, pos, version, codec, checksum, data FROM snap UNION ALL "
        f"SELECT 1, chain.at, {code}, payload, NULL, NULL "
        "FROM chain CROSS JOIN events ON events.pos = chain.at "
        f"WHERE chain.at > {after} AND chain.at <= ? ORDER BY 1, 2"
    )


#: (the SQL from the table's head, the SQL from a given head), per selection of columns.
_ROWS = (_chain_sql(REPLAY_COLUMNS, _HEAD_BY_KEY), _chain_sql(REPLAY_COLUMNS, _HEAD_GIVEN))
_ENTRY_ROWS = (_chain_sql(ENTRY_COLUMNS, _HEAD_BY_KEY), _chain_sql(ENTRY_COLUMNS, _HEAD_GIVEN))


class EntityRows:
    """One entity's rows for replay (see :class:`~.reader.ReplayChunk`): coded rows at the
    positions ``positions``; :meth:`row` and :meth:`entry` read more of them, once."""

    __slots__ = ("_entity", "_entries", "_reader", "_rows", "first", "last", "positions", "rows")

    def __init__(
        self, reader: EntityReader, entity: str, rows: list[tuple[int, int, bytes]]
    ) -> None:
        self._reader = reader
        self._entity = entity
        self.rows = [(code, payload) for _, code, payload in rows]
        self.positions: list[int] | None = [pos for pos, _, _ in rows]
        self.first = rows[0][0] if rows else 0
        self.last = rows[-1][0] if rows else 0
        self._rows: dict[int, tuple[Any, ...]] | None = None
        self._entries: dict[int, JournalEntry] | None = None

    def row(self, pos: int) -> tuple[str, bytes, int | None]:
        """``(type, payload, version as stored)`` of the row at ``pos``."""
        if self._rows is None:
            self._rows = {
                r[0]: r[1:] for r in self._reader.rows(self._entity, self.first - 1, self.last)
            }
        type_name, payload, version = self._rows[pos]
        return type_name, payload, version

    def entry(self, pos: int) -> JournalEntry:
        """The whole entry at ``pos``."""
        if self._entries is None:
            rows = self._reader.entry_rows(self._entity, self.first, self.last)
            self._entries = {r[0]: row_entry(r) for r in rows}
        return self._entries[pos]


class EntityReader:
    """Reads one entity at a time from a journal, through its own read-only connection.

    Each query is one short read transaction of committed rows (a walk of the entity's
    chain: it costs the entity's rows, not the journal's); it runs on the calling thread.
    """

    def __init__(self, path: Path, staged: StagedHeads | None = None) -> None:
        self.path = path
        # SQL (from the table's head, from a given head), its parameters
        self._codes: dict[tuple[Any, ...], tuple[tuple[str, str], list[Any]]] = {}
        try:
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            set_cache(self._db, ENTITY_CACHE_KIB)
            self._staged = staged if staged is not None else staged_after_horizon(self._db)
        except sqlite3.Error as exc:
            raise translate(exc, path, "read") from exc

    def __enter__(self) -> EntityReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._db.close()

    def _chain(self, sql: tuple[str, str], entity: str, params: Sequence[Any]) -> list[Any]:
        """The rows of ``sql`` for ``entity``: walked from its staged head if it has one,
        else from its head in the table (``params``: the rest of the parameters)."""
        head = self._staged.get(entity)
        if head is None:
            return self._all(sql[0], (entity, *params))
        return self._all(sql[1], (head, *params))

    def _all(self, sql: str, params: Sequence[Any]) -> list[Any]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise translate(exc, self.path, "read") from exc

    def snapshots(self, entity: str) -> Iterator[EntitySnapshot]:
        """The entity's snapshots, newest first, read one at a time (most loads need one,
        the newest: one query)."""
        before = None
        while True:
            rows = self._all(
                _NEWEST_SNAPSHOT if before is None else _NEWEST_SNAPSHOT_BEFORE,
                (entity,) if before is None else (entity, before),
            )
            if not rows:
                return
            snapshot = EntitySnapshot(*rows[0])
            before = snapshot.pos
            yield snapshot

    def replay_rows(self, entity: str, after: int, last: int, kinds: list[Kind]) -> EntityRows:
        """The entity's rows in ``after < pos <= last``, in order, coded by ``kinds`` for
        replay (see :meth:`~.reader.JournalReader.replay_chunks`)."""
        key = tuple(kinds)
        coded = self._codes.get(key)
        if coded is None:
            code, params = code_sql(kinds)
            columns = f"pos, {code}, payload"
            sql = (_chain_sql(columns, _HEAD_BY_KEY), _chain_sql(columns, _HEAD_GIVEN))
            coded = self._codes[key] = (sql, params)
        sql, params = coded
        rows = self._chain(sql, entity, (after, *params, after, last))
        return EntityRows(self, entity, rows)

    def newest(
        self, entity: str, last: int, kinds: list[Kind]
    ) -> tuple[EntitySnapshot | None, EntityRows]:
        """The entity's newest snapshot (None if it has none) and its rows after that
        snapshot up to ``last``, coded by ``kinds`` (as :meth:`replay_rows`), in one query.
        If that snapshot cannot be used, ask :meth:`snapshots` and :meth:`replay_rows`."""
        key = ("newest", *kinds)
        coded = self._codes.get(key)
        if coded is None:
            code, params = code_sql(kinds)
            sql = (_newest_sql(code, _HEAD_BY_KEY), _newest_sql(code, _HEAD_GIVEN))
            coded = self._codes[key] = (sql, params)
        (by_key, given), params = coded
        head = self._staged.get(entity)
        found = self._all(
            by_key if head is None else given,
            (entity, entity if head is None else head, *params, last),
        )
        snapshot = None
        if found and found[0][0] == 0:
            snapshot = EntitySnapshot(entity, *found[0][1:])
            found = found[1:]
        return snapshot, EntityRows(self, entity, [r[1:4] for r in found])

    def rows(self, entity: str, after: int, last: int) -> list[tuple[Any, ...]]:
        """The entity's replay rows (pos, type, payload, version) in ``after < pos <= last``,
        in order."""
        return self._chain(_ROWS, entity, (after, after, last))

    def entry_rows(self, entity: str, first: int, last: int) -> list[tuple[Any, ...]]:
        """The entity's whole rows (:data:`ENTRY_COLUMNS`) at positions ``first..last``."""
        return self._chain(_ENTRY_ROWS, entity, (first - 1, first - 1, last))

    def keys(self) -> list[str]:
        """Every entity key in the journal, in order (reads the heads)."""
        stored = {r[0] for r in self._all("SELECT entity FROM entity_heads", ())}
        return sorted(stored.union(self._staged.heads))

"""Reading one entity of an entity actor's journal: its snapshots and its rows.

Opened by the runtime once per running entity actor (and by tools), on a read-only
connection of its own used from the calling thread: each query is one short read
transaction that sees committed rows only, and the partial index ``events_by_entity``
makes it cost that entity's rows, not the journal's.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .entity_store import EntitySnapshot
from .schema import ENTRY_COLUMNS, REPLAY_COLUMNS, translate

__all__ = ["EntityReader"]


class EntityReader:
    """Reads one entity at a time from a journal, through its own read-only connection.

    Each query is one short read transaction of committed rows (the index makes it cost the
    entity's rows, not the journal's); it runs on the calling thread.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise translate(exc, path, "read") from exc

    def __enter__(self) -> EntityReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._db.close()

    def _all(self, sql: str, params: Sequence[Any]) -> list[Any]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise translate(exc, self.path, "read") from exc

    def snapshots(self, entity: str) -> Iterator[EntitySnapshot]:
        """The entity's snapshots, newest first (read one at a time: most loads need one)."""
        positions = self._all(
            "SELECT pos FROM entity_snapshots WHERE entity = ? ORDER BY pos DESC", (entity,)
        )
        for (pos,) in positions:
            rows = self._all(
                "SELECT entity, pos, version, codec, checksum, data FROM entity_snapshots "
                "WHERE entity = ? AND pos = ?",
                (entity, pos),
            )
            if rows:
                yield EntitySnapshot(*rows[0])

    def rows(self, entity: str, after: int) -> list[tuple[Any, ...]]:
        """The entity's replay rows (pos, type, payload, version) after ``after``, in order."""
        return self._all(
            f"SELECT {REPLAY_COLUMNS} FROM events WHERE entity = ? AND pos > ? ORDER BY pos",
            (entity, after),
        )

    def entry_rows(self, entity: str, first: int, last: int) -> list[tuple[Any, ...]]:
        """The entity's whole rows (:data:`ENTRY_COLUMNS`) at positions ``first..last``."""
        return self._all(
            f"SELECT {ENTRY_COLUMNS} FROM events WHERE entity = ? AND pos BETWEEN ? AND ? "
            "ORDER BY pos",
            (entity, first, last),
        )

    def keys(self) -> list[str]:
        """Every entity key in the journal (reads the index)."""
        return [
            r[0]
            for r in self._all(
                "SELECT DISTINCT entity FROM events WHERE entity IS NOT NULL ORDER BY entity", ()
            )
        ]

"""Reading a journal for replay: narrow rows in chunks, whole entries only when asked.

Opened by :meth:`SQLiteJournal._reader <actorsource._journal.journal.SQLiteJournal._reader>` on
a read-only connection of its own, used by recovery on the calling thread.

Replay reads two columns a row: a small integer *code* that SQLite computes from the type and
version (which handler applies the row as it is, or -1 when it needs the full path: an older
version to upcast, an ``async`` handler, an unknown type) and the payload. Positions are not
read: a journal's positions are contiguous (every batch must continue the journal), which each
chunk proves by its row count; a chunk that does not is read with its positions.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .._model.events import JournalEntry
from .schema import ENTRY_COLUMNS, REPLAY_COLUMNS, row_entry, translate

__all__ = ["JournalReader", "Kind", "ReplayChunk", "code_sql"]

#: What a replay code stands for: (type name, version as stored: None for version 1).
Kind = tuple[str, int | None]


def code_sql(kinds: list[Kind]) -> tuple[str, list[Any]]:
    """``CASE`` SQL (and its parameters) giving each row its index in ``kinds``, else -1."""
    by_version: dict[int | None, list[tuple[int, str]]] = {}
    for code, (name, stored) in enumerate(kinds):
        by_version.setdefault(stored, []).append((code, name))
    if not by_version:
        return "-1", []
    sql: list[str] = ["CASE"]
    params: list[Any] = []
    for stored, names in by_version.items():
        sql.append(
            "WHEN version IS NULL THEN CASE type"
            if stored is None
            else "WHEN version = ? THEN CASE type"
        )
        if stored is not None:
            params.append(stored)
        for code, name in names:
            sql.append(f"WHEN ? THEN {code}")
            params.append(name)
        sql.append("ELSE -1 END")
    sql.append("ELSE -1 END")
    return " ".join(sql), params


class ReplayChunk:
    """Consecutive journal rows for replay: ``rows`` of ``(code, payload)``, the first at
    position ``first`` and each next one at the next position (or at ``positions[i]`` when
    that is not None). :meth:`row` and :meth:`entry` read more of a row, once per chunk."""

    __slots__ = ("_entries", "_reader", "_rows", "first", "last", "positions", "rows")

    def __init__(
        self,
        reader: JournalReader,
        rows: list[tuple[int, bytes]],
        first: int,
        last: int,
        positions: list[int] | None = None,
    ) -> None:
        self._reader = reader
        self.rows = rows
        self.first = first
        self.last = last
        self.positions = positions
        self._rows: dict[int, tuple[Any, ...]] | None = None
        self._entries: dict[int, JournalEntry] | None = None

    def row(self, pos: int) -> tuple[str, bytes, int | None]:
        """The row at ``pos`` as :data:`REPLAY_COLUMNS` without its position:
        ``(type, payload, version)``."""
        if self._rows is None:
            self._rows = self._reader.rows(self.first, self.last)
        type_name, payload, version = self._rows[pos]
        return type_name, payload, version

    def entry(self, pos: int) -> JournalEntry:
        """The whole entry at ``pos`` (read with the rest of the chunk's, at the first ask)."""
        if self._entries is None or pos not in self._entries:
            if self.first <= pos <= self.last:
                self._entries = self._reader.entries(self.first, self.last)
            else:  # a Context kept past its chunk
                return self._reader.entries(pos, pos)[pos]
        return self._entries[pos]


class JournalReader:
    """Reads a journal for replay on the calling thread, through its own read-only connection.

    No thread hop and no objects beyond what replay uses: :meth:`replay_chunks` yields
    :class:`ReplayChunk` s of coded rows; :meth:`rows` and :meth:`entries` read more of a
    position range, for the rows that need the long way and the handlers that ask their
    Context for the whole entry.
    Each chunk blocks the event loop for a few milliseconds; the caller gives the loop a
    turn between chunks.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise translate(exc, path, "read") from exc

    def __enter__(self) -> JournalReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._db.close()

    def replay_chunks(
        self, after: int, kinds: list[Kind], *, chunk: int = 5_000
    ) -> Iterator[ReplayChunk]:
        """The rows with ``pos > after`` in order, ``chunk`` at a time, coded by ``kinds``."""
        code, params = code_sql(kinds)
        dense = f"SELECT {code}, payload FROM events WHERE pos BETWEEN ? AND ? ORDER BY pos"
        sparse = f"SELECT pos, {code}, payload FROM events WHERE pos BETWEEN ? AND ? ORDER BY pos"
        try:
            (end,) = self._db.execute("SELECT ifnull(max(pos), 0) FROM events").fetchone()
            first = after + 1
            while first <= end:
                last = min(first + chunk - 1, end)
                rows = self._db.execute(dense, (*params, first, last)).fetchall()
                if len(rows) == last - first + 1:
                    yield ReplayChunk(self, rows, first, last)
                elif rows:
                    full = self._db.execute(sparse, (*params, first, last)).fetchall()
                    positions = [r[0] for r in full]
                    yield ReplayChunk(self, [(r[1], r[2]) for r in full], first, last, positions)
                first = last + 1
        except sqlite3.Error as exc:
            raise translate(exc, self.path, "read") from exc

    def rows(self, first: int, last: int) -> dict[int, tuple[Any, ...]]:
        """``(type, payload, version)`` of the positions ``first..last``, by position."""
        try:
            rows = self._db.execute(
                f"SELECT {REPLAY_COLUMNS} FROM events WHERE pos BETWEEN ? AND ?", (first, last)
            ).fetchall()
        except sqlite3.Error as exc:
            raise translate(exc, self.path, "read") from exc
        return {row[0]: row[1:] for row in rows}

    def entries(self, first: int, last: int) -> dict[int, JournalEntry]:
        """The whole entries at positions ``first..last``, by position."""
        try:
            rows = self._db.execute(
                f"SELECT {ENTRY_COLUMNS} FROM events WHERE pos BETWEEN ? AND ?", (first, last)
            ).fetchall()
        except sqlite3.Error as exc:
            raise translate(exc, self.path, "read") from exc
        return {row[0]: row_entry(row) for row in rows}

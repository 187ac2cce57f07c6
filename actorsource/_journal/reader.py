"""Reading a journal for replay: narrow rows in chunks, whole entries only when asked.

Opened by :meth:`SQLiteJournal.reader <actorsource._journal.journal.SQLiteJournal.reader>` on a
read-only connection of its own, used by recovery on the calling thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .._model.events import JournalEntry
from .schema import ENTRY_COLUMNS, REPLAY_COLUMNS, row_entry, translate

__all__ = ["JournalReader"]


class JournalReader:
    """Reads a journal for replay on the calling thread, through its own read-only connection.

    No thread hop and no objects beyond what replay uses: :meth:`chunks` yields rows of
    :data:`REPLAY_COLUMNS` (position, type, payload, version), and :meth:`entries` reads
    whole entries of a position range for the handlers that ask their Context for them.
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

    def chunks(self, after: int = 0, *, chunk: int = 5_000) -> Iterator[list[tuple[Any, ...]]]:
        """Rows of :data:`REPLAY_COLUMNS` with ``pos > after``, in order, ``chunk`` at a time."""
        try:
            cursor = self._db.execute(
                f"SELECT {REPLAY_COLUMNS} FROM events WHERE pos > ? ORDER BY pos", (after,)
            )
            while rows := cursor.fetchmany(chunk):
                yield rows
        except sqlite3.Error as exc:
            raise translate(exc, self.path, "read") from exc

    def entries(self, first: int, last: int) -> dict[int, JournalEntry]:
        """The whole entries at positions ``first..last``, by position."""
        try:
            rows = self._db.execute(
                f"SELECT {ENTRY_COLUMNS} FROM events WHERE pos BETWEEN ? AND ?", (first, last)
            ).fetchall()
        except sqlite3.Error as exc:
            raise translate(exc, self.path, "read") from exc
        return {row[0]: row_entry(row) for row in rows}

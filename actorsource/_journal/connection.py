"""The journal's SQLite connection, used from worker threads one call at a time.

sqlite3 blocks, the event loop must not: every use of the connection is one plain function
run on a worker thread by :meth:`ThreadedConnection.run`. A whole transaction is one such
function, so it costs one thread hop however many statements it holds (awaiting each
statement separately costs an event-loop turn apiece, which under load made the commit three
times slower than SQLite itself). Calls run one at a time, in the order they were made.

A call is not abandoned when its caller is cancelled: it runs to its end on its thread (a
transaction that fails rolls back there) and the cancellation is delivered when it returns.
So the connection is never left inside a transaction, and what the caller learns of a
commit is what the file holds. A call may wait for the event loop (a fenced owner's commit
awaits its append inside the transaction), so the loop waits for a call only by awaiting it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar, TypeVarTuple, Unpack

import anyio
import anyio.to_thread

__all__ = ["ThreadedConnection"]

T = TypeVar("T")
Args = TypeVarTuple("Args")


class ThreadedConnection:
    """One ``sqlite3.Connection`` (autocommit: transactions are explicit), on worker threads."""

    def __init__(self) -> None:
        self._conn: sqlite3.Connection | None = None
        self._limiter: anyio.CapacityLimiter | None = None

    @property
    def is_open(self) -> bool:
        """True between a successful :meth:`open` and :meth:`close`."""
        return self._conn is not None

    async def open(self, path: Path) -> None:
        """Open (or create) the database file at ``path``."""
        self._limiter = anyio.CapacityLimiter(1)
        self._conn = await anyio.to_thread.run_sync(_connect, path, limiter=self._limiter)

    async def run(self, fn: Callable[[sqlite3.Connection, Unpack[Args]], T], *args: *Args) -> T:
        """``fn(connection, *args)`` on a worker thread, after every call made before it."""
        conn, limiter = self._conn, self._limiter
        if conn is None or limiter is None:
            raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
        return await anyio.to_thread.run_sync(fn, conn, *args, limiter=limiter)

    async def close(self) -> None:
        """Close the connection once the calls in flight are done (idempotent, shielded)."""
        conn, self._conn = self._conn, None
        if conn is None or self._limiter is None:
            return
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(conn.close, limiter=self._limiter)


def _connect(path: Path) -> sqlite3.Connection:
    # Used from whichever worker thread runs a call, never from two at once (the limiter).
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False)

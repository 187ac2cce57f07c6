"""The SQLite journal: one database file per actor, the actor's source of truth.

It holds every accepted event in application order (``pos`` 1, 2, 3 ...), the JetStream
position that was consumed up to, snapshots and dead letters. A batch of events, its stream
position, its dead letters and an optional snapshot are written in ONE transaction
(``BEGIN IMMEDIATE`` ... ``COMMIT``): either all of it is durable or none of it is, and the
mailbox acknowledges only after the commit returns.

One writer per journal: opening takes an exclusive ``flock`` on a sidecar ``.lock`` file, held
until :meth:`SQLiteJournal.aclose` (:mod:`~actorsource._journal.lock`), so a second process fails
fast with :class:`JournalLockedError` instead of interleaving writes. The journal's one
connection is used from worker threads, one call at a time
(:mod:`~actorsource._journal.connection`); its queries are in :mod:`~actorsource._journal.tables`.

Durability: WAL with ``synchronous=NORMAL`` survives a process crash at any instant (a power
loss may drop the last commits); pass ``synchronous="FULL"`` to survive power loss too.
"""

from __future__ import annotations

import functools
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, TypeVarTuple, Unpack

import anyio
import anyio.from_thread
import anyio.to_thread

from .._errors import JournalClosedError, JournalError
from .._model.events import JournalEntry
from .._model.snapshots import Snapshot, SnapshotInfo
from . import snapshot_parts, tables
from .connection import ThreadedConnection
from .entity_heads import StagedHeads, flush_staged, staged_after_horizon
from .entity_reader import EntityReader
from .lock import take_lock
from .opening import prepare
from .reader import JournalReader
from .schema import (
    SCHEMA_VERSION,
    DeadLetter,
    DuplicateMessageIdError,
    JournalBatch,
    NewSnapshot,
    OutboxMessage,
    check_continues,
    corrupt,
    open_failure,
    translate,
    write_batch,
)
from .snapshot_parts import PART_BYTES, PartedSnapshot
from .storage import quick_check, set_cache

T = TypeVar("T")
Args = TypeVarTuple("Args")

__all__ = [
    "SCHEMA_VERSION",
    "DeadLetter",
    "DuplicateMessageIdError",
    "JournalBatch",
    "NewSnapshot",
    "OutboxMessage",
    "PartedSnapshot",
    "SQLiteJournal",
]


class SQLiteJournal:
    """An actor's journal file, opened for writing by exactly one owner.

    Use as ``async with SQLiteJournal(path, actor="accounts") as journal: ...``. The object is
    single-use: once closed, every call raises :class:`JournalClosedError`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        actor: str,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        integrity_check: bool = False,
        snapshot_part_bytes: int = PART_BYTES,
        cache_kib: int | None = None,
        entities: bool = False,
    ) -> None:
        self.path = Path(path)
        #: SQLite's page cache of the connection, in KiB (None: SQLite's default, 2 MiB).
        self.cache_kib = cache_kib
        #: A snapshot of at least twice this many bytes can be written in parts of this size.
        self.snapshot_part_bytes = snapshot_part_bytes
        self._integrity_check = integrity_check
        #: An entity actor's journal: its staged heads are read when it opens (others read
        #: them at their first entity row, if one ever comes: entity_heads.py).
        self.entities = entities
        self.actor = actor
        self._synchronous = synchronous
        self._db = ThreadedConnection()
        #: The entity heads moved after the heads table's horizon (entity_heads.py).
        self.staged_heads = StagedHeads()
        self._lock_fd: int | None = None
        self._closed = False
        self.last_pos = 0
        self.stream_positions: dict[str, int] = {}
        self.unsent = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> SQLiteJournal:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Take the single-writer lock, open (or create) the file and check its schema."""
        if self._closed or self._db.is_open:
            raise JournalClosedError(f"journal {self.path} is single-use", path=self.path)
        self._lock_fd = take_lock(self.path)
        try:
            # Owner-only (SQLite gives -wal/-shm the same mode), and opened for writing: SQLite
            # would open a file it cannot write read-only, and fail every commit later.
            os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
            await self._db.open(self.path)
            opened = await self._db.run(prepare, self.path, self.actor, self._synchronous)
            if self.cache_kib is not None:
                await self._db.run(set_cache, self.cache_kib)
            if self.entities:
                self.staged_heads = await self._db.run(staged_after_horizon)
            if self._integrity_check and opened.version != 0:
                await self.check_integrity()
        except BaseException as exc:
            await self._release()
            if isinstance(exc, OSError | sqlite3.Error):
                raise open_failure(exc, self.path) from exc
            raise
        self.last_pos = opened.last_pos
        self.unsent = opened.unsent
        self.stream_positions = opened.positions

    async def aclose(self) -> None:
        """Close the database and release the lock. Idempotent and safe under cancellation.

        Staged entity heads are stored first, so that the next open scans nothing (on any
        error they are left to that scan)."""
        staged = self.staged_heads
        if self._db.is_open and staged.loaded and staged.heads and not self._closed:
            with anyio.CancelScope(shield=True):
                try:
                    await self._db.run(flush_staged, self.staged_heads)
                except (sqlite3.Error, OSError):
                    pass
        self._closed = True
        await self._release()

    async def _release(self) -> None:
        with anyio.CancelScope(shield=True):
            try:
                await self._db.close()
            except sqlite3.Error:
                pass
            fd, self._lock_fd = self._lock_fd, None
            if fd is not None:
                os.close(fd)

    def _check_open(self) -> None:
        if not self._db.is_open:
            raise JournalClosedError(f"journal {self.path} is closed", path=self.path)

    async def _run(
        self, doing: str, fn: Callable[[sqlite3.Connection, Unpack[Args]], T], *args: *Args
    ) -> T:
        """``fn(connection, *args)`` on the journal's thread; errors as journal errors."""
        self._check_open()
        try:
            return await self._db.run(fn, *args)
        except sqlite3.Error as exc:
            raise translate(exc, self.path, doing) from exc

    # -- writing -----------------------------------------------------------------------------

    async def append(
        self, batch: JournalBatch, *, admit: Callable[[], Coroutine[Any, Any, None]] | None = None
    ) -> None:
        """Write a batch in one transaction; on any error nothing of it is stored.

        Entries must continue the journal: their ``pos`` run from ``last_pos + 1`` upwards,
        and their stream messages come after the stream positions already recorded
        (:class:`JournalOrderError` otherwise). A message id the journal already holds
        raises :class:`DuplicateMessageIdError`.

        ``admit`` is awaited (on the event loop) inside the transaction, once the entries
        are written and before the ``COMMIT``: a message id the journal holds is refused
        before it is called, whatever it raises rolls the batch back, and it may add to
        ``batch.positions``. The journal's thread waits for it, so nothing else reaches the
        file meanwhile. A fenced owner appends the batch to its journal subject there.
        """
        self._check_open()
        check_continues(batch, self.last_pos, self.stream_positions, self.path)
        # The journal's thread runs the hook on the event loop and waits for it.
        admit_here = None if admit is None else functools.partial(anyio.from_thread.run, admit)
        try:
            await self._db.run(write_batch, batch, self.staged_heads, admit_here)
        except sqlite3.IntegrityError as exc:
            if "events.msg_id" in str(exc):
                raise DuplicateMessageIdError(
                    f"a message id in the batch is already journaled in {self.path}",
                    path=self.path,
                ) from exc
            raise JournalError(
                f"cannot commit a batch to {self.path}: {exc}", path=self.path
            ) from exc
        except sqlite3.Error as exc:
            raise translate(exc, self.path, "commit a batch to") from exc
        if batch.entries:
            self.last_pos = batch.entries[-1].pos
        self.unsent += len(batch.outbox)
        for stream, seq in batch.positions.items():
            self.stream_positions[stream] = max(seq, self.stream_positions.get(stream, 0))

    async def save_snapshot(
        self, *, pos: int, model_version: int, codec: str, state: bytes, keep: int
    ) -> None:
        """Store a snapshot on its own (no events) and prune to the newest ``keep``; a large
        one in parts (:meth:`in_parts`), each in a transaction of its own."""
        snapshot = NewSnapshot(state, pos, model_version, codec, keep)
        if not self.in_parts(snapshot):
            await self.append(
                JournalBatch(entries=[], positions={}, dead_letters=[], snapshot=snapshot)
            )
            return
        write = self.parted(snapshot)
        while not await self.snapshot_step(write):
            pass
        while await self.prune_step(keep):
            pass

    # -- large snapshots, in parts (snapshot_parts.py) ----------------------------------------

    def in_parts(self, snapshot: NewSnapshot) -> bool:
        """Tell whether ``snapshot`` is large enough to be written in parts."""
        return len(snapshot.state) >= 2 * self.snapshot_part_bytes

    def parted(self, snapshot: NewSnapshot) -> PartedSnapshot:
        """A write of ``snapshot`` in parts: call :meth:`snapshot_step` until it returns True.
        Its position must be committed before the last step writes the header."""
        return PartedSnapshot(snapshot, self.snapshot_part_bytes)

    async def snapshot_step(self, write: PartedSnapshot) -> bool:
        """One transaction of ``write``: a part, or at last its header; True once written."""
        return await self._run("write a snapshot to", write.step)

    async def prune_step(self, keep: int, writing: PartedSnapshot | None = None) -> bool:
        """Delete one snapshot beyond the newest ``keep``, or else one part of no snapshot
        (the parts of ``writing`` are spared), in one transaction; True while more may follow."""
        busy = writing.id if writing is not None else None
        return await self._run("prune snapshots in", snapshot_parts.prune_step, keep, busy)

    async def mark_sent(self, ids: Sequence[int]) -> None:
        """Record that these outbox messages were acknowledged by JetStream."""
        if not ids:
            return
        await self._run("update the outbox of", tables.mark_sent, list(ids))
        self.unsent = max(0, self.unsent - len(ids))

    async def bind_stream(self, stream: str, created: str) -> str | None:
        """Remember which incarnation of ``stream`` the journal consumes (its creation time).

        Returns the creation time recorded before, if any; the caller compares the two to
        tell a re-created stream (whose sequences start again at 1) from the one it knew.
        """
        known = await self._run("write to", tables.bind_stream, stream, created)
        if known is None:
            self.stream_positions.setdefault(stream, 0)
        return known

    async def delete_snapshots(self) -> int:
        """Delete every snapshot; returns how many there were. The state is unaffected."""
        return await self._run("delete snapshots in", tables.delete_snapshots)

    async def delete_entity_snapshots(self) -> int:
        """Delete every entity snapshot (an entity actor's); how many there were."""
        return await self._run("delete entity snapshots in", tables.delete_entity_snapshots)

    # -- reading -----------------------------------------------------------------------------

    async def known(
        self, stream: str, seqs: Iterable[int], msg_ids: Iterable[str]
    ) -> tuple[set[int], set[str]]:
        """Which of these stream sequences and message ids the journal already holds.

        A sequence counts when it was journaled or dead-lettered; a message id when it was
        journaled (ids are kept for good, so a duplicate is caught even outside JetStream's
        own deduplication window).
        """
        return await self._run("read", tables.known, stream, list(seqs), list(msg_ids))

    async def entries(
        self, after: int = 0, *, chunk: int = 2_000
    ) -> AsyncIterator[list[JournalEntry]]:
        """Yield the entries with ``pos > after`` in order, ``chunk`` at a time (constant memory)."""
        pos = after
        while batch := await self._run("read", tables.entries_after, pos, chunk):
            pos = batch[-1].pos
            yield batch

    def _entity_reader(self) -> EntityReader:
        """A read-only connection that reads one entity at a time (close it, or use it as a
        context manager); it finds the heads this journal stages."""
        self._check_open()
        staged = self.staged_heads
        return EntityReader(self.path, staged if staged.loaded else None)

    def _reader(self) -> JournalReader:
        """A read-only connection for replay (close it, or use it as a context manager)."""
        self._check_open()
        return JournalReader(self.path)

    async def check_integrity(self) -> None:
        """Run SQLite's ``quick_check`` on a separate read-only connection.

        It reads the whole file (about 0.3 s per million events here), so the runtime runs
        it beside the actor rather than before it; commits are not blocked meanwhile.
        """
        self._check_open()
        problems = await anyio.to_thread.run_sync(quick_check, self.path, abandon_on_cancel=True)
        if problems != ["ok"]:
            raise corrupt(self.path, f"fails SQLite's integrity check: {'; '.join(problems)}")

    async def count(self) -> int:
        """How many events the journal holds."""
        [(n,)] = await self._run("read", tables.fetchall, "SELECT count(*) FROM events")
        return int(n)

    async def snapshots(self) -> list[SnapshotInfo]:
        """Every stored snapshot's metadata (not its state), newest first (position, then id)."""
        return await self._run("read", tables.snapshots)

    async def read_snapshot(self, snapshot_id: int) -> Snapshot | None:
        """One snapshot with its state bytes, or None if it was pruned meanwhile."""
        return await self._run("read", snapshot_parts.read_snapshot, snapshot_id)

    async def dead_letter_count(self) -> int:
        """How many dead letters the journal holds."""
        [(n,)] = await self._run("read", tables.fetchall, "SELECT count(*) FROM dead_letters")
        return int(n)

    async def dead_letters(self) -> list[DeadLetter]:
        """Every dead letter, oldest first."""
        return await self._run("read", tables.dead_letters)

    async def unsent_outbox(self, limit: int = 1_000) -> list[OutboxMessage]:
        """Outbox messages not yet confirmed as published, oldest first."""
        return await self._run("read", tables.unsent_outbox, limit)

    async def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one SQL statement on the journal's own connection; returns every row.

        Not part of the API: for tests that must reach below it (a full disk is simulated
        with ``PRAGMA max_page_count``, which holds per connection)."""
        return await self._run("query", tables.fetchall, sql, params)

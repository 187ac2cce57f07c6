"""The SQLite journal: one database file per actor, the actor's source of truth.

It holds every accepted event in application order (``pos`` 1, 2, 3 ...), the JetStream
position that was consumed up to, snapshots and dead letters. A batch of events, its stream
position, its dead letters and an optional snapshot are written in ONE transaction
(``BEGIN IMMEDIATE`` ... ``COMMIT``): either all of it is durable or none of it is, and the
mailbox acknowledges only after the commit returns.

One writer per journal: opening takes an exclusive ``flock`` on a sidecar ``.lock`` file, held
until :meth:`SQLiteJournal.aclose` (or process death, when the kernel drops it), so a second
process fails fast with :class:`JournalLockedError` instead of interleaving writes.

Durability: WAL with ``synchronous=NORMAL`` survives a process crash at any instant (a power
loss may drop the last commits); pass ``synchronous="FULL"`` to survive power loss too.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import aiosqlite
import anyio
import anyio.lowlevel

from .._errors import (
    JournalClosedError,
    JournalCorruptError,
    JournalError,
    JournalLockedError,
)
from .._log import get_logger
from .._model.events import JournalEntry
from .._model.snapshots import Snapshot, SnapshotInfo
from .reader import JournalReader
from .schema import (
    DEAD_LETTER_COLUMNS,
    ENTRY_COLUMNS,
    MIGRATIONS,
    SCHEMA,
    SCHEMA_VERSION,
    DeadLetter,
    DuplicateMessageIdError,
    JournalBatch,
    NewSnapshot,
    OutboxMessage,
    check_continues,
    headers_decoder,
    open_failure,
    row_dead_letter,
    row_entry,
    take_lock,
    translate,
    write_batch,
)
from .storage import is_access_error

__all__ = [
    "SCHEMA_VERSION",
    "DeadLetter",
    "DuplicateMessageIdError",
    "JournalBatch",
    "NewSnapshot",
    "OutboxMessage",
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
    ) -> None:
        self.path = Path(path)
        self._integrity_check = integrity_check
        self.actor = actor
        self._synchronous = synchronous
        self._db: aiosqlite.Connection | None = None
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
        if self._closed or self._db is not None:
            raise JournalClosedError(f"journal {self.path} is single-use", path=self.path)
        self._lock_fd = take_lock(self.path)
        try:
            # Owner-only (SQLite gives -wal/-shm the same mode), and opened for writing: SQLite
            # would open a file it cannot write read-only, and fail every commit later.
            os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
            self._db = await aiosqlite.connect(self.path, isolation_level=None)
            await self._prepare()
        except BaseException as exc:
            await self._release()
            if isinstance(exc, OSError | sqlite3.Error):
                raise open_failure(exc, self.path) from exc
            raise

    async def aclose(self) -> None:
        """Close the database and release the lock. Idempotent and safe under cancellation."""
        self._closed = True
        await self._release()

    async def _release(self) -> None:
        import anyio

        with anyio.CancelScope(shield=True):
            db, self._db = self._db, None
            if db is not None:
                try:
                    await db.close()
                except (sqlite3.Error, ValueError):
                    pass
            fd, self._lock_fd = self._lock_fd, None
            if fd is not None:
                os.close(fd)

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` was called."""
        return self._closed

    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise JournalClosedError(f"journal {self.path} is closed", path=self.path)
        return self._db

    async def _prepare(self) -> None:
        db = self._conn()
        try:
            version = await self._scalar("PRAGMA user_version")
            mode = await self._scalar("PRAGMA journal_mode=WAL")
            if str(mode).lower() != "wal":
                raise JournalError(
                    f"cannot put {self.path} in WAL mode (got {mode})", path=self.path
                )
            await db.execute(f"PRAGMA synchronous={self._synchronous}")
            if version == 0:
                # One transaction for the schema, the owner and the version stamp: a process
                # killed half-way leaves either an empty file or a complete journal.
                owner_sql = self.actor.replace("'", "''")
                await db.executescript(
                    "BEGIN IMMEDIATE;"
                    + SCHEMA
                    + "INSERT OR IGNORE INTO meta (key, value) VALUES "
                    + f"('actor', '{owner_sql}'), ('created_at', '{time.time()!r}');"
                    + f"PRAGMA user_version={SCHEMA_VERSION}; COMMIT;"
                )
            elif version < SCHEMA_VERSION:
                await self._migrate(version)
            elif version > SCHEMA_VERSION:
                raise JournalError(
                    f"{self.path} has journal schema {version}, newer than this actorsource "
                    f"({SCHEMA_VERSION}): upgrade actorsource",
                    path=self.path,
                )
            owner = await self._scalar("SELECT value FROM meta WHERE key = 'actor'")
            if owner is None and not await self._scalar("SELECT count(*) FROM events"):
                # Created by an older version that stamped the owner in a second step, and
                # killed in between: nothing was ever journaled, so finish the stamp.
                await db.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('actor', ?), ('created_at', ?)",
                    (self.actor, repr(time.time())),
                )
                owner = self.actor
            if owner != self.actor:
                raise JournalError(
                    f"{self.path} is the journal of actor {owner!r}, not {self.actor!r}",
                    path=self.path,
                )
            if self._integrity_check and version != 0:
                await self._check_integrity()
            self.last_pos = int(await self._scalar("SELECT coalesce(max(pos), 0) FROM events"))
            self.unsent = int(
                await self._scalar("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
            )
            async with db.execute("SELECT stream, last_seq FROM positions") as cur:
                self.stream_positions = {row[0]: row[1] for row in await cur.fetchall()}
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise JournalLockedError(f"{self.path} is locked: {exc}", path=self.path) from exc
            if is_access_error(exc):
                raise open_failure(exc, self.path) from exc
            raise JournalCorruptError(
                f"{self.path} is not a usable actorsource journal: {exc}; nothing was "
                "acknowledged from it. Restore the file from a backup, or move it away and "
                "let the actor rebuild its journal from the stream",
                path=self.path,
            ) from exc

    async def _migrate(self, version: int) -> None:
        """Bring a journal written by an older actorsource to the current schema, one step
        per transaction (each step also stamps its version, so a kill in between is safe)."""
        db = self._conn()
        for step in range(version, SCHEMA_VERSION):
            await db.executescript(
                "BEGIN IMMEDIATE;" + MIGRATIONS[step] + f"PRAGMA user_version={step + 1}; COMMIT;"
            )
            get_logger(actor=self.actor).info(
                "journal schema upgraded", path=str(self.path), schema=step + 1
            )

    async def _check_integrity(self) -> None:
        async with self._conn().execute("PRAGMA quick_check(5)") as cur:
            problems = [str(r[0]) for r in await cur.fetchall()]
        if problems != ["ok"]:
            raise JournalCorruptError(
                f"{self.path} fails SQLite's integrity check: {'; '.join(problems)}; nothing "
                "was acknowledged from it. Restore the file from a backup, or move it away "
                "and let the actor rebuild its journal from the stream",
                path=self.path,
            )

    async def _scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = await self._fetchall(sql, params)
        return rows[0][0] if rows else None

    async def _fetchall(
        self, sql: str, params: Sequence[Any] = (), doing: str = "read"
    ) -> list[tuple[Any, ...]]:
        try:
            async with self._conn().execute(sql, params) as cur:
                return [tuple(r) for r in await cur.fetchall()]
        except sqlite3.Error as exc:
            raise translate(exc, self.path, doing) from exc

    # -- writing -----------------------------------------------------------------------------

    async def append(self, batch: JournalBatch) -> None:
        """Write a batch in one transaction; on any error nothing of it is stored.

        Entries must continue the journal: their ``pos`` run from ``last_pos + 1`` upwards,
        and their stream messages come after the stream positions already recorded
        (:class:`JournalOrderError` otherwise). A message id the journal already holds
        raises :class:`DuplicateMessageIdError`.
        """
        db = self._conn()
        check_continues(batch, self.last_pos, self.stream_positions, self.path)
        try:
            # The whole transaction is one call on aiosqlite's thread: awaiting each
            # statement separately costs a full event-loop turn apiece, which under load
            # made the commit three times slower than SQLite itself.
            await db._execute(write_batch, db._conn, batch)  # type: ignore[no-untyped-call]
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

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; on any error (or cancellation) a shielded
        ``ROLLBACK``, so the shared connection is never left inside a transaction."""
        db = self._conn()
        await db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            await db.execute("COMMIT")
        except BaseException:
            with anyio.CancelScope(shield=True):
                try:
                    await db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            raise

    async def save_snapshot(
        self, *, pos: int, model_version: int, codec: str, state: bytes, keep: int
    ) -> None:
        """Store a snapshot on its own (no events) and prune to the newest ``keep``."""
        snapshot = NewSnapshot(state, pos, model_version, codec, keep)
        await self.append(
            JournalBatch(entries=[], positions={}, dead_letters=[], snapshot=snapshot)
        )

    # -- reading -----------------------------------------------------------------------------

    async def known(
        self, stream: str, seqs: Iterable[int], msg_ids: Iterable[str]
    ) -> tuple[set[int], set[str]]:
        """Which of these stream sequences and message ids the journal already holds.

        A sequence counts when it was journaled or dead-lettered; a message id when it was
        journaled (ids are kept for good, so a duplicate is caught even outside JetStream's
        own deduplication window).
        """
        seq_list = list(seqs)
        id_list = list(msg_ids)
        found_seqs: set[int] = set()
        found_ids: set[str] = set()
        db = self._conn()
        try:
            for i in range(0, len(seq_list), 500):
                part = seq_list[i : i + 500]
                marks = ",".join("?" * len(part))
                async with db.execute(
                    f"SELECT stream_seq FROM events WHERE stream = ? AND stream_seq IN ({marks}) "
                    f"UNION SELECT stream_seq FROM dead_letters "
                    f"WHERE stream = ? AND stream_seq IN ({marks})",
                    (stream, *part, stream, *part),
                ) as cur:
                    found_seqs.update(r[0] for r in await cur.fetchall())
            for i in range(0, len(id_list), 500):
                part_ids = id_list[i : i + 500]
                marks = ",".join("?" * len(part_ids))
                async with db.execute(
                    f"SELECT msg_id FROM events WHERE msg_id IN ({marks})", part_ids
                ) as cur:
                    found_ids.update(r[0] for r in await cur.fetchall())
        except sqlite3.Error as exc:
            raise translate(exc, self.path, "read") from exc
        return found_seqs, found_ids

    async def entries(
        self, after: int = 0, *, chunk: int = 2_000
    ) -> AsyncIterator[list[JournalEntry]]:
        """Yield the entries with ``pos > after`` in order, ``chunk`` at a time (constant memory)."""
        db = self._conn()
        pos = after
        try:
            while True:
                async with db.execute(
                    f"SELECT {ENTRY_COLUMNS} FROM events WHERE pos > ? ORDER BY pos LIMIT ?",
                    (pos, chunk),
                ) as cur:
                    rows = await cur.fetchall()
                if not rows:
                    return
                batch = [row_entry(r) for r in rows]
                pos = batch[-1].pos
                yield batch
        except sqlite3.Error as exc:
            raise translate(exc, self.path, "read") from exc

    def _reader(self) -> JournalReader:
        """A read-only connection for replay (close it, or use it as a context manager)."""
        self._conn()
        return JournalReader(self.path)

    async def check_integrity(self) -> None:
        """Run SQLite's ``quick_check`` on a separate read-only connection.

        It reads the whole file (about 0.3 s per million events here), so the runtime runs
        it beside the actor rather than before it; commits are not blocked meanwhile.
        """
        self._conn()
        try:
            async with (
                aiosqlite.connect(f"file:{self.path}?mode=ro", uri=True) as db,
                db.execute("PRAGMA quick_check(5)") as cur,
            ):
                problems = [str(r[0]) for r in await cur.fetchall()]
        except sqlite3.DatabaseError as exc:
            problems = [str(exc)]
        if problems != ["ok"]:
            raise JournalCorruptError(
                f"{self.path} fails SQLite's integrity check: {'; '.join(problems)}; "
                "the actor stops acknowledging. Restore the file from a backup, or move it "
                "away and let the actor rebuild its journal from the stream",
                path=self.path,
            )

    async def count(self) -> int:
        """How many events the journal holds."""
        return int(await self._scalar("SELECT count(*) FROM events"))

    async def snapshots(self) -> list[SnapshotInfo]:
        """Every stored snapshot's metadata (not its state), newest first (position, then id)."""
        rows = await self._fetchall(
            "SELECT id, pos, model_version, codec, length(state), created_at FROM snapshots "
            "ORDER BY pos DESC, id DESC"
        )
        return [SnapshotInfo(*row) for row in rows]

    async def read_snapshot(self, snapshot_id: int) -> Snapshot | None:
        """One snapshot with its state bytes, or None if it was pruned meanwhile."""
        rows = await self._fetchall(
            "SELECT id, pos, model_version, codec, checksum, state, created_at FROM snapshots "
            "WHERE id = ?",
            (snapshot_id,),
        )
        return Snapshot(*rows[0]) if rows else None

    async def delete_snapshots(self) -> int:
        """Delete every snapshot; returns how many there were. The state is unaffected."""
        try:
            async with self._conn().execute("DELETE FROM snapshots") as cur:
                return int(cur.rowcount)
        except sqlite3.Error as exc:
            raise translate(exc, self.path, "delete snapshots in") from exc

    async def dead_letter_count(self) -> int:
        """How many dead letters the journal holds."""
        return int(await self._scalar("SELECT count(*) FROM dead_letters"))

    async def dead_letters(self) -> list[DeadLetter]:
        """Every dead letter, oldest first."""
        rows = await self._fetchall(f"SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters ORDER BY id")
        return [row_dead_letter(r) for r in rows]

    async def unsent_outbox(self, limit: int = 1_000) -> list[OutboxMessage]:
        """Outbox messages not yet confirmed as published, oldest first."""
        rows = await self._fetchall(
            "SELECT id, pos, subject, msg_id, headers, payload FROM outbox "
            "WHERE sent_at IS NULL ORDER BY id LIMIT ?",
            (limit,),
        )
        return [
            OutboxMessage(
                id=r[0],
                pos=r[1],
                subject=r[2],
                msg_id=r[3],
                headers=headers_decoder.decode(r[4]) if r[4] else None,
                payload=r[5],
            )
            for r in rows
        ]

    async def mark_sent(self, ids: Sequence[int]) -> None:
        """Record that these outbox messages were acknowledged by JetStream."""
        if not ids:
            return
        try:
            async with self._transaction() as db:
                await db.executemany(
                    "UPDATE outbox SET sent_at = ? WHERE id = ? AND sent_at IS NULL",
                    [(time.time(), i) for i in ids],
                )
        except sqlite3.Error as exc:
            raise translate(exc, self.path, "update the outbox of") from exc
        self.unsent = max(0, self.unsent - len(ids))

    async def bind_stream(self, stream: str, created: str) -> str | None:
        """Remember which incarnation of ``stream`` the journal consumes (its creation time).

        Returns the creation time recorded before, if any; the caller compares the two to
        tell a re-created stream (whose sequences start again at 1) from the one it knew.
        """
        db = self._conn()
        try:
            known = await self._scalar("SELECT created FROM positions WHERE stream = ?", (stream,))
            if known is None:
                await db.execute(
                    "INSERT INTO positions (stream, last_seq, created) VALUES (?, 0, ?) "
                    "ON CONFLICT (stream) DO UPDATE SET created = excluded.created",
                    (stream, created),
                )
                self.stream_positions.setdefault(stream, 0)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot write to {self.path}: {exc}", path=self.path) from exc
        return str(known) if known is not None else None

    async def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one SQL statement on the journal's own connection; returns every row.

        Not part of the API: for tests that must reach below it (a full disk is simulated
        with ``PRAGMA max_page_count``, which holds per connection)."""
        return await self._fetchall(sql, params, "query")

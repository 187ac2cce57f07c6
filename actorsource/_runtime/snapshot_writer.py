"""Writing a large snapshot between batches: a part at a time, then pruning the old ones.

A snapshot too large for its batch's transaction
(:meth:`~actorsource._journal.journal.SQLiteJournal.in_parts`) is handed here once the batch
that brought the state to its position is committed. :meth:`SnapshotWriter.step` writes one
part (its own short transaction), then the header, then deletes the snapshots beyond
``keep`` and their parts, one transaction per step; the committer runs one step after each
batch it commits and keeps stepping while no batch waits, so a batch never waits for more
than one step. A new large snapshot supersedes one not yet finished (its parts are deleted
as orphans). A step that fails drops the snapshot, loudly: a snapshot is only a cache.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import structlog

from .._errors import JournalCorruptError, JournalError
from .._journal.journal import NewSnapshot, PartedSnapshot, SQLiteJournal
from .status import CrashSwitch

__all__ = ["SnapshotWriter"]


class SnapshotWriter:
    """The large snapshot being written in parts, and the pruning after it, of one runner.

    ``on_taken(pos, seconds, parts)`` is called once a snapshot's header is committed (it
    took the journal's thread ``seconds`` in all), ``on_failed(pos)`` when a step failed.
    """

    def __init__(
        self,
        journal: SQLiteJournal,
        write_lock: anyio.Lock,
        log: structlog.stdlib.BoundLogger,
        *,
        on_taken: Callable[[int, float, int], None],
        on_failed: Callable[[int], None],
        crash: CrashSwitch | None = None,
    ) -> None:
        self._journal = journal
        self._lock = write_lock
        self._on_taken = on_taken
        self._on_failed = on_failed
        self._log = log
        self._crash = crash or CrashSwitch()
        self._write: PartedSnapshot | None = None
        self._keep: int | None = None  # pruning to the newest ``keep`` is due

    @property
    def writing(self) -> bool:
        """True while a snapshot's parts or header are still to be written."""
        return self._write is not None

    @property
    def pending(self) -> bool:
        """True while there is a step to take (writing, or pruning after a write)."""
        return self._write is not None or self._keep is not None

    def accepts(self, snapshot: NewSnapshot) -> bool:
        """Tell whether ``snapshot`` is large enough to be written here, in parts."""
        return self._journal.in_parts(snapshot)

    def start(self, snapshot: NewSnapshot) -> None:
        """Write ``snapshot`` in parts from the next step on (its position is committed)."""
        self._write = self._journal.parted(snapshot)

    async def step(self) -> None:
        """Take the next step: a part, the header, or one pruning transaction."""
        async with self._lock:
            write = self._write
            if write is not None:
                await self._write_step(write)
            elif self._keep is not None:
                try:
                    more = await self._journal.prune_step(self._keep)
                except JournalCorruptError:
                    raise
                except JournalError as exc:
                    self._log.error("pruning snapshots failed", error=str(exc))
                    more = False
                if not more:
                    self._keep = None

    async def finish(self) -> None:
        """Take every step left (after recovery, on request, at a graceful stop)."""
        while self.pending:
            await self.step()

    async def _write_step(self, write: PartedSnapshot) -> None:
        pos = write.snapshot.pos
        try:
            done = await self._journal.snapshot_step(write)
        except JournalCorruptError:
            raise
        except JournalError as exc:
            # Its parts are orphans now, deleted by the next pruning or the next open.
            self._log.error("snapshot failed", error=str(exc), pos=pos)
            self._write = None
            self._on_failed(pos)
            return
        if not done:
            self._crash.check("between_snapshot_parts")
            return
        self._write = None
        self._keep = write.snapshot.keep
        self._on_taken(pos, write.seconds, write.parts)

"""The owner's checkpoints and the compaction of its journal subject.

While a worker owns a partition, :meth:`Checkpointer.run` takes a checkpoint
(:mod:`.checkpoints`) each time ``every`` more events were admitted by the fence, and
:meth:`Checkpointer.final` one more on a planned stop. After each upload::

    keep the newest two checkpoints of the partition, delete the older ones
    purge the journal subject before the OLDER kept checkpoint's sequence

so a restore from either kept checkpoint finds every message after it, and the subject's
last message (the fence's expected sequence) is never purged. A fenced owner, or one whose
lease lapsed, uploads what it has (an older checkpoint, harmless) but purges nothing.

The copy is taken while commits continue (a read transaction on a connection of its own,
in WAL mode): the owner never pauses for it, and the copy holds exactly the batches
committed when it started, with their subject sequence.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import anyio
import nats.errors

from .checkpoints import Checkpoint, CheckpointStore, copy_journal
from .guard import PartitionGuard

__all__ = ["KEEP", "Checkpointer"]

#: Checkpoints kept per partition.
KEEP = 2
#: How often the owner looks whether a checkpoint is due, in seconds.
_LOOK_EVERY = 1.0


class Checkpointer:
    """The checkpoints of one owned partition (one owner, one epoch)."""

    def __init__(self, guard: PartitionGuard, journal_path: Path, *, every: int, log: Any) -> None:
        if guard.checkpoints is None:
            raise ValueError("a Checkpointer needs a guard with a checkpoint store")
        self.store: CheckpointStore = guard.checkpoints
        self.guard = guard
        self.journal_path = journal_path
        self.every = every
        self.log = log
        self._at = 0  # the admitted-event count at the last checkpoint
        #: The checkpoints this owner uploaded.
        self.uploaded: list[Checkpoint] = []

    async def run(self) -> None:
        """Take a checkpoint every ``every`` admitted events, until cancelled."""
        if self.every <= 0:
            return
        while True:
            await anyio.sleep(_LOOK_EVERY)
            if self.guard.admitted_events - self._at >= self.every:
                await self.take()

    async def final(self) -> Checkpoint | None:
        """A checkpoint on a planned stop, if anything was admitted since the last one."""
        if self.every <= 0 or self.guard.admitted_events == self._at:
            return None
        return await self.take()

    async def take(self) -> Checkpoint | None:
        """Copy the journal, upload it, keep the newest two, compact the journal subject;
        the checkpoint uploaded (None: nothing new to upload). A failure is logged: the
        next one is tried ``every`` events later."""
        started = time.monotonic()
        at = self.guard.admitted_events
        try:
            copy, seq = await copy_journal(self.journal_path, self.guard.position_key)
        except (sqlite3.Error, OSError) as exc:
            self._at = at
            self.log.warning("checkpoint failed: cannot copy the journal", error=repr(exc))
            return None
        self._at = at  # taken or failed: the next one is due ``every`` events later
        try:
            if seq == 0:
                return None
            uploaded = await self.store.upload(copy, seq=seq, epoch=self.guard.lease.epoch)
            if uploaded is None:
                return None
            self.uploaded.append(uploaded)
            kept = await self.store.keep_newest(KEEP)
            purged_before = await self._compact(kept)
            self.log.info(
                "checkpoint uploaded",
                checkpoint=uploaded.name,
                bytes=uploaded.size,
                purged_before=purged_before,
                seconds=round(time.monotonic() - started, 3),
            )
            return uploaded
        except (nats.errors.Error, OSError) as exc:
            self.log.warning("checkpoint failed", error=repr(exc))
            return None
        finally:
            copy.unlink(missing_ok=True)

    async def _compact(self, kept: list[Checkpoint]) -> int:
        """Purge the journal subject before the older kept checkpoint; that sequence (0:
        nothing purged)."""
        guard = self.guard
        if len(kept) < KEEP or guard.fence.fenced or not guard.lease.valid():
            return 0
        older = kept[0].seq
        await guard.fence.purge_before(older)
        return older

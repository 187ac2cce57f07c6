"""The hooks a partition's runner calls in cluster mode: recover from the journal subject,
then pass every batch through the fence before committing it.

::

    guard = PartitionGuard(lease, JournalFence(js, "orders", 3))
    async for batch in guard.recover(after=journal.stream_positions.get(guard.position_key, 0)):
        await journal.append(batch)         # import what the file lacks, before anything else
    ...
    # the committer, for every batch, BEFORE the SQLite commit and the ack:
    batch.positions[guard.position_key] = await guard.before_commit(batch)
    await journal.append(batch)             # then ack, then publish the outbox

:meth:`PartitionGuard.before_commit` raising :class:`Fenced` or :class:`LeaseLost` means:
commit nothing, acknowledge nothing, publish nothing, drop the partition's state.

The journal subject's sequence is kept in the batch's ``positions`` under
:attr:`PartitionGuard.position_key` (the subject's name, which no stream has), so it is
written in the same SQLite transaction as the batch and tells recovery where to resume.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import nats.errors

from .._errors import ClusterError, Fenced, LeaseLost
from .._journal.journal import SQLiteJournal
from .._journal.schema import JournalBatch
from .._log import get_logger
from .batches import decode_batch, encode_batch
from .checkpoints import Checkpoint, CheckpointStore
from .fence import JournalFence
from .lease import Lease
from .restore import restore_if_needed

__all__ = ["PartitionGuard"]


class PartitionGuard:
    """One owner's lease and fence for one partition, used by that partition's runner (it
    is the runner's :class:`~actorsource._runtime.commit_guard.CommitGuard`)."""

    def __init__(
        self,
        lease: Lease,
        fence: JournalFence,
        *,
        checkpoints: CheckpointStore | None = None,
        log: Any = None,
    ) -> None:
        self.lease = lease
        self.fence = fence
        #: Where the partition's checkpoints are (None: restore nothing, import the subject).
        self.checkpoints = checkpoints
        self.log = log if log is not None else get_logger(partition=lease.key)
        #: The checkpoint the journal file was restored from, if it was.
        self.restored: Checkpoint | None = None
        #: Batches refused by the fence or the lapsed lease (0 or 1: the owner then stops).
        self.refused = 0
        #: The epochs of the owners before this one that recovery saw on the subject (the
        #: last one, and every one after the journal file's position).
        self.earlier_epochs: set[int] = set()
        #: Events admitted by this owner (what its checkpoints are spaced by).
        self.admitted_events = 0

    @property
    def consumer(self) -> str:
        """This owner's consumer: ``<partition>-e<epoch>``, one per epoch, so that an older
        owner's pulls and acknowledgements reach a consumer that no longer exists."""
        return f"{self.lease.key}-e{self.lease.epoch}"

    async def restore(self, path: Path) -> None:
        """Install the newest usable checkpoint at ``path`` if the journal file there is
        missing or behind the compacted journal subject (see :mod:`.restore`)."""
        if self.checkpoints is not None:
            self.restored = await restore_if_needed(self.checkpoints, self.fence, path, self.log)

    async def import_tail(self, journal: SQLiteJournal) -> int:
        """Open this epoch on the journal subject and write to ``journal`` the batches the
        subject holds after the journal's last recorded subject sequence; how many."""
        imported = 0
        async for batch in self.recover(after=journal.stream_positions.get(self.position_key, 0)):
            await journal.append(batch)
            imported += 1
        return imported

    async def consuming(self, stream: str) -> None:
        """Delete the consumers of the earlier owners recovery saw (by name: listing a
        replicated stream's consumers can take seconds), so that their pulls and acks
        reach nothing. The fence does not rest on it."""
        js = self.fence.js
        for epoch in sorted(self.earlier_epochs - {0, self.lease.epoch}):
            with suppress(nats.errors.Error):  # gone already, or deleted at the next move
                await js.delete_consumer(stream, f"{self.lease.key}-e{epoch}")

    async def admit(self, batch: JournalBatch) -> None:
        """Append ``batch`` to the journal subject (the fence) and record the subject's
        sequence in its ``positions``; raises :class:`Fenced` or :class:`LeaseLost`."""
        try:
            batch.positions[self.position_key] = await self.before_commit(batch)
            self.admitted_events += len(batch.entries)
        except (Fenced, LeaseLost):
            self.refused += 1
            raise

    @property
    def position_key(self) -> str:
        """The key of the journal subject's sequence in a batch's ``positions``."""
        return self.fence.subject

    async def recover(self, *, after: int) -> AsyncIterator[JournalBatch]:
        """Append this owner's epoch marker (fencing every older owner), then yield the
        batches the subject holds after sequence ``after`` (what the local journal lacks),
        in order, each with its subject sequence in ``positions``. Raises :class:`Fenced`
        if a newer owner opened the subject."""
        marker = await self.fence.open(self.lease.epoch)
        self.earlier_epochs.add(self.fence.previous_epoch)
        previous = after
        async for record in self.fence.tail(after):
            # Each message names the one before it on the subject (its expected sequence):
            # a break means compaction purged part of what this import needs.
            if record.expected > previous or (previous > after and record.expected != previous):
                raise ClusterError(
                    f"{self.fence.subject}: the journal subject lacks messages between "
                    f"{previous} and {record.seq} (compacted): the journal must be restored "
                    "from a checkpoint",
                    key=self.fence.subject,
                )
            previous = record.seq
            if record.seq >= marker:
                return
            self.earlier_epochs.add(record.epoch)
            if record.kind != "batch":
                continue
            batch = decode_batch(record.data)
            batch.positions[self.position_key] = record.seq
            yield batch

    async def before_commit(self, batch: JournalBatch) -> int:
        """Append ``batch`` to the journal subject; the sequence to record with it.

        Raises :class:`LeaseLost` when the lease lapsed (self-fencing: nothing appended) and
        :class:`Fenced` when a newer owner appended since."""
        if not self.lease.valid():
            raise LeaseLost(
                f"the lease {self.lease.key!r} lapsed; not committing", key=self.lease.key
            )
        if self.fence.fenced:
            raise Fenced(f"{self.fence.subject}: fenced", key=self.fence.subject)
        return await self.fence.append(encode_batch(batch))

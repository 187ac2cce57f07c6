"""The hooks through which a runner is made one fenced owner among several workers.

The runtime knows nothing of clusters, leases or fences: a runner given a
:class:`CommitGuard` calls it at these points of its life, and the cluster layer
(:mod:`actorsource._cluster`) implements it and hands it over.

0. :meth:`CommitGuard.restore`, before the journal file is opened: a file that is missing,
   or too far behind for the replicated record to bring it up to date, is replaced by a
   copy of the whole store from elsewhere (a checkpoint).
1. :meth:`CommitGuard.import_tail`, right after the journal is opened and before the state
   is recovered: what the replicated record of the partition holds beyond the journal file
   (a crash between the fenced append and the SQLite commit, or a file that was never
   here) is written to the file first.
2. :attr:`CommitGuard.consumer` names the durable consumer the runner creates (one per
   owner), and :meth:`CommitGuard.consuming` is called once it exists (to delete the
   consumers of earlier owners, so their pulls and acks reach nothing).
3. :meth:`CommitGuard.admit`, for every batch, inside its SQLite transaction once its
   entries are written (so after the journal's unique index refused any message id it
   already holds) and *before* the commit and the acknowledgement. An exception from it
   (the owner was fenced, or its lease lapsed) rolls the batch back and means: commit
   nothing, acknowledge nothing, publish nothing; the runner fails with it and its state
   is dropped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from .._journal.journal import JournalBatch, SQLiteJournal

__all__ = ["CommitGuard", "needs_admission"]


class CommitGuard(Protocol):
    """What a runner calls so that only the current owner of its journal commits."""

    @property
    def consumer(self) -> str:
        """The name of the durable consumer this owner reads with."""
        ...

    async def restore(self, path: Path) -> None:
        """Before the journal file at ``path`` is opened: put in its place a copy the
        replicated record can bring up to date, if it is missing or too far behind."""
        ...

    async def import_tail(self, journal: SQLiteJournal) -> int:
        """Write to ``journal`` what the replicated record holds after it; how many batches."""
        ...

    async def consuming(self, stream: str) -> None:
        """The consumer :attr:`consumer` exists on ``stream`` (earlier owners' may go)."""
        ...

    async def admit(self, batch: JournalBatch) -> None:
        """Let ``batch`` be committed, or raise (this owner must stop). May add to
        ``batch.positions`` what the journal records with it."""
        ...


def needs_admission(batch: JournalBatch) -> bool:
    """Whether committing ``batch`` changes what the journal's history holds (entries, dead
    letters, outbox rows or stream positions): snapshots alone are a cache, not history."""
    return bool(batch.entries or batch.dead_letters or batch.outbox or batch.positions)

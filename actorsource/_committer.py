"""The committer: writes prepared batches to the journal, then acknowledges them, in order.

It runs as its own task so that the journal commit of batch N (SQLite works in its own
thread) overlaps with decoding and applying batch N+1 on the event loop. At most one batch
is being committed and one more is waiting to be handed over (a rendezvous channel), so
the state in memory is never more than two batches ahead of the journal, and nothing is
acknowledged before its commit returned.

A batch that holds a message id the journal already has (:class:`DuplicateMessageIdError`)
is not stored. The committer then stops committing: that batch and every batch after it
are set aside, unacknowledged, in :attr:`Committer.redo`, and the runner is woken to
rebuild its state from the journal and handle those deliveries again, looking ids up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._errors import JournalCorruptError, JournalError
from ._journal import DeadLetter, DuplicateMessageIdError, JournalBatch, SQLiteJournal
from ._mailbox import Delivery, JetStreamMailbox
from ._status import ActorStats, CrashSwitch

__all__ = ["CommitJob", "Committer"]


@dataclass
class CommitJob:
    """One prepared batch: what to write, what to acknowledge and what to terminate."""

    batch: JournalBatch
    deliveries: list[Delivery]
    to_ack: list[Delivery]
    dead: list[tuple[Delivery, DeadLetter]]
    snapshot_pos: int | None = None
    handed_at: float = field(default_factory=time.monotonic)


class Committer:
    """Commits :class:`CommitJob` s in order with retries, then acknowledges them."""

    def __init__(
        self,
        journal: SQLiteJournal,
        mailbox: JetStreamMailbox,
        write_lock: anyio.Lock,
        *,
        crash: CrashSwitch,
        stats: ActorStats,
        log: structlog.stdlib.BoundLogger,
        on_committed: Callable[[CommitJob], None],
        on_conflict: Callable[[], None],
        attempts: int = 8,
        gate: anyio.Event | None = None,
    ) -> None:
        self._journal = journal
        self._gate = gate
        self._mailbox = mailbox
        self._lock = write_lock
        self._crash = crash
        self._stats = stats
        self._log = log
        self._on_committed = on_committed
        self._on_conflict = on_conflict
        self._attempts = attempts
        send, receive = anyio.create_memory_object_stream[CommitJob](0)
        self._send: MemoryObjectSendStream[CommitJob] = send
        self._receive: MemoryObjectReceiveStream[CommitJob] = receive
        self._inflight: list[CommitJob] = []
        self._idle = anyio.Event()
        self._idle.set()
        self.redo: list[Delivery] | None = None

    @property
    def conflict(self) -> bool:
        """True once a duplicate message id stopped the committer (until :meth:`take_redo`)."""
        return self.redo is not None

    def unacked(self) -> list[Delivery]:
        """Every delivery handed over and not yet acknowledged (for keep-alives)."""
        out = [d for job in self._inflight for d in job.deliveries]
        if self.redo:
            out.extend(self.redo)
        return out

    def oldest(self) -> float | None:
        """When the oldest job still in flight was handed over."""
        return self._inflight[0].handed_at if self._inflight else None

    async def submit(self, job: CommitJob) -> None:
        """Hand a job over; waits while the previous one is still being committed."""
        self._inflight.append(job)
        self._idle = anyio.Event()
        try:
            await self._send.send(job)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            # The committer task died (its error is what the task group reports) and the
            # group is cancelling this task too: wait for that instead of adding a 2nd error.
            await anyio.sleep_forever()

    async def drain(self) -> None:
        """Wait until every job handed over is committed and acknowledged (or set aside)."""
        while self._inflight:
            await self._idle.wait()

    def defer(self, deliveries: list[Delivery]) -> None:
        """Add deliveries not yet handled to the redo list (after a conflict)."""
        assert self.redo is not None
        self.redo.extend(deliveries)

    def take_redo(self) -> list[Delivery]:
        """The deliveries to handle again, in order; clears the conflict."""
        redo, self.redo = self.redo or [], None
        return redo

    def close(self) -> None:
        """Close the hand-over channel (idempotent); :meth:`run` then returns."""
        self._send.close()
        self._receive.close()

    async def run(self) -> None:
        """The committer task: commit and acknowledge each job in turn."""
        with self._receive:
            async for job in self._receive:
                try:
                    if self.redo is not None:
                        self.redo.extend(job.deliveries)
                    else:
                        await self._commit_and_ack(job)
                finally:
                    self._inflight.remove(job)
                    if not self._inflight:
                        self._idle.set()

    async def _commit_and_ack(self, job: CommitJob) -> None:
        if self._gate is not None:
            # The journal's integrity check runs beside the actor; nothing is committed or
            # acknowledged until it has passed.
            await self._gate.wait()
        self._crash.check("before_commit")
        try:
            await self._commit(job.batch)
        except DuplicateMessageIdError:
            self._log.info("duplicate message id at commit; re-checking the batch")
            self.redo = list(job.deliveries)
            self._on_conflict()
            return
        self._on_committed(job)
        self._crash.check("after_commit")
        await self._mailbox.ack(job.to_ack)
        for d, dl in job.dead:
            await self._mailbox.term(d, dl.reason)
        self._crash.check("after_ack")
        stats = self._stats
        stats.applied += len(job.batch.entries)
        stats.dead_letters += len(job.dead)
        stats.batches += 1
        for d, dl in job.dead:
            self._log.warning(
                "dead letter",
                reason=dl.reason,
                error=dl.error,
                subject=d.subject,
                stream_seq=d.stream_seq,
                type=dl.type,
            )

    async def _commit(self, batch: JournalBatch) -> None:
        """Commit with retries: a full disk or a busy file must not lose or ack anything."""
        delay = 0.1
        for attempt in range(1, self._attempts + 1):
            try:
                async with self._lock:
                    await self._journal.append(batch)
                return
            except (DuplicateMessageIdError, JournalCorruptError):
                raise
            except JournalError as exc:
                self._stats.commit_failures += 1
                if attempt == self._attempts:
                    raise
                self._log.error(
                    "journal commit failed; retrying",
                    error=str(exc),
                    attempt=attempt,
                    retry_in=round(delay, 2),
                )
                await anyio.sleep(delay)
                delay = min(delay * 2, 5.0)

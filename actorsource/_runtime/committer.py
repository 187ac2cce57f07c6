"""The committer: writes prepared batches to the journal, then acknowledges them, in order.

It runs as its own task so that the journal commit of batch N (SQLite works in its own
thread) overlaps with decoding and applying the batches after it on the event loop. One job
is being committed; the batches handed over meanwhile are merged into one waiting job (a
group commit), so a slow commit (a WAL checkpoint, a busy disk) makes the next transaction
bigger instead of stopping the loop. Only when the waiting job holds ``merge_limit``
deliveries does :meth:`Committer.submit` wait. Nothing is acknowledged before its commit
returned.

A job's snapshot too large for its transaction is taken out of it and handed, once the job
is committed, to the :class:`~.snapshot_writer.SnapshotWriter`, which writes it in parts:
the commit task takes one of its steps after each job it commits and keeps stepping while
no job waits, so the batches behind a large snapshot wait for one short step, not for all
of it.

A batch that holds a message id the journal already has (:class:`DuplicateMessageIdError`)
is not stored. The committer then stops committing: that batch and every batch after it
are set aside, unacknowledged and in stream order, in :attr:`Committer.redo`, and the
runner is woken to rebuild its state from the journal and handle those deliveries again,
looking ids up.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from .._errors import JournalCorruptError, JournalError, JournalOrderError
from .._journal.journal import DeadLetter, DuplicateMessageIdError, JournalBatch, SQLiteJournal
from .._mailbox.mailbox import Delivery, JetStreamMailbox
from .._model.actor import MERGE_LIMIT
from .commit_guard import CommitGuard, needs_admission
from .snapshot_writer import SnapshotWriter
from .status import ActorStats, CrashSwitch

if TYPE_CHECKING:
    from .tracing import Traced

__all__ = ["CommitJob", "Committer"]


@dataclass
class CommitJob:
    """One prepared batch: what to write, what to acknowledge and what to terminate."""

    batch: JournalBatch
    deliveries: list[Delivery]
    to_ack: list[Delivery]
    dead: list[tuple[Delivery, DeadLetter]]
    handed_at: float = field(default_factory=time.monotonic)
    #: Its traced deliveries (tracing on only): their spans end once it is acknowledged.
    traced: list[Traced] = field(default_factory=list)
    #: Set once its transaction is committed (acknowledged or not).
    committed: bool = False

    def absorb(self, later: CommitJob) -> None:
        """Append a later job to this one, which then commits and acknowledges both."""
        batch, more = self.batch, later.batch
        batch.entries.extend(more.entries)
        for stream, seq in more.positions.items():
            batch.positions[stream] = max(seq, batch.positions.get(stream, 0))
        batch.dead_letters.extend(more.dead_letters)
        batch.outbox.extend(more.outbox)
        if more.snapshot is not None:  # the later snapshot supersedes an earlier one
            batch.snapshot = more.snapshot
        batch.entity_snapshots.extend(more.entity_snapshots)
        self.deliveries.extend(later.deliveries)
        self.to_ack.extend(later.to_ack)
        self.dead.extend(later.dead)
        self.traced.extend(later.traced)


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
        merge_limit: int = MERGE_LIMIT,
        snapshots: SnapshotWriter | None = None,
        guard: CommitGuard | None = None,
    ) -> None:
        self._journal = journal
        self._guard = guard
        self._snapshots = snapshots
        self._gate = gate
        self._mailbox = mailbox
        self._lock = write_lock
        self._crash = crash
        self._stats = stats
        self._log = log
        self._on_committed = on_committed
        self._on_conflict = on_conflict
        self._attempts = attempts
        self._merge_limit = merge_limit
        # The job handed over and not yet taken by the commit task (later ones merge into it).
        self._waiting: CommitJob | None = None
        self._handed = anyio.Event()
        self._taken = anyio.Event()
        self._closed = False
        self._inflight: list[CommitJob] = []
        # Committed jobs whose acknowledgement waits for the gate (the integrity check).
        self._held: list[CommitJob] = []
        self._idle = anyio.Event()
        self._idle.set()
        self.redo: list[Delivery] | None = None
        #: Why a commit (or the acknowledgement after it) failed; the committer's task then
        #: ends with that error and the actor stops. A drain returns all the same (its jobs
        #: are out of the way), so whoever reads the state after one checks this first: the
        #: state then holds events the journal does not, and must not be snapshotted.
        self.failed: BaseException | None = None

    @property
    def conflict(self) -> bool:
        """True once a duplicate message id stopped the committer (until :meth:`take_redo`)."""
        return self.redo is not None

    @property
    def in_flight(self) -> int:
        """How many jobs are handed over and not yet committed and acknowledged (read-only)."""
        return len(self._inflight)

    def unacked(self) -> list[Delivery]:
        """Every delivery handed over and not yet acknowledged (for keep-alives)."""
        out = [d for job in (*self._held, *self._inflight) for d in job.deliveries]
        if self.redo:
            out.extend(self.redo)
        return out

    def oldest(self) -> float | None:
        """When the oldest job still in flight was handed over."""
        return self._inflight[0].handed_at if self._inflight else None

    async def submit(self, job: CommitJob) -> None:
        """Hand a job over: merged into the one waiting for the commit task, if any; waits
        only while that one already holds ``merge_limit`` deliveries."""
        while True:
            if self._closed:
                # The committer is closing (its task died or the actor stops): the task group
                # cancels this task too; wait for that instead of adding a second error.
                await anyio.sleep_forever()
            if self.redo is not None:
                # Set aside behind everything handed over before it: redo stays in order.
                self.redo.extend(job.deliveries)
                return
            waiting = self._waiting
            if waiting is None:
                self._waiting = job
                self._inflight.append(job)
                self._idle = anyio.Event()
                self._handed.set()
                return
            if len(waiting.deliveries) + len(job.deliveries) <= self._merge_limit:
                waiting.absorb(job)
                return
            self._taken = anyio.Event()
            await self._taken.wait()

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

    def opened(self) -> None:
        """The gate is open: the commit task acknowledges what it held back."""
        self._handed.set()

    def close(self) -> None:
        """Stop taking jobs (idempotent); :meth:`run` then returns."""
        self._closed = True
        self._handed.set()
        self._taken.set()

    async def run(self) -> None:
        """The committer task: commit and acknowledge each job in turn."""
        snapshots = self._snapshots
        while True:
            if self._held and self._gate is not None and self._gate.is_set():
                await self._acknowledge(None)
            job = self._waiting
            if job is None:
                if self._closed:
                    return
                if snapshots is not None and snapshots.pending:
                    await snapshots.step()  # nothing waits: the large snapshot goes on
                    continue
                await self._handed.wait()
                self._handed = anyio.Event()
                continue
            self._waiting = None
            self._handed = anyio.Event()
            self._taken.set()
            try:
                await self._commit_and_ack(job)
            except BaseException as exc:
                self.failed = exc
                for each in (*self._held, *self._inflight):
                    for traced in each.traced:
                        traced.end(exc, committed=each.committed)
                raise
            finally:
                self._inflight.remove(job)
                if not self._inflight:
                    self._idle.set()
            if snapshots is not None and snapshots.pending:
                await snapshots.step()  # one step between two jobs: it never starves

    async def _commit_and_ack(self, job: CommitJob) -> None:
        self._crash.check("before_commit")
        snapshot, writer = job.batch.snapshot, self._snapshots
        if snapshot is not None and writer is not None and writer.accepts(snapshot):
            job.batch.snapshot = None  # written in parts once its position is committed
        else:
            snapshot = None
        admit = None
        if self._guard is not None and needs_admission(job.batch):
            admit = self._admission(job.batch)
        try:
            await self._commit(job.batch, admit)
        except DuplicateMessageIdError:
            self._log.info("duplicate message id at commit; re-checking the batch")
            self._set_aside(job)
            self._on_conflict()
            return
        job.committed = True
        if snapshot is not None and writer is not None:
            writer.start(snapshot)
        self._on_committed(job)
        self._crash.check("after_commit")
        await self._acknowledge(job)

    async def _acknowledge(self, job: CommitJob | None) -> None:
        """Acknowledge the jobs held back and then ``job``, in order; or hold ``job`` back
        while the gate is closed. The gate is the journal's integrity check, which runs
        beside the actor: commits go on meanwhile (the first event after a restart is
        committed at once), nothing is acknowledged until it has passed. If it fails, the
        actor halts and JetStream delivers everything since the restart again."""
        gate = self._gate
        if gate is not None and not gate.is_set():
            if job is not None:
                self._held.append(job)
            return
        jobs, self._held = self._held, []
        if job is not None:
            jobs.append(job)
        for each in jobs:
            await self._ack(each)

    async def _ack(self, job: CommitJob) -> None:
        await self._mailbox.ack(job.to_ack)
        for d, dl in job.dead:
            await self._mailbox.term(d, dl.reason)
        for traced in job.traced:
            traced.end()
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

    def _set_aside(self, job: CommitJob) -> None:
        """Start the redo list with ``job`` and the job waiting behind it, in one step.

        Everything handed over later (:meth:`submit`, :meth:`defer`) is appended behind them,
        so the list is in the order the runner handled its deliveries: stream order. Moving
        the waiting job here, not when the commit task next wakes, is what keeps it ahead of
        deliveries the runner defers meantime.
        """
        self.redo = list(job.deliveries)
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            self.redo.extend(waiting.deliveries)
            self._inflight.remove(waiting)
            self._taken.set()

    def _admission(self, batch: JournalBatch) -> Callable[[], Coroutine[Any, Any, None]]:
        """The guard's admission of ``batch`` (a fenced owner raises there, having committed
        nothing). The journal awaits it inside the commit's transaction, once the entries
        are written: what the guard admits must commit, so a message id the journal holds
        must be refused before, and the unique index refuses it there. It admits once: a
        commit retried after that commits what was appended."""
        guard = self._guard
        assert guard is not None
        admitted = False

        async def admit() -> None:
            nonlocal admitted
            if not admitted:
                await guard.admit(batch)
                admitted = True
                self._crash.check("after_admit")

        return admit

    async def _commit(
        self, batch: JournalBatch, admit: Callable[[], Coroutine[Any, Any, None]] | None = None
    ) -> None:
        """Commit with retries: a full disk or a busy file must not lose or ack anything
        (``admit``: see :meth:`_admission`)."""
        delay = 0.1
        for attempt in range(1, self._attempts + 1):
            try:
                async with self._lock:
                    started = time.perf_counter()
                    await self._journal.append(batch, admit=admit)
                    self._stats.commit_seconds.observe(time.perf_counter() - started)
                return
            except (DuplicateMessageIdError, JournalCorruptError, JournalOrderError):
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

"""The data path of a running actor: deliveries in, triage and apply, commit, acknowledge.

Read top to bottom, one batch goes through :meth:`Pipeline.handle`:

1. Redeliveries are recognised against the journal (same stream sequence, or same
   ``Nats-Msg-Id``) and will be acknowledged without being applied.
2. :func:`~actorsource._runtime.triage.triage` decodes each new event and applies it to the live
   state, one at a time, in order. Dying here loses only memory: nothing was acknowledged.
3. The outcome becomes one commit job (:meth:`Triage.to_job`): entries, stream position,
   dead letters and their outbox rows, maybe a snapshot. The :class:`Committer` commits it
   in one SQLite transaction while the next batch is applied, then acknowledges it.
4. A handler that raises: the batch so far is committed, the state is restored from the
   journal, and the delivery is retried in place (:mod:`._retry`); later ones wait.

The in-memory state is therefore always a fold of the journal plus, at most, the events of
the jobs not yet committed. Every call to the committer is made here.

An entity actor goes down the same path with :class:`~.entities.Entities` in place of the
live state: triage keys each event, applies it to its entity (loaded on demand), and the
job carries the entity snapshots due; a failed handler forgets only the entities holding
events the journal does not, instead of rebuilding a whole state.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
import structlog

from .._journal.entity_store import NewEntitySnapshot
from .._journal.journal import DeadLetter, OutboxMessage, SQLiteJournal
from .._journal.recovery import RecoveryReport, restore_state
from .._mailbox.mailbox import Delivery, JetStreamMailbox
from .._model.actor import Timer
from .._model.dispatch import LiveState
from .._model.effects import Effects
from .._model.events import MSG_ID_HEADER
from .commit_guard import CommitGuard
from .committer import CommitJob, Committer
from .deadletters import dlq_message
from .entities import Entities
from .retry import Retried, retry_in_place
from .snapshot_schedule import SnapshotSchedule
from .snapshot_writer import SnapshotWriter
from .status import ActorStats, CrashSwitch
from .triage import Failure, Triage, triage

if TYPE_CHECKING:
    from .tracing import Tracing

__all__ = ["Pipeline", "recover", "restore"]

_stream_seq = operator.attrgetter("stream_seq")


async def restore(
    live: LiveState, journal: SQLiteJournal, schedule: SnapshotSchedule
) -> RecoveryReport:
    """Make the live state the fold of ``journal`` (newest usable snapshot + later entries)."""
    state, report = await restore_state(live.definition, journal, log=live.log)
    live.replace(state)
    schedule.restored(report.snapshot_pos)
    return report


async def recover(
    live: LiveState,
    journal: SQLiteJournal,
    schedule: SnapshotSchedule,
    write_lock: anyio.Lock,
    writer: SnapshotWriter | None = None,
) -> RecoveryReport:
    """Recovery at start: restore the state, and snapshot it when the replay was long (at
    least a snapshot interval) or the model version changed (old snapshots are useless)."""
    log = live.log
    log.info("recovering", journal=str(journal.path), pos=journal.last_pos)
    report = await restore(live, journal, schedule)
    log.info(
        "recovered",
        snapshot_pos=report.snapshot_pos,
        replayed=report.replayed,
        pos=report.journal_pos,
        seconds=round(report.seconds, 4),
    )
    every = live.definition.snapshots.every
    version_bumped = any("model version" in why for _, why in report.skipped)
    if report.replayed and (version_bumped or (every is not None and report.replayed >= every)):
        await schedule.take_now(journal, write_lock, live.state, report.journal_pos, writer)
    return report


class Pipeline:
    """The cursor, the triage of each batch into commit jobs, retries, and the committer."""

    def __init__(
        self,
        live: LiveState,
        journal: SQLiteJournal,
        mailbox: JetStreamMailbox,
        schedule: SnapshotSchedule,
        *,
        write_lock: anyio.Lock,
        crash: CrashSwitch,
        stats: ActorStats,
        log: structlog.stdlib.BoundLogger,
        stopping: Callable[[], bool],
        on_committed: Callable[[CommitJob], None],
        on_conflict: Callable[[], None],
        on_restored: Callable[[RecoveryReport], None],
        commit_attempts: int,
        gate: anyio.Event | None,
        entities: Entities | None = None,
        snapshots: SnapshotWriter | None = None,
        guard: CommitGuard | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._live = live
        self._tracing = tracing
        self._snapshots = snapshots
        self._entities = entities
        self._journal = journal
        self._schedule = schedule
        self._write_lock = write_lock
        self._stats = stats
        self._log = log
        self._stopping = stopping
        self._on_committed = on_committed
        self._on_restored = on_restored
        definition = live.definition
        self._dlq: Callable[[DeadLetter], OutboxMessage] = lambda dl: dlq_message(
            definition.name, definition.errors, dl
        )
        self.committer = Committer(
            journal,
            mailbox,
            write_lock,
            crash=crash,
            stats=stats,
            log=log,
            on_committed=self._committed,
            on_conflict=on_conflict,
            attempts=commit_attempts,
            gate=gate,
            snapshots=snapshots,
            guard=guard,
        )
        # The cursor: the last position assigned and the highest stream sequence handled,
        # ahead of the journal by the jobs not yet committed.
        self._pos = 0
        self._high: dict[str, int] = {}
        # The batch being handled (kept alive with +WPI while it takes long).
        self.in_hand: list[Delivery] = []
        self.in_hand_since = 0.0
        self.sync_cursor()

    def sync_cursor(self) -> None:
        """Align the cursor with what the journal holds (after a drain)."""
        self._pos = self._journal.last_pos
        self._high = dict(self._journal.stream_positions)

    # -- batches -----------------------------------------------------------------------------

    async def handle(self, deliveries: list[Delivery], *, careful: bool = False) -> None:
        """Handle a batch, in order, up to its end (or until set aside by a conflict)."""
        self.in_hand = deliveries
        self.in_hand_since = time.monotonic()
        start = 0
        try:
            while start < len(deliveries):
                if self.committer.conflict:
                    self.committer.defer(deliveries[start:])
                    break
                start = await self._process(deliveries, start, careful=careful)
        finally:
            self.in_hand = []

    async def _process(self, deliveries: list[Delivery], start: int, *, careful: bool) -> int:
        """Handle ``deliveries[start:]`` up to the first failing handler; return where it stopped.

        A redelivery (a stream sequence already handled) drains the committer and is looked
        up in the journal, and so are message ids when ``careful``; otherwise the journal's
        unique index catches a duplicate id at commit and the committer sets it aside.
        """
        stream = deliveries[start].stream
        rest = deliveries[start:]
        if not careful and min(map(_stream_seq, rest)) <= self._high.get(stream, 0):
            await self.committer.drain()
            if self.committer.conflict:
                self.committer.defer(rest)
                return len(deliveries)
            self.sync_cursor()
            careful = True
        high = self._high.get(stream, 0)
        known_seqs: set[int] = set()
        known_ids: set[str] = set()
        if careful:
            maybe_seen = [d.stream_seq for d in rest if d.stream_seq <= high]
            ids = [mid for d in rest if d.headers and (mid := d.headers.get(MSG_ID_HEADER))]
            if maybe_seen or ids:
                known_seqs, known_ids = await self._journal.known(stream, maybe_seen, ids)
        definition = self._live.definition
        entities = self._entities
        started = time.perf_counter()
        outcome = await triage(
            deliveries,
            start,
            high=high,
            pos=self._pos,
            known_seqs=known_seqs,
            known_ids=known_ids,
            policy=definition.errors,
            codec=definition.codec,
            apply=self._live.apply_live if entities is None else entities.apply_live,
            plain=self._live.dispatch.plain if entities is None else entities.plain,
            resident=None if entities is None else entities.apply_resident,
            key=None if entities is None else entities.key_of,
            tracing=self._tracing,
        )
        self._stats.apply_seconds.observe(time.perf_counter() - started)
        failure = outcome.failure
        snapshot = None
        entity_snapshots = None
        if entities is not None:
            entity_snapshots = entities.collect(failed=failure is not None)
        elif outcome.entries and failure is None and not self._writing():
            snapshot = self._schedule.due(outcome.pos, self._live.state)
        job = outcome.to_job(
            deliveries[start : outcome.end],
            stream=stream,
            high=high,
            dlq=self._dlq,
            snapshot=snapshot,
            entity_snapshots=entity_snapshots,
        )
        self._stats.duplicates += outcome.duplicates
        self._stats.ignored += outcome.ignored
        await self._submit(job, outcome.pos, stream, outcome.top)
        if failure is None:
            return len(deliveries)
        await self.committer.drain()
        if self.committer.conflict:
            self.committer.defer(deliveries[failure.index :])
            return len(deliveries)
        await self.restore()
        retried = await retry_in_place(
            failure,
            self._live if entities is None else entities,
            restore=self.restore,
            stopping=self._stopping,
            stats=self._stats,
            log=self._log,
        )
        if retried is None:
            return len(deliveries)  # stopping: the message stays unacknowledged for next time
        await self._commit_retried(failure, retried, stream)
        return failure.index + 1

    async def _commit_retried(self, failure: Failure, retried: Retried, stream: str) -> None:
        """Commit the one retried delivery: its entry and effects, or its dead letter."""
        d = failure.delivery
        high = self._high.get(stream, 0)
        outcome = Triage(pos=self._pos, top=max(high, d.stream_seq), end=failure.index + 1)
        if failure.traced is not None:
            outcome.traced.append(failure.traced)
            if retried.letter is None:
                failure.traced.note("applied", failure.entry.pos)
            else:
                failure.traced.note("dead-letter")
        if retried.letter is not None:
            outcome.dead.append((d, retried.letter))
        else:
            outcome.entries.append(failure.entry)
            outcome.to_ack.append(d)
            if retried.effects is not None:
                outcome.entries.extend(retried.effects.entries)
                outcome.outbox.extend(retried.effects.outbox)
            outcome.pos += len(outcome.entries)
        job = outcome.to_job([d], stream=stream, high=high, dlq=self._dlq)
        await self._submit(job, outcome.pos, stream, outcome.top)
        await self.committer.drain()

    def _writing(self) -> bool:
        """True while a large snapshot is being written in parts (none is due meanwhile)."""
        return self._snapshots is not None and self._snapshots.writing

    async def _submit(self, job: CommitJob, pos: int, stream: str, top: int) -> None:
        self._pos = pos
        if stream:
            self._high[stream] = top
        await self.committer.submit(job)

    def _committed(self, job: CommitJob) -> None:
        if job.batch.snapshot is not None:
            self._schedule.taken(job.batch.snapshot.pos)
        if job.batch.entity_snapshots:
            self._stats.snapshots += len(job.batch.entity_snapshots)
            self._stats.last_snapshot_pos = max(
                self._stats.last_snapshot_pos, *(s.pos for s in job.batch.entity_snapshots)
            )
            self._stats.last_snapshot_at = time.time()
        if self._entities is not None:
            self._entities.trim()  # pins released
        self._on_committed(job)

    # -- between batches ---------------------------------------------------------------------

    async def redo(self) -> None:
        """After a duplicate message id: restore, then handle the set-aside deliveries again."""
        await self.committer.drain()
        if not self.committer.conflict:
            return
        redo = self.committer.take_redo()
        await self.restore()
        self._log.info("re-checking deliveries after a duplicate message id", count=len(redo))
        await self.handle(redo, careful=True)
        await self.committer.drain()

    async def settle(self) -> None:
        """Wait until everything handed over is committed and nothing is set aside."""
        await self.committer.drain()
        while self.committer.conflict:
            await self.redo()

    async def restore(self) -> None:
        """Make the state exactly the fold of the journal again (after a failed handler):
        the whole state of a singleton; in an entity actor, only the entities holding events
        the journal does not are forgotten (they reload from it on next use)."""
        self._stats.rebuilds += 1
        if self._entities is not None:
            self._entities.forget_uncommitted()
            self._on_restored(RecoveryReport(journal_pos=self._journal.last_pos))
        else:
            self._on_restored(await restore(self._live, self._journal, self._schedule))
        self.sync_cursor()

    async def record(self, timer: Timer, effects: Effects) -> int:
        """Journal and apply the events a timer returned; how many (0 if a handler failed)."""
        try:
            await self._live.apply_recorded(effects, after=self._pos)
        except Exception as exc:  # a handler of its events: the state may be half-changed
            self._log.error("timer failed", timer=timer.method, error=repr(exc))
            await self.settle()
            await self.restore()
            return 0
        if effects.entries:
            outcome = Triage(pos=effects.entries[-1].pos, top=0, end=0)
            outcome.entries, outcome.outbox = effects.entries, effects.outbox
            job = outcome.to_job([], stream="", high=0, dlq=self._dlq)
            await self._submit(job, outcome.pos, "", 0)
        return len(effects.entries)

    async def snapshot(self) -> int:
        """Snapshot the state once everything handled is committed; its position. An entity
        actor snapshots each resident entity with unsaved events."""
        await self.settle()
        pos = self._journal.last_pos
        if self.committer.failed is not None:
            # A batch applied to the state was not committed (a refused commit, a fenced
            # owner): the state is not the journal's fold at ``pos``; nothing to save.
            return pos
        if self._entities is not None:
            await self._commit_snapshots(self._entities.unsaved())
            return pos
        if self._snapshots is not None:
            await self._snapshots.finish()  # a large one under way may be at ``pos`` already
            if self._stats.last_snapshot_pos == pos:
                return pos
        await self._schedule.take_now(
            self._journal, self._write_lock, self._live.state, pos, self._snapshots
        )
        return pos

    async def passivate(self, now: float | None = None) -> int:
        """Passivate an entity actor's idle entities (their snapshots handed to the
        committer); how many entities stay resident."""
        if self._entities is None:
            return 0
        await self._commit_snapshots(self._entities.passivate(now), wait=False)
        return len(self._entities.resident)

    async def _commit_snapshots(
        self, snapshots: list[NewEntitySnapshot], *, wait: bool = True
    ) -> None:
        """Entity snapshots in a transaction of their own, in order behind the batches."""
        if not snapshots:
            return
        outcome = Triage(pos=self._pos, top=0, end=0)
        job = outcome.to_job([], stream="", high=0, dlq=self._dlq, entity_snapshots=snapshots)
        await self.committer.submit(job)
        if wait:
            await self.committer.drain()

"""One hosted actor: recovery, then the loop mailbox -> decode -> apply -> commit -> ack.

Order of the data path, and why it keeps the invariants when the process dies between any
two steps:

1. A batch is taken from the mailbox. Redeliveries are recognised against the journal (same
   stream sequence, or same ``Nats-Msg-Id``) and will be acknowledged without being applied.
2. Each new event is decoded and applied to the in-memory state, one at a time, in order.
   Dying here loses only memory: nothing was acknowledged, JetStream redelivers.
3. The batch (events, the stream position, dead letters and their outbox rows, maybe a
   snapshot) is committed in one SQLite transaction. Dying before the commit is case 2; dying
   after it leaves committed but unacknowledged messages: the next start re-creates the
   consumer at the journal's position, and a redelivery within a run is recognised as a
   duplicate. A failing commit (disk full) is retried with backoff, acknowledging nothing.
4. Only then are the messages acknowledged (dead letters are terminated).

The in-memory state is therefore always a fold of the journal plus, at most, the events of
the uncommitted batch in hand. When a handler raises, the state may be half-changed: the
batch so far is committed, the state is rebuilt from the journal (newest snapshot + tail),
and the failing event is retried in place (the state rebuilt after each failed attempt),
then dead-lettered; later events never overtake it. While a batch is in hand, its messages
are kept alive with ``+WPI`` so that JetStream does not redeliver them meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import anyio
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client as NATS

from ._actor import ActorDefinition, Timer
from ._binding import bind_mailbox, ensure_dlq_stream, mailbox_for
from ._checkpoints import Checkpoints
from ._committer import CommitJob, Committer
from ._deadletters import dead_letter, dlq_message
from ._effects import Effects, apply_live, apply_recorded
from ._errors import (
    ActorCrashed,
    HandlerTimeout,
)
from ._events import MSG_ID_HEADER, JournalEntry
from ._journal import DeadLetter, JournalBatch, OutboxMessage, SQLiteJournal
from ._log import get_logger
from ._mailbox import ConsumerGone, Delivery, JetStreamMailbox
from ._outbox import OutboxPublisher
from ._recovery import RecoveryReport, restore_state
from ._snapshots import CODEC_NAME
from ._status import (
    ActorStats,
    ActorStatus,
    CrashSwitch,
    SimulatedCrash,
    journal_path,
)
from ._triage import Failure, triage

__all__ = ["ActorRunner"]


class ActorRunner:
    """Hosts one actor: owns its journal, mailbox and outbox publisher while :meth:`run` runs.

    :meth:`run` recovers, signals readiness, and consumes until :meth:`stop` is called (then it
    finishes the batch in hand, writes a final snapshot and returns) or an error escapes (then
    nothing more is acknowledged and the journal is closed as it stands).
    """

    def __init__(
        self,
        definition: ActorDefinition,
        nc: NATS,
        *,
        data_dir: Path,
        ack_wait: float | None = None,
        crash_switch: CrashSwitch | None = None,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        log: structlog.stdlib.BoundLogger | None = None,
        on_ready: Callable[[ActorRunner], None] | None = None,
        commit_attempts: int = 8,
        integrity_check: Literal["background", "before-start", "off"] = "background",
    ) -> None:
        self.definition = definition
        self.name = definition.name
        self._nc = nc
        self.data_dir = Path(data_dir)
        self.journal_path = journal_path(self.data_dir, self.name)
        self._ack_wait = ack_wait if ack_wait is not None else definition.ack_wait
        self._crash = crash_switch or CrashSwitch()
        self._synchronous = synchronous
        self.log = log or get_logger(actor=self.name)
        self._on_ready = on_ready
        self._commit_attempts = commit_attempts
        self._integrity_check = integrity_check
        self._verified = anyio.Event()
        self.state: Any = definition.new_state()
        self.status = ActorStatus.STARTING
        self.recovery = RecoveryReport()
        self.stats = ActorStats()
        self.ready = anyio.Event()
        self.stream: str | None = None
        self.mailbox: JetStreamMailbox | None = None
        self.outbox: OutboxPublisher | None = None
        self._journal: SQLiteJournal | None = None
        self._stopping = False
        self._wait_scope: anyio.CancelScope | None = None
        self._checkpoints = Checkpoints(definition, self.stats, self.log)
        # One transaction at a time on the journal: a batch commit, a snapshot and the outbox
        # publisher must not interleave their statements on the shared connection.
        self._write_lock = anyio.Lock()
        # Deliveries taken from the mailbox and not yet acknowledged (kept alive with +WPI).
        self._in_hand: list[Delivery] = []
        self._in_hand_since = 0.0
        self._committer: Committer | None = None
        # The processing cursor: the last position assigned and the highest stream sequence
        # handled, which run ahead of the journal by the batch being committed.
        self._pos = 0
        self._high: dict[str, int] = {}
        # Set by snapshot() from outside the loop; the loop takes it between two batches.
        self._snapshot_asked: anyio.Event | None = None
        # @every methods whose time has come; the loop calls them between batches.
        self._timers_due: list[Timer] = []
        self._timer_now: float | None = None  # the time fire_timers() asked them to see
        self._timers_fired: anyio.Event | None = None
        self._timers_recorded = 0

    # -- control -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask for a graceful stop: finish the batch in hand, snapshot, close."""
        self._stopping = True
        if self._wait_scope is not None:
            self._wait_scope.cancel()

    @property
    def journal(self) -> SQLiteJournal:
        """The open journal (only while running)."""
        if self._journal is None:
            raise ActorCrashed(f"actor {self.name!r} has no open journal", actor=self.name)
        return self._journal

    @property
    def in_hand(self) -> int:
        """How many deliveries of the batch being handled the loop still holds (read-only)."""
        return len(self._in_hand)

    @property
    def committer(self) -> Committer | None:
        """The committer while the actor consumes, else None (read-only)."""
        return self._committer

    @property
    def journal_pos(self) -> int:
        """The last journal position applied to the in-memory state."""
        return self.recovery.journal_pos

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Recover, then consume until stopped. Raises on failure (after closing everything)."""
        try:
            async with SQLiteJournal(
                self.journal_path, actor=self.name, synchronous=self._synchronous
            ) as journal:
                self._journal = journal
                if self._integrity_check == "before-start":
                    await journal.check_integrity()
                self.status = ActorStatus.RECOVERING
                await self._recover()
                mailbox = mailbox_for(self.definition, self._nc, ack_wait=self._ack_wait)
                await ensure_dlq_stream(self._nc.jetstream(), self.definition.errors, self.name)
                self.stream = await bind_mailbox(mailbox, journal, log=self.log)
                outbox = OutboxPublisher(
                    self._nc.jetstream(), journal, self._write_lock, log=self.log, crash=self._crash
                )
                try:
                    await self._serve(mailbox, outbox, task_status)
                except BaseExceptionGroup as group:
                    raise _sole(group)  # noqa: B904 - keep the leaf's own cause
            self.status = ActorStatus.STOPPED
            self.log.info("actor stopped", pos=self.journal_pos)
        except BaseException as exc:
            self.status = ActorStatus.FAILED
            if isinstance(exc, SimulatedCrash):
                self.log.warning("actor crashed (simulated)", point=exc.point)
            elif isinstance(exc, Exception):
                self.log.error("actor failed", error=repr(exc))
            raise
        finally:
            for asked in (self._snapshot_asked, self._timers_fired):
                if asked is not None:
                    asked.set()  # a caller waiting for the loop: it will not come back
            self.mailbox = None
            self._journal = None
            self._committer = None
            self._in_hand = []

    async def _serve(
        self,
        mailbox: JetStreamMailbox,
        outbox: OutboxPublisher,
        task_status: anyio.abc.TaskStatus[None],
    ) -> None:
        journal = self.journal
        committer = Committer(
            journal,
            mailbox,
            self._write_lock,
            crash=self._crash,
            stats=self.stats,
            log=self.log,
            on_committed=self._committed,
            on_conflict=self._wake,
            attempts=self._commit_attempts,
            gate=self._verified if self._integrity_check == "background" else None,
        )
        try:
            async with mailbox, anyio.create_task_group() as tg:
                self.mailbox = mailbox
                self.outbox = outbox
                self._committer = committer
                tg.start_soon(committer.run)
                tg.start_soon(outbox.run)
                tg.start_soon(self._keepalive, mailbox)
                for timer in self.definition.timers:
                    tg.start_soon(self._tick, timer)
                if self._integrity_check == "background":
                    tg.start_soon(self._verify_journal)
                outbox.notify()
                self.status = ActorStatus.RUNNING
                self.ready.set()
                if self._on_ready is not None:
                    self._on_ready(self)
                self.log.info("actor running", pos=journal.last_pos, stream=self.stream)
                task_status.started()
                await self._consume(mailbox, committer)
                self.status = ActorStatus.STOPPING
                if not committer.conflict:
                    await self._final_snapshot()
                with anyio.move_on_after(2.0, shield=True):
                    await outbox.flush()
                tg.cancel_scope.cancel()
        finally:
            committer.close()

    # -- recovery ----------------------------------------------------------------------------

    async def _recover(self) -> None:
        journal = self.journal
        self.log.info("recovering", journal=str(self.journal_path), pos=journal.last_pos)
        report = await self._restore_state(journal)
        self.recovery = report
        self.log.info(
            "recovered",
            snapshot_pos=report.snapshot_pos,
            replayed=report.replayed,
            pos=report.journal_pos,
            seconds=round(report.seconds, 4),
        )
        every = self.definition.snapshots.every
        version_bumped = any("model version" in why for _, why in report.skipped)
        if report.replayed and (version_bumped or (every is not None and report.replayed >= every)):
            await self._take_snapshot_now()

    async def _restore_state(self, journal: SQLiteJournal) -> RecoveryReport:
        self.state, report = await restore_state(self.definition, journal, log=self.log)
        self._checkpoints.restored(report.snapshot_pos)
        return report

    async def _rebuild(self) -> None:
        """Make the state exactly the fold of the journal again (after a failed handler)."""
        self.stats.rebuilds += 1
        self.recovery = await self._restore_state(self.journal)
        self._sync_cursor()

    # -- consuming ---------------------------------------------------------------------------

    def _sync_cursor(self) -> None:
        """Align the processing cursor with what the journal holds (after a drain)."""
        self._pos = self.journal.last_pos
        self._high = dict(self.journal.stream_positions)

    def _wake(self) -> None:
        if self._wait_scope is not None:
            self._wait_scope.cancel()

    async def _consume(self, mailbox: JetStreamMailbox, committer: Committer) -> None:
        backoff = 0.1
        self._sync_cursor()
        while not self._stopping:
            if committer.conflict:
                await self._redo(committer)
                continue
            if self._snapshot_asked is not None:
                await self._snapshot_between_batches(committer)
                continue
            if self._timers_due:
                await self._fire_timers(committer)
                continue
            with anyio.CancelScope() as scope:
                self._wait_scope = scope
                try:
                    batch = await mailbox.next_batch()
                except ConsumerGone as exc:
                    # Re-create rather than spin on 503s: wait, then bind again (which also
                    # notices a stream that was deleted and re-created meanwhile).
                    self.log.warning("consumer gone, re-creating", reason=str(exc), backoff=backoff)
                    await committer.drain()
                    await anyio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    await bind_mailbox(mailbox, self.journal, log=self.log)
                    self._sync_cursor()
                    continue
            self._wait_scope = None
            if scope.cancelled_caught:
                continue  # stopping, or woken to redo after a conflict: the loop head decides
            backoff = 0.1
            await self._handle(batch, committer, careful=False)
        await committer.drain()

    async def _handle(self, batch: list[Delivery], committer: Committer, *, careful: bool) -> None:
        self._in_hand = batch
        self._in_hand_since = time.monotonic()
        start = 0
        while start < len(batch):
            if committer.conflict:
                committer.defer(batch[start:])
                break
            start = await self._process(batch, start, committer, careful=careful)
        self._in_hand = []

    async def _redo(self, committer: Committer) -> None:
        """After a duplicate message id: rebuild, then handle the set-aside deliveries again."""
        await committer.drain()
        redo = committer.take_redo()
        await self._rebuild()
        self.log.info("re-checking deliveries after a duplicate message id", count=len(redo))
        await self._handle(redo, committer, careful=True)
        await committer.drain()

    async def _verify_journal(self) -> None:
        """SQLite's quick_check beside the running actor: commits wait for it to pass, and a
        failure halts the actor (fatal) with nothing acknowledged."""
        started = time.monotonic()
        await self.journal.check_integrity()
        self._verified.set()
        self.log.info("journal integrity verified", seconds=round(time.monotonic() - started, 3))

    async def _keepalive(self, mailbox: JetStreamMailbox) -> None:
        """Send +WPI for messages in hand that are taking long (slow handler, retries, disk full)."""
        interval = max(self._ack_wait / 3, 0.05)
        while True:
            await anyio.sleep(interval)
            committer = self._committer
            since = [self._in_hand_since] if self._in_hand else []
            if committer is not None and (oldest := committer.oldest()) is not None:
                since.append(oldest)
            if not since or time.monotonic() - min(since) < interval:
                continue
            pending = [*(committer.unacked() if committer else []), *self._in_hand]
            try:
                for d in [*pending, *mailbox.buffered()]:
                    await mailbox.in_progress(d)
            except (nats.errors.Error, OSError):
                pass

    async def _process(
        self, deliveries: list[Delivery], start: int, committer: Committer, *, careful: bool
    ) -> int:
        """Handle ``deliveries[start:]`` up to the first failing handler; return where it stopped.

        Events are applied to the state and handed to the committer; the journal commit of
        this batch overlaps with handling the next. A redelivery (a stream sequence this
        runner has already handled) drains the committer and is looked up in the journal,
        and so are message ids when ``careful``; otherwise the journal's unique index catches
        a duplicate id at commit and the committer sets the batch aside to be redone.
        """
        journal = self.journal
        definition = self.definition
        stream = deliveries[start].stream
        if not careful and any(
            d.stream_seq <= self._high.get(stream, 0) for d in deliveries[start:]
        ):
            await committer.drain()
            if committer.conflict:
                committer.defer(deliveries[start:])
                return len(deliveries)
            self._sync_cursor()
            careful = True
        high = self._high.get(stream, 0)
        known_seqs: set[int] = set()
        known_ids: set[str] = set()
        if careful:
            maybe_seen = [d.stream_seq for d in deliveries[start:] if d.stream_seq <= high]
            ids = [
                mid
                for d in deliveries[start:]
                if d.headers and (mid := d.headers.get(MSG_ID_HEADER))
            ]
            if maybe_seen or ids:
                known_seqs, known_ids = await journal.known(stream, maybe_seen, ids)

        sorted_ = await triage(
            deliveries,
            start,
            high=high,
            pos=self._pos,
            known_seqs=known_seqs,
            known_ids=known_ids,
            policy=definition.errors,
            codec=definition.codec,
            apply=self._apply_live,
        )
        entries, pos, top, failure = sorted_.entries, sorted_.pos, sorted_.top, sorted_.failure
        to_ack, dead, end = sorted_.to_ack, sorted_.dead, sorted_.end
        duplicates, ignored = sorted_.duplicates, sorted_.ignored

        due = entries and failure is None
        snapshot = self._checkpoints.due(pos, self.state) if due else None
        job = self._job(
            deliveries[start:end],
            entries,
            to_ack,
            dead,
            stream,
            top,
            high,
            pos,
            snapshot,
            published=sorted_.outbox,
        )
        self._pos = pos
        self._high[stream] = top
        self.stats.duplicates += duplicates
        self.stats.ignored += ignored
        await committer.submit(job)
        if failure is None:
            return len(deliveries)
        await committer.drain()
        if committer.conflict:
            committer.defer(deliveries[failure.index :])
            return len(deliveries)
        await self._rebuild()
        if not await self._retry(failure, stream, committer):
            return len(deliveries)  # stopping: the message stays unacknowledged for next time
        return failure.index + 1

    def _job(
        self,
        deliveries: list[Delivery],
        entries: list[JournalEntry],
        to_ack: list[Delivery],
        dead: list[tuple[Delivery, DeadLetter]],
        stream: str,
        top: int,
        high: int,
        pos: int,
        snapshot: bytes | None,
        *,
        published: list[OutboxMessage] | None = None,
    ) -> CommitJob:
        definition = self.definition
        outbox = list(published or ())
        outbox.extend(dlq_message(self.name, definition.errors, dl) for _, dl in dead)
        batch = JournalBatch(
            entries=entries,
            positions={stream: top} if top > high else {},
            dead_letters=[dl for _, dl in dead],
            outbox=outbox,
            snapshot_state=snapshot,
            snapshot_pos=pos,
            snapshot_version=definition.version,
            snapshot_codec=CODEC_NAME,
            keep_snapshots=definition.snapshots.keep,
        )
        return CommitJob(
            batch=batch,
            deliveries=deliveries,
            to_ack=to_ack,
            dead=dead,
            snapshot_pos=pos if snapshot is not None else None,
        )

    def _committed(self, job: CommitJob) -> None:
        self.recovery.journal_pos = self.journal.last_pos
        if job.snapshot_pos is not None:
            self._checkpoints.taken(job.snapshot_pos)
        if job.batch.outbox and self.outbox is not None:
            self.outbox.notify()

    async def _apply_live(self, event: object, entry: JournalEntry) -> Effects | None:
        return await apply_live(
            self.definition,
            self.state,
            event,
            entry,
            log=self.log,
            max_payload=self._nc.max_payload,
        )

    async def _retry(self, failure: Failure, stream: str, committer: Committer) -> bool:
        """Retry a failed handler in place; commit it or its dead letter. False if stopping."""
        policy = self.definition.errors
        error = failure.error
        d = failure.delivery
        for attempt in range(1, policy.retries + 1):
            delay = policy.delay(attempt)
            self.log.warning(
                "handler failed; retrying",
                error=repr(error),
                subject=d.subject,
                stream_seq=d.stream_seq,
                attempt=attempt,
                of=policy.retries,
                retry_in=round(delay, 3),
            )
            await anyio.sleep(delay)
            if self._stopping:
                return False
            self.stats.retries += 1
            entry = failure.entry
            try:
                effects = await self._apply_live(failure.event, entry)
            except Exception as exc:
                error = exc
                await self._rebuild()
                continue
            await self._submit_alone(committer, d, stream, entry=entry, effects=effects)
            return True
        reason = "handler-timeout" if isinstance(error, HandlerTimeout) else "handler-failed"
        letter = dead_letter(d, failure.entry.type, reason, error, time.time())
        await self._submit_alone(committer, d, stream, dead=[(d, letter)])
        return True

    async def _submit_alone(
        self,
        committer: Committer,
        d: Delivery,
        stream: str,
        *,
        entry: JournalEntry | None = None,
        effects: Effects | None = None,
        dead: list[tuple[Delivery, DeadLetter]] | None = None,
    ) -> None:
        high = self._high.get(stream, 0)
        top = max(high, d.stream_seq)
        entries = [] if entry is None else [entry]
        if effects is not None:
            entries.extend(effects.entries)
        pos = self._pos + len(entries)
        job = self._job(
            [d],
            entries,
            [d] if entries else [],
            dead or [],
            stream,
            top,
            high,
            pos,
            None,
            published=effects.outbox if effects is not None else None,
        )
        self._pos = pos
        self._high[stream] = top
        await committer.submit(job)
        await committer.drain()

    # -- timers ------------------------------------------------------------------------------

    async def _tick(self, timer: Timer) -> None:
        while True:
            await anyio.sleep(timer.interval)
            if timer not in self._timers_due:
                self._timers_due.append(timer)
                self._wake()

    async def fire_timers(self, now: float | None = None) -> int:
        """Call every ``@every`` method now, as if its time had come, giving it ``now`` (by
        default the clock); returns how many events they recorded, once those are committed.

        For tests: a timer can be driven without waiting for it, at the time the test says.
        """
        if self.status is not ActorStatus.RUNNING or self._committer is None:
            raise ActorCrashed(
                f"actor {self.name!r} is {self.status.value}, not running: no timers",
                actor=self.name,
            )
        self._timer_now = now
        self._timers_due = list(self.definition.timers)
        fired = self._timers_fired = anyio.Event()
        self._wake()
        await fired.wait()
        if self._committer is None:
            raise ActorCrashed(f"actor {self.name!r} stopped before its timers", actor=self.name)
        await self._committer.drain()
        return self._timers_recorded

    async def _fire_timers(self, committer: Committer) -> None:
        """Call the due ``@every`` methods; journal and apply the events they return."""
        due, self._timers_due = self._timers_due, []
        now, self._timer_now = self._timer_now, None
        fired, self._timers_fired = self._timers_fired, None
        recorded = 0
        try:
            for timer in due:
                recorded += await self._fire(timer, committer, time.time() if now is None else now)
        finally:
            self._timers_recorded = recorded
            if fired is not None:
                fired.set()

    async def _fire(self, timer: Timer, committer: Committer, now: float) -> int:
        """Call one timer; journal and apply the events it returns; how many it recorded."""
        effects = Effects(self.definition, max_payload=self._nc.max_payload, now=now)
        try:
            result = getattr(self.state, timer.method)(effects.now)
            if timer.is_async:
                result = await result
            for event in result if isinstance(result, list | tuple) else [result]:
                if event is not None:
                    effects.record(event)
        except Exception as exc:  # the timer itself: it only read the state
            self.log.error("timer failed", timer=timer.method, error=repr(exc))
            return 0
        try:
            await apply_recorded(
                self.definition, self.state, effects, after=self._pos, log=self.log
            )
        except Exception as exc:  # a handler of its events: maybe half-applied
            self.log.error("timer failed", timer=timer.method, error=repr(exc))
            await committer.drain()
            if not committer.conflict:
                await self._rebuild()
            return 0
        if effects.entries:
            pos = effects.entries[-1].pos
            self._pos = pos
            job = self._job(
                [], effects.entries, [], [], "", 0, 0, pos, None, published=effects.outbox
            )
            await committer.submit(job)
        return len(effects.entries)

    # -- snapshots ---------------------------------------------------------------------------

    async def _take_snapshot_now(self) -> None:
        await self._checkpoints.take_now(
            self.journal, self._write_lock, self.state, self.recovery.journal_pos
        )

    async def _final_snapshot(self) -> None:
        if self.recovery.journal_pos > self.stats.last_snapshot_pos:
            with anyio.CancelScope(shield=True):
                await self._take_snapshot_now()

    async def snapshot(self) -> int:
        """Take a snapshot now; returns its position.

        While the actor consumes, its loop takes the snapshot between two batches, once the
        batch in hand is committed: the state is then exactly the fold of the journal at the
        snapshot's position, even under load. Raises :class:`ActorCrashed` if the actor is
        not running (or stops before it could take it).
        """
        if self.status is not ActorStatus.RUNNING:
            raise ActorCrashed(
                f"actor {self.name!r} is {self.status.value}, not running: no snapshot",
                actor=self.name,
            )
        asked = self._snapshot_asked or anyio.Event()
        self._snapshot_asked = asked
        self._wake()
        await asked.wait()
        if self._journal is None:
            raise ActorCrashed(f"actor {self.name!r} stopped before its snapshot", actor=self.name)
        return self.stats.last_snapshot_pos

    async def _snapshot_between_batches(self, committer: Committer) -> None:
        await committer.drain()
        if committer.conflict:
            return  # the loop redoes the set-aside batch first, then comes back here
        await self._take_snapshot_now()
        asked, self._snapshot_asked = self._snapshot_asked, None
        if asked is not None:
            asked.set()


def _sole(group: BaseExceptionGroup) -> BaseException:
    """The one real error inside a task group's exception group (else the group itself)."""
    leaves = [e for e in group.exceptions if not isinstance(e, anyio.get_cancelled_exc_class())]
    if len(leaves) == 1:
        leaf = leaves[0]
        return _sole(leaf) if isinstance(leaf, BaseExceptionGroup) else leaf
    return group

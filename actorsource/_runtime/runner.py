"""One hosted actor: its life cycle and a read-only view of it.

:meth:`ActorRunner.run` opens the journal, recovers the state (newest usable snapshot plus
the later entries), binds the durable consumer after the journal's position, and starts
the tasks that serve the actor: the mailbox doorbell, the committer, the outbox publisher, the
keep-alive, the timers and the integrity check. Then :class:`~.loop.ActorLoop` does the
requests of its control channel (:mod:`.control`), one at a time: batches go down the data
path (:mod:`.pipeline`); snapshots, timers, redos and a lost consumer are done between two
batches. :meth:`stop` ends the loop after the request in hand; a final snapshot is written.

An entity actor (:class:`~.entities.Entities`) recovers nothing eagerly: its entities load
on demand, so its restart costs the same however many entities and events it holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio
import anyio.abc
import structlog
from nats.aio.client import Client as NATS

from .._errors import ActorNotRunning, ActorsourceError, sole_error
from .._journal.journal import SQLiteJournal
from .._journal.recovery import RecoveryReport
from .._journal.storage import ENTITY_CACHE_KIB, journal_path
from .._log import get_logger
from .._mailbox.mailbox import Delivery, JetStreamMailbox
from .._model.actor import ActorDefinition
from .._model.dispatch import LiveState
from .binding import bind_mailbox, ensure_dlq_stream, mailbox_for
from .commit_guard import CommitGuard
from .committer import CommitJob, Committer
from .control import (
    Control,
    FireTimers,
    MailboxDoorbell,
    Passivate,
    Redo,
    Stop,
    TakeSnapshot,
)
from .entities import Entities, PassivationTicks
from .keepalive import keep_alive
from .loop import ActorLoop
from .outbox import OutboxPublisher
from .pipeline import Pipeline, recover
from .queries import QueryDesk
from .snapshot_schedule import SnapshotSchedule
from .snapshot_writer import SnapshotWriter
from .status import ActorStats, ActorStatus, CrashSwitch, SimulatedCrash
from .timers import TimerTicks

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

__all__ = ["ActorRunner"]


class ActorRunner:
    """Hosts one actor: owns its journal, mailbox and outbox publisher while :meth:`run` runs.

    :meth:`run` recovers, signals readiness, and consumes until :meth:`stop` is called (then it
    finishes the request in hand, writes a final snapshot and returns) or an error escapes
    (then nothing more is acknowledged and the journal is closed as it stands).
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
        check_queries: bool = False,
        on_query_violation: Callable[[str], None] | None = None,
        guard: CommitGuard | None = None,
        replicas: int = 1,
        tracing: bool | TracerProvider = False,
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
        #: In cluster mode: the hooks that make this runner a fenced owner (see
        #: :mod:`.commit_guard`); None: the journal is this process's alone.
        self.guard = guard
        self._replicas = replicas
        self.status = ActorStatus.STARTING
        self.recovery = RecoveryReport()
        self.stats = ActorStats()
        self.ready = anyio.Event()
        self.stream: str | None = None
        self.mailbox: JetStreamMailbox | None = None
        self.outbox: OutboxPublisher | None = None
        self._live = LiveState(definition, self.log, max_payload=nc.max_payload)
        self._schedule = SnapshotSchedule(definition, self.stats, self.log)
        self._control = Control(self.name)
        #: Where its queries arrive (answered by its loop; ``check_queries``: read-only checked).
        self.queries = QueryDesk(
            definition,
            self._control,
            log=self.log,
            check_read_only=check_queries,
            on_violation=on_query_violation,
        )
        self._journal: SQLiteJournal | None = None
        self._pipeline: Pipeline | None = None
        self._entities: Entities | None = None
        self._stopping = False
        # One transaction at a time on the journal: a batch commit, a snapshot and the outbox
        # publisher must not interleave their statements on the shared connection.
        self._write_lock = anyio.Lock()
        # Traces (the otel extra): opentelemetry is imported only when asked for. True: the
        # global tracer provider; a provider: that one.
        self._tracing = None
        if tracing is not False:
            from .tracing import Tracing

            self._tracing = Tracing(self.name, None if tracing is True else tracing)

    # -- the view ----------------------------------------------------------------------------

    @property
    def state(self) -> Any:
        """The actor's live state (its class instance)."""
        if self.definition.entity is not None:
            raise ActorsourceError(
                f"{self.name!r} is an entity actor: it has one state per key, see entity(key)"
            )
        return self._live.state

    @property
    def entities(self) -> Entities:
        """The resident entities of an entity actor (only while running)."""
        if self._entities is None:
            raise ActorNotRunning(
                f"actor {self.name!r} has no resident entities (not running, or a singleton)",
                actor=self.name,
            )
        return self._entities

    @property
    def journal(self) -> SQLiteJournal:
        """The open journal (only while running)."""
        if self._journal is None:
            raise ActorNotRunning(f"actor {self.name!r} has no open journal", actor=self.name)
        return self._journal

    @property
    def journal_pos(self) -> int:
        """The last journal position applied to the in-memory state."""
        return self.recovery.journal_pos

    @property
    def committer(self) -> Committer | None:
        """The committer while the actor consumes, else None (read-only)."""
        return self._pipeline.committer if self._pipeline is not None else None

    @property
    def in_hand(self) -> int:
        """How many deliveries of the batch being handled the loop still holds."""
        return len(self._pipeline.in_hand) if self._pipeline is not None else 0

    def taken(self) -> list[Delivery]:
        """Deliveries received and not yet handled (waiting in the mailbox)."""
        return self.mailbox.buffered() if self.mailbox is not None else []

    # -- control -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask for a graceful stop: finish the request in hand, snapshot, close."""
        self._stopping = True
        self._control.ask(Stop())

    async def snapshot(self) -> int:
        """Take a snapshot now, between two batches, once what was handled is committed (the
        state is then exactly the journal's fold there); returns its position. Raises
        :class:`ActorNotRunning` if the actor is not running or stops before it could."""
        self._running_or_raise("no snapshot")
        request = self._control.ask(TakeSnapshot())
        await request.wait()
        return request.pos

    async def fire_timers(self, now: float | None = None) -> int:
        """Call every ``@every`` method now, as if its time had come, giving it ``now`` (by
        default the clock); returns how many events they recorded, once those are committed.

        For tests: a timer can be driven without waiting for it, at the time the test says.
        """
        self._running_or_raise("no timers")
        if self.definition.entity is not None:
            # An entity actor has no timers: what time does to it is passivation.
            await self._control.ask(Passivate(now=now)).wait()
            if (committer := self.committer) is not None:
                await committer.drain()
            return 0
        request = self._control.ask(FireTimers(timers=self.definition.timers, now=now))
        await request.wait()
        if (committer := self.committer) is not None:
            await committer.drain()
        return request.recorded

    def _running_or_raise(self, what: str) -> None:
        if self.status is not ActorStatus.RUNNING:
            raise ActorNotRunning(
                f"actor {self.name!r} is {self.status.value}, not running: {what}",
                actor=self.name,
            )

    # -- life cycle --------------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Recover, then consume until stopped. Raises on failure (after closing everything)."""
        try:
            if self.guard is not None:
                self.status = ActorStatus.RECOVERING
                await self.guard.restore(self.journal_path)
            async with SQLiteJournal(
                self.journal_path,
                actor=self.name,
                synchronous=self._synchronous,
                cache_kib=ENTITY_CACHE_KIB if self.definition.entity is not None else None,
                entities=self.definition.entity is not None,
            ) as journal:
                self._journal = journal
                writer = self._schedule.writer(journal, self._write_lock, crash=self._crash)
                if self._integrity_check == "before-start":
                    await journal.check_integrity()
                self.status = ActorStatus.RECOVERING
                if self.guard is not None:
                    imported = await self.guard.import_tail(journal)
                    if imported:
                        self.log.info("imported the journal's replicated tail", batches=imported)
                if self.definition.entity is not None:
                    # Nothing to replay: entities load on demand.
                    self._entities = Entities(
                        self.definition, journal, self.log, max_payload=self._nc.max_payload
                    )
                    self.recovery = RecoveryReport(journal_pos=journal.last_pos)
                else:
                    self.recovery = await recover(
                        self._live, journal, self._schedule, self._write_lock, writer
                    )
                mailbox = mailbox_for(
                    self.definition,
                    self._nc,
                    ack_wait=self._ack_wait,
                    durable=self.guard.consumer if self.guard is not None else None,
                    replicas=self._replicas,
                )
                await ensure_dlq_stream(
                    self._nc.jetstream(),
                    self.definition.errors,
                    self.name,
                    replicas=self._replicas,
                )
                self.stream = await bind_mailbox(mailbox, journal, log=self.log)
                if self.guard is not None:
                    await self.guard.consuming(self.stream)
                try:
                    await self._serve(journal, mailbox, writer, task_status)
                except BaseExceptionGroup as group:
                    raise sole_error(group, anyio.get_cancelled_exc_class())  # noqa: B904
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
            self._control.close()  # whoever waits for a request: it will not be done
            if self._entities is not None:
                self._entities.close()
            self.mailbox = None
            self._journal = None
            self._pipeline = None

    async def _serve(
        self,
        journal: SQLiteJournal,
        mailbox: JetStreamMailbox,
        writer: SnapshotWriter,
        task_status: anyio.abc.TaskStatus[None],
    ) -> None:
        js = self._nc.jetstream()
        outbox = OutboxPublisher(js, journal, self._write_lock, log=self.log, crash=self._crash)
        verified = anyio.Event()
        pipeline = Pipeline(
            self._live,
            journal,
            mailbox,
            self._schedule,
            write_lock=self._write_lock,
            crash=self._crash,
            stats=self.stats,
            log=self.log,
            stopping=lambda: self._stopping,
            on_committed=self._committed,
            on_conflict=self._redo_asked,
            on_restored=self._restored,
            commit_attempts=self._commit_attempts,
            gate=verified if self._integrity_check == "background" else None,
            entities=self._entities,
            snapshots=writer,
            guard=self.guard,
            tracing=self._tracing,
        )
        doorbell = MailboxDoorbell(mailbox, self._control)
        try:
            async with mailbox, anyio.create_task_group() as tg:
                self.mailbox, self.outbox = mailbox, outbox
                self._pipeline = pipeline
                tg.start_soon(pipeline.committer.run)
                tg.start_soon(outbox.run)
                tg.start_soon(partial(keep_alive, mailbox, pipeline, ack_wait=self._ack_wait))
                tg.start_soon(TimerTicks(self.definition, self._control).run)
                if self.definition.entity is not None:
                    tg.start_soon(PassivationTicks(self.definition.entity, self._control).run)
                if self._integrity_check == "background":
                    tg.start_soon(self._verify_journal, journal, verified, pipeline.committer)
                outbox.notify()
                self.status = ActorStatus.RUNNING
                self.ready.set()
                if self._on_ready is not None:
                    self._on_ready(self)
                self.log.info("actor running", pos=journal.last_pos, stream=self.stream)
                task_status.started()
                tg.start_soon(doorbell.watch)
                await ActorLoop(
                    self._control,
                    pipeline,
                    doorbell,
                    self._live,
                    mailbox=mailbox,
                    journal=journal,
                    stopping=lambda: self._stopping,
                    log=self.log,
                    queries=self.queries,
                    entities=self._entities,
                ).run()
                self.status = ActorStatus.STOPPING
                await pipeline.committer.drain()
                unsaved = self.journal_pos > self.stats.last_snapshot_pos or bool(
                    self._entities and self._entities.resident
                )
                committer = pipeline.committer
                if unsaved and not committer.conflict and committer.failed is None:
                    with anyio.CancelScope(shield=True):
                        await pipeline.snapshot()
                with anyio.move_on_after(2.0, shield=True):
                    await outbox.flush()
                tg.cancel_scope.cancel()
        finally:
            pipeline.committer.close()

    def _committed(self, job: CommitJob) -> None:
        self.recovery.journal_pos = self.journal.last_pos
        self.queries.committed()
        if job.batch.outbox and self.outbox is not None:
            self.outbox.notify()

    def _redo_asked(self) -> None:
        self._control.ask(Redo())

    def _restored(self, report: RecoveryReport) -> None:
        self.recovery = report

    async def _verify_journal(
        self, journal: SQLiteJournal, verified: anyio.Event, committer: Committer
    ) -> None:
        """SQLite's quick_check beside the running actor: commits go on, acknowledgements
        wait for it to pass, and a failure halts the actor (fatal) with nothing acknowledged
        since the start."""
        started = time.monotonic()
        await journal.check_integrity()
        verified.set()
        committer.opened()
        self.log.info("journal integrity verified", seconds=round(time.monotonic() - started, 3))

"""One hosted actor: recovery, then the loop mailbox -> decode -> apply -> commit -> ack.

Order of the data path, and why it keeps the invariants when the process dies between any
two steps:

1. A batch is taken from the mailbox. Redeliveries are recognised against the journal (same
   stream sequence, or same ``Nats-Msg-Id``) and will be acknowledged without being applied.
2. Each new event is decoded and applied to the in-memory state, one at a time, in order.
   Dying here loses only memory: nothing was acknowledged, JetStream redelivers.
3. The batch (events, the stream position, dead letters, maybe a snapshot) is committed in
   one SQLite transaction. Dying before the commit is case 2; dying after it leaves committed
   but unacknowledged messages, which are redelivered and recognised as duplicates.
4. Only then are the messages acknowledged.

The in-memory state is therefore always a fold of the journal plus, at most, the events of
the uncommitted batch in hand. When a handler raises, the state may be half-changed: the
batch so far is committed with the failing message as a dead letter, and the state is
rebuilt from the journal (newest snapshot + tail), so it is again exactly the fold.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anyio
import structlog
from nats.aio.client import Client as NATS

from ._actor import ActorDefinition, apply_event
from ._errors import ActorCrashed, EventCodecError, SnapshotError, UnknownEventTypeError
from ._events import EVENT_TYPE_HEADER, MSG_ID_HEADER, JournalEntry
from ._journal import DeadLetter, JournalBatch, SQLiteJournal
from ._log import get_logger
from ._mailbox import ConsumerGone, Delivery, JetStreamMailbox
from ._recovery import RecoveryReport, restore_state
from ._snapshots import CODEC_NAME

__all__ = [
    "CRASH_POINTS",
    "ActorRunner",
    "ActorStats",
    "ActorStatus",
    "CrashSwitch",
    "RecoveryReport",
    "SimulatedCrash",
    "journal_path",
]

CRASH_POINTS = ("before_commit", "after_commit", "after_ack")
CrashPoint = Literal["before_commit", "after_commit", "after_ack"]


def journal_path(data_dir: Path, actor: str) -> Path:
    """Where an actor's journal lives under a data directory."""
    return data_dir / f"{actor}.journal.sqlite"


class ActorStatus(enum.StrEnum):
    """The life cycle of a hosted actor."""

    STARTING = "starting"
    RECOVERING = "recovering"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


class SimulatedCrash(Exception):
    """Raised at an armed crash point: the actor stops at once, acknowledging nothing more."""

    def __init__(self, point: str) -> None:
        super().__init__(f"simulated crash at {point}")
        self.point = point


class CrashSwitch:
    """Arms a named crash point in a runner (used by the test harness)."""

    def __init__(self) -> None:
        self.armed: str | None = None

    def arm(self, point: CrashPoint) -> None:
        """Make the runner crash the next time it reaches ``point``."""
        if point not in CRASH_POINTS:
            raise ValueError(f"unknown crash point {point!r}; choose one of {CRASH_POINTS}")
        self.armed = point

    def check(self, point: str) -> None:
        """Raise SimulatedCrash if ``point`` is armed (once)."""
        if self.armed == point:
            self.armed = None
            raise SimulatedCrash(point)


@dataclass
class ActorStats:
    """Counters of a running actor (since its process started)."""

    applied: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    batches: int = 0
    snapshots: int = 0
    rebuilds: int = 0
    last_snapshot_pos: int = 0
    last_snapshot_at: float = 0.0


class ActorRunner:
    """Hosts one actor: owns its journal and mailbox while :meth:`run` runs.

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
        self.state: Any = definition.new_state()
        self.status = ActorStatus.STARTING
        self.recovery = RecoveryReport()
        self.stats = ActorStats()
        self.ready = anyio.Event()
        self.stream: str | None = None
        self.mailbox: JetStreamMailbox | None = None
        self._journal: SQLiteJournal | None = None
        self._stopping = False
        self._wait_scope: anyio.CancelScope | None = None
        self._snapshot_clock = time.monotonic()
        # One transaction at a time on the journal: a batch commit and an on-demand snapshot
        # must not interleave their BEGIN/COMMIT on the shared connection.
        self._write_lock = anyio.Lock()

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

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Recover, then consume until stopped. Raises on failure (after closing everything)."""
        try:
            async with SQLiteJournal(
                self.journal_path, actor=self.name, synchronous=self._synchronous
            ) as journal:
                self._journal = journal
                self.status = ActorStatus.RECOVERING
                await self._recover()
                mailbox = JetStreamMailbox(
                    self._nc,
                    durable=self.name,
                    subjects=self.definition.subjects,
                    stream=self.definition.stream,
                    default_stream=self.name.upper().replace("-", "_"),
                    ack_wait=self._ack_wait,
                    max_batch=self.definition.max_batch,
                    max_ack_pending=self.definition.max_ack_pending,
                )
                stream = await mailbox.resolve_stream()
                self.stream = await mailbox.ensure(self._start_seq(stream))
                async with mailbox:
                    self.mailbox = mailbox
                    self.status = ActorStatus.RUNNING
                    self.ready.set()
                    if self._on_ready is not None:
                        self._on_ready(self)
                    self.log.info("actor running", pos=journal.last_pos, stream=self.stream)
                    task_status.started()
                    await self._consume(mailbox)
                    self.status = ActorStatus.STOPPING
                    await self._final_snapshot()
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
            self.mailbox = None
            self._journal = None

    def _start_seq(self, stream: str) -> int:
        """The first stream sequence the journal has not seen (every one below it is handled)."""
        return self.journal.stream_positions.get(stream, 0) + 1

    @property
    def journal_pos(self) -> int:
        """The last journal position applied to the in-memory state."""
        return self.recovery.journal_pos

    # -- recovery ----------------------------------------------------------------------------

    async def _recover(self) -> None:
        started = time.monotonic()
        journal = self.journal
        self.log.info("recovering", journal=str(self.journal_path), pos=journal.last_pos)
        report = await self._restore_state(journal)
        report.seconds = time.monotonic() - started
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
        self.stats.last_snapshot_pos = report.snapshot_pos or 0
        self._snapshot_clock = time.monotonic()
        return report

    # -- applying ----------------------------------------------------------------------------

    async def _apply(self, event: object, entry: JournalEntry, *, replaying: bool) -> None:
        await apply_event(
            self.definition, self.state, event, entry, replaying=replaying, log=self.log
        )

    # -- consuming ---------------------------------------------------------------------------

    async def _consume(self, mailbox: JetStreamMailbox) -> None:
        backoff = 0.1
        while not self._stopping:
            with anyio.CancelScope() as scope:
                self._wait_scope = scope
                try:
                    batch = await mailbox.next_batch()
                except ConsumerGone as exc:
                    # Re-create rather than spin on 503s: wait, then set the consumer up again.
                    self.log.warning("consumer gone, re-creating", reason=str(exc), backoff=backoff)
                    await anyio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    await mailbox.ensure(self._start_seq(mailbox.resolved_stream))
                    continue
            self._wait_scope = None
            if scope.cancelled_caught:
                break
            backoff = 0.1
            start = 0
            while start < len(batch):
                async with self._write_lock:
                    start = await self._process(batch, start)

    async def _process(self, deliveries: list[Delivery], start: int) -> int:
        """Process ``deliveries[start:]`` up to the first failing handler; return where it stopped."""
        journal = self.journal
        mailbox = self.mailbox
        assert mailbox is not None
        definition = self.definition
        codec = definition.codec
        stream = deliveries[start].stream
        high = journal.stream_positions.get(stream, 0)
        maybe_seen = [d.stream_seq for d in deliveries[start:] if d.stream_seq <= high]
        ids = [
            mid for d in deliveries[start:] if d.headers and (mid := d.headers.get(MSG_ID_HEADER))
        ]
        known_seqs: set[int] = set()
        known_ids: set[str] = set()
        if maybe_seen or ids:
            known_seqs, known_ids = await journal.known(stream, maybe_seen, ids)

        entries: list[JournalEntry] = []
        to_ack: list[Delivery] = []
        dead: list[tuple[Delivery, DeadLetter]] = []
        seen_seqs: set[int] = set()
        top = high
        pos = journal.last_pos
        duplicates = 0
        failed = False
        end = len(deliveries)
        now = time.time()
        for index in range(start, len(deliveries)):
            d = deliveries[index]
            seq = d.stream_seq
            if seq > top:
                top = seq
            headers = d.headers or {}
            msg_id = headers.get(MSG_ID_HEADER)
            if (
                seq in known_seqs
                or seq in seen_seqs
                or (msg_id is not None and msg_id in known_ids)
            ):
                duplicates += 1
                to_ack.append(d)
                continue
            seen_seqs.add(seq)
            type_name = headers.get(EVENT_TYPE_HEADER)
            try:
                if type_name is None:
                    raise EventCodecError(f"message has no {EVENT_TYPE_HEADER} header")
                event = codec.decode(type_name, d.data)
            except EventCodecError as exc:
                reason = "unknown-type" if isinstance(exc, UnknownEventTypeError) else "undecodable"
                dead.append((d, self._dead_letter(d, type_name, reason, exc, now)))
                continue
            entry = JournalEntry(
                pos=pos + 1,
                subject=d.subject,
                type=type_name,
                payload=d.data,
                received_at=now,
                stream=d.stream,
                stream_seq=seq,
                msg_id=msg_id,
                headers=headers,
            )
            try:
                await self._apply(event, entry, replaying=False)
            except Exception as exc:
                dead.append((d, self._dead_letter(d, type_name, "handler-failed", exc, now)))
                failed = True
                end = index + 1
                break
            pos += 1
            entries.append(entry)
            to_ack.append(d)
            if msg_id is not None:
                known_ids.add(msg_id)

        snapshot: bytes | None = None
        if not failed and entries:
            snapshot = self._maybe_snapshot(pos)
        self._crash.check("before_commit")
        await journal.append(
            JournalBatch(
                entries=entries,
                positions={stream: top} if top > high else {},
                dead_letters=[dl for _, dl in dead],
                snapshot_state=snapshot,
                snapshot_pos=pos,
                snapshot_version=definition.version,
                snapshot_codec=CODEC_NAME,
                keep_snapshots=definition.snapshots.keep,
            )
        )
        self.recovery.journal_pos = journal.last_pos
        if snapshot is not None:
            self._snapshot_taken(pos)
        self._crash.check("after_commit")
        await mailbox.ack(to_ack)
        for d, dl in dead:
            await mailbox.term(d, dl.reason)
        self._crash.check("after_ack")

        self.stats.applied += len(entries)
        self.stats.duplicates += duplicates
        self.stats.dead_letters += len(dead)
        self.stats.batches += 1
        for d, dl in dead:
            self.log.warning(
                "dead letter",
                reason=dl.reason,
                error=dl.error,
                subject=d.subject,
                stream_seq=d.stream_seq,
                type=dl.type,
            )
        if failed:
            # The failing handler may have changed the state half-way: rebuild it from the
            # journal so that it is exactly the fold again before anything else is applied.
            self.stats.rebuilds += 1
            self.recovery = await self._restore_state(journal)
        return end

    def _dead_letter(
        self, d: Delivery, type_name: str | None, reason: str, exc: BaseException, now: float
    ) -> DeadLetter:
        return DeadLetter(
            subject=d.subject,
            payload=d.data,
            reason=reason,
            error=f"{type(exc).__name__}: {exc}",
            type=type_name,
            stream=d.stream,
            stream_seq=d.stream_seq,
            msg_id=(d.headers or {}).get(MSG_ID_HEADER),
            headers=d.headers,
            at=now,
        )

    # -- snapshots ---------------------------------------------------------------------------

    def _maybe_snapshot(self, pos: int) -> bytes | None:
        policy = self.definition.snapshots
        if not policy.due(pos - self.stats.last_snapshot_pos, self._snapshot_clock):
            return None
        return self._encode_state()

    def _encode_state(self) -> bytes | None:
        try:
            return self.definition.state_codec.encode(self.state)
        except SnapshotError as exc:
            # A snapshot is only a cache: keep consuming, but say loudly why there is none.
            self.log.error("snapshot failed", error=str(exc))
            self._snapshot_clock = time.monotonic()
            self.stats.last_snapshot_pos = self.journal.last_pos
            return None

    def _snapshot_taken(self, pos: int) -> None:
        self.stats.snapshots += 1
        self.stats.last_snapshot_pos = pos
        self.stats.last_snapshot_at = time.time()
        self._snapshot_clock = time.monotonic()
        self.log.info("snapshot taken", pos=pos)

    async def _take_snapshot_now(self) -> None:
        pos = self.recovery.journal_pos
        state = self._encode_state()
        if state is None:
            return
        await self.journal.save_snapshot(
            pos=pos,
            model_version=self.definition.version,
            codec=CODEC_NAME,
            state=state,
            keep=self.definition.snapshots.keep,
        )
        self._snapshot_taken(pos)

    async def _final_snapshot(self) -> None:
        if self.recovery.journal_pos > self.stats.last_snapshot_pos:
            with anyio.CancelScope(shield=True):
                await self._take_snapshot_now()

    async def snapshot(self) -> int:
        """Take a snapshot now (between batches); returns its position."""
        async with self._write_lock:
            await self._take_snapshot_now()
        return self.stats.last_snapshot_pos

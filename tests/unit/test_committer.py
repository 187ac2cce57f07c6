"""The committer against a real journal file: group commit, order, retries, acknowledgement.

The mailbox is a recorder of the two calls the committer makes on it (``ack`` and ``term``):
what it acknowledged, when, and what the journal file held at that moment.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import anyio
import pytest

from actorsource import JournalCorruptError, JournalError, JournalOrderError
from actorsource._journal.journal import (
    DeadLetter,
    JournalBatch,
    NewSnapshot,
    OutboxMessage,
    SQLiteJournal,
)
from actorsource._log import get_logger
from actorsource._mailbox.mailbox import Delivery
from actorsource._model.events import JournalEntry
from actorsource._runtime.committer import CommitJob, Committer
from actorsource._runtime.snapshot_writer import SnapshotWriter
from actorsource._runtime.status import ActorStats, CrashSwitch, SimulatedCrash

STREAM = "LEDGER"


def delivery(seq: int) -> Delivery:
    return Delivery(
        subject="ledger.in",
        data=b"{}",
        headers={"Event-Type": "unit.Added"},
        reply=f"$JS.ACK.{STREAM}.ledger.1.{seq}.{seq}.0.0",
        stream=STREAM,
        stream_seq=seq,
        delivered=1,
        timestamp_ns=0,
    )


def entry(pos: int, seq: int, msg_id: str | None = None) -> JournalEntry:
    return JournalEntry(
        pos, "ledger.in", "unit.Added", b"{}", 0.0, STREAM, seq, msg_id, {"Event-Type": "x"}
    )


def make_job(
    first_pos: int,
    seqs: list[int],
    *,
    msg_ids: dict[int, str] | None = None,
    dead: list[int] | None = None,
    snapshot: NewSnapshot | None = None,
) -> CommitJob:
    """Events at journal positions ``first_pos, ...`` from ``seqs``; ``dead`` sequences are
    dead letters instead (with a DLQ outbox row each)."""
    msg_ids = msg_ids or {}
    dead = dead or []
    entries = [entry(first_pos + i, seq, msg_ids.get(seq)) for i, seq in enumerate(seqs)]
    letters = [
        (delivery(seq), DeadLetter("ledger.in", b"{", "undecodable", "bad", None, STREAM, seq))
        for seq in dead
    ]
    deliveries = [delivery(seq) for seq in sorted([*seqs, *dead])]
    batch = JournalBatch(
        entries=entries,
        positions={STREAM: max([*seqs, *dead])},
        dead_letters=[dl for _, dl in letters],
        outbox=[OutboxMessage("dlq.ledger", f"dlq-{seq}", b"{") for seq in dead],
        snapshot=snapshot,
    )
    to_ack = [d for d in deliveries if d.stream_seq in seqs]
    return CommitJob(batch=batch, deliveries=deliveries, to_ack=to_ack, dead=letters)


def seqs(deliveries: list[Delivery]) -> list[int]:
    return [d.stream_seq for d in deliveries]


class RecordingMailbox:
    """Records ``ack``/``term`` calls and the highest stream sequence committed to the
    journal file when each call came (read through a connection of its own)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self.acked: list[tuple[list[int], int]] = []
        self.termed: list[tuple[int, str, int]] = []

    def _committed(self) -> int:
        with sqlite3.connect(self._path) as db:
            events = db.execute("SELECT coalesce(max(stream_seq), 0) FROM events").fetchone()[0]
            dead = db.execute("SELECT coalesce(max(stream_seq), 0) FROM dead_letters").fetchone()
            return int(max(events, dead[0]))

    async def ack(self, deliveries: list[Delivery]) -> None:
        self.acked.append((seqs(deliveries), self._committed()))

    async def term(self, d: Delivery, reason: str) -> None:
        self.termed.append((d.stream_seq, reason, self._committed()))

    def acked_seqs(self) -> list[int]:
        return [seq for batch, _ in self.acked for seq in batch]


class Harness:
    def __init__(
        self, journal: SQLiteJournal, *, lock: anyio.Lock | None = None, **options: object
    ) -> None:
        self.journal = journal
        self.mailbox = RecordingMailbox(journal.path)
        self.lock = lock or anyio.Lock()
        self.stats = ActorStats()
        self.committed: list[CommitJob] = []
        self.conflicts = 0
        self.crash = CrashSwitch()
        self.committer = Committer(
            journal,
            self.mailbox,  # type: ignore[arg-type]
            self.lock,
            crash=self.crash,
            stats=self.stats,
            log=get_logger(actor="ledger"),
            on_committed=self.committed.append,
            on_conflict=self._conflict,
            **options,  # type: ignore[arg-type]
        )

    def _conflict(self) -> None:
        self.conflicts += 1

    async def commit_waits_on_the_lock(self) -> None:
        """Wait until the commit task has taken a job and waits for the write lock."""
        await until(lambda: self.lock.statistics().tasks_waiting == 1)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.001)


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SQLiteJournal]:
    async with SQLiteJournal(tmp_path / "ledger.journal.sqlite", actor="ledger") as j:
        yield j


@asynccontextmanager
async def running(harness: Harness) -> AsyncIterator[Committer]:
    async with anyio.create_task_group() as tg:
        tg.start_soon(harness.committer.run)
        yield harness.committer
        harness.committer.close()


async def run_expecting(harness: Harness, exc: type[BaseException]) -> None:
    """Run the committer until it fails; the failure must be ``exc``."""
    with pytest.raises(exc):
        await harness.committer.run()


@contextmanager
def failing_inserts(path: Path) -> Iterator[Callable[[], None]]:
    """Make every insert into ``events`` fail (a constraint raised by a trigger); the yielded
    function lifts that again."""
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON events BEGIN "
            "SELECT RAISE(ABORT, 'refused for the test'); END"
        )

    def lift() -> None:
        with sqlite3.connect(path) as db:
            db.execute("DROP TRIGGER IF EXISTS refuse")

    try:
        yield lift
    finally:
        lift()


# -- absorbing -----------------------------------------------------------------------------


def test_absorbing_a_job_appends_its_entries_dead_letters_outbox_and_deliveries() -> None:
    first = make_job(1, [1, 2])
    later = make_job(3, [4], dead=[3])
    first.absorb(later)
    assert [e.pos for e in first.batch.entries] == [1, 2, 3]
    assert [dl.stream_seq for dl in first.batch.dead_letters] == [3]
    assert [m.msg_id for m in first.batch.outbox] == ["dlq-3"]
    assert seqs(first.deliveries) == [1, 2, 3, 4]
    assert seqs(first.to_ack) == [1, 2, 4]
    assert [d.stream_seq for d, _ in first.dead] == [3]


def test_absorbing_a_job_keeps_the_highest_position_of_every_stream() -> None:
    first = make_job(1, [5])
    first.batch.positions["OTHER"] = 40
    later = make_job(2, [6])
    later.batch.positions["OTHER"] = 12
    later.batch.positions["THIRD"] = 1
    first.absorb(later)
    assert first.batch.positions == {STREAM: 6, "OTHER": 40, "THIRD": 1}


def test_a_later_snapshot_supersedes_an_earlier_one_when_absorbed() -> None:
    first = make_job(1, [1], snapshot=NewSnapshot(b"one", 1, 1, "json"))
    first.absorb(make_job(2, [2], snapshot=NewSnapshot(b"two", 2, 1, "json")))
    assert first.batch.snapshot is not None
    assert first.batch.snapshot.state == b"two"


def test_absorbing_a_job_without_a_snapshot_keeps_the_earlier_snapshot() -> None:
    first = make_job(1, [1], snapshot=NewSnapshot(b"one", 1, 1, "json"))
    first.absorb(make_job(2, [2]))
    assert first.batch.snapshot is not None
    assert first.batch.snapshot.state == b"one"


# -- group commit --------------------------------------------------------------------------


async def test_jobs_handed_over_during_a_commit_are_committed_together_after_it(
    journal: SQLiteJournal,
) -> None:
    h = Harness(journal)
    async with running(h) as committer:
        async with h.lock:
            await committer.submit(make_job(1, [1]))
            await h.commit_waits_on_the_lock()
            await committer.submit(make_job(2, [2, 3]))
            await committer.submit(make_job(4, [4]))
            assert committer.in_flight == 2
        await committer.drain()
    assert [seqs(job.deliveries) for job in h.committed] == [[1], [2, 3, 4]]
    assert h.stats.batches == 2
    assert journal.last_pos == 4
    assert journal.stream_positions == {STREAM: 4}
    assert h.mailbox.acked_seqs() == [1, 2, 3, 4]


async def test_submit_waits_while_the_waiting_job_holds_merge_limit_deliveries(
    journal: SQLiteJournal,
) -> None:
    h = Harness(journal, merge_limit=3)
    handed = anyio.Event()

    async def submit_third() -> None:
        await h.committer.submit(make_job(4, [4, 5]))
        handed.set()

    async with running(h) as committer:
        async with anyio.create_task_group() as tg, h.lock:
            await committer.submit(make_job(1, [1]))
            await h.commit_waits_on_the_lock()
            await committer.submit(make_job(2, [2, 3]))
            tg.start_soon(submit_third)
            await anyio.wait_all_tasks_blocked()
            assert not handed.is_set()  # 2 + 2 deliveries would pass merge_limit=3
        await handed.wait()
        await committer.drain()
    assert [seqs(job.deliveries) for job in h.committed] == [[1], [2, 3], [4, 5]]


async def test_nothing_is_acknowledged_before_its_commit_returned(journal: SQLiteJournal) -> None:
    h = Harness(journal)
    async with running(h) as committer:
        async with h.lock:
            await committer.submit(make_job(1, [1, 2]))
            await h.commit_waits_on_the_lock()
            await committer.submit(make_job(3, [3]))
            assert h.mailbox.acked == []
        await committer.drain()
    # Each acknowledgement came when the file already held what it acknowledged.
    assert h.mailbox.acked == [([1, 2], 2), ([3], 3)]


async def test_dead_letters_are_terminated_with_their_reason_after_their_commit(
    journal: SQLiteJournal,
) -> None:
    h = Harness(journal)
    async with running(h) as committer:
        await committer.submit(make_job(1, [1, 3], dead=[2]))
        await committer.drain()
    assert h.mailbox.termed == [(2, "undecodable", 3)]
    assert h.mailbox.acked == [([1, 3], 3)]
    assert h.stats.dead_letters == 1


async def test_a_crash_after_a_commit_ends_its_spans_applied_and_the_waiting_ones_abandoned(
    journal: SQLiteJournal,
) -> None:
    # The committed job's deliveries stay applied (they come again as duplicates); the job
    # handed over behind it was applied in memory only: it comes again and is applied anew.
    sdk = pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from actorsource._runtime.tracing import Tracing

    exporter = InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing("ledger", provider)
    sampled = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}

    def traced(job: CommitJob) -> CommitJob:
        for d, e in zip(job.deliveries, job.batch.entries, strict=True):
            span = tracing.begin(d, sampled)
            assert span is not None
            span.note("applied", e.pos)
            job.traced.append(span)
        return job

    async def run_to_the_crash() -> None:
        with pytest.raises(SimulatedCrash):
            await h.committer.run()

    h = Harness(journal)
    h.crash.arm("after_commit")
    async with anyio.create_task_group() as tg, h.lock:
        tg.start_soon(run_to_the_crash)
        await h.committer.submit(traced(make_job(1, [1, 2])))
        await h.commit_waits_on_the_lock()
        await h.committer.submit(traced(make_job(3, [3])))
    ends = {
        (s.attributes or {})["actorsource.stream_seq"]: (
            (s.attributes or {})["actorsource.outcome"],
            s.status.is_ok,
        )
        for s in exporter.get_finished_spans()
    }
    assert ends == {1: ("applied", False), 2: ("applied", False), 3: ("abandoned", False)}
    assert journal.last_pos == 2
    assert h.mailbox.acked == []
    provider.shutdown()


# -- failing commits -----------------------------------------------------------------------


async def test_a_failing_commit_is_retried_with_backoff_and_acknowledges_nothing_meanwhile(
    journal: SQLiteJournal, caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness(journal)
    with failing_inserts(journal.path) as lift:
        async with running(h) as committer:
            await committer.submit(make_job(1, [1, 2]))
            await until(lambda: h.stats.commit_failures >= 2)
            assert h.mailbox.acked == []
            assert committer.in_flight == 1
            lift()
            await committer.drain()
    assert h.mailbox.acked == [([1, 2], 2)]
    assert journal.last_pos == 2
    retries = [r for r in caplog.records if r.getMessage() == "journal commit failed; retrying"]
    assert [getattr(r, "retry_in") for r in retries[:2]] == [0.1, 0.2]  # noqa: B009


async def test_a_commit_that_keeps_failing_stops_the_committer_with_nothing_acknowledged(
    journal: SQLiteJournal,
) -> None:
    h = Harness(journal, attempts=2)
    with failing_inserts(journal.path):
        await h.committer.submit(make_job(1, [1]))
        await run_expecting(h, JournalError)
    assert h.stats.commit_failures == 2
    assert h.mailbox.acked == []
    assert journal.last_pos == 0


async def test_a_batch_out_of_stream_order_is_not_retried(journal: SQLiteJournal) -> None:
    await journal.append(make_job(1, [10]).batch)
    h = Harness(journal)
    await h.committer.submit(make_job(2, [5]))
    await run_expecting(h, JournalOrderError)
    assert h.stats.commit_failures == 0
    assert h.mailbox.acked == []


class CorruptJournal(SQLiteJournal):
    """A journal whose file turns out corrupt at commit."""

    appends = 0

    async def append(self, batch: JournalBatch, **_: object) -> None:
        self.appends += 1
        raise JournalCorruptError(f"{self.path} is corrupt", path=self.path)


async def test_a_corrupt_journal_is_not_retried(tmp_path: Path) -> None:
    async with CorruptJournal(tmp_path / "ledger.journal.sqlite", actor="ledger") as corrupt:
        h = Harness(corrupt)
        await h.committer.submit(make_job(1, [1]))
        await run_expecting(h, JournalCorruptError)
    assert corrupt.appends == 1
    assert h.stats.commit_failures == 0
    assert h.mailbox.acked == []


# -- a duplicate message id ----------------------------------------------------------------


async def conflict_with_one_waiting(h: Harness) -> tuple[CommitJob, CommitJob]:
    """Commit a job whose message id the journal holds while another waits behind it."""
    await h.journal.append(make_job(1, [1], msg_ids={1: "m-1"}).batch)
    clashing = make_job(2, [2, 3], msg_ids={3: "m-1"})
    behind = make_job(4, [4])
    committer = h.committer
    async with h.lock:
        await committer.submit(clashing)
        await h.commit_waits_on_the_lock()
        await committer.submit(behind)
    await until(lambda: committer.conflict)
    return clashing, behind


async def test_a_duplicate_message_id_sets_aside_its_job_and_the_one_waiting_in_order(
    journal: SQLiteJournal,
) -> None:
    h = Harness(journal)
    async with running(h) as committer:
        await conflict_with_one_waiting(h)
        assert seqs(committer.redo or []) == [2, 3, 4]
        assert committer.in_flight == 0
    assert h.conflicts == 1
    assert h.committed == []
    assert h.mailbox.acked == []
    assert journal.last_pos == 1


async def test_after_a_conflict_later_submits_and_defers_queue_behind_the_set_aside_ones(
    journal: SQLiteJournal,
) -> None:
    h = Harness(journal)
    async with running(h) as committer:
        await conflict_with_one_waiting(h)
        await committer.submit(make_job(5, [5]))
        committer.defer([delivery(6), delivery(7)])
        assert seqs(committer.unacked()) == [2, 3, 4, 5, 6, 7]
        assert seqs(committer.take_redo()) == [2, 3, 4, 5, 6, 7]
        assert not committer.conflict
    assert h.mailbox.acked == []


async def test_after_a_conflict_is_cleared_the_committer_commits_again(
    journal: SQLiteJournal,
) -> None:
    h = Harness(journal)
    async with running(h) as committer:
        await conflict_with_one_waiting(h)
        committer.take_redo()
        await committer.submit(make_job(2, [2, 4]))
        await committer.drain()
    assert h.mailbox.acked == [([2, 4], 4)]


# -- large snapshots -----------------------------------------------------------------------


async def test_a_large_snapshot_is_written_in_parts_with_batches_committed_between_them(
    tmp_path: Path,
) -> None:
    taken: list[tuple[int, int]] = []
    async with SQLiteJournal(
        tmp_path / "ledger.journal.sqlite", actor="ledger", snapshot_part_bytes=1_024
    ) as journal:
        lock = anyio.Lock()
        writer = SnapshotWriter(
            journal,
            lock,
            get_logger(actor="ledger"),
            on_taken=lambda pos, seconds, parts: taken.append((pos, parts)),
            on_failed=lambda pos: None,
        )
        harness = Harness(journal, lock=lock, snapshots=writer)
        seen: list[tuple[int, int, int]] = []  # per ack: (stream seq, parts, headers) in the file

        async def ack(deliveries: list[Delivery]) -> None:
            with sqlite3.connect(journal.path) as db:
                [(parts,)] = db.execute("SELECT count(*) FROM snapshot_parts").fetchall()
                [(headers,)] = db.execute("SELECT count(*) FROM snapshots").fetchall()
            seen.append((deliveries[0].stream_seq, parts, headers))

        harness.mailbox.ack = ack  # type: ignore[method-assign]
        state = b"{" + b" " * 10_000 + b"}"  # ten parts of 1 KiB (the last one shorter)
        async with running(harness) as committer:
            await committer.submit(make_job(1, [1], snapshot=NewSnapshot(state, 1, 1, "json")))
            for seq in range(2, 5):
                await until(lambda: committer._waiting is None)
                await committer.submit(make_job(seq, [seq]))
            await committer.drain()
            await until(lambda: not writer.pending)
        snapshot = await journal.read_snapshot((await journal.snapshots())[0].id)
    assert taken == [(1, 10)]
    assert snapshot is not None
    assert snapshot.verifies()
    assert snapshot.state == state
    assert seen[0] == (1, 0, 0)  # the batch, then its snapshot's parts
    between = [(seq, parts) for seq, parts, headers in seen[1:] if 0 < parts < 10]
    assert between, f"no batch was committed between two parts: {seen}"
    assert all(headers == 0 for _, parts, headers in seen if parts < 10)

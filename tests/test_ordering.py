"""Stream order: accepted messages are journaled in strictly increasing stream sequence.

The consumer resumes after the journal's highest stream sequence, so a journal that held a
later message before an earlier one would skip the earlier one at the next start. The case
that once broke it: a message id the journal already has, stored again by the stream after
its duplicate window, found at commit while batches were being merged (a group commit).
"""

from __future__ import annotations

import time
from pathlib import Path

import anyio
from actors import Added, Counter, expected_totals

from actorsource import MSG_ID_HEADER, Context, ErrorPolicy, actor, handles
from actorsource._log import get_logger
from actorsource._mailbox.mailbox import Delivery
from actorsource._model.actor import definition_of
from actorsource._runtime.binding import bind_mailbox, mailbox_for
from actorsource._runtime.committer import CommitJob, Committer
from actorsource._runtime.status import CrashSwitch
from actorsource.journal import JournalBatch, JournalEntry, SQLiteJournal
from actorsource.testing import ActorKit, ActorStats


async def _shrink_duplicate_window(kit: ActorKit, stream: str) -> None:
    # JetStream's own dedup window at its minimum: a message id published again after it is
    # stored a second time, as after a publisher's long outage or a late outbox resend.
    info = await kit.js.stream_info(stream)
    info.config.duplicate_window = 0.1
    await kit.js.update_stream(info.config)


def _job(deliveries: list[Delivery], after_pos: int) -> CommitJob:
    entries = [
        JournalEntry(
            pos=after_pos + i,
            subject=d.subject,
            type="Added",
            payload=d.data,
            received_at=time.time(),
            stream=d.stream,
            stream_seq=d.stream_seq,
            msg_id=(d.headers or {}).get(MSG_ID_HEADER),
            headers=d.headers,
        )
        for i, d in enumerate(deliveries, 1)
    ]
    batch = JournalBatch(
        entries=entries,
        positions={deliveries[0].stream: deliveries[-1].stream_seq},
        dead_letters=[],
    )
    return CommitJob(batch=batch, deliveries=deliveries, to_ack=list(deliveries), dead=[])


async def test_a_duplicate_id_found_mid_group_commit_sets_everything_aside_in_stream_order(
    actor_kit: ActorKit, tmp_path: Path
) -> None:
    stream = await actor_kit.prepare(Counter)
    await _shrink_duplicate_window(actor_kit, stream)
    await actor_kit.publish("count.a", Added("a", 1), msg_id="m-1")
    await anyio.sleep(0.15)  # let the server-side window pass (not a wait for work)
    for n in range(2, 13):  # message 5 repeats the id of message 1
        await actor_kit.publish(f"count.k{n % 3}", Added("k", n), msg_id=f"m-{1 if n == 5 else n}")

    definition = definition_of(Counter)
    async with SQLiteJournal(tmp_path / "counter.sqlite", actor="counter") as journal:
        mailbox = mailbox_for(definition, actor_kit.nc, ack_wait=30.0)
        log = get_logger(actor="counter")
        await bind_mailbox(mailbox, journal, log=log)
        async with mailbox, anyio.create_task_group() as tg:
            got: list[Delivery] = []
            with anyio.fail_after(10):
                while len(got) < 12:
                    got.extend(await mailbox.next_batch())
            lock = anyio.Lock()
            committer = Committer(
                journal,
                mailbox,
                lock,
                crash=CrashSwitch(),
                stats=ActorStats(),
                log=log,
                on_committed=lambda job: None,
                # The runner, woken by the conflict, sets aside the rest of the batch it
                # holds before the commit task moves on: the interleaving that reordered.
                on_conflict=lambda: committer.defer(got[8:]),
            )
            tg.start_soon(committer.run)
            await committer.submit(_job(got[:1], 0))
            await committer.drain()
            async with lock:  # a stalled commit: J1 is taken, J2 waits behind it
                await committer.submit(_job(got[1:5], 1))  # holds the repeated id
                await anyio.wait_all_tasks_blocked()
                await committer.submit(_job(got[5:8], 5))
            await committer.drain()
            redo = committer.take_redo()
            assert [d.stream_seq for d in redo] == [d.stream_seq for d in got[1:]]
            assert [e.stream_seq for e in await _entries(journal)] == [got[0].stream_seq]
            committer.close()
            tg.cancel_scope.cancel()


async def _entries(journal: SQLiteJournal) -> list[JournalEntry]:
    out: list[JournalEntry] = []
    async for chunk in journal.entries():
        out.extend(chunk)
    return out


APPLIED: dict[int, int] = {}


@actor(
    "recheck",
    subjects=["recheck.>"],
    errors=ErrorPolicy(retries=3, backoff=2.0),
)
class Recheck:
    """Fails on event 10 the second time it is applied live: during the re-check."""

    order: list[int]

    def __init__(self) -> None:
        self.order = []

    @handles(Added)
    def added(self, event: Added, ctx: Context) -> None:
        if not ctx.replaying:
            APPLIED[event.amount] = APPLIED.get(event.amount, 0) + 1
            if event.amount == 10 and APPLIED[10] == 2:
                raise RuntimeError("fails during the re-check")
        self.order.append(event.amount)


async def test_a_handler_failing_in_the_recheck_then_a_kill_in_its_backoff_keeps_stream_order(
    actor_kit: ActorKit,
) -> None:
    APPLIED.clear()
    stream = await actor_kit.prepare(Recheck)
    await _shrink_duplicate_window(actor_kit, stream)
    published = [Added("k", n) for n in range(1, 41)]
    async with actor_kit.start(Recheck, ack_wait=5.0) as probe:
        await actor_kit.publish("recheck.k", published[0], msg_id="m-1")
        await probe.settled()
        await anyio.sleep(0.15)  # let the server-side window pass (not a wait for work)
        async with probe._live_runner._write_lock:  # commits stall: batches merge behind the first
            dup = await actor_kit.publish("recheck.k", Added("k", 999), msg_id="m-1")
            for e in published[1:]:
                await actor_kit.publish(f"recheck.k{e.amount % 4}", e, msg_id=f"m-{e.amount}")
            with anyio.fail_after(10):
                while len(probe.state.order) < len(published) + 1:
                    await anyio.sleep(0.01)
        with anyio.fail_after(10):  # re-checked after the duplicate id: event 10 fails ...
            while APPLIED.get(10, 0) < 2:
                await anyio.sleep(0.01)
        await probe.crash()  # ... and the worker dies in the retry's backoff
        await probe.settled()
        entries = await probe.entries()
        seqs = [e.stream_seq for e in entries]
        assert seqs == sorted(seqs)
        assert dup not in seqs
        assert probe.state.order == [e.amount for e in published]
        assert (await probe.fold()).order == probe.state.order
        assert APPLIED[10] == 3  # live, failed in the re-check, then after the restart


async def test_a_stored_duplicate_while_a_backlog_is_consumed_keeps_stream_order(
    actor_kit: ActorKit,
) -> None:
    stream = await actor_kit.prepare(Counter)
    await _shrink_duplicate_window(actor_kit, stream)
    first = [Added(f"k{n % 7}", n) for n in range(1, 301)]
    for e in first:
        await actor_kit.publish(f"count.{e.key}", e, msg_id=f"m-{e.amount}")
    await anyio.sleep(0.15)  # let the server-side window pass (not a wait for work)
    async with actor_kit.start(Counter) as counter:
        for e in first[:50]:  # the same ids and bytes again, stored a second time
            await actor_kit.publish(f"count.{e.key}", e, msg_id=f"m-{e.amount}")
        more = [Added(f"k{n % 7}", n) for n in range(301, 601)]
        for e in more:
            await actor_kit.publish(f"count.{e.key}", e, msg_id=f"m-{e.amount}")
        await counter.settled()
        events = first + more
        assert counter.state.totals == expected_totals(events)
        assert counter.state.order == [e.amount for e in events]
        seqs = [e.stream_seq for e in await counter.entries()]
        assert seqs == sorted(seqs)
        assert counter.stats.duplicates == 50

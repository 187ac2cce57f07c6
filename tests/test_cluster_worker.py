"""Cluster mode inside one test process, against a real nats-server and SQLite files: the
partitions are owned under leases, every batch is appended to the journal subject before
its commit, a singleton runs on one worker only, and a crash between the fenced append and
the SQLite commit is healed by importing the subject's tail."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import nats.js.errors
import pytest
from actors import Added, Counter, expected_totals
from anyio.abc import TaskStatus
from partitioned_actors import Orders, Placed, fold

import actorsource
from actorsource import NatsOptions, QueryNotRunningError
from actorsource._cluster.batches import decode_batch
from actorsource._cluster.fence import JOURNAL_STREAM, JournalFence, ensure_journal_stream
from actorsource._cluster.guard import PartitionGuard
from actorsource._cluster.lease import Leases
from actorsource._cluster.node import ClusterWorker
from actorsource._errors import Fenced
from actorsource._model.actor import definition_of
from actorsource._model.query_wire import partition_of_key
from actorsource._runtime.runner import ActorRunner
from actorsource._runtime.status import ActorStatus, CrashSwitch, SimulatedCrash
from actorsource.journal import SQLiteJournal, journal_path, restore_state
from actorsource.testing import ActorKit, NatsServer

LEASE = 3.0


def _worker(actors: list[type], server: NatsServer, data: Path, name: str) -> ClusterWorker:
    return ClusterWorker(
        actors,
        nats=NatsOptions(servers=(server.url,)),
        data_dir=data,
        name=name,
        lease_time=LEASE,
        join_delay=0.2,
        hold=0.2,
    )


@asynccontextmanager
async def _running(worker: ClusterWorker) -> AsyncIterator[ClusterWorker]:
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        with anyio.fail_after(10):
            await worker.ready.wait()
        yield worker
        worker.stop()


def _running_here(worker: ClusterWorker) -> list[str]:
    """The partitions ``worker`` owns and consumes."""
    return [n for n in worker.hosted() if worker.runners[n].ready.is_set()]


async def _until(condition: object, timeout: float = 20.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():  # type: ignore[operator]
            await anyio.sleep(0.02)


async def test_one_cluster_worker_owns_every_partition_and_fences_every_batch(
    actor_kit: ActorKit, nats_server: NatsServer, tmp_path: Path
) -> None:
    events = [Placed(f"k{i % 31}", i) for i in range(240)]
    async with _running(_worker([Orders], nats_server, tmp_path / "a", "wa")) as worker:
        await _until(lambda: len(_running_here(worker)) == 4)
        for name in worker.hosted():
            assert worker.partitions[name].epoch > 0
        for e in events:
            await actor_kit.publish(f"porders.{e.key}", e, msg_id=f"{e.key}:{e.n}")
        await _until(lambda: sum(r.journal_pos for r in worker.runners.values()) == 240)
        union: dict[str, list[int]] = {}
        for runner in worker.runners.values():
            union.update(runner.state.seen)
        assert union == fold(events)
        consumers = {c.name for c in await actor_kit.js.consumers_info("PORDERS")}
        assert consumers == {
            f"porders-p{k}-e{worker.partitions[f'porders-p{k}'].epoch}" for k in range(4)
        }
    # Every committed batch is on the partition's journal subject, before the commit.
    for k in range(4):
        name = f"porders-p{k}"
        async with SQLiteJournal(journal_path(tmp_path / "a", name), actor=name) as journal:
            recorded = journal.stream_positions[f"asj.porders.{k}"]
            count = await journal.count()
        last = await actor_kit.js.get_msg(JOURNAL_STREAM, subject=f"asj.porders.{k}")
        assert last.seq == recorded or last.headers.get("Actorsource-Journal") == "epoch"
        assert count > 0


async def test_two_workers_run_a_singleton_once_and_the_second_takes_over(
    actor_kit: ActorKit, nats_server: NatsServer, tmp_path: Path
) -> None:
    first = [Added(f"k{i % 3}", i) for i in range(1, 41)]
    later = [Added(f"k{i % 3}", i) for i in range(41, 61)]
    a = _worker([Counter], nats_server, tmp_path / "a", "wa")
    b = _worker([Counter], nats_server, tmp_path / "b", "wb")
    async with _running(b):
        async with _running(a):
            await _until(lambda: bool(_running_here(a) or _running_here(b)))
            await anyio.sleep(1.0)  # both settled: still exactly one runs it
            assert len(a.hosted() + b.hosted()) == 1
            owner, other = (a, b) if a.hosted() else (b, a)
            for e in first:
                await actor_kit.publish(f"count.{e.key}", e)
            await _until(lambda: owner.runners["counter"].journal_pos == 40)
            assert other.runners == {}
            if owner is b:
                # Make the worker that stops the owner: hand over to ``a`` instead.
                b.stop()
                await _until(lambda: bool(_running_here(a)))
                survivor = a
            else:
                survivor = b
        if owner is a:
            await _until(lambda: bool(_running_here(b)))
        # The survivor's data directory had no journal: it imported the journal subject.
        for e in later:
            await actor_kit.publish(f"count.{e.key}", e)
        await _until(lambda: survivor.runners["counter"].journal_pos == 60)
        assert survivor.runners["counter"].state.totals == expected_totals(first + later)


async def test_a_crash_after_the_fenced_append_is_healed_by_importing_the_tail(
    actor_kit: ActorKit, nats_server: NatsServer, tmp_path: Path
) -> None:
    js = actor_kit.js
    await ensure_journal_stream(js)
    leases = Leases(js, ttl=30)
    unit = definition_of(Counter)
    crash = CrashSwitch()

    async def run_owner(owner: str) -> ActorRunner:
        lease = await leases.acquire("counter", owner)
        guard = PartitionGuard(lease, JournalFence(js, "counter", 0))
        return ActorRunner(unit, actor_kit.nc, data_dir=tmp_path, guard=guard, crash_switch=crash)

    runner = await run_owner("wa")
    events = [Added("k1", 1), Added("k2", 2)]
    crashed = anyio.Event()

    async def run_until_crash(*, task_status: TaskStatus[None]) -> None:
        with pytest.raises(SimulatedCrash):
            await runner.run(task_status=task_status)
        crashed.set()

    async with anyio.create_task_group() as tg:
        await tg.start(run_until_crash)
        await actor_kit.publish("count.k1", events[0])
        await _until(lambda: runner.journal_pos == 1)
        crash.arm("after_admit")
        await actor_kit.publish("count.k2", events[1])
        with anyio.fail_after(10):
            await crashed.wait()
    assert runner.guard is not None
    await runner.guard.lease.release()  # type: ignore[attr-defined]
    async with SQLiteJournal(journal_path(tmp_path, "counter"), actor="counter") as journal:
        assert await journal.count() == 1  # the second batch is on the subject only

    again = await run_owner("wb")
    async with anyio.create_task_group() as tg:
        await tg.start(again.run)
        assert again.recovery.journal_pos == 2  # imported before recovery
        await actor_kit.publish("count.k1", Added("k1", 3))
        await _until(lambda: again.journal_pos == 3)
        assert again.state.totals == expected_totals([*events, Added("k1", 3)])
        again.stop()
    async with SQLiteJournal(journal_path(tmp_path, "counter"), actor="counter") as journal:
        assert await journal.count() == 3  # nothing applied twice: the redelivery was known


async def test_a_message_id_the_journal_holds_is_refused_before_it_is_appended(
    actor_kit: ActorKit, tmp_path: Path
) -> None:
    """What the fence admits must commit: a batch holding a message id the journal already
    has is refused by the journal's unique index inside the transaction, before the guard
    appends it; it is handled again, and only what commits reaches the journal subject."""
    js = actor_kit.js
    await ensure_journal_stream(js)
    stream = await actor_kit.prepare(Counter)
    info = await js.stream_info(stream)
    info.config.duplicate_window = 0.1  # the server minimum: an id sent again is stored again
    await js.update_stream(info.config)
    lease = await Leases(js, ttl=30).acquire("counter", "wa")
    fence = JournalFence(js, "counter", 0)
    runner = ActorRunner(
        definition_of(Counter), actor_kit.nc, data_dir=tmp_path, guard=PartitionGuard(lease, fence)
    )
    async with anyio.create_task_group() as tg:
        await tg.start(runner.run)
        await actor_kit.publish("count.k1", Added("k1", 1), msg_id="m-1")
        await _until(lambda: runner.journal_pos == 1)
        await anyio.sleep(0.15)  # past the server's window (not a wait for work)
        await actor_kit.publish("count.k1", Added("k1", 10), msg_id="m-1")
        await actor_kit.publish("count.k2", Added("k2", 2), msg_id="m-2")
        await _until(lambda: runner.journal_pos == 2 and runner.stats.duplicates == 1)
        assert runner.state.totals == {"k1": 1, "k2": 2}
        runner.stop()
    appended = [
        e.msg_id
        async for record in fence.tail()
        if record.kind == "batch"
        for e in decode_batch(record.data).entries
    ]
    assert appended == ["m-1", "m-2"]


async def test_a_stale_owner_with_a_batch_in_hand_is_fenced_and_acknowledges_nothing(
    actor_kit: ActorKit, nats_server: NatsServer, tmp_path: Path
) -> None:
    """The lease does not protect here: the stale owner still believes it holds it (as
    after a pause its clock did not see). Only the conditional append stops it."""
    js = actor_kit.js
    await ensure_journal_stream(js)
    leases = Leases(js, ttl=30)
    unit = definition_of(Counter)
    old_lease = await leases.acquire("counter", "wa")
    stale = ActorRunner(
        unit,
        actor_kit.nc,
        data_dir=tmp_path / "a",
        guard=PartitionGuard(old_lease, JournalFence(js, "counter", 0)),
    )
    fenced = anyio.Event()

    async def run_until_fenced(*, task_status: TaskStatus[None]) -> None:
        with pytest.raises(Fenced):
            await stale.run(task_status=task_status)
        fenced.set()

    async with anyio.create_task_group() as tg:
        await tg.start(run_until_fenced)
        await actor_kit.publish("count.k1", Added("k1", 1))
        await _until(lambda: stale.journal_pos == 1)
        # Its lease expires unseen and another worker takes the partition: epoch marker first.
        await (await leases.kv()).delete("counter")
        new_lease = await leases.acquire("counter", "wb")
        await JournalFence(js, "counter", 0).open(new_lease.epoch)
        seq = await actor_kit.publish("count.k2", Added("k2", 2))  # reaches the stale owner
        with anyio.fail_after(10):
            await fenced.wait()
    consumer = await js.consumer_info("COUNTER", f"counter-e{old_lease.epoch}")
    assert consumer.ack_floor.stream_seq < seq  # not acknowledged
    async with SQLiteJournal(journal_path(tmp_path / "a", "counter"), actor="counter") as journal:
        assert await journal.count() == 1  # not committed

    new = ActorRunner(
        unit,
        actor_kit.nc,
        data_dir=tmp_path / "b",
        guard=PartitionGuard(new_lease, JournalFence(js, "counter", 0)),
    )
    async with anyio.create_task_group() as tg:
        await tg.start(new.run)
        await _until(lambda: new.journal_pos == 2)
        assert new.state.totals == {"k1": 1, "k2": 2}
        # The stale owner's consumer is gone: its pulls and acks reach nothing.
        with pytest.raises(nats.js.errors.NotFoundError):
            await js.consumer_info("COUNTER", f"counter-e{old_lease.epoch}")
        new.stop()


async def test_a_runner_stopping_while_its_commit_is_refused_saves_no_snapshot_of_it(
    actor_kit: ActorKit, nats_server: NatsServer, tmp_path: Path
) -> None:
    """A hand-over stops the runner; the batch it applied meanwhile is refused at the
    fence. Its state then holds an event the journal does not: the final snapshot of a
    graceful stop must not be written from it."""
    js = actor_kit.js
    await ensure_journal_stream(js)
    leases = Leases(js, ttl=30)
    unit = definition_of(Counter)
    lease = await leases.acquire("counter", "wa")
    runner = ActorRunner(
        unit,
        actor_kit.nc,
        data_dir=tmp_path,
        guard=PartitionGuard(lease, JournalFence(js, "counter", 0)),
    )
    failed = anyio.Event()

    async def run_until_fenced(*, task_status: TaskStatus[None]) -> None:
        with pytest.raises(Fenced):
            await runner.run(task_status=task_status)
        failed.set()

    async with anyio.create_task_group() as tg:
        await tg.start(run_until_fenced)
        await actor_kit.publish("count.k1", Added("k1", 1))
        await _until(lambda: runner.journal_pos == 1)
        await (await leases.kv()).delete("counter")
        newer = await leases.acquire("counter", "wb")
        await JournalFence(js, "counter", 0).open(newer.epoch)
        await actor_kit.publish("count.k2", Added("k2", 2))
        with anyio.fail_after(10):
            while "k2" not in runner.state.totals:  # applied, its commit on its way
                await anyio.sleep(0)
        runner.stop()
        with anyio.fail_after(10):
            await failed.wait()
    async with SQLiteJournal(journal_path(tmp_path, "counter"), actor="counter") as journal:
        assert await journal.count() == 1
        state, _ = await restore_state(Counter, journal)
    assert state.totals == {"k1": 1}


async def test_a_worker_whose_lease_lapsed_stops_answering_for_the_partition_at_once(
    actor_kit: ActorKit, nats_server: NatsServer, tmp_path: Path
) -> None:
    """Keyed queries reach the key's partition, and only while its owner's lease is valid:
    a worker whose renewals stopped succeeding (a pause, a cut-off) no longer answers, even
    while its runner still runs (it learns that it lost the partition only later)."""
    worker = ClusterWorker(
        [Orders],
        nats=NatsOptions(servers=(nats_server.url,)),
        data_dir=tmp_path / "a",
        name="wa",
        lease_time=120.0,  # no renewal during the test (the first comes after L/3)
        join_delay=0.2,
        hold=0.2,
    )
    events = [Placed(f"k{i % 8}", i) for i in range(16)]
    nc = actor_kit.nc
    async with _running(worker):
        await _until(lambda: len(_running_here(worker)) == 4)
        for e in events:
            await actor_kit.publish(f"porders.{e.key}", e, msg_id=f"{e.key}:{e.n}")
        await _until(lambda: sum(r.journal_pos for r in worker.runners.values()) == 16)
        k1 = f"porders-p{partition_of_key('k1', 4)}"
        other = next(key for key in fold(events) if f"porders-p{partition_of_key(key, 4)}" != k1)
        answer = await actorsource.ask(nc, "porders", "values", key="k1", timeout=5)
        assert answer.actor == k1
        assert answer.value["k1"] == fold(events)["k1"]
        lease = worker.partitions[k1].lease
        assert lease is not None
        lease._renewed_at -= 120.0  # as if no renewal had succeeded for a lease time
        assert not lease.valid()
        assert worker.runners[k1].status is ActorStatus.RUNNING
        with pytest.raises(QueryNotRunningError):
            await actorsource.ask(nc, "porders", "values", key="k1", timeout=5)
        answer = await actorsource.ask(nc, "porders", "values", key=other, timeout=5)
        assert answer.value[other] == fold(events)[other]

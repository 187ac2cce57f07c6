"""Checkpoints in the object store, restore and compaction, against a real nats-server and
SQLite files: a wiped owner restores the newest checkpoint and imports the journal subject
after it; compaction keeps what a restore from the older kept checkpoint needs; a corrupt
checkpoint falls back to an older one; names are never overwritten; the fence still works
after a purge."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from actors import Added, Boom, Counter, expected_totals
from nats.js import JetStreamContext
from partitioned_actors import Orders, Placed, fold

from actorsource import NatsOptions
from actorsource._cluster.checkpointer import Checkpointer
from actorsource._cluster.checkpoints import (
    CHECKPOINT_BUCKET,
    CHUNK_BYTES,
    Checkpoint,
    CheckpointStore,
    checkpoint_store,
    copy_journal,
)
from actorsource._cluster.fence import JournalFence, ensure_journal_stream
from actorsource._cluster.guard import PartitionGuard
from actorsource._cluster.lease import Lease, Leases
from actorsource._cluster.node import ClusterWorker
from actorsource._errors import ClusterError, Fenced
from actorsource._log import get_logger
from actorsource._model.actor import definition_of
from actorsource._runtime.runner import ActorRunner
from actorsource.journal import journal_path
from actorsource.testing import ActorKit, NatsServer

LOG = get_logger(test="checkpoints")


async def _until(condition: object, timeout: float = 20.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():  # type: ignore[operator]
            await anyio.sleep(0.02)


@dataclass
class History:
    """What :func:`_history` left behind: the published events, the checkpoints kept, a
    journal copy taken after the first one, and the last owner's lease and fence."""

    events: list[Added]
    kept: list[Checkpoint]
    early_copy: Path
    lease: Lease
    fence: JournalFence
    store: CheckpointStore


async def _store(js: JetStreamContext) -> CheckpointStore:
    return CheckpointStore(js, await checkpoint_store(js), "counter")


def _runner(
    kit: ActorKit, data: Path, lease: Lease, checkpoints: CheckpointStore | None = None
) -> ActorRunner:
    guard = PartitionGuard(lease, JournalFence(kit.js, "counter", 0), checkpoints=checkpoints)
    return ActorRunner(definition_of(Counter), kit.nc, data_dir=data, guard=guard)


async def _history(kit: ActorKit, data: Path) -> History:
    """One owner: 3 rounds of 10 events, a checkpoint after each (the first one deleted
    and the subject purged before the second), then 5 events and a dead letter after the
    last checkpoint."""
    js = kit.js
    await ensure_journal_stream(js)
    store = await _store(js)
    lease = await Leases(js, ttl=30).acquire("counter", "wa")
    runner = _runner(kit, data, lease, store)
    assert runner.guard is not None
    guard = runner.guard
    assert isinstance(guard, PartitionGuard)
    checkpointer = Checkpointer(guard, runner.journal_path, every=10, log=LOG)
    events: list[Added] = []
    taken = []
    early_copy = data.parent / "early.journal.sqlite"
    async with anyio.create_task_group() as tg:
        await tg.start(runner.run)
        for round_ in range(4):
            batch = [Added(f"k{i % 3}", round_ * 100 + i) for i in range(10 if round_ < 3 else 5)]
            for e in batch:  # one batch each: every round spans several subject messages
                await kit.publish(f"count.{e.key}", e)
                events.append(e)
                await _until(lambda: runner.journal_pos == len(events))
            if round_ < 3:
                checkpoint = await checkpointer.take()
                assert checkpoint is not None
                taken.append(checkpoint)
            if round_ == 0:
                copy, _ = await copy_journal(runner.journal_path, guard.position_key)
                copy.rename(early_copy)
        # A dead letter after the last checkpoint: only the subject's tail carries it.
        await kit.publish("count.k2", Boom("k2"))
        await _until(lambda: runner.stats.dead_letters == 1)
        runner.stop()
    kept = await store.stored()
    assert kept == taken[1:]  # the newest two
    # Purged before the older kept checkpoint: the first message left is its batch.
    first = await guard.fence.first()
    assert first is not None
    assert first.seq == kept[0].seq
    assert await guard.fence.compacted_to() > taken[0].seq
    return History(events, kept, early_copy, lease, guard.fence, store)


@pytest.fixture
async def history(actor_kit: ActorKit, tmp_path: Path) -> History:
    return await _history(actor_kit, tmp_path / "a")


async def _restored(kit: ActorKit, data: Path, owner: str, previous: Lease) -> ActorRunner:
    """A new owner of ``counter`` in ``data``, restoring as a cluster worker's does."""
    await previous.release()
    lease = await Leases(kit.js, ttl=30).acquire("counter", owner)
    return _runner(kit, data, lease, await _store(kit.js))


async def _state_after_restore(kit: ActorKit, runner: ActorRunner, events: list[Added]) -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(runner.run)
        assert runner.recovery.journal_pos == len(events)
        assert runner.state.totals == expected_totals(events)
        assert runner.state.order == [e.amount for e in events]
        assert await runner.journal.dead_letter_count() == 1
        more = Added("k1", 7)
        await kit.publish("count.k1", more)  # consumes on from the recorded position + 1
        await _until(lambda: runner.journal_pos == len(events) + 1)
        assert runner.state.totals == expected_totals([*events, more])
        runner.stop()


async def test_a_wiped_owner_restores_the_newest_checkpoint_and_the_subject_after_it(
    actor_kit: ActorKit, history: History, tmp_path: Path
) -> None:
    wiped = tmp_path / "wiped"
    runner = await _restored(actor_kit, wiped, "wb", history.lease)
    await _state_after_restore(actor_kit, runner, history.events)
    assert isinstance(runner.guard, PartitionGuard)
    assert runner.guard.restored == history.kept[-1]
    assert journal_path(wiped, "counter").stat().st_mode & 0o777 == 0o600
    # The subject was compacted: without the checkpoint the import would be refused.
    assert await runner.guard.fence.compacted_to() > 0
    # The fence still works after the purge: the previous owner's append is refused.
    with pytest.raises(Fenced):
        await history.fence.append(b"late")


async def test_a_journal_behind_the_compacted_subject_is_restored_not_imported(
    actor_kit: ActorKit, history: History, tmp_path: Path
) -> None:
    behind = tmp_path / "behind"
    behind.mkdir()
    shutil.copy(history.early_copy, journal_path(behind, "counter"))
    # Imported as it stands, the gap is found and refused before anything is written.
    await history.lease.release()
    lease = await Leases(actor_kit.js, ttl=30).acquire("counter", "wb")
    with pytest.raises(ClusterError, match="compacted"):
        await _runner(actor_kit, behind, lease).run()
    runner = await _restored(actor_kit, behind, "wc", lease)
    await _state_after_restore(actor_kit, runner, history.events)
    assert isinstance(runner.guard, PartitionGuard)
    assert runner.guard.restored == history.kept[-1]


async def test_compaction_keeps_what_a_restore_from_the_older_checkpoint_needs(
    actor_kit: ActorKit, history: History, tmp_path: Path
) -> None:
    older, newest = history.kept
    # A corrupt checkpoint newer than both, and the newest one gone: the older one serves.
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"not a journal" * 1000)
    assert await history.store.upload(garbage, seq=newest.seq + 1, epoch=99) is not None
    await history.store.delete(newest)
    runner = await _restored(actor_kit, tmp_path / "wiped", "wb", history.lease)
    await _state_after_restore(actor_kit, runner, history.events)
    assert isinstance(runner.guard, PartitionGuard)
    assert runner.guard.restored == older


async def test_without_a_usable_checkpoint_a_compacted_subject_is_refused(
    actor_kit: ActorKit, history: History, tmp_path: Path
) -> None:
    for checkpoint in history.kept:
        await history.store.delete(checkpoint)
    runner = await _restored(actor_kit, tmp_path / "wiped", "wb", history.lease)
    with pytest.raises(ClusterError, match="no usable checkpoint"):
        await runner.run()


async def test_a_checkpoint_name_is_never_overwritten_and_a_stale_owner_purges_nothing(
    actor_kit: ActorKit, history: History, tmp_path: Path
) -> None:
    older, newest = history.kept
    other = tmp_path / "other"
    other.write_bytes(b"something else")
    assert await history.store.upload(other, seq=newest.seq, epoch=newest.epoch) is None
    kept = tmp_path / "kept"
    await history.store.download(newest, kept)
    assert kept.read_bytes() != other.read_bytes()
    # A stale owner (fenced by a newer one) adds only an older checkpoint and purges nothing.
    js = actor_kit.js
    stale_lease = history.lease
    await (await Leases(js, ttl=30).kv()).delete("counter")
    new_lease = await Leases(js, ttl=30).acquire("counter", "wb")
    marker = await JournalFence(js, "counter", 0).open(new_lease.epoch)
    stale = PartitionGuard(stale_lease, history.fence, checkpoints=history.store)
    with pytest.raises(Fenced):
        await stale.fence.append(b"late")
    journal = journal_path(tmp_path / "a", "counter")
    added = await Checkpointer(stale, journal, every=1, log=LOG).take()
    assert added is not None
    assert newest.seq < added.seq < marker
    assert await history.store.stored() == [newest, added]
    first = await history.fence.first()
    assert first is not None
    assert first.seq == older.seq


def _cluster_worker(server: NatsServer, data: Path, name: str) -> ClusterWorker:
    return ClusterWorker(
        [Orders],
        nats=NatsOptions(servers=(server.url,)),
        data_dir=data,
        name=name,
        lease_time=3.0,
        join_delay=0.2,
        hold=0.2,
        checkpoint_every=15,
    )


def _consuming(worker: ClusterWorker) -> int:
    return len([n for n in worker.hosted() if worker.runners[n].ready.is_set()])


async def test_a_worker_whose_data_dir_was_wiped_takes_its_partitions_back(
    actor_kit: ActorKit, nats_server: NatsServer, tmp_path: Path
) -> None:
    js = actor_kit.js
    events = [Placed(f"k{i % 29}", i) for i in range(300)]
    data = tmp_path / "data"
    worker = _cluster_worker(nats_server, data, "wa")
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        await _until(lambda: _consuming(worker) == 4)
        store = await checkpoint_store(js)
        stores = [CheckpointStore(js, store, f"porders-p{k}") for k in range(4)]
        for e in events[:100]:
            await actor_kit.publish(f"porders.{e.key}", e, msg_id=f"{e.key}:{e.n}")
        with anyio.fail_after(20):  # one checkpoint each, every 15 events (25 each)
            while not all([await each.stored() for each in stores]):
                await anyio.sleep(0.1)
        for e in events[100:200]:
            await actor_kit.publish(f"porders.{e.key}", e, msg_id=f"{e.key}:{e.n}")
        await _until(lambda: sum(r.journal_pos for r in worker.runners.values()) == 200)
        worker.stop()
    # Every partition was checkpointed again on the planned stop, and compacted.
    for k, each in enumerate(stores):
        assert len(await each.stored()) == 2
        assert await JournalFence(js, "porders", k).compacted_to() > 0
    shutil.rmtree(data)
    for e in events[200:]:
        await actor_kit.publish(f"porders.{e.key}", e, msg_id=f"{e.key}:{e.n}")
    again = _cluster_worker(nats_server, data, "wa")
    async with anyio.create_task_group() as tg:
        await tg.start(again.run)
        await _until(
            lambda: (
                _consuming(again) == 4 and sum(r.journal_pos for r in again.runners.values()) == 300
            )
        )
        union: dict[str, list[int]] = {}
        for runner in again.runners.values():
            assert isinstance(runner.guard, PartitionGuard)
            assert runner.guard.restored is not None
            union.update(runner.state.seen)
        assert union == fold(events)
        again.stop()


async def test_a_deleted_checkpoint_leaves_nothing_in_the_bucket(
    actor_kit: ActorKit, history: History
) -> None:
    """The object store keeps a record of each deletion; the adapter purges it too, so the
    bucket holds the kept checkpoints' chunks and records only."""
    info = await actor_kit.js.stream_info(f"OBJ_{CHECKPOINT_BUCKET}")
    chunks = sum(-(-c.size // CHUNK_BYTES) for c in history.kept)
    assert info.state.messages == chunks + len(history.kept)

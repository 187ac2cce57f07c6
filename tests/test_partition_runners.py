"""A partitioned actor on one worker: one runner per partition, each with its own consumer,
journal, snapshots and outbox; handlers see the subject as published and their partition."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from partitioned_actors import Cart, Orders, Placed, fold

import actorsource
from actorsource import NatsOptions, QueryArgumentsError, Worker
from actorsource._model.actor import definition_of
from actorsource.journal import JournalEntry, SQLiteJournal, journal_path
from actorsource.testing import ActorKit, NatsServer

PARTITIONING = definition_of(Orders).partitions
assert PARTITIONING is not None


async def _journal_entries(data: Path, name: str) -> list[JournalEntry]:
    async with SQLiteJournal(journal_path(data, name), actor=name) as journal:
        return [e async for part in journal.entries(0) for e in part]


async def _run_until_applied(
    worker: Worker, actor_kit: ActorKit, events: list[Placed], total: int
) -> dict[str, list[int]]:
    """Run ``worker``, publish ``events``, wait until its partitions applied ``total``
    events since their journals began, stop it; the union of the partitions' states."""
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        with anyio.fail_after(20):
            await worker.ready.wait()
        for e in events:
            await actor_kit.publish(f"porders.{e.key}", e, msg_id=f"{e.key}:{e.n}")
        with anyio.fail_after(20):
            while sum(r.journal_pos for r in worker.runners.values()) < total:
                await anyio.sleep(0.02)
        union: dict[str, list[int]] = {}
        for k in range(PARTITIONING.count):
            runner = worker.runners[f"porders-p{k}"]
            assert runner.stream == "PORDERS"
            for key, values in runner.state.seen.items():
                assert key not in union, f"key {key} in two partitions"
                assert runner.state.where[key] == f"porders.{key}@{k}"
                union[key] = values
        worker.stop()
    return union


async def test_each_partition_journals_exactly_its_keys_in_order(
    actor_kit: ActorKit, nats_server: NatsServer, tmp_path: Path
) -> None:
    data = tmp_path / "worker"
    worker = Worker([Orders], nats=NatsOptions(servers=(nats_server.url,)), data_dir=data)
    events = [Placed(f"k{i % 37}", i) for i in range(300)]
    union = await _run_until_applied(worker, actor_kit, events, len(events))
    assert union == fold(events)
    journaled: dict[str, list[int]] = {}
    for k in range(PARTITIONING.count):
        entries = await _journal_entries(data, f"porders-p{k}")
        assert entries, f"partition {k} got nothing"
        assert [e.pos for e in entries] == list(range(1, len(entries) + 1))
        for e in entries:
            key = e.subject.split(".")[1]
            assert e.subject == f"porders.{key}"  # as published
            assert PARTITIONING.partition_of_key(key) == k
            assert e.stream == "PORDERS"
            journaled.setdefault(key, []).append(int(e.msg_id.split(":")[1]))
    assert journaled == fold(events)


async def test_a_restarted_worker_recovers_every_partition(
    actor_kit: ActorKit, nats_server: NatsServer, tmp_path: Path
) -> None:
    data = tmp_path / "worker"
    nats = NatsOptions(servers=(nats_server.url,))
    first = [Placed(f"k{i % 23}", i) for i in range(200)]
    await _run_until_applied(Worker([Orders], nats=nats, data_dir=data), actor_kit, first, 200)
    before = {
        k: len(await _journal_entries(data, f"porders-p{k}")) for k in range(PARTITIONING.count)
    }
    later = [Placed(f"k{i % 29}", i) for i in range(200, 320)]
    again = Worker([Orders], nats=nats, data_dir=data)
    union = await _run_until_applied(again, actor_kit, later, 320)
    assert union == fold(first + later)
    for k in range(PARTITIONING.count):
        # Each partition restored its own final snapshot of the first run.
        assert again.runners[f"porders-p{k}"].recovery.snapshot_pos == before[k]


async def test_an_entity_actors_partitions_each_hold_exactly_their_entities(
    actor_kit: ActorKit, nats_server: NatsServer, tmp_path: Path
) -> None:
    partitioning = definition_of(Cart).partitions
    assert partitioning is not None
    worker = Worker([Cart], nats=NatsOptions(servers=(nats_server.url,)), data_dir=tmp_path)
    events = [Placed(f"c{i % 11}", i) for i in range(90)]
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        with anyio.fail_after(20):
            await worker.ready.wait()
        for e in events:
            await actor_kit.publish(f"pcart.{e.key}", e)
        with anyio.fail_after(20):
            while sum(r.journal_pos for r in worker.runners.values()) < len(events):
                await anyio.sleep(0.02)
        worker.stop()
    totals: dict[str, int] = {}
    for k in range(partitioning.count):
        for entry in await _journal_entries(tmp_path, f"pcarts-p{k}"):
            assert entry.entity is not None
            assert partitioning.partition_of_key(entry.entity) == k
            assert entry.subject == f"pcart.{entry.entity}"
            totals[entry.entity] = totals.get(entry.entity, 0) + json.loads(entry.payload)["n"]
    expected: dict[str, int] = {}
    for e in events:
        expected[e.key] = expected.get(e.key, 0) + e.n
    assert totals == expected


async def test_a_keyed_query_reaches_the_keys_partition_on_one_worker(
    actor_kit: ActorKit, nats_server: NatsServer, tmp_path: Path
) -> None:
    """Outside cluster mode too: every partition is served by the one worker, and
    ``ask(actor, key=...)`` learns the partition count and asks the key's partition."""
    worker = Worker(
        [Orders, Cart], nats=NatsOptions(servers=(nats_server.url,)), data_dir=tmp_path / "w"
    )
    events = [Placed(f"k{i % 11}", i) for i in range(66)]
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        with anyio.fail_after(20):
            await worker.ready.wait()
        last = 0
        for e in events:
            await actor_kit.publish(f"porders.{e.key}", e, msg_id=f"o{e.key}:{e.n}")
            last = await actor_kit.publish(f"pcart.{e.key}", e, msg_id=f"c{e.key}:{e.n}")
        expected = fold(events)
        nc = actor_kit.nc
        for key, values in expected.items():
            k = PARTITIONING.partition_of_key(key)
            answer = await actorsource.ask(nc, "porders", "values", key=key, timeout=5)
            assert answer.actor == f"porders-p{k}"
            assert answer.value[key] == values
            cart = await actorsource.ask(
                nc, "pcarts", "cart_total", key=key, after_seq=last, timeout=5
            )
            assert cart.value == sum(values)
        with pytest.raises(QueryArgumentsError, match="'porders' has 4 partitions: give key="):
            await actorsource.ask(nc, "porders", "values", timeout=5)
        worker.stop()

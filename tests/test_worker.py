"""The worker: several actors on one connection, credentials passed through, clean stops."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import pytest
from actors import Added, Counter, assert_exactly_once, expected_totals

from actorsource import MailboxError, NatsOptions, SQLiteJournal, Worker, journal_path
from actorsource.testing import ActorKit, NatsServer, NatsServerConfig
from examples import bank


async def test_one_worker_hosts_two_actors_each_with_its_own_journal(
    actor_kit: ActorKit, nats_server: NatsServer, tmp_path: Path
) -> None:
    data = tmp_path / "worker"
    worker = Worker(
        [Counter, bank.Accounts], nats=NatsOptions(servers=(nats_server.url,)), data_dir=data
    )
    counted = [Added(f"k{i % 3}", i) for i in range(1, 51)]
    banked = bank.random_events(80, seed=2)
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        with anyio.fail_after(15):
            await worker.ready.wait()
        for e in counted:
            await actor_kit.publish(f"count.{e.key}", e)
        await bank.publish(actor_kit.js, banked)
        with anyio.fail_after(15):
            while (
                worker.runners["counter"].stats.applied < 50
                or worker.runners["accounts"].stats.applied < 80
            ):
                await anyio.sleep(0.01)
        assert worker.runners["counter"].state.totals == expected_totals(counted)
        assert worker.runners["accounts"].state.balances == bank.expected_balances(banked)[0]
        worker.stop()
    for name, count in (("counter", 50), ("accounts", 80)):
        async with SQLiteJournal(journal_path(data, name), actor=name) as journal:
            assert await journal.count() == count
            assert (await journal.snapshots())[0].pos == count  # the final snapshot


async def test_user_and_password_pass_through_to_nats(tmp_path: Path) -> None:
    config = NatsServerConfig(store_dir=tmp_path / "store", user="svc", password="s3cret-pw")
    async with NatsServer(config) as server:
        good = Worker(
            [Counter],
            nats=NatsOptions(servers=(server.url,), user="svc", password="s3cret-pw"),
            data_dir=tmp_path / "d",
        )
        async with anyio.create_task_group() as tg:
            await tg.start(good.run)
            with anyio.fail_after(15):
                await good.ready.wait()
            good.stop()
        bad = Worker(
            [Counter],
            nats=NatsOptions(servers=(server.url,), user="svc", password="wrong"),
            data_dir=tmp_path / "e",
        )
        with pytest.raises(MailboxError, match="refused the credentials"):
            await bad.run()


async def test_a_deleted_consumer_is_recreated_and_nothing_is_lost(
    actor_kit: ActorKit, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="actorsource")
    async with actor_kit.start(Counter) as counter:
        first = [Added("a", i) for i in range(1, 11)]
        for e in first:
            await actor_kit.publish("count.a", e)
        await counter.settled()
        await actor_kit.js.delete_consumer("COUNTER", "counter")
        second = [Added("b", i) for i in range(1, 11)]
        for e in second:
            await actor_kit.publish("count.b", e)
        await counter.settled()
        await assert_exactly_once(counter, first + second)
        assert counter.status == "running"
    assert any(r.getMessage() == "consumer gone, re-creating" for r in caplog.records)

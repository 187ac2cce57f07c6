"""The worker: several actors on one connection, credentials passed through, clean stops."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import pytest
from actors import Added, Counter, assert_exactly_once, expected_totals

from actorsource import MailboxError, NatsOptions, Worker
from actorsource.journal import SQLiteJournal, journal_path
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


async def test_an_actor_whose_journal_cannot_be_written_halts_at_once_naming_it(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    import os
    import subprocess

    from actorsource import JournalAccessError

    path = journal_path(tmp_path, "counter")
    async with SQLiteJournal(path, actor="counter"):
        pass
    # Root ignores permission bits, not the immutable attribute.
    as_root = os.geteuid() == 0
    if as_root:
        made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
        if made.returncode != 0:
            pytest.skip(f"running as root and `chattr +i` failed: {made.stderr.strip()}")
    else:
        path.chmod(0o400)
    worker = Worker(
        [Counter],
        nats=NatsOptions(servers=(nats_server.url,)),
        data_dir=tmp_path,
        restart_backoff=(0.01, 0.01),
    )
    try:
        # It raises once every actor has halted (from its task group: maybe in a group).
        with anyio.fail_after(15), pytest.raises((JournalAccessError, ExceptionGroup)):
            await worker.run()
    finally:
        if as_root:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        else:
            path.chmod(0o600)
    halted = worker.halted["counter"]
    assert isinstance(halted, JournalAccessError)
    assert str(path) in str(halted)
    assert worker.restarts["counter"] == 0

"""Supervision: a failing actor is restarted with backoff; the others keep running."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import pytest
from actors import Added, Counter, expected_totals

from actorsource import NatsOptions, Worker, actor, handles
from actorsource.testing import ActorKit, NatsServer

DOOMED = {"fail": True}


@actor("doomed", subjects=["doomed.>"])
class Doomed:
    total: int

    def __init__(self) -> None:
        if DOOMED["fail"]:
            raise RuntimeError("cannot reach the reference data")
        self.total = 0

    @handles(Added)
    def added(self, event: Added) -> None:
        self.total += event.amount


async def test_a_failing_actor_is_restarted_with_backoff_while_the_others_keep_running(
    actor_kit: ActorKit, nats_server: NatsServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="actorsource")
    DOOMED["fail"] = True
    worker = Worker(
        [Counter, Doomed],
        nats=NatsOptions(servers=(nats_server.url,)),
        data_dir=tmp_path / "w",
        restart_backoff=(0.05, 0.2),
    )
    events = [Added("a", i) for i in range(1, 21)]
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        with anyio.fail_after(15):
            while worker.restarts["doomed"] < 3:
                await anyio.sleep(0.01)
        for e in events:
            await actor_kit.publish("count.a", e)
        with anyio.fail_after(15):
            while (r := worker.runners.get("counter")) is None or r.stats.applied < 20:
                await anyio.sleep(0.01)
        assert worker.runners["counter"].state.totals == expected_totals(events)
        DOOMED["fail"] = False  # the dependency is back: the next restart succeeds
        with anyio.fail_after(15):
            await worker.ready.wait()
        worker.stop()
    failures = [r for r in caplog.records if r.getMessage() == "actor failed; restarting"]
    assert len(failures) >= 3
    assert all("cannot reach the reference data" in r.error for r in failures)  # type: ignore[attr-defined]
    backoffs = [r.backoff for r in failures]  # type: ignore[attr-defined]
    assert backoffs[:3] == [0.05, 0.1, 0.2]


async def test_a_locked_journal_halts_only_that_actor(
    actor_kit: ActorKit, nats_server: NatsServer, tmp_path: Path
) -> None:
    from actorsource import JournalLockedError
    from actorsource.journal import SQLiteJournal, journal_path

    data = tmp_path / "w"
    async with SQLiteJournal(journal_path(data, "counter"), actor="counter"):
        worker = Worker(
            [Counter, Doomed], nats=NatsOptions(servers=(nats_server.url,)), data_dir=data
        )
        DOOMED["fail"] = False
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            with anyio.fail_after(15):
                while "counter" not in worker.halted:
                    await anyio.sleep(0.01)
            assert isinstance(worker.halted["counter"], JournalLockedError)
            assert worker.restarts["counter"] == 0
            with anyio.fail_after(15):
                while (r := worker.runners.get("doomed")) is None or r.status != "running":
                    await anyio.sleep(0.01)
            worker.stop()

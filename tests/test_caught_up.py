"""Knowing an actor has caught up: `caught_up` in its status, and `actorsource wait`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import nats
from actors import Added, Counter
from click.testing import CliRunner

from actorsource import Context, NatsOptions, Worker, actor, encode_event, handles
from actorsource._runtime.service import ActorReport
from actorsource.cli import main
from actorsource.cli._discovery import collect_status
from actorsource.testing import NatsServer

TESTS = Path(__file__).resolve().parent
GATE = {"open": anyio.Event()}


@actor("gated", subjects=["gated.>"])
class Gated:
    """Its handler waits for GATE on its first live event: a stalled actor, on demand."""

    totals: dict[str, int]

    def __init__(self) -> None:
        self.totals = {}

    @handles(Added)
    async def added(self, event: Added, ctx: Context) -> None:
        if not self.totals and not ctx.replaying:
            await GATE["open"].wait()
        self.totals[event.key] = self.totals.get(event.key, 0) + event.amount


@asynccontextmanager
async def _worker(url: str, data_dir: Path, *actors: type) -> AsyncIterator[Worker]:
    worker = Worker(list(actors), nats=NatsOptions(servers=(url,)), data_dir=data_dir)
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        with anyio.fail_after(15):
            await worker.ready.wait()
        try:
            yield worker
        finally:
            GATE["open"].set()  # a stalled handler must not hold the graceful stop
            worker.stop()


async def _publish(url: str, subject: str, count: int) -> None:
    nc = await nats.connect(url)
    try:
        for i in range(1, count + 1):
            kind, payload = encode_event(Added("a", i))
            await nc.jetstream().publish(subject, payload, headers={"Event-Type": kind})
    finally:
        await nc.close()


async def _report(url: str, name: str) -> ActorReport:
    nc = await nats.connect(url)
    try:
        [worker] = await collect_status(nc, wait=0.2)
    finally:
        await nc.close()
    [report] = [a for a in worker.actors if a.actor == name]
    return report


async def _wait_cli(url: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    """`actorsource wait ARGS` in a subprocess, awaited: the worker in this process runs on."""
    env = {**os.environ, "PYTHONPATH": str(TESTS.parent)}
    return await anyio.run_process(
        [sys.executable, "-m", "actorsource", "wait", *args, "--nats", url], check=False, env=env
    )


async def test_an_actor_with_a_backlog_is_not_caught_up_then_is_once_it_has_applied_it(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    GATE["open"] = anyio.Event()
    url = nats_server.url
    async with _worker(url, tmp_path, Gated) as worker:
        await _publish(url, "gated.a", 30)
        with anyio.fail_after(10):
            while not worker.runners["gated"].in_hand:  # the first event holds the batch
                await anyio.sleep(0.01)

        behind = await _report(url, "gated")
        assert behind.caught_up is False
        assert behind.progress is not None
        assert behind.progress.in_hand + behind.progress.buffered + behind.progress.pending > 0

        GATE["open"].set()
        with anyio.fail_after(15):
            while not (report := await _report(url, "gated")).caught_up:
                await anyio.sleep(0.05)
        assert report.progress is not None
        assert report.progress.journal_seq == report.progress.delivered_seq == 30
        assert (report.progress.pending, report.progress.ack_pending) == (0, 0)
        assert worker.runners["gated"].journal_pos == 30


async def test_wait_caught_up_exits_zero_once_what_was_published_is_applied(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    url = nats_server.url
    async with _worker(url, tmp_path, Counter) as worker:
        await _publish(url, "count.a", 20)
        out = await _wait_cli(url, "counter", "--caught-up", "--timeout", "20")
        assert out.returncode == 0, out.stderr.decode()
        assert out.stdout.decode() == "counter is caught up: journal at stream sequence 20\n"
        assert worker.runners["counter"].journal_pos == 20


async def test_wait_caught_up_on_a_stalled_actor_times_out_saying_how_far_it_is(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    GATE["open"] = anyio.Event()
    url = nats_server.url
    async with _worker(url, tmp_path, Gated):
        await _publish(url, "gated.a", 3)
        out = await _wait_cli(url, "gated", "--caught-up", "--timeout", "1")
    assert out.returncode == 1
    [line] = out.stderr.decode().splitlines()
    assert line.startswith("actorsource: actor 'gated' is not caught up after 1 s (running): ")
    assert "3 delivered and not acknowledged, 3 in hand" in line
    assert line.endswith("journal at stream sequence 0 of GATED, last delivered 3")


async def test_wait_for_an_actor_no_worker_hosts_times_out_in_one_line(
    nats_server: NatsServer,
) -> None:
    out = await _wait_cli(nats_server.url, "nobody", "--caught-up", "--timeout", "0.5")
    assert out.returncode == 1
    assert out.stderr.decode() == (
        "actorsource: no running worker hosts actor 'nobody' (waited 0.5 s)\n"
    )


def test_wait_without_a_condition_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["wait", "counter"])
    assert result.exit_code == 2
    assert "--caught-up" in result.stderr

"""Watching workers: micro service discovery, `actorsource status`, `snapshots take`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace

import anyio
import nats
import pytest
from actors import Added, Counter
from click.testing import CliRunner

from actorsource import NatsOptions, Worker, encode_event
from actorsource._runtime.service import RateMeter
from actorsource.cli import main
from actorsource.journal import summarize
from actorsource.testing import ActorKit, ActorStats, NatsServer, NatsServerConfig
from examples import bank

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent


def _env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), str(TESTS)])
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", **extra}


async def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    """The real entry point in a subprocess, awaited: the worker in this process keeps running."""
    return await anyio.run_process(
        [sys.executable, "-m", "actorsource", *args], check=False, env=_env(**env)
    )


@asynccontextmanager
async def _worker(
    url: str, data_dir: Path, *actors: type, token: str | None = None
) -> AsyncIterator[Worker]:
    nats_options = NatsOptions(servers=(url,), token=token)
    worker = Worker(list(actors), nats=nats_options, data_dir=data_dir)
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        with anyio.fail_after(15):
            await worker.ready.wait()
        yield worker
        worker.stop()


async def _add_to_counter(url: str, count: int, token: str | None = None) -> None:
    """Publish ``count`` Added events for the counter's key "a"."""
    nc = await nats.connect(url, token=token)
    try:
        for i in range(1, count + 1):
            kind, payload = encode_event(Added("a", i))
            await nc.jetstream().publish("count.a", payload, headers={"Event-Type": kind})
    finally:
        await nc.close()


async def _applied(worker: Worker, actor: str, count: int) -> None:
    with anyio.fail_after(15):
        while worker.runners[actor].journal_pos < count:
            await anyio.sleep(0.01)


async def test_a_running_worker_answers_srv_ping_info_and_stats_for_actorsource(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    async with _worker(nats_server.url, tmp_path, Counter) as worker:
        nc = await nats.connect(nats_server.url)
        try:
            ping = json.loads((await nc.request("$SRV.PING.actorsource", b"", timeout=2)).data)
            assert ping["type"] == "io.nats.micro.v1.ping_response"
            assert ping["name"] == "actorsource"
            assert ping["metadata"]["worker"] == worker.name
            assert ping["metadata"]["actors"] == "counter"
            service_id = ping["id"]
            info = json.loads(
                (await nc.request(f"$SRV.INFO.actorsource.{service_id}", b"", timeout=2)).data
            )
            assert {e["name"]: e["subject"] for e in info["endpoints"]} == {
                "status": f"actorsource.{service_id}.status",
                "snapshot": f"actorsource.{service_id}.snapshot",
                "query-counter": "actorsource.query.counter.>",  # one per actor
            }
            stats = json.loads((await nc.request("$SRV.STATS.actorsource", b"", timeout=2)).data)
            assert stats["type"] == "io.nats.micro.v1.stats_response"
        finally:
            await nc.close()


def _rows(table: str) -> dict[str, dict[str, str]]:
    """The status table as {actor: {column: cell}} (columns are split on 2+ spaces)."""
    import re

    lines = table.strip().splitlines()
    header = re.split(r" {2,}", lines[0].strip())
    rows = [re.split(r" {2,}", line.strip()) for line in lines[1:] if line.strip()]
    return {row[1]: dict(zip(header, row, strict=True)) for row in rows}


def _spawn_worker(url: str, data_dir: Path, target: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "actorsource", "run", target, "--nats", url,
         "--data-dir", str(data_dir), "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env(), cwd=TESTS,
    )  # fmt: skip


async def test_status_shows_the_actors_of_two_worker_processes_with_their_positions(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    url = nats_server.url
    workers = [
        _spawn_worker(url, tmp_path / "w1", "examples.bank:Accounts"),
        _spawn_worker(url, tmp_path / "w2", "actors:Counter"),
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            for line in worker.stdout:
                if b"actor running" in line:
                    break
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            await bank.publish(js, bank.random_events(120, seed=4))
            for i in range(1, 26):
                kind, payload = encode_event(Added(f"k{i % 3}", i))
                await js.publish(f"count.k{i % 3}", payload, headers={"Event-Type": kind})
            await js.publish("count.bad", b"{not json", headers={"Event-Type": "Added"})
            with anyio.fail_after(15):
                for stream, durable in (("ACCOUNTS", "accounts"), ("COUNTER", "counter")):
                    while True:
                        info = await js.consumer_info(stream, durable)
                        if info.num_pending == 0 and info.num_ack_pending == 0:
                            break
                        await anyio.sleep(0.02)
        finally:
            await nc.close()

        table = await _cli("status", "--nats", url)
        assert table.returncode == 0, table.stderr.decode()
        rows = _rows(table.stdout.decode())
        assert set(rows) == {"accounts", "counter"}
        accounts, counter = rows["accounts"], rows["counter"]
        assert accounts["WORKER"] == f"worker-{workers[0].pid}"
        assert counter["WORKER"] == f"worker-{workers[1].pid}"
        assert (accounts["STATE"], accounts["JOURNAL POS"], accounts["LAG"]) == (
            "running",
            "120",
            "0",
        )
        assert (counter["STATE"], counter["JOURNAL POS"], counter["LAG"]) == ("running", "25", "0")
        assert counter["STREAM SEQ"] == "26"  # the undecodable message is consumed, dead-lettered
        assert counter["DEAD LETTERS"] == "1"
        assert counter["OUTBOX"] == "0"  # the dead letter was published on its DLQ subject
        snapshot_pos, age = counter["SNAPSHOT"].split(" ", 1)
        assert 10 <= int(snapshot_pos) <= 25  # snapshot_every=10, taken at a batch's end
        assert age.endswith("s ago)")
        assert accounts["SNAPSHOT"] == "-"  # snapshot_every=1000

        as_json = await _cli("status", "--nats", url, "--json")
        assert as_json.returncode == 0, as_json.stderr.decode()
        reports = json.loads(as_json.stdout)
        by_actor = {a["actor"]: a for r in reports for a in r["actors"]}
        assert by_actor["accounts"]["journal_pos"] == 120
        assert by_actor["accounts"]["events_per_s"] > 0
        assert by_actor["counter"]["restarts"] == 0
        assert sorted(r["pid"] for r in reports) == sorted(w.pid for w in workers)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.communicate(timeout=30)
    assert [w.returncode for w in workers] == [0, 0]


async def test_status_with_no_worker_running_says_so(nats_server: NatsServer) -> None:
    out = await _cli("status", "--nats", nats_server.url)
    assert out.returncode == 0
    assert out.stdout.decode().strip() == "no workers running"
    out = await _cli("status", "--nats", nats_server.url, "--json")
    assert json.loads(out.stdout) == []


def test_status_without_a_server_says_so_in_one_line_and_exits_non_zero() -> None:
    result = CliRunner().invoke(main, ["status", "--nats", "nats://127.0.0.1:1"])
    assert result.exit_code == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("actorsource: cannot connect to NATS at nats://127.0.0.1:1")


def test_status_refuses_a_discovery_window_out_of_range() -> None:
    result = CliRunner().invoke(main, ["status", "--wait", "0"])
    assert result.exit_code == 2
    assert "--wait" in result.stderr


async def test_snapshots_take_asks_the_hosting_worker_and_prints_the_position(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    async with _worker(nats_server.url, tmp_path, Counter) as worker:
        await _add_to_counter(nats_server.url, 7)
        await _applied(worker, "counter", 7)
        out = await _cli("snapshots", "take", "counter", "--nats", nats_server.url)
        assert out.returncode == 0, out.stderr.decode()
        assert out.stdout.decode().strip() == (
            f"snapshot of counter written at position 7 by {worker.name}"
        )
        assert [s.pos for s in summarize(worker.runners["counter"].journal_path).snapshots] == [7]


async def test_snapshots_take_for_an_actor_no_worker_hosts_fails_in_one_line(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    async with _worker(nats_server.url, tmp_path, Counter):
        out = await _cli("snapshots", "take", "ghost", "--nats", nats_server.url)
    assert out.returncode == 1
    assert out.stderr.decode().strip() == "actorsource: no running worker hosts actor 'ghost'"


def test_snapshots_take_refuses_a_name_that_cannot_be_an_actor() -> None:
    result = CliRunner().invoke(main, ["snapshots", "take", "not.an>actor"])
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("actorsource: ")
    assert "not.an>actor" in line


def test_events_per_second_are_measured_over_the_last_minute_and_restart_with_the_runner() -> None:
    meter = RateMeter(window=60.0)
    runner = SimpleNamespace(stats=ActorStats(since=0.0))
    for second in range(121):  # 10/s for a minute, then 1/s for a minute
        runner.stats.applied += 10 if second <= 60 else 1
        meter.sample("a", runner, float(second))  # type: ignore[arg-type]
    assert round(meter.rate("a", runner, 120.0), 1) == 1.0  # type: ignore[arg-type]
    restarted = SimpleNamespace(stats=ActorStats(since=121.0))  # counters start again at 0
    restarted.stats.applied = 5
    assert meter.rate("a", restarted, 126.0) == 1.0  # type: ignore[arg-type]


async def test_status_shows_a_halted_actor_with_its_reason_beside_a_running_one(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    from actorsource._journal.lock import take_lock
    from actorsource.journal import journal_path
    from actorsource.testing import ActorStatus

    lock = take_lock(journal_path(tmp_path, "counter"))  # "another process" holds it
    try:
        worker = Worker(
            [Counter, bank.Accounts],
            nats=NatsOptions(servers=(nats_server.url,)),
            data_dir=tmp_path,
        )
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            with anyio.fail_after(15):
                while "counter" not in worker.halted or (
                    worker.runners["accounts"].status is not ActorStatus.RUNNING
                ):
                    await anyio.sleep(0.01)
            out = await _cli("status", "--nats", nats_server.url)
            worker.stop()
    finally:
        os.close(lock)
    assert out.returncode == 0, out.stderr.decode()
    table, _, notes = out.stdout.decode().partition(f"\n{worker.name} counter: ")
    rows = _rows(table)
    assert (rows["counter"]["STATE"], rows["accounts"]["STATE"]) == ("halted", "running")
    assert "already open for writing" in notes


# -- a token-protected server ------------------------------------------------------------------

TOKEN = 's3cr"t-$token'


@pytest.fixture
async def token_server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    async with NatsServer(NatsServerConfig(store_dir=tmp_path / "store", token=TOKEN)) as server:
        yield server


def _assert_refused_in_one_line(out: subprocess.CompletedProcess[bytes], url: str) -> None:
    stderr = out.stderr.decode()
    assert out.returncode == 1, stderr
    assert out.stdout == b""
    [line] = stderr.splitlines()
    assert line.startswith(f"actorsource: cannot connect to NATS at {url}: "), line
    assert "refused the credentials" in line


async def test_status_with_the_token_shows_the_workers_of_a_token_protected_server(
    token_server: NatsServer, tmp_path: Path
) -> None:
    async with _worker(token_server.url, tmp_path, Counter, token=TOKEN) as worker:
        out = await _cli("status", "--nats", token_server.url, "--token", TOKEN)
    assert out.returncode == 0, out.stderr.decode()
    counter = _rows(out.stdout.decode())["counter"]
    assert (counter["WORKER"], counter["STATE"]) == (worker.name, "running")


async def test_status_takes_the_token_from_nats_token(token_server: NatsServer) -> None:
    out = await _cli("status", "--nats", token_server.url, NATS_TOKEN=TOKEN)
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode().strip() == "no workers running"


@pytest.mark.parametrize("token", [(), ("--token", "wrong-token")], ids=["none", "wrong"])
async def test_status_without_the_token_of_a_protected_server_fails_in_one_line(
    token_server: NatsServer, token: tuple[str, ...]
) -> None:
    out = await _cli("status", "--nats", token_server.url, *token)
    _assert_refused_in_one_line(out, token_server.url)
    assert b"wrong-token" not in out.stderr


async def test_snapshots_take_with_the_token_reaches_the_worker_and_without_it_fails(
    token_server: NatsServer, tmp_path: Path
) -> None:
    url = token_server.url
    async with _worker(url, tmp_path, Counter, token=TOKEN) as worker:
        await _add_to_counter(url, 3, token=TOKEN)
        await _applied(worker, "counter", 3)
        refused = await _cli("snapshots", "take", "counter", "--nats", url)
        taken = await _cli("snapshots", "take", "counter", "--nats", url, "--token", TOKEN)
    _assert_refused_in_one_line(refused, url)
    assert taken.returncode == 0, taken.stderr.decode()
    assert taken.stdout.decode().strip() == (
        f"snapshot of counter written at position 3 by {worker.name}"
    )


async def test_status_counts_what_an_actor_committed_to_publish_and_could_not_yet(
    actor_kit: ActorKit, nats_server: NatsServer, tmp_path: Path
) -> None:
    from test_outbox import Sale, Till

    worker = Worker([Till], nats=NatsOptions(servers=(nats_server.url,)), data_dir=tmp_path / "w")
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        with anyio.fail_after(15):
            await worker.ready.wait()
        for i in range(3):  # no stream stores ledger.>: the till's events stay in its outbox
            await actor_kit.publish(f"sales.s{i}", Sale(f"s{i}", 1))
        with anyio.fail_after(15):
            while worker.runners["till"].stats.applied < 3:
                await anyio.sleep(0.01)
        assert worker.service is not None
        [till] = (await worker.service.report()).actors
        assert (till.journal_pos, till.outbox) == (3, 3)
        worker.stop()

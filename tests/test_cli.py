"""The command line through its real entry point: demo, run, and the expected failures."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import click
import pytest

from actorsource import SQLiteJournal, journal_path
from actorsource.cli import main
from actorsource.testing import NatsServer
from examples import bank

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "actorsource", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def test_the_demo_exits_zero_and_reports_an_exact_recovery(tmp_path: Path) -> None:
    out = subprocess.run(
        _cli("demo", "--events", "2000", "--keep", str(tmp_path / "demo")),
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "kill -9" in out.stdout
    assert "recovered from snapshot at position" in out.stdout
    assert "2000 of 2000 published, 0 applied twice" in out.stdout
    assert "equal to an independent fold of what was published" in out.stdout
    assert out.stdout.rstrip().endswith("OK")


def test_the_demo_kills_between_two_snapshots_so_recovery_replays_a_tail(tmp_path: Path) -> None:
    out = subprocess.run(
        _cli("demo", "--events", "2000"),
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    [(kill, snapshot)] = re.findall(r"journal position (\d+), newest snapshot at (\d+)", out.stdout)
    [(restored, replayed)] = re.findall(
        r"from snapshot at position (\d+), replayed (\d+) journal entries", out.stdout
    )
    assert int(kill) == 1500  # half-way, between the snapshots every 1,000 events
    assert restored == snapshot
    assert int(replayed) == int(kill) - int(snapshot) > 0


def test_run_without_a_server_says_so_in_one_line_and_exits_non_zero(tmp_path: Path) -> None:
    out = subprocess.run(
        _cli(
            "run",
            "examples.bank:Accounts",
            "--nats",
            "nats://127.0.0.1:1",
            "--data-dir",
            str(tmp_path),
        ),
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
        cwd=ROOT,
    )
    assert out.returncode == 1
    lines = [line for line in out.stderr.splitlines() if line.startswith("actorsource:")]
    assert len(lines) == 1, out.stderr
    assert "nats://127.0.0.1:1" in lines[0]
    assert "--embedded" in lines[0]
    assert "Traceback" not in out.stderr


def test_run_with_a_target_that_is_not_an_actor_is_a_usage_error(tmp_path: Path) -> None:
    out = subprocess.run(
        _cli("run", "examples.bank:Deposited"),
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
        cwd=ROOT,
    )
    assert out.returncode == 2
    assert "is not an actor" in out.stderr
    assert "Traceback" not in out.stderr


async def _wait_for(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    with anyio.fail_after(timeout):
        while not await predicate():
            await anyio.sleep(0.02)


async def test_a_worker_process_applies_events_and_stops_on_sigterm_with_a_final_snapshot(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    import nats

    data = tmp_path / "data"
    worker = subprocess.Popen(
        _cli(
            "run",
            "examples.bank:Accounts",
            "--nats",
            nats_server.url,
            "--data-dir",
            str(data),
            "--log-format",
            "json",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=_env(),
        cwd=ROOT,
    )
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()

        async def consumer_exists() -> bool:
            try:
                await js.consumer_info("ACCOUNTS", "accounts")
                return True
            except Exception:
                return False

        await _wait_for(consumer_exists)
        events = bank.random_events(300, seed=5)
        await bank.publish(js, events)

        async def applied() -> bool:
            info = await js.consumer_info("ACCOUNTS", "accounts")
            return bool(info.num_pending == 0 and info.num_ack_pending == 0)

        await _wait_for(applied)
    finally:
        await nc.close()
    worker.send_signal(signal.SIGTERM)
    output, _ = worker.communicate(timeout=30)
    assert worker.returncode == 0, output.decode()
    logs = [json.loads(line) for line in output.decode().splitlines() if line.startswith("{")]
    assert any(e["event"] == "stopping on signal" for e in logs)
    assert any(e["event"] == "actor stopped" and e.get("actor") == "accounts" for e in logs)
    async with SQLiteJournal(journal_path(data, "accounts"), actor="accounts") as journal:
        assert await journal.count() == 300
        assert (await journal.snapshots())[0].pos == 300


async def test_a_second_worker_on_the_same_data_directory_fails_fast(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    args = _cli(
        "run",
        "examples.bank:Accounts",
        "--nats",
        nats_server.url,
        "--data-dir",
        str(tmp_path),
        "--log-format",
        "json",
    )
    first = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env(), cwd=ROOT
    )
    try:
        assert first.stdout is not None
        for line in first.stdout:
            if b"actor running" in line:
                break
        second = subprocess.run(
            args, capture_output=True, text=True, timeout=60, env=_env(), cwd=ROOT
        )
        assert second.returncode == 1
        assert "already open for writing" in second.stderr
        assert f"by process {first.pid}" in second.stderr
        assert first.poll() is None  # the first worker is untouched
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)
    assert first.returncode == 0


def test_the_command_line_and_demo_do_not_need_the_test_dependencies() -> None:
    code = "import sys, actorsource.cli, actorsource._demo; print('pytest' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "False"


async def test_run_embedded_starts_its_own_nats_server_under_the_data_directory(
    tmp_path: Path,
) -> None:
    import socket

    import nats

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"nats://127.0.0.1:{port}"
    data = tmp_path / "data"
    worker = subprocess.Popen(
        _cli("run", "examples.bank:Accounts", "--embedded", "--nats", url,
             "--data-dir", str(data), "--log-format", "json"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env(), cwd=ROOT,
    )  # fmt: skip
    early = b""
    try:
        assert worker.stdout is not None
        for line in worker.stdout:
            early += line
            if b"actor running" in line:
                break
        nc = await nats.connect(url)
        try:
            events = bank.random_events(50, seed=9)
            await bank.publish(nc.jetstream(), events)

            async def applied() -> bool:
                info = await nc.jetstream().consumer_info("ACCOUNTS", "accounts")
                return bool(info.num_pending == 0 and info.num_ack_pending == 0)

            await _wait_for(applied)
        finally:
            await nc.close()
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=30)
    assert worker.returncode == 0, output.decode()
    assert (data / "nats").is_dir()
    assert f'"url": "{url}"'.encode() in early
    assert b"embedded nats-server started" in early
    async with SQLiteJournal(journal_path(data, "accounts"), actor="accounts") as journal:
        assert await journal.count() == 50


@pytest.mark.parametrize(
    "command", ["run", "status", "snapshots take", "dlq replay", "rebuild"], ids=str
)
def test_every_command_that_connects_to_nats_takes_the_same_connection_options(
    command: str,
) -> None:
    found: click.Command = main
    for name in command.split():
        assert isinstance(found, click.Group)
        found = found.commands[name]
    options = {p.opts[0]: p.envvar for p in found.params if isinstance(p, click.Option)}
    assert {
        "--nats": "NATS_URL",
        "--user": "NATS_USER",
        "--password": "NATS_PASSWORD",
        "--token": "NATS_TOKEN",
        "--creds": None,
        "--tls-ca": None,
        "--tls-cert": None,
        "--tls-key": None,
    }.items() <= options.items()

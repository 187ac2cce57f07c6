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

from actorsource.cli import main
from actorsource.journal import SQLiteJournal, journal_path
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


def test_run_without_a_server_gives_up_after_the_connect_timeout_in_one_line(
    tmp_path: Path,
) -> None:
    import time

    started = time.monotonic()
    out = subprocess.run(
        _cli(
            "run",
            "examples.bank:Accounts",
            "--nats",
            "nats://127.0.0.1:1",
            "--data-dir",
            str(tmp_path),
            "--connect-timeout",
            "1",
        ),
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
        cwd=ROOT,
    )
    assert time.monotonic() - started < 10
    assert out.returncode == 1
    lines = [line for line in out.stderr.splitlines() if line.startswith("actorsource:")]
    assert len(lines) == 1, out.stderr
    assert "nats://127.0.0.1:1 within 1 s" in lines[0]
    assert "--embedded" in lines[0]
    assert "Traceback" not in out.stderr
    assert "nats disconnected" not in out.stderr  # it never was connected


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_for_line(process: subprocess.Popen[bytes], text: bytes) -> bytes:
    """Read the process's output up to the first line holding ``text``; all of it read."""
    assert process.stdout is not None
    seen = b""
    for line in process.stdout:
        seen += line
        if text in line:
            return seen
    raise AssertionError(f"{text!r} never came; the output was:\n{seen.decode()}")


async def test_run_waits_for_a_server_that_starts_after_it_then_works(tmp_path: Path) -> None:
    import nats

    from actorsource.testing import NatsServerConfig

    port = _free_port()
    url = f"nats://127.0.0.1:{port}"
    data = tmp_path / "data"
    worker = subprocess.Popen(
        _cli("run", "examples.bank:Accounts", "--nats", url, "--data-dir", str(data),
             "--log-format", "json"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env(), cwd=ROOT,
    )  # fmt: skip
    try:
        waiting = json.loads(_wait_for_line(worker, b"cannot reach NATS").splitlines()[-1])
        assert (waiting["level"], waiting["url"]) == ("warning", url)
        async with NatsServer(NatsServerConfig(store_dir=tmp_path / "nats", port=port)):
            _wait_for_line(worker, b"actor running")
            nc = await nats.connect(url)
            try:
                await bank.publish(nc.jetstream(), bank.random_events(20, seed=3))

                async def applied() -> bool:
                    info = await nc.jetstream().consumer_info("ACCOUNTS", "accounts")
                    return bool(info.num_pending == 0 and info.num_ack_pending == 0)

                await _wait_for(applied)
            finally:
                await nc.close()
            worker.send_signal(signal.SIGTERM)
            worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    assert worker.returncode == 0
    async with SQLiteJournal(journal_path(data, "accounts"), actor="accounts") as journal:
        assert await journal.count() == 20


def test_sigterm_while_waiting_for_the_server_stops_the_worker_at_once(tmp_path: Path) -> None:
    worker = subprocess.Popen(
        _cli("run", "examples.bank:Accounts", "--nats", f"nats://127.0.0.1:{_free_port()}",
             "--data-dir", str(tmp_path), "--log-format", "json"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env(), cwd=ROOT,
    )  # fmt: skip
    try:
        _wait_for_line(worker, b"cannot reach NATS")
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    assert worker.returncode == 0


@pytest.mark.parametrize(
    "data_dir", ["a-file/data", "/proc/actorsource-nope"], ids=["under a file", "under /proc"]
)
def test_a_data_directory_that_cannot_be_made_fails_the_start_in_one_line(
    tmp_path: Path, data_dir: str
) -> None:
    (tmp_path / "a-file").write_text("")
    out = subprocess.run(
        _cli("run", "examples.bank:Accounts", "--data-dir", data_dir,
             "--nats", "nats://127.0.0.1:1"),
        capture_output=True, text=True, timeout=60, env=_env(),
        cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    [line] = out.stderr.splitlines()
    assert line.startswith(f"actorsource: cannot use the data directory {data_dir}: ")
    assert line.endswith(("Not a directory", "No such file or directory"))


def _read_only_directory(path: Path) -> None:
    """Make ``path`` unwritable, even for root (immutable, with chattr), or skip."""
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o500)
        return
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(
            "running as root, which ignores permission bits, and `chattr +i` failed "
            f"(no CAP_LINUX_IMMUTABLE, or a file system without it): {made.stderr.strip()}"
        )


def _writable_again(path: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        path.chmod(0o700)


def test_an_unwritable_data_directory_fails_the_start_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _read_only_directory(data)
    try:
        out = subprocess.run(
            _cli("run", "examples.bank:Accounts", "--data-dir", str(data),
                 "--nats", "nats://127.0.0.1:1"),
            capture_output=True, text=True, timeout=60, env=_env(), cwd=ROOT,
        )  # fmt: skip
    finally:
        _writable_again(data)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    [line] = out.stderr.splitlines()
    assert line.startswith(f"actorsource: cannot use the data directory {data}: ")
    assert line.endswith(("Permission denied", "Operation not permitted"))


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
    code = "import sys, actorsource.cli, actorsource.cli._demo; print('pytest' in sys.modules)"
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


def test_run_embedded_listens_on_the_port_of_the_default_url(tmp_path: Path) -> None:
    url = f"nats://127.0.0.1:{_free_port()}"  # as $NATS_URL: no --nats given
    worker = subprocess.Popen(
        _cli("run", "examples.bank:Accounts", "--embedded", "--data-dir", str(tmp_path)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**_env(), "NATS_URL": url},
        cwd=ROOT,
    )  # fmt: skip
    try:
        early = _wait_for_line(worker, b"actor running")
        assert f"nats-server listening on {url}\n".encode() in early
        status = subprocess.run(
            _cli("status", "--json"), capture_output=True, text=True, timeout=60,
            env={**_env(), "NATS_URL": url}, cwd=ROOT,
        )  # fmt: skip
        assert status.returncode == 0, status.stderr
        [report] = json.loads(status.stdout)
        assert [a["actor"] for a in report["actors"]] == ["accounts"]
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=30)
    assert worker.returncode == 0


def test_run_embedded_on_a_port_already_taken_fails_in_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        url = f"nats://127.0.0.1:{taken.getsockname()[1]}"
        out = subprocess.run(
            _cli("run", "examples.bank:Accounts", "--embedded", "--nats", url,
                 "--data-dir", str(tmp_path)),
            capture_output=True, text=True, timeout=60, env=_env(), cwd=ROOT,
        )  # fmt: skip
    assert out.returncode == 1
    [line] = out.stderr.splitlines()
    assert line.startswith(f"actorsource: cannot start the embedded nats-server on {url}: ")
    assert "already in use" in line


_DEFECTS = {
    "no handlers": "@actor('a', subjects=['a.>'])\nclass A:\n    pass\n",
    "a plain event class": (
        "class E:\n    pass\n\n@actor('a', subjects=['a.>'])\nclass A:\n"
        "    @handles(E)\n    def h(self, e): pass\n"
    ),
    "a dict as event class": (
        "@actor('a', subjects=['a.>'])\nclass A:\n    @handles(dict)\n    def h(self, e): pass\n"
    ),
    "two handlers for one type": (
        "@dataclass\nclass E:\n    x: int\n\n@actor('a', subjects=['a.>'])\nclass A:\n"
        "    @handles(E)\n    def h(self, e): pass\n    @handles(E)\n    def g(self, e): pass\n"
    ),
    "a bad name": (
        "@dataclass\nclass E:\n    x: int\n\n@actor('bad name!', subjects=['a.>'])\nclass A:\n"
        "    @handles(E)\n    def h(self, e): pass\n"
    ),
    "an __init__ with required arguments": (
        "@dataclass\nclass E:\n    x: int\n\n@actor('a', subjects=['a.>'])\nclass A:\n"
        "    def __init__(self, x):\n        self.x = x\n    @handles(E)\n    def h(self, e): pass\n"
    ),
}


@pytest.mark.parametrize("defect", list(_DEFECTS), ids=str)
def test_an_actor_defined_wrongly_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, defect: str
) -> None:
    from click.testing import CliRunner

    module = f"defective_{abs(hash(defect))}"
    header = "from dataclasses import dataclass\nfrom actorsource import actor, handles\n\n"
    (tmp_path / f"{module}.py").write_text(header + _DEFECTS[defect])
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    result = CliRunner().invoke(main, ["run", f"{module}:A", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith(f"actorsource: {module!r} defines an actor wrongly: ")
    assert not (tmp_path / "data").exists()


def test_a_file_name_as_target_hints_at_the_module_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "mymodule.py").write_text("")
    result = CliRunner().invoke(main, ["run", "mymodule.py:Accounts"])
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("actorsource: cannot import 'mymodule.py'")
    assert line.endswith("name a module, not a file: 'mymodule:Accounts'")


async def test_a_graceful_stop_logs_no_warning(nats_server: NatsServer, tmp_path: Path) -> None:
    worker = subprocess.Popen(
        _cli("run", "examples.bank:Accounts", "--nats", nats_server.url,
             "--data-dir", str(tmp_path), "--log-format", "json"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env(), cwd=ROOT,
    )  # fmt: skip
    try:
        _wait_for_line(worker, b"actor running")
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=30)
    assert worker.returncode == 0
    logs = [json.loads(line) for line in output.decode().splitlines() if line.startswith("{")]
    assert any(e["event"] == "actor stopped" for e in logs)
    assert [e for e in logs if e["level"] in ("warning", "error")] == []


async def test_status_as_json_ends_with_a_newline(nats_server: NatsServer) -> None:
    out = await anyio.run_process(
        _cli("status", "--json", "--nats", nats_server.url, "--wait", "0.05"), env=_env()
    )
    assert out.stdout == b"[]\n"


async def test_run_with_a_paused_server_gives_up_after_the_connect_timeout_in_one_line(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    nats_server.pause()
    try:
        with anyio.fail_after(20):
            out = await anyio.run_process(
                _cli("run", "examples.bank:Accounts", "--nats", nats_server.url,
                     "--data-dir", str(tmp_path), "--connect-timeout", "1"),
                check=False, env=_env(), cwd=ROOT,
            )  # fmt: skip
    finally:
        nats_server.resume()
    assert out.returncode == 1
    [line] = out.stderr.decode().splitlines()
    assert line.startswith(f"actorsource: cannot connect to NATS at {nats_server.url} within 1 s")
    assert "no answer in time" in line

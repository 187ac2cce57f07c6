"""The lean core: without the extras (pydantic, opentelemetry, prometheus-client), the core,
the CLI and the test kit work, and asking for an extra's feature fails in one line naming the
extra to install. Each test runs a Python whose ``sitecustomize`` (tests/lean/) makes those
packages unimportable, whatever this environment has installed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LEAN = ROOT / "tests" / "lean"


def run_lean(*args: str, timeout: float = 100) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(LEAN), *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_extras_cannot_be_imported_in_the_lean_interpreter() -> None:
    code = (
        "import importlib\n"
        "for name in ('pydantic', 'opentelemetry', 'prometheus_client'):\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError:\n"
        "        continue\n"
        "    raise SystemExit(f'{name} was imported')\n"
        "print('blocked')\n"
    )
    done = run_lean("-c", code)
    assert (done.returncode, done.stdout.strip()) == (0, "blocked"), done.stderr


def test_the_core_the_cli_and_the_test_kit_work_without_the_extras() -> None:
    # Bad input through a real actor (the core), the kit's own tests, the CLI's; the tests
    # of the extras' features skip themselves.
    done = run_lean(
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/test_bad_input.py",
        "tests/test_testing.py",
        "tests/test_cli.py",
        "tests/test_probes.py",
        "tests/test_pydantic_events.py",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = done.stdout.strip().splitlines()[-1]
    assert " passed" in summary
    assert "2 skipped" in summary, done.stdout
    assert "could not import 'prometheus_client'" in done.stdout
    assert "could not import 'pydantic'" in done.stdout


def test_metrics_without_prometheus_client_fail_in_one_line_naming_the_extra(
    tmp_path: Path,
) -> None:
    done = run_lean(
        "-m",
        "actorsource",
        "run",
        "examples.bank:Accounts",
        "--nats",
        "nats://127.0.0.1:1",
        "--data-dir",
        str(tmp_path / "data"),
        "--metrics-port",
        "9464",
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "actorsource: --metrics-port needs prometheus_client, which is not installed: "
        "pip install 'actorsource[prometheus]'"
    ]
    assert not (tmp_path / "data").exists()  # it failed before doing anything


def test_tracing_without_opentelemetry_fails_in_one_line_naming_the_extra(
    tmp_path: Path,
) -> None:
    done = run_lean(
        "-m",
        "actorsource",
        "run",
        "examples.bank:Accounts",
        "--nats",
        "nats://127.0.0.1:1",
        "--data-dir",
        str(tmp_path / "data"),
        "--tracing",
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "actorsource: --tracing needs opentelemetry.trace, which is not installed: "
        "pip install 'actorsource[otel]'"
    ]
    assert not (tmp_path / "data").exists()

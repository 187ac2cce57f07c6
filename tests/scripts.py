"""Running the project's scripts (bench/) as the tests do: a subprocess with a deadline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_script(args: list[str], timeout: float = 100) -> tuple[int, str, str]:
    """Run ``python ARGS`` from the repository root; on a timeout, stop it (a script stops
    its own workers and server on SIGTERM) and fail the test with what it printed."""
    process = subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        try:
            out, err = process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
        pytest.fail(f"{args[0]} did not finish in {timeout} s\n{out.decode()}\n{err.decode()}")
    return process.returncode, out.decode(), err.decode()

"""The crash loop, short: 20 SIGKILLs of the bank worker while 5,000 events are published."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], timeout: float) -> tuple[int, str, str]:
    """Run the bench script; on a timeout, stop it (it stops its workers and server) and fail."""
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
        pytest.fail(f"bench/chaos.py did not finish in {timeout} s\n{out.decode()}\n{err.decode()}")
    return process.returncode, out.decode(), err.decode()


@pytest.mark.slow
def test_twenty_kill_9s_while_publishing_lose_and_duplicate_nothing() -> None:
    code, out, err = _run(
        ["bench/chaos.py", "--events", "5000", "--kills", "20", "--seed", "7", "--json"],
        timeout=90,
    )
    lines = out.splitlines()
    assert len(lines) == 1, f"--json prints exactly one line on stdout:\n{out}\n{err}"
    result = json.loads(lines[0])
    assert code == 0, f"exit status {code}: {result}\n{err}"
    assert result["kills"] == 20
    assert result["published"] == result["applied"] == 5000
    assert result["lost"] == result["duplicated"] == 0
    assert result["diverged"] == result["out_of_order"] == 0
    assert result["ok"] is True

"""The crash loop, short: 20 SIGKILLs of the bank worker while 5,000 events are published."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scripts import run_script

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_twenty_kill_9s_while_publishing_lose_and_duplicate_nothing() -> None:
    code, out, err = run_script(
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


@pytest.mark.slow
def test_kill_9s_while_duplicates_are_stored_after_the_window_keep_stream_order() -> None:
    code, out, err = run_script(
        [
            "bench/chaos.py",
            "--events",
            "20000",
            "--kills",
            "30",
            "--stored-duplicates",
            "200",
            "--seed",
            "11",
            "--json",
        ],
        timeout=300,
    )
    result = json.loads(out.splitlines()[-1])
    assert code == 0, f"exit status {code}: {result}\n{err}"
    assert result["stored_duplicates"] > 0
    assert result["lost"] == result["duplicated"] == result["duplicates_applied"] == 0
    assert result["diverged"] == result["out_of_order"] == 0

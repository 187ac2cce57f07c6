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

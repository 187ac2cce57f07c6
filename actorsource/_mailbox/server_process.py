"""Watching the nats-server process from outside: its log, its stop and its exit."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import anyio

__all__ = ["log_tail", "wait_exit", "wait_stopped"]


def log_tail(path: Path, offset: int, lines_wanted: int = 20) -> str:
    """The last lines nats-server wrote to its log at ``path`` since ``offset``."""
    try:
        with path.open("rb") as log:
            log.seek(offset)
            text = log.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    lines = text.rstrip().splitlines()
    # A bad flag prints the error and then ~60 lines of usage; the error is the part
    # worth showing.
    for i, line in enumerate(lines):
        if line.startswith("Usage: nats-server"):
            lines = [*lines[:i], "(usage text omitted)"]
            break
    lines = lines[-lines_wanted:]
    return "\n".join(lines) if lines else "(no output)"


def wait_stopped(pid: int, seconds: float) -> None:
    """Wait (briefly, blocking) until every thread of ``pid`` is in the stopped state.

    kill(SIGSTOP) returns before the threads have stopped, and a Go thread busy at that
    moment can still answer a request sent right after (about 3% of the time). Without
    ``/proc`` (not Linux), or if the process is gone, this returns at once.
    """
    tasks = Path(f"/proc/{pid}/task")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            threads = list(tasks.iterdir())
        except OSError:
            return
        states = []
        for thread in threads:
            try:
                # The state is the first field after the parenthesised command name.
                states.append((thread / "stat").read_text().rpartition(")")[2].split()[0])
            except (OSError, IndexError):
                continue  # the thread has just exited
        if all(state in ("T", "t") for state in states):
            return
        time.sleep(0.001)


async def wait_exit(proc: subprocess.Popen[bytes], seconds: float) -> bool:
    """Poll until ``proc`` exits or ``seconds`` pass; True if it exited."""
    deadline = anyio.current_time() + seconds
    while proc.poll() is None:
        if anyio.current_time() >= deadline:
            return False
        await anyio.sleep(0.01)
    return True

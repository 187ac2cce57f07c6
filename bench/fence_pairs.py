"""The fence's cost on R1 as many pairs, in ABBA order: a ratio with its spread.

    python bench/fence_pairs.py [--events N] [--partitions P] [--pairs K] [--json]

``bench/fence_cost.py`` runs seven phases a round, so a few rounds take minutes, and on a
shared 2-core machine the speed moves more between two phases than the fence costs: its
rounds' ratios spread from 0.6 to 1.15. This runs only the two phases of ``ratio_r1`` --
``unpartitioned`` (the actor without partitions on a plain worker) and ``fenced`` (the
actor of P partitions on one cluster-mode worker) -- as K pairs on one nats-server, each
pair in the other order from the one before (A B, B A, A B, ...: a drift of the machine's
speed weighs on both sides alike), N events pre-published before each phase.

Reported: ``ratio_r1_median`` (fenced / unpartitioned events/s, each pair's own ratio),
``ratio_r1_q1`` and ``ratio_r1_q3`` (its quartiles), ``ratios_r1`` (every pair's),
``cpu_ratio_r1_median`` (unpartitioned over fenced CPU per event, worker + server: the
steadier figure, turned as ``ratio_r1`` is, so the inverse of ``bench/fence_cost.py``'s
``cpu_ratio_r1``), and the medians of each phase's events/s and CPU per event (worker,
server). The last line on stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import _scaffold  # noqa: F401  (puts the checkout on sys.path)
import fence_cost
from _scaffold import Say, median, quiet_library, run_bench

from actorsource.testing import NatsCluster

A, B = fence_cost.UNPARTITIONED, fence_cost.FENCED


async def bench(args: argparse.Namespace, root: Path, say: Say) -> dict[str, Any]:
    quiet_library()
    pairs: list[dict[str, float]] = []
    async with NatsCluster(root / "r1", size=1) as single:
        servers = [s.pid for s in single.servers]
        for n in range(args.pairs):
            order = (A, B) if n % 2 == 0 else (B, A)
            rounds = await fence_cost.run_rounds(
                single.urls, root / f"pair{n}", args, 1, order, 1, lambda _: None, servers
            )
            figures = rounds[0]
            pairs.append(figures)
            say(
                f"pair {n + 1}: {B.name}/{A.name} = {figures[B.name] / figures[A.name]:.3f} "
                f"({figures[A.name]:,.0f} and {figures[B.name]:,.0f} events/s)"
            )
    ratios = [p[B.name] / p[A.name] for p in pairs]

    def cpu(p: dict[str, float], phase: str) -> float:
        return p[f"{phase}_worker_cpu_us"] + p[f"{phase}_server_cpu_us"]

    q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    result: dict[str, Any] = {
        "events": args.events,
        "partitions": args.partitions,
        "pairs": args.pairs,
        "ratio_r1_median": round(median(ratios), 3),
        "ratio_r1_q1": round(q1, 3),
        "ratio_r1_q3": round(q3, 3),
        "ratios_r1": [round(r, 3) for r in ratios],
        "cpu_ratio_r1_median": round(median([cpu(p, A.name) / cpu(p, B.name) for p in pairs]), 3),
    }
    for phase in (A.name, B.name):
        result[f"{phase}_events_per_s"] = round(median([p[phase] for p in pairs]))
        for side in ("worker", "server"):
            values = [p[f"{phase}_{side}_cpu_us"] for p in pairs]
            result[f"{phase}_{side}_cpu_us_per_event"] = round(median(values), 1)
    result["states_equal"] = True  # every phase committed exactly N events (fence_cost)
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=150_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--pairs", type=int, default=14)
    parser.add_argument("--json", action="store_true", help="print only the JSON line on stdout")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_bench("fence-pairs", bench, args)


if __name__ == "__main__":
    sys.exit(main())

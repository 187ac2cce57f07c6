"""The fence's cost on R1 as many pairs, in ABBA order: a ratio with its spread.

    python bench/fence_pairs.py [--events N] [--partitions P] [--pairs K]
                                [--variants disk,memory,one_key] [--json]

``bench/fence_cost.py`` runs seven phases a round, so a few rounds take minutes, and on a
shared 2-core machine the speed moves more between two phases than the fence costs: its
rounds' ratios spread from 0.6 to 1.15. This runs only the two phases of ``ratio_r1`` --
``unpartitioned`` (the actor without partitions on a plain worker) and ``fenced`` (the
actor of P partitions on one cluster-mode worker) -- as K pairs on one nats-server, each
pair in the other order from the one before (A B, B A, A B, ...: a drift of the machine's
speed weighs on both sides alike), N events pre-published before each phase.

``--variants`` adds, in turn within each pair (their order rotated pair by pair), the same
two phases with the input stream in memory (``memory``: nats-server's file store walks, for
each message it delivers through a partition's filter, the block's subjects that the
filter matches; its memory store does not) or with one key per partition on disk
(``one_key``: each partition's filter then matches one stored subject, so the walk is one
step). Side by side in one run, they say what the fence costs without that walk.

Reported, per variant (``disk`` unprefixed, the others prefixed ``memory_`` and
``one_key_``): ``ratio_r1_median`` (fenced / unpartitioned events/s, each pair's own
ratio), ``ratio_r1_q1`` and ``ratio_r1_q3`` (its quartiles), ``ratios_r1`` (every pair's),
``ratio_r1_steady_median`` (the same once every runner was consuming: start-up, leases and
consumer creation left out), ``cpu_ratio_r1_median`` (unpartitioned over fenced CPU per
event, worker + server: the steadier figure, turned as ``ratio_r1`` is, so the inverse of
``bench/fence_cost.py``'s ``cpu_ratio_r1``), and the medians of each phase's events/s and
CPU per event (worker, server). The last line on stdout is one JSON object.
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

#: The pairs of phases a variant compares: (plain, fenced).
VARIANTS = {
    # The input stream on disk: the figure wanted (``ratio_r1``).
    "disk": (fence_cost.UNPARTITIONED, fence_cost.FENCED),
    # The input stream in memory: without the file store's walk of a block's subjects.
    "memory": (fence_cost.MEMORY_UNPARTITIONED, fence_cost.MEMORY_FENCED),
    # One key per partition, on disk: each partition's filter matches one stored subject.
    "one_key": (fence_cost.FEW_UNPARTITIONED, fence_cost.FEW_FENCED),
}


async def bench(args: argparse.Namespace, root: Path, say: Say) -> dict[str, Any]:
    quiet_library()
    pairs: dict[str, list[dict[str, float]]] = {v: [] for v in args.variants}
    async with NatsCluster(root / "r1", size=1) as single:
        servers = [s.pid for s in single.servers]
        for n in range(args.pairs):
            # Each pair in the other order from the one before; the variants in turn,
            # rotated too, so that none always runs first.
            variants = (
                args.variants[n % len(args.variants) :] + args.variants[: n % len(args.variants)]
            )
            for variant in variants:
                a, b = VARIANTS[variant]
                order = (a, b) if n % 2 == 0 else (b, a)
                rounds = await fence_cost.run_rounds(
                    single.urls,
                    root / f"pair{n}-{variant}",
                    args,
                    1,
                    order,
                    1,
                    lambda _: None,
                    servers,
                )
                figures = rounds[0]
                pairs[variant].append(figures)
                say(
                    f"pair {n + 1} {variant}: {b.name}/{a.name} = "
                    f"{figures[b.name] / figures[a.name]:.3f} "
                    f"({figures[a.name]:,.0f} and {figures[b.name]:,.0f} events/s)"
                )
    result: dict[str, Any] = {
        "events": args.events,
        "partitions": args.partitions,
        "pairs": args.pairs,
        "variants": list(args.variants),
    }
    for variant in args.variants:
        prefix = "" if variant == "disk" else f"{variant}_"
        result |= _summary(prefix, *VARIANTS[variant], pairs[variant])
    result["states_equal"] = True  # every phase committed exactly N events (fence_cost)
    return result


def _summary(
    prefix: str, a: fence_cost.Phase, b: fence_cost.Phase, pairs: list[dict[str, float]]
) -> dict[str, Any]:
    """The figures of one variant's pairs, each key starting with ``prefix``."""

    def cpu(p: dict[str, float], phase: str) -> float:
        return p[f"{phase}_worker_cpu_us"] + p[f"{phase}_server_cpu_us"]

    def quartiles(values: list[float]) -> tuple[float, float]:
        q1, _, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
        return q1, q3

    ratios = [p[b.name] / p[a.name] for p in pairs]
    steady = [p[f"{b.name}_steady"] / p[f"{a.name}_steady"] for p in pairs]
    q1, q3 = quartiles(ratios)
    out: dict[str, Any] = {
        f"{prefix}ratio_r1_median": round(median(ratios), 3),
        f"{prefix}ratio_r1_q1": round(q1, 3),
        f"{prefix}ratio_r1_q3": round(q3, 3),
        f"{prefix}ratios_r1": [round(r, 3) for r in ratios],
        f"{prefix}ratio_r1_steady_median": round(median(steady), 3),
        f"{prefix}cpu_ratio_r1_median": round(
            median([cpu(p, a.name) / cpu(p, b.name) for p in pairs]), 3
        ),
    }
    for phase in (a.name, b.name):
        out[f"{phase}_events_per_s"] = round(median([p[phase] for p in pairs]))
        for side in ("worker", "server"):
            values = [p[f"{phase}_{side}_cpu_us"] for p in pairs]
            out[f"{phase}_{side}_cpu_us_per_event"] = round(median(values), 1)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = fence_cost.options(__doc__, events=150_000, rounds=None)
    parser.add_argument("--pairs", type=int, default=14)
    parser.add_argument(
        "--variants",
        type=_variants,
        default=["disk"],
        help="comma-separated, run in turn within each pair: disk (the default: the figure "
        "wanted), memory (the input stream in memory), one_key (one key per partition)",
    )
    return parser.parse_args(argv)


def _variants(text: str) -> list[str]:
    names = list(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))
    unknown = [v for v in names if v not in VARIANTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown variant {', '.join(unknown) or text!r}; choose from {', '.join(VARIANTS)}"
        )
    return names


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_bench("fence-pairs", bench, args)


if __name__ == "__main__":
    sys.exit(main())

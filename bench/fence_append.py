"""Would a cheaper append lift the fence's cost? Three ways of sending it, A/B in one run.

    python bench/fence_append.py [--events N] [--partitions P] [--rounds R] [--json]

``bench/fence_cost.py``'s R1 comparison (the actor of P partitions on one cluster-mode
worker against the same actor unpartitioned on a plain worker, N events pre-published), run
``R`` times for each way the fence's append is sent, the ways alternated round by round,
each round on a nats-server of its own:

* ``js_publish``: as the library does (``js.publish``: nats-py's request, a new inbox token
  and future per call);
* ``shared_reply``: a plain publish whose reply subject is on one subscription shared by
  every append (a counter as the token), the ack parsed as ``js.publish`` does;
* ``no_wait``: the append published without waiting for its ack at all: **not a fence**
  (a refused append would go unseen), measured only as the bound of what overlapping the
  append's wait with other work (the SQLite commit of the batch before) could give.

The last two replace ``JournalFence._publish`` for their rounds only. Per way: the median
of its rounds' ``ratio_r1`` (fenced / unpartitioned, each round's own pair) and the
appends made (``appends_per_round``: one per batch; the fewer and larger, the less their
round trips weigh). The last line on stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import _scaffold  # noqa: F401  (puts the checkout on sys.path)
import anyio
import fence_cost
from _scaffold import Say, quiet_library, run_bench
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import PubAck
from nats.js.errors import APIError

from actorsource._cluster.fence import JournalFence
from actorsource.testing import NatsCluster

WAYS = ("js_publish", "shared_reply", "no_wait")
Publish = Callable[[JournalFence, bytes, dict[str, str]], Awaitable[PubAck]]


def _connection(fence: JournalFence) -> NATS:
    """The fence's NATS connection (nats-py keeps it private in its JetStream context:
    read here only, for these measurements)."""
    nc: NATS = fence.js._nc
    return nc


def _shared_reply() -> Publish:
    futures: dict[str, anyio.Event] = {}
    replies: dict[str, Msg] = {}
    prefix: dict[int, str] = {}
    tokens = itertools.count()

    async def publish(fence: JournalFence, data: bytes, headers: dict[str, str]) -> PubAck:
        nc = _connection(fence)
        if id(nc) not in prefix:
            inbox = prefix[id(nc)] = nc.new_inbox()

            async def on_reply(msg: Msg) -> None:
                token = msg.subject[len(inbox) + 1 :]
                if token in futures:
                    replies[token] = msg
                    futures.pop(token).set()

            await nc.subscribe(f"{inbox}.*", cb=on_reply)
        token = str(next(tokens))
        done = futures[token] = anyio.Event()
        await nc.publish(fence.subject, data, reply=f"{prefix[id(nc)]}.{token}", headers=headers)
        with anyio.fail_after(10):
            await done.wait()
        response = json.loads(replies.pop(token).data)
        if "error" in response:
            raise APIError.from_error(response["error"])
        return PubAck.from_response(response)

    return publish


async def _no_wait(fence: JournalFence, data: bytes, headers: dict[str, str]) -> PubAck:
    await _connection(fence).publish(fence.subject, data, headers=headers)
    return PubAck(stream=fence.stream, seq=fence.last_seq + 1)


async def bench(args: argparse.Namespace, root: Path, say: Say) -> dict[str, Any]:
    quiet_library()
    original = JournalFence._publish
    real_append = JournalFence.append
    appends = 0

    async def counted(self: JournalFence, batch: bytes) -> int:
        nonlocal appends
        appends += 1
        return await real_append(self, batch)

    ways: dict[str, Publish] = {
        "js_publish": original,
        "shared_reply": _shared_reply(),
        "no_wait": _no_wait,
    }
    ratios: dict[str, list[float]] = {way: [] for way in WAYS}
    counts: dict[str, list[int]] = {way: [] for way in WAYS}
    order = [WAYS[(r + i) % len(WAYS)] for r in range(args.rounds) for i in range(len(WAYS))]
    JournalFence.append = counted  # type: ignore[method-assign]
    try:
        for n, way in enumerate(order):
            JournalFence._publish = ways[way]  # type: ignore[method-assign,assignment]
            appends = 0
            async with NatsCluster(root / f"nats{n}", size=1) as server:
                out = await fence_cost.round_r1(server.urls, root / f"data{n}", args)
            ratio = out["fenced"] / out["unpartitioned"]
            ratios[way].append(ratio)
            counts[way].append(appends)
            say(f"{way}: ratio_r1 {ratio:.3f} ({out['fenced']:,.0f} / {out['unpartitioned']:,.0f})")
    finally:
        JournalFence._publish = original  # type: ignore[method-assign]
        JournalFence.append = real_append  # type: ignore[method-assign]
    result: dict[str, Any] = {"events": args.events, "partitions": args.partitions}
    for way in WAYS:
        result[f"{way}_ratio_r1_median"] = round(statistics.median(ratios[way]), 3)
        result[f"{way}_ratios_r1"] = [round(r, 3) for r in ratios[way]]
        result[f"{way}_appends_per_round"] = round(statistics.median(counts[way]))
    result["states_equal"] = True  # every round committed exactly N events (checked there)
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return fence_cost.options(__doc__, events=60_000).parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_bench("fence-append", bench, args, summary_keys=("_median", "_per_round"))


if __name__ == "__main__":
    sys.exit(main())

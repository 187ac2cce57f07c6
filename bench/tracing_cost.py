"""What tracing costs the data path: the bank actor without tracing, with the API only, and
with the OpenTelemetry SDK sampling a share of the messages.

    python bench/tracing_cost.py [--events N] [--sampled FRACTION] [--repeat R] [--json]

One run, one machine, one nats-server. Stream ``ACCOUNTS`` is pre-filled with N bank events
(``examples.bank.random_events(N, seed=1, accounts=1000)``), each carrying a W3C
``traceparent`` as a traced publisher sends it: a trace of its own per message, the sampled
flag set on one message in ``1 / FRACTION`` (default 0.01: 1%). Then the bank actor
consumes the whole stream durably (``bench/_scaffold.run_actor_until``), R times in turn
(the order rotated each round), as:

* ``off``: tracing not asked for (``ActorRunner(tracing=False)``): the ``traceparent`` is
  journaled with the message and nothing else is done with it;
* ``api``: tracing asked for with no SDK configured (the API's global provider, which records
  nothing): each traced message's context is read and passed on, no span recorded;
* ``sdk``: tracing with an SDK ``TracerProvider`` (its default sampler, parent-based: the
  publisher's flag decides) and a ``BatchSpanProcessor`` to an exporter that counts and drops
  the spans: a span for each sampled message, ended after its commit.

Reported: the median events/s of each and ``api_cost`` = api / off, ``sdk_cost`` = sdk / off
(1.0: free), ``spans`` the spans the SDK exported in its last round (N x FRACTION). Every
final state is checked against ``examples.bank.expected_balances``. The last line on stdout
is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _scaffold  # noqa: F401  (puts the checkout on sys.path)
from _scaffold import (
    STREAM,
    Say,
    bank,
    connect,
    median,
    quiet_library,
    run_actor_until,
    run_bench,
    scratch_server,
)
from nats.aio.client import Client as NATS
from nats.js.api import StreamConfig
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from actorsource import EVENT_TYPE_HEADER, MSG_ID_HEADER, encode_event

KINDS = ("off", "api", "sdk")


class _Counted(SpanExporter):
    """Counts the spans it is given and drops them."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


async def _prefill(nc: NATS, events: list[bank.BankEvent], every: int) -> None:
    """The bank's events with a ``traceparent`` each, sampled on one in ``every``."""
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=STREAM, subjects=["bank.>"]))
    acks = []
    for i, event in enumerate(events):
        type_name, payload = encode_event(event)
        flags = "01" if i % every == 0 else "00"
        headers = {
            EVENT_TYPE_HEADER: type_name,
            MSG_ID_HEADER: f"bench-{i}",
            "traceparent": f"00-{i + 1:032x}-{i + 1:016x}-{flags}",
        }
        acks.append(await js.publish_async(bank.subject_for(event), payload, headers=headers))
        if len(acks) >= 1_000:
            await asyncio.gather(*acks)
            acks.clear()
    await asyncio.gather(*acks)


async def bench(args: argparse.Namespace, root: Path, say: Say) -> dict[str, Any]:
    quiet_library()
    n = args.events
    every = max(1, round(1 / args.sampled))
    events = bank.random_events(n, seed=1, accounts=1_000)
    expected = bank.expected_balances(events)
    rates: dict[str, list[float]] = {kind: [] for kind in KINDS}
    equal = True
    spans = 0
    async with scratch_server(root) as server:
        nc = await connect(server.url)
        try:
            await _prefill(nc, events, every)
        finally:
            await nc.close()
        del events
        gc.collect()
        for i in range(args.repeat):
            order = KINDS[i % 3 :] + KINDS[: i % 3]
            say(f"round {i + 1} of {args.repeat}: {', '.join(order)}")
            for kind in order:
                exporter = _Counted()
                provider = TracerProvider()
                provider.add_span_processor(BatchSpanProcessor(exporter))
                tracing = {"off": False, "api": True, "sdk": provider}[kind]
                gc.collect()
                nc = await connect(server.url)
                try:
                    seconds, _, runner = await run_actor_until(
                        nc, root / f"actor-{kind}-{i}", n, tracing=tracing
                    )
                    await nc.jetstream().delete_consumer(STREAM, runner.name)
                finally:
                    await nc.close()
                provider.shutdown()  # exports what is left
                if kind == "sdk":
                    spans = exporter.spans
                equal = equal and (runner.state.balances, runner.state.declined) == expected
                rates[kind].append(n / seconds)
                say(f"  {kind:<4} {n / seconds:>10,.0f} events/s  ({seconds:.2f} s)")
    med = {kind: median(values) for kind, values in rates.items()}
    return {
        "events": n,
        "repeat": args.repeat,
        "sampled": args.sampled,
        "off_events_per_s": round(med["off"]),
        "api_events_per_s": round(med["api"]),
        "sdk_events_per_s": round(med["sdk"]),
        "api_cost": round(med["api"] / med["off"], 3),
        "sdk_cost": round(med["sdk"] / med["off"], 3),
        "spans": spans,
        "runs": {k: [round(r) for r in v] for k, v in rates.items()},
        "states_equal": equal,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--sampled", type=float, default=0.01)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print only the JSON line on stdout")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_bench("tracing-cost", bench, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

"""What tracing costs per event where it touches the data path: the triage of a batch.

    python bench/triage_cost.py [--batches B] [--json]

In one process, without NATS or SQLite: the bank actor's triage
(``actorsource._runtime.triage.triage``: duplicate checks, decoding, applying through its
handlers) of 256-delivery batches of bank events (``examples.bank.random_events``), timed
B times each way, the fastest kept (what the code costs, the machine's noise left out):

* ``plain``: deliveries with the usual headers, tracing off (the hot path as it is);
* ``off``: deliveries that carry a ``traceparent`` (1 in 100 sampled), tracing off;
* ``api``: the same, tracing on with the OpenTelemetry API and no SDK;
* ``sdk_1pct``: the same, tracing on with an SDK ``TracerProvider`` (parent-based sampling:
  the 1 in 100 sampled get a span; spans are not ended here, the committer ends them).

Reported in ns per event; ``api_vs_off`` and ``sdk_vs_off`` are the extra ns per event.
Run it on another checkout (``python OTHER/bench/triage_cost.py``) to compare ``plain`` with
code without tracing: where tracing is off, the triage checks one ``is None`` per delivery.
The last line on stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import sys
import time
from typing import Any

import _scaffold  # noqa: F401  (puts the checkout on sys.path)
from _scaffold import bank

from actorsource import EVENT_TYPE_HEADER, MSG_ID_HEADER, encode_event
from actorsource._log import get_logger
from actorsource._mailbox.delivery import Delivery
from actorsource._model.actor import definition_of
from actorsource._model.dispatch import LiveState
from actorsource._runtime.triage import triage

BATCH = 256


def _batch(events: list[Any], traced: bool) -> list[Delivery]:
    out = []
    for i, event in enumerate(events, 1):
        type_name, payload = encode_event(event)
        headers = {EVENT_TYPE_HEADER: type_name, MSG_ID_HEADER: f"bench-{i}"}
        if traced:
            flags = "01" if i % 100 == 0 else "00"
            headers["traceparent"] = f"00-{i:032x}-{i:016x}-{flags}"
        reply = f"$JS.ACK.ACCOUNTS.c.1.{i}.{i}.0.0"
        out.append(Delivery(bank.subject_for(event), payload, headers, reply, "ACCOUNTS", i, 1, 0))
    return out


async def _time(deliveries: list[Delivery], batches: int, tracing: Any) -> float:
    """The fastest triage of ``deliveries``, in ns per event."""
    definition = definition_of(bank.Accounts)
    live = LiveState(definition, get_logger(actor="bench"), max_payload=1 << 20)
    extra = {} if tracing is None else {"tracing": tracing}
    best = float("inf")
    for _ in range(batches):
        started = time.perf_counter_ns()
        await triage(
            deliveries,
            0,
            high=0,
            pos=0,
            known_seqs=set(),
            known_ids=set(),
            policy=definition.errors,
            codec=definition.codec,
            apply=live.apply_live,
            plain=live.dispatch.plain,
            **extra,
        )
        best = min(best, time.perf_counter_ns() - started)
    return best / len(deliveries)


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    events = bank.random_events(BATCH, seed=1, accounts=1_000)
    plain, traced = _batch(events, False), _batch(events, True)
    result: dict[str, Any] = {"batch": BATCH, "batches": args.batches}
    result["plain_ns"] = round(await _time(plain, args.batches, None), 1)
    result["off_ns"] = round(await _time(traced, args.batches, None), 1)
    if "tracing" not in inspect.signature(triage).parameters:
        return result  # a checkout without tracing
    from opentelemetry.sdk.trace import TracerProvider

    from actorsource._runtime.tracing import Tracing

    provider = TracerProvider()
    result["api_ns"] = round(await _time(traced, args.batches, Tracing("bench")), 1)
    result["sdk_1pct_ns"] = round(await _time(traced, args.batches, Tracing("bench", provider)), 1)
    result["api_vs_off"] = round(result["api_ns"] - result["off_ns"], 1)
    result["sdk_vs_off"] = round(result["sdk_1pct_ns"] - result["off_ns"], 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=2_000)
    parser.add_argument("--json", action="store_true", help="print only the JSON line on stdout")
    args = parser.parse_args(argv)
    result = asyncio.run(bench(args))
    if not args.json:
        for key, value in result.items():
            print(f"{key}: {value}", file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

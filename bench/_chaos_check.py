"""The offline check of ``bench/chaos.py``: the journal a run left behind, held to what the
broker acknowledged (lost, duplicated, out of order, diverged states; see ``chaos.py``)."""

# ruff: noqa: E402  (the imports below need the checkout on sys.path first)
from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # ``examples`` comes from the checkout, as in chaos.py

from _chaos_entities import ACTOR as ENTITY_ACTOR
from _chaos_entities import check_entities
from _chaos_workers import ACTOR, ChaosError

from actorsource._log import get_logger
from actorsource._model.actor import definition_of
from actorsource._model.dispatch import Dispatch
from actorsource._model.snapshots import CODEC_NAME
from actorsource.journal import JournalEntry, SQLiteJournal, restore_state
from examples import bank

__all__ = ["check_journal", "export_order"]


def export_order(path: Path) -> dict[str, int]:
    """Stream order as ``actorsource journal export`` shows it, read as an operator would.

    ``export_seq_backwards``: entries (received from a stream) whose stream sequence is not
    above the one journaled before them; ``subject_order_broken``: pairs of consecutive
    entries of one subject whose stream sequences go backwards (per-subject order is what a
    consumer of one key relies on).
    """
    out = subprocess.run(
        [sys.executable, "-m", "actorsource", "journal", "export", str(path)],
        cwd=ROOT,
        capture_output=True,
        check=False,
        timeout=300,
    )
    if out.returncode != 0:
        raise ChaosError(f"journal export of {path} failed: {out.stderr.decode()[-500:]}")
    last: dict[str, int] = {}
    by_subject: dict[tuple[str, str], int] = {}
    backwards = broken = 0
    for line in out.stdout.splitlines():
        entry = json.loads(line)
        stream, seq = entry["stream"], entry["stream_seq"]
        if stream is None or seq is None:
            continue  # recorded by the actor itself
        backwards += seq <= last.get(stream, 0)
        last[stream] = max(seq, last.get(stream, 0))
        key = (stream, entry["subject"])
        broken += seq <= by_subject.get(key, 0)
        by_subject[key] = seq
    return {"export_seq_backwards": backwards, "subject_order_broken": broken}


def state_key(state: Any) -> tuple[dict[str, int], int]:
    """What is compared between two states: the balances and the declined count."""
    return dict(state.balances), int(state.declined)


async def check_journal(
    path: Path,
    acknowledged: list[tuple[str, bank.BankEvent]],
    stored_duplicates: list[int] | None = None,
    *,
    entities: bool = False,
) -> dict[str, Any]:
    """Hold the journal to the acknowledged (msg id, event) list, in stream order, and to
    the stream sequences of duplicates the stream stored (none of which may be journaled).
    ``entities``: the journal of ``ChurningAccounts``, checked account by account."""
    definition = definition_of(bank.Accounts)
    actor = ENTITY_ACTOR if entities else ACTOR
    log = get_logger(actor=actor, tool="chaos")
    report: dict[str, Any] = {}
    async with SQLiteJournal(path, actor=actor) as journal:
        entries = [e async for chunk in journal.entries() for e in chunk]
        count = await journal.count()
        ids = Counter(e.msg_id for e in entries)
        published_ids = {msg_id for msg_id, _ in acknowledged}
        report["applied"] = count
        report["lost"] = len(published_ids - ids.keys())
        report["duplicated"] = sum(1 for n in ids.values() if n > 1) + sum(
            1 for e in entries if e.msg_id not in published_ids
        )
        report["out_of_order"] = sum(
            1
            for before, after in itertools.pairwise(entries)
            if before.stream_seq is None
            or after.stream_seq is None
            or after.stream_seq <= before.stream_seq
        )
        report["pos_gaps"] = sum(1 for i, e in enumerate(entries, 1) if e.pos != i)
        duplicate_seqs = set(stored_duplicates or ())
        report["duplicates_applied"] = sum(1 for e in entries if e.stream_seq in duplicate_seqs)
        report["dead_letters"] = len(await journal.dead_letters())
        if entities:
            report["journal_pos"] = journal.last_pos
            return await check_entity_states(path, entries, acknowledged, report)

        states: dict[str, tuple[dict[str, int], int] | None] = {}
        infos = await journal.snapshots()
        report["snapshots"] = len(infos)
        # (a) live: the newest snapshot, written from the in-memory state at graceful stop.
        newest = await journal.read_snapshot(infos[0].id) if infos else None
        report["live_snapshot_pos"] = newest.pos if newest else None
        states["live"] = None
        if newest is not None and newest.verifies() and newest.codec == CODEC_NAME:
            live = bank.Accounts()
            definition.state_codec.restore(live, newest.state)
            states["live"] = state_key(live)
        # (b) a fresh full replay, no snapshot at all.
        replayed, _ = await restore_state(definition, journal, use_snapshots=False)
        states["replay"] = state_key(replayed)
        # (c) an older snapshot (the second newest when there is one) plus the entries after it.
        older_info = infos[1] if len(infos) > 1 else (infos[0] if infos else None)
        older = await journal.read_snapshot(older_info.id) if older_info else None
        report["older_snapshot_pos"] = older.pos if older else None
        states["older+tail"] = None
        if older is not None and older.verifies() and older.codec == CODEC_NAME:
            state = bank.Accounts()
            definition.state_codec.restore(state, older.state)
            dispatch = Dispatch(definition, state, log)
            async for chunk in journal.entries(older.pos):
                for entry in chunk:
                    event = definition.codec.decode(entry.type, entry.payload)
                    await dispatch.apply(event, entry, replaying=True)
            states["older+tail"] = state_key(state)
        report["journal_pos"] = journal.last_pos
    order = export_order(path)
    report.update(order)
    report["out_of_order"] += order["export_seq_backwards"] + order["subject_order_broken"]
    # (d) an independent fold of what the broker acknowledged, in the order it stored it.
    expected = bank.expected_balances([event for _, event in acknowledged])
    states["expected"] = expected
    names = list(states)
    disagreements = [
        f"{a}!={b}"
        for i, a in enumerate(names)
        for b in names[i + 1 :]
        if states[a] is None or states[b] is None or states[a] != states[b]
    ]
    report["diverged"] = len(disagreements)
    report["disagreements"] = disagreements
    report["accounts"] = len(expected[0])
    report["total_balance"] = sum(expected[0].values())
    report["declined"] = expected[1]
    return report


async def check_entity_states(
    path: Path,
    entries: list[JournalEntry],
    acknowledged: list[tuple[str, bank.BankEvent]],
    report: dict[str, Any],
) -> dict[str, Any]:
    """The entity mode's check (``bench/_chaos_entities.py``) and the export's order."""
    report.update(await check_entities(path, entries, acknowledged))
    order = export_order(path)
    report.update(order)
    report["out_of_order"] += (
        order["export_seq_backwards"] + order["subject_order_broken"] + report["entity_order"]
    )
    report["diverged"] = report["entities_diverged"] + report["snapshots_diverged"]
    report["disagreements"] = []
    return report

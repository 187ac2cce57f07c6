"""The entity mode of ``bench/chaos.py``: its events and its offline check of the states.

With ``--entities A`` the workers host ``bench._bank_entities:ChurningAccounts`` (at most 4
accounts resident, passivated after half a second idle, a snapshot every 5 events of an
account), fed deposits and withdrawals over A accounts, so that entities are loaded,
passivated and snapshotted all the time while workers are killed. After the run, the
journal is held, per account, to an independent fold of what the broker acknowledged:

* ``entity_order``: accounts whose journaled events are not exactly their acknowledged
  events in stream order (by message id);
* ``entities_diverged``: accounts whose state as the runtime loads it (newest usable
  snapshot and later rows) or as a full replay of its rows differs from the fold;
* ``snapshots_diverged``: stored entity snapshots that do not verify (checksum) or whose
  state differs from the fold of that account's acknowledged events up to the snapshot's
  position.
"""

from __future__ import annotations

import random
import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Any

from _bank_entities import ChurningAccounts, fold_account

from actorsource._journal.entity_reader import EntityReader
from actorsource._journal.entity_recovery import load_entity
from actorsource._journal.entity_store import EntitySnapshot
from actorsource._log import get_logger
from actorsource._model.actor import definition_of
from actorsource._model.events import JournalEntry
from examples import bank

__all__ = ["ACTOR", "TARGET", "account_events", "check_entities"]

ACTOR = "accounts-churn"
TARGET = "bench._bank_entities:ChurningAccounts"


def account_events(n: int, *, seed: int, accounts: int) -> list[bank.BankEvent]:
    """``n`` reproducible deposits (60 %) and withdrawals over ``accounts`` accounts."""
    rng = random.Random(seed)
    names = [f"acct-{i:04d}" for i in range(accounts)]
    return [
        bank.Deposited(rng.choice(names), rng.randint(1, 500))
        if rng.random() < 0.6
        else bank.Withdrawn(rng.choice(names), rng.randint(1, 400))
        for _ in range(n)
    ]


def _account(event: bank.BankEvent) -> str:
    assert not isinstance(event, bank.Transferred)
    return event.account


async def check_entities(
    path: Path, entries: list[JournalEntry], acknowledged: list[tuple[str, bank.BankEvent]]
) -> dict[str, Any]:
    """Hold every account of the journal at ``path`` (its ``entries``) to the fold of the
    acknowledged (msg id, event) list in stream order; see the module doc."""
    definition = definition_of(ChurningAccounts)
    log = get_logger(actor=ACTOR, tool="chaos")
    acked: dict[str, list[tuple[str, bank.BankEvent]]] = defaultdict(list)
    for msg_id, event in acknowledged:
        acked[_account(event)].append((msg_id, event))
    journaled: dict[str, list[JournalEntry]] = defaultdict(list)
    for entry in entries:
        journaled[str(entry.entity)].append(entry)
    last = entries[-1].pos if entries else 0
    report: dict[str, Any] = {"entities": len(acked)}
    report["entity_order"] = sum(
        [e.msg_id for e in journaled.get(key, [])] != [m for m, _ in events]
        for key, events in acked.items()
    ) + len(journaled.keys() - acked.keys())
    wrong = 0
    with EntityReader(path) as reader:
        for key, events in acked.items():
            expected = fold_account([e for _, e in events])
            for use_snapshots in (True, False):
                state, _ = await load_entity(
                    definition, reader, key, committed=last, log=log, use_snapshots=use_snapshots
                )
                wrong += (state.balance, state.declined) != expected
    report["entities_diverged"] = wrong
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT entity, pos, version, codec, checksum, data FROM entity_snapshots"
        ).fetchall()
    finally:
        db.close()
    bad = 0
    for row in rows:
        snapshot = EntitySnapshot(*row)
        # The account's acknowledged events journaled at or before the snapshot's position.
        upto = sum(1 for e in journaled.get(snapshot.entity, []) if e.pos <= snapshot.pos)
        state = ChurningAccounts()
        if snapshot.verifies():
            definition.state_codec.restore(state, snapshot.data)
        else:
            bad += 1
            continue
        events = [e for _, e in acked.get(snapshot.entity, [])[:upto]]
        bad += (state.balance, state.declined) != fold_account(events)
    report["entity_snapshots"] = len(rows)
    report["snapshots_diverged"] = bad
    report["entities_snapshotted"] = len({r[0] for r in rows})
    return report

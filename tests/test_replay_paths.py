"""Replay's two ways through a chunk: the direct one (a row at its event's current version,
a synchronous handler) and the long one (an older version to upcast, an ``async`` handler),
mixed in one chunk, and a journal whose positions are not contiguous.

Each replay is held to the reference: :func:`fold` of the journal's own entries.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from actorsource import Context, actor, event, handles, upcaster
from actorsource._model.actor import definition_of
from actorsource._model.dispatch import fold
from actorsource.journal import JournalBatch, JournalEntry, SQLiteJournal, restore_state


@event("replay.Priced", version=2)
@dataclass
class Priced:
    key: str
    cents: int


@upcaster(Priced, from_version=1)
def _euros_to_cents(data: dict[str, Any]) -> dict[str, Any]:
    return {"key": data["key"], "cents": data["euros"] * 100}


@dataclass
class Noted:
    key: str


@dataclass
class Slept:
    key: str


@actor("replay-paths", subjects=["rp.>"])
class Mixed:
    """One handler of each kind; every call logs what it saw, in order."""

    seen: list[Any]

    def __init__(self) -> None:
        self.seen = []

    @handles(Priced)
    def priced(self, event: Priced) -> None:
        self.seen.append(("priced", event.key, event.cents))

    @handles(Noted)
    def noted(self, event: Noted, ctx: Context) -> None:
        self.seen.append(("noted", event.key, ctx.pos, ctx.entry.pos, ctx.entry.subject))

    @handles(Slept)
    async def slept(self, event: Slept, ctx: Context) -> None:
        await anyio.lowlevel.checkpoint()
        self.seen.append(("slept", event.key, ctx.pos, ctx.replaying))


def _entries(n: int) -> list[JournalEntry]:
    """Every kind of row in turn: Priced at version 1 and at 2, Noted, Slept."""
    out = []
    for i in range(n):
        pos = i + 1
        kind = i % 4
        if kind == 0:
            name, payload, version = "replay.Priced", b'{"key":"k%d","euros":%d}' % (i, i), 1
        elif kind == 1:
            name, payload, version = "replay.Priced", b'{"key":"k%d","cents":%d}' % (i, i), 2
        elif kind == 2:
            name, payload, version = "Noted", b'{"key":"k%d"}' % i, 1
        else:
            name, payload, version = "Slept", b'{"key":"k%d"}' % i, 1
        out.append(
            JournalEntry(pos, f"rp.{i}", name, payload, 1.0, "RP", pos, None, {}, version=version)
        )
    return out


async def _journal(path: Path, entries: list[JournalEntry]) -> None:
    async with SQLiteJournal(path, actor="replay-paths") as journal:
        await journal.bind_stream("RP", "")
        for start in range(0, len(entries), 1_000):
            batch = entries[start : start + 1_000]
            await journal.append(
                JournalBatch(entries=batch, positions={"RP": batch[-1].pos}, dead_letters=[])
            )


async def _replayed(path: Path) -> Any:
    async with SQLiteJournal(path, actor="replay-paths") as journal:
        state, report = await restore_state(definition_of(Mixed), journal, use_snapshots=False)
    return state, report


async def test_a_chunk_mixing_direct_and_long_rows_replays_as_the_fold(tmp_path: Path) -> None:
    entries = _entries(12_003)  # three chunks, the last one short
    await _journal(tmp_path / "j.sqlite", entries)
    state, report = await _replayed(tmp_path / "j.sqlite")
    expected = await fold(definition_of(Mixed), entries)
    assert report.replayed == 12_003
    assert report.journal_pos == 12_003
    assert state.seen == expected.seen
    assert state.seen[:4] == [
        ("priced", "k0", 0),
        ("priced", "k1", 1),
        ("noted", "k2", 3, 3, "rp.2"),
        ("slept", "k3", 4, True),
    ]


async def test_a_journal_with_missing_positions_replays_what_it_holds_in_order(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.sqlite"
    entries = _entries(6_000)
    await _journal(path, entries)
    gone = {3, 4_999, 5_000, 5_001}
    with sqlite3.connect(path) as db:  # positions are never deleted: edited by hand
        db.executemany("DELETE FROM events WHERE pos = ?", [(p,) for p in gone])
    state, report = await _replayed(path)
    kept = [e for e in entries if e.pos not in gone]
    expected = await fold(definition_of(Mixed), kept)
    assert report.replayed == len(kept)
    assert report.journal_pos == 6_000
    assert state.seen == expected.seen

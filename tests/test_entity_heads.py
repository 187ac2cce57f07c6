"""Staged entity heads (actorsource/_journal/entity_heads.py): the heads moved after the heads
table's horizon live in memory and in the rows; a process killed before they were stored
loses nothing, because opening the journal finds them again in the rows.

Each check is against an independent pass over the stored rows: every entity row's
``prev_pos`` is its entity's row before it, and every head its entity's last row.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from actorsource import DuplicateMessageIdError
from actorsource._journal.entity_heads import HORIZON_KEY, read_heads
from actorsource._journal.entity_reader import EntityReader
from actorsource.journal import JournalBatch, JournalEntry, SQLiteJournal

# A process that appends 40 batches of 25 entity rows over 30 keys, with the staged heads
# stored every 300 rows, then is killed by SIGKILL before it closes the journal.
_KILLED_WRITER = """
import asyncio, os, random, signal, sys
from actorsource.journal import JournalBatch, JournalEntry, SQLiteJournal

async def main(path):
    rnd = random.Random(3)
    async with SQLiteJournal(path, actor="carts", entities=True) as j:
        j.staged_heads.flush_rows = 300
        pos = 0
        for _ in range(40):
            entries = []
            for _ in range(25):
                pos += 1
                key = f"k{rnd.randrange(30)}"
                entries.append(JournalEntry(pos, f"cart.{key}", "T", b'{"n":%d}' % pos, 1.0,
                                            "S", pos, f"m{pos}", entity=key))
            await j.append(JournalBatch(entries=entries, positions={"S": pos}, dead_letters=[]))
        os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main(sys.argv[1]))
"""


def _killed_writer(path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_KILLED_WRITER), str(path)],
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()


def _independent(path: Path) -> tuple[list[tuple[int, int]], dict[str, int]]:
    """(pos, the prev_pos each row should have), and each entity's last row, from the rows."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT pos, entity FROM events ORDER BY pos").fetchall()
    want, heads = [], {}
    for pos, key in rows:
        want.append((pos, heads.get(key, 0)))
        heads[key] = pos
    return want, heads


def _stored(path: Path) -> tuple[list[tuple[int, int]], dict[str, int], int]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        chain = db.execute("SELECT pos, prev_pos FROM events ORDER BY pos").fetchall()
        table = dict(db.execute("SELECT entity, pos FROM entity_heads").fetchall())
        row = db.execute("SELECT value FROM meta WHERE key = ?", (HORIZON_KEY,)).fetchone()
    return chain, table, int(row[0]) if row else 0


def _entry(pos: int, key: str) -> JournalEntry:
    return JournalEntry(pos, f"cart.{key}", "T", b"{}", 1.0, "S", pos, f"m{pos}", entity=key)


async def test_heads_staged_by_a_killed_writer_are_found_again_and_the_chains_go_on(
    tmp_path: Path,
) -> None:
    path = tmp_path / "carts.journal.sqlite"
    _killed_writer(path)
    want, heads = _independent(path)
    chain, table, horizon = _stored(path)
    assert chain == want
    # The heads were stored three times (every 300 rows), and the last 100 rows' heads
    # only staged when the process was killed.
    assert horizon == 900
    assert table != heads
    with sqlite3.connect(path) as db:
        assert read_heads(db) == heads

    # A reader with no writer beside it (a tool) finds them: every key, every row.
    with EntityReader(path) as reader:
        assert reader.keys() == sorted(heads)
        for key, head in heads.items():
            rows = reader.rows(key, 0, 1_000)
            assert [r[0] for r in rows][-1] == head
            assert [r[0] for r in rows] == [p for p, _ in want if _key_of(path, p) == key]

    # The writer opened again finds them, and new rows continue each entity's chain.
    async with SQLiteJournal(path, actor="carts", entities=True) as j:
        assert j.staged_heads.heads == {k: p for k, p in heads.items() if p > horizon}
        with j._entity_reader() as reader:
            assert reader.keys() == sorted(heads)
        keys = [*sorted(heads)[:5], "new"]
        await j.append(
            JournalBatch(
                entries=[_entry(1_001 + i, k) for i, k in enumerate(keys)],
                positions={"S": 1_001 + len(keys)},
                dead_letters=[],
            )
        )
    want, heads = _independent(path)
    chain, table, horizon = _stored(path)
    assert chain == want
    # Closed: every head is stored, up to the last row.
    assert (table, horizon) == (heads, 1_006)


def _key_of(path: Path, pos: int) -> str:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return str(db.execute("SELECT entity FROM events WHERE pos = ?", (pos,)).fetchone()[0])


async def test_a_journal_opened_as_a_singletons_reads_the_staged_heads_at_its_first_entity_row(
    tmp_path: Path,
) -> None:
    """A singleton's journal reads nothing at open; should entity rows come (a tool writing
    to an entity journal without saying so), they are chained all the same."""
    path = tmp_path / "carts.journal.sqlite"
    _killed_writer(path)
    async with SQLiteJournal(path, actor="carts") as j:
        assert not j.staged_heads.loaded
        keys = ["k1", "k2", "k1"]
        await j.append(
            JournalBatch(
                entries=[_entry(1_001 + i, k) for i, k in enumerate(keys)],
                positions={"S": 1_003},
                dead_letters=[],
            )
        )
        assert j.staged_heads.loaded
    want, heads = _independent(path)
    chain, table, _ = _stored(path)
    assert chain == want
    assert table == heads


async def test_a_flush_that_fails_with_its_batch_leaves_the_staged_heads_as_they_were(
    tmp_path: Path,
) -> None:
    """The batch that makes the heads due stores them in its own transaction: rolled back
    (a duplicate message id), neither its rows nor the heads nor the horizon are stored,
    and the next batch stores them."""
    path = tmp_path / "carts.journal.sqlite"
    async with SQLiteJournal(path, actor="carts", entities=True) as j:
        j.staged_heads.flush_rows = 4
        await j.append(JournalBatch([_entry(1, "a"), _entry(2, "b")], {"S": 2}, []))
        failing = [_entry(3, "a"), JournalEntry(4, "cart.c", "T", b"{}", 1.0, "S", 4, "m1")]
        with pytest.raises(DuplicateMessageIdError):
            await j.append(JournalBatch(failing, {"S": 4}, []))
        assert j.staged_heads.heads == {"a": 1, "b": 2}
        assert _stored(path)[1:] == ({}, 0)
        await j.append(JournalBatch([_entry(3, "a"), _entry(4, "c")], {"S": 4}, []))
        assert j.staged_heads.heads == {}
        assert _stored(path)[1:] == ({"a": 3, "b": 2, "c": 4}, 4)
    want, _ = _independent(path)
    assert _stored(path)[0] == want

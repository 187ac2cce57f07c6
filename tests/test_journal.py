"""Contract tests of the SQLite journal: atomic batches, replay ranges, dedup, snapshots, locks."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from actorsource import (
    DuplicateMessageIdError,
    JournalCorruptError,
    JournalError,
    JournalLockedError,
    JournalOrderError,
)
from actorsource._journal.event_rows import ENTRY_COLUMNS, entry_row
from actorsource._journal.schema import SCHEMA_VERSION
from actorsource.journal import DeadLetter, JournalBatch, JournalEntry, SQLiteJournal


def _entry(pos: int, seq: int | None = None, msg_id: str | None = None) -> JournalEntry:
    return JournalEntry(
        pos=pos,
        subject=f"s.{pos}",
        type="T",
        payload=b'{"n":%d}' % pos,
        received_at=1.0,
        stream="S" if seq is not None else None,
        stream_seq=seq,
        msg_id=msg_id,
        headers={"h": str(pos)},
    )


def _batch(entries: list[JournalEntry], **kw: object) -> JournalBatch:
    seqs = [e.stream_seq for e in entries if e.stream_seq is not None]
    return JournalBatch(
        entries=entries,
        positions={"S": max(seqs)} if seqs else {},
        dead_letters=[],
        **kw,  # type: ignore[arg-type]
    )


async def _all(journal: SQLiteJournal, after: int = 0, chunk: int = 2) -> list[JournalEntry]:
    out: list[JournalEntry] = []
    async for part in journal.entries(after, chunk=chunk):
        out.extend(part)
    return out


async def test_appended_entries_read_back_in_order_with_every_field(tmp_path: Path) -> None:
    async with SQLiteJournal(tmp_path / "a.db", actor="a") as j:
        entries = [_entry(1, 10, "x"), _entry(2, 11), _entry(3)]
        await j.append(_batch(entries))
        assert await _all(j) == entries
        assert j.last_pos == 3
        assert j.stream_positions == {"S": 11}


async def test_reading_from_a_position_returns_only_later_entries(tmp_path: Path) -> None:
    async with SQLiteJournal(tmp_path / "a.db", actor="a") as j:
        await j.append(_batch([_entry(p, p) for p in range(1, 8)]))
        assert [e.pos for e in await _all(j, after=4, chunk=2)] == [5, 6, 7]
        assert await _all(j, after=7) == []


async def test_a_batch_that_does_not_continue_the_journal_is_refused(tmp_path: Path) -> None:
    async with SQLiteJournal(tmp_path / "a.db", actor="a") as j:
        await j.append(_batch([_entry(1, 1)]))
        with pytest.raises(JournalError, match="does not continue"):
            await j.append(_batch([_entry(3, 3)]))
        assert j.last_pos == 1


async def test_a_stream_message_at_or_below_the_recorded_position_is_refused(
    tmp_path: Path,
) -> None:
    # Committing later messages before earlier ones would let a restart (which resumes after
    # the journal's highest stream sequence) skip the earlier ones for good.
    async with SQLiteJournal(tmp_path / "a.db", actor="a") as j:
        await j.append(_batch([_entry(1, 5), _entry(2, 9)]))
        for seq in (9, 7):
            with pytest.raises(JournalOrderError, match=f"S sequence {seq} after 9"):
                await j.append(_batch([_entry(3, seq)]))
        assert [e.stream_seq for e in await _all(j)] == [5, 9]
        assert j.stream_positions == {"S": 9}
        await j.append(_batch([_entry(3, 10)]))
        assert j.last_pos == 3


async def test_a_batch_whose_stream_sequences_go_backwards_stores_nothing(tmp_path: Path) -> None:
    async with SQLiteJournal(tmp_path / "a.db", actor="a") as j:
        with pytest.raises(JournalOrderError, match="S sequence 3 after 4"):
            await j.append(_batch([_entry(1, 2), _entry(2, 4), _entry(3, 3)]))
        with pytest.raises(JournalOrderError, match="S sequence 4 after 4"):
            await j.append(_batch([_entry(1, 2), _entry(2, 4), _entry(3, 4), _entry(4, 5)]))
        with pytest.raises(JournalError, match="entry 2 has pos 2, expected 3"):
            await j.append(_batch([_entry(1, 2), _entry(2, 4), _entry(2, 5)]))
        letters = [
            DeadLetter("s", b"x", "undecodable", "e", stream="S", stream_seq=s) for s in (6, 5)
        ]
        with pytest.raises(JournalOrderError, match="S sequence 5 after 6"):
            await j.append(JournalBatch(entries=[], positions={"S": 6}, dead_letters=letters))
        assert await _all(j) == []
        assert await j.dead_letters() == []
        # Events the actor recorded itself have no stream sequence and sit anywhere.
        await j.append(_batch([_entry(1, 2), _entry(2), _entry(3, 4)]))
        assert j.last_pos == 3


async def test_a_failing_batch_stores_nothing_of_itself(tmp_path: Path) -> None:
    async with SQLiteJournal(tmp_path / "a.db", actor="a") as j:
        await j.append(_batch([_entry(1, 1, "dup")]))
        # Entry 3 repeats a message id: the unique index fails the whole transaction.
        with pytest.raises(JournalError):
            await j.append(_batch([_entry(2, 2), _entry(3, 3, "dup")]))
        assert [e.pos for e in await _all(j)] == [1]
        assert j.last_pos == 1
        assert j.stream_positions == {"S": 1}
        await j.append(_batch([_entry(2, 2)]))
        assert j.last_pos == 2


async def test_a_commit_cancelled_while_it_waits_for_the_write_lock_ends_in_a_true_position(
    tmp_path: Path,
) -> None:
    async with SQLiteJournal(tmp_path / "a.db", actor="a") as j:
        await j.append(_batch([_entry(1, 1)]))
        other = sqlite3.connect(tmp_path / "a.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        cancelled = anyio.CancelScope()

        async def commit() -> None:
            with cancelled:
                await j.append(_batch([_entry(2, 2)]))

        async with anyio.create_task_group() as tg:
            tg.start_soon(commit)
            await anyio.wait_all_tasks_blocked()  # the commit waits inside SQLite
            cancelled.cancel()
            other.execute("ROLLBACK")
        other.close()
        # The commit ran to its end on its thread: what the journal believes is what it holds,
        # and its connection is not left inside a transaction.
        assert j.last_pos == await j.count() == 2
        assert j.stream_positions == {"S": 2}
        await j.append(_batch([_entry(3, 3)]))
        assert [e.pos for e in await _all(j)] == [1, 2, 3]


async def test_known_finds_journaled_and_dead_lettered_sequences_and_message_ids(
    tmp_path: Path,
) -> None:
    async with SQLiteJournal(tmp_path / "a.db", actor="a") as j:
        batch = _batch([_entry(1, 5, "m5"), _entry(2, 6)])
        batch.dead_letters.append(
            DeadLetter(
                subject="s", payload=b"?", reason="undecodable", error="e", stream="S", stream_seq=7
            )
        )
        await j.append(batch)
        seqs, ids = await j.known("S", [4, 5, 6, 7, 8], ["m5", "m6"])
        assert seqs == {5, 6, 7}
        assert ids == {"m5"}
        assert (await j.known("OTHER", [5], []))[0] == set()


async def test_snapshots_are_listed_newest_first_and_pruned_to_keep(tmp_path: Path) -> None:
    async with SQLiteJournal(tmp_path / "a.db", actor="a") as j:
        for pos in range(1, 6):
            await j.append(_batch([_entry(pos, pos)]))
            await j.save_snapshot(pos=pos, model_version=1, codec="c", state=b"{}", keep=2)
        infos = await j.snapshots()
        assert [s.pos for s in infos] == [5, 4]
        snap = await j.read_snapshot(infos[0].id)
        assert snap is not None
        assert snap.verifies()


async def test_the_journal_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    async with SQLiteJournal(path, actor="a") as j:
        await j.append(_batch([_entry(1, 1), _entry(2, 2)]))
    async with SQLiteJournal(path, actor="a") as j:
        assert j.last_pos == 2
        assert j.stream_positions == {"S": 2}
        assert len(await _all(j)) == 2


async def test_another_actors_journal_is_refused(tmp_path: Path) -> None:
    async with SQLiteJournal(tmp_path / "a.db", actor="a"):
        pass
    with pytest.raises(JournalError, match="journal of actor 'a'"):
        async with SQLiteJournal(tmp_path / "a.db", actor="b"):
            pass


async def test_a_second_open_in_the_same_process_fails_fast(tmp_path: Path) -> None:
    async with SQLiteJournal(tmp_path / "a.db", actor="a"):
        with pytest.raises(JournalLockedError, match="already open"):
            async with SQLiteJournal(tmp_path / "a.db", actor="a"):
                pass


async def test_a_second_process_on_the_same_journal_fails_fast_with_a_clear_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a.db"
    script = textwrap.dedent(
        f"""
        import anyio
        from actorsource import JournalLockedError
        from actorsource.journal import SQLiteJournal
        async def main():
            try:
                async with SQLiteJournal({str(path)!r}, actor="a"):
                    print("OPENED")
            except JournalLockedError as exc:
                print("LOCKED", exc)
        anyio.run(main)
        """
    )
    async with SQLiteJournal(path, actor="a"):
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
        )
    assert out.stdout.startswith("LOCKED")
    assert f"by process {os.getpid()}" in out.stdout
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.startswith("OPENED")


async def test_journal_files_are_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "data" / "a.db"
    async with SQLiteJournal(path, actor="a") as j:
        await j.append(_batch([_entry(1, 1)]))
        for p in (path, Path(str(path) + "-wal"), Path(str(path) + ".lock")):
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


async def test_a_journal_opened_with_its_integrity_checked_refuses_a_corrupt_page(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a.db"
    async with SQLiteJournal(path, actor="a") as j:
        big = [_entry(i) for i in range(1, 401)]
        for e in big:
            e.payload = b"x" * 400
        await j.append(_batch(big))
    with sqlite3.connect(path) as db:
        [(page_size,)] = db.execute("PRAGMA page_size").fetchall()
        [(pages,)] = db.execute("PRAGMA page_count").fetchall()
    with path.open("r+b") as f:
        f.seek(page_size * (pages // 2))
        f.write(b"\xde\xad\xbe\xef" * (page_size // 4))
    async with SQLiteJournal(path, actor="a"):
        pass  # without the check, the damage goes unnoticed at open
    with pytest.raises(JournalCorruptError, match="integrity check") as info:
        async with SQLiteJournal(path, actor="a", integrity_check=True):
            pass
    assert str(path) in str(info.value)
    assert "Restore the file from a backup" in str(info.value)


async def test_a_file_that_is_not_a_journal_is_refused_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(JournalError, match=str(path)):
        async with SQLiteJournal(path, actor="a"):
            pass


async def test_a_journal_is_created_in_one_transaction_with_its_owner(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    async with SQLiteJournal(path, actor="a"):
        pass
    import sqlite3

    with sqlite3.connect(str(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("SELECT value FROM meta WHERE key = 'actor'").fetchone()[0] == "a"


async def test_a_journal_stamped_without_its_owner_by_a_killed_first_open_still_opens(
    tmp_path: Path,
) -> None:
    import sqlite3

    from actorsource._journal.schema import SCHEMA as _SCHEMA

    path = tmp_path / "a.db"
    with sqlite3.connect(str(path)) as db:  # what a kill between two steps used to leave
        db.executescript(_SCHEMA + f"PRAGMA user_version={SCHEMA_VERSION};")
    async with SQLiteJournal(path, actor="a") as j:
        assert j.last_pos == 0


async def test_headers_round_trip_whether_usual_empty_or_extra(tmp_path: Path) -> None:
    def entry(pos: int, headers: dict[str, str]) -> JournalEntry:
        return JournalEntry(pos, "s", "T", b"{}", 1.0, "S", pos, f"m{pos}", headers)

    written = [
        entry(1, {"Event-Type": "T", "Nats-Msg-Id": "m1"}),  # stored as NULL, rebuilt
        entry(2, {}),
        entry(3, {"Event-Type": "T", "Nats-Msg-Id": "m3", "Trace": "abc"}),
    ]
    async with SQLiteJournal(tmp_path / "a.db", actor="a") as j:
        await j.append(_batch(written))
        read = await _all(j)
        assert [dict(e.headers) for e in read] == [dict(e.headers) for e in written]
        stored = await j._execute("SELECT headers IS NULL FROM events ORDER BY pos")
        assert stored == [(1,), (0,), (0,)]


async def test_usual_rows_are_stored_exactly_as_every_other_row_would_be(tmp_path: Path) -> None:
    # Usual rows (type and id headers only, version 1, no entity) take a shorter insert;
    # what it stores must be what the general one stores, in statements of every size.
    def entry(pos: int, **kw: object) -> JournalEntry:
        headers = {"Event-Type": "T", "Nats-Msg-Id": f"m{pos}"}
        fields: dict[str, object] = {"headers": headers, "payload": b'{"n":%d}' % pos}
        fields.update(kw)
        return JournalEntry(pos, f"s.{pos}", "T", received_at=1.5, stream="S", stream_seq=pos,
                            msg_id=f"m{pos}", **fields)  # type: ignore[arg-type]  # fmt: skip

    written = [entry(p) for p in range(1, 301)]
    written[4] = entry(5, payload=b"")
    written[299] = entry(300, version=2)  # the last statement (one row) is not usual
    async with SQLiteJournal(tmp_path / "a.db", actor="a") as j:
        await j.append(_batch(written))
        stored = await j._execute(
            f"SELECT {ENTRY_COLUMNS}, typeof(payload) FROM events ORDER BY pos"
        )
        assert [tuple(r) for r in stored] == [(*entry_row(e), "blob") for e in written]
        assert await _all(j, chunk=1_000) == written


async def test_entity_rows_are_chained_and_stored_as_the_general_form_would_be(
    tmp_path: Path,
) -> None:
    # An entity's usual rows take the shorter insert too, with their key and the position
    # of their entity's row before them; across statements and batches, whatever the form.
    def entry(pos: int, **kw: object) -> JournalEntry:
        headers = {"Event-Type": "T", "Nats-Msg-Id": f"m{pos}"}
        fields: dict[str, object] = {"headers": headers, "payload": b'{"n":%d}' % pos}
        fields.update(kw)
        return JournalEntry(pos, f"s.{pos}", "T", received_at=1.5, stream="S", stream_seq=pos,
                            msg_id=f"m{pos}", entity=f"k{pos % 7}", **fields)  # type: ignore[arg-type]  # fmt: skip

    written = [entry(p) for p in range(1, 301)]
    written[4] = entry(5, payload=b"")
    written[200] = entry(201, headers={"Event-Type": "T", "Nats-Msg-Id": "m201", "X": "y"})
    written[299] = entry(300, version=2)  # the last statement (one row) is not usual
    prevs: list[int] = []
    heads: dict[str, int] = {}
    for e in written:
        assert e.entity is not None
        prevs.append(heads.get(e.entity, 0))
        heads[e.entity] = e.pos
    async with SQLiteJournal(tmp_path / "a.db", actor="a") as j:
        await j.append(_batch(written[:150]))
        await j.append(_batch(written[150:]))
        stored = await j._execute(
            f"SELECT {ENTRY_COLUMNS}, prev_pos, typeof(payload) FROM events ORDER BY pos"
        )
        assert [tuple(r) for r in stored] == [
            (*entry_row(e), prev, "blob") for e, prev in zip(written, prevs, strict=True)
        ]
        # The heads are staged (entity_heads.py): stored when the journal closes.
        assert j.staged_heads.heads == heads
        assert await j._execute("SELECT entity, pos FROM entity_heads") == []
        assert await _all(j, chunk=1_000) == written
    with sqlite3.connect(tmp_path / "a.db") as db:
        assert dict(db.execute("SELECT entity, pos FROM entity_heads").fetchall()) == heads


async def test_a_batch_that_fails_moves_no_entity_head(tmp_path: Path) -> None:
    def keyed(pos: int, msg_id: str) -> JournalEntry:
        return JournalEntry(pos, f"s.{pos}", "T", b"{}", 1.0, "S", pos, msg_id, entity="k")

    async with SQLiteJournal(tmp_path / "a.db", actor="a") as j:
        await j.append(_batch([keyed(1, "m1"), keyed(2, "m2")]))
        with pytest.raises(DuplicateMessageIdError):
            await j.append(_batch([keyed(3, "m3"), keyed(4, "m1")]))  # rolled back whole
        await j.append(_batch([keyed(3, "m5")]))
        assert await j._execute("SELECT pos, prev_pos FROM events ORDER BY pos") == [
            (1, 0),
            (2, 1),
            (3, 2),
        ]
        assert j.staged_heads.heads == {"k": 3}


async def test_deleting_snapshots_reports_how_many_and_keeps_the_events(tmp_path: Path) -> None:
    async with SQLiteJournal(tmp_path / "a.db", actor="a") as j:
        await j.append(_batch([_entry(1, 1), _entry(2, 2)]))
        await j.save_snapshot(pos=2, model_version=1, codec="c", state=b"{}", keep=3)
        assert await j.delete_snapshots() == 1
        assert await j.snapshots() == []
        assert j.last_pos == 2
        assert len(await _all(j)) == 2


async def test_admit_runs_inside_the_transaction_after_the_unique_index(tmp_path: Path) -> None:
    """A fenced owner's append (``admit``) happens after the journal refused a message id it
    holds and before the commit: a reader sees nothing of the batch meanwhile, whatever
    ``admit`` raises stores nothing, and what it adds to the positions is stored."""
    calls: list[int] = []

    def entry(pos: int, msg_id: str) -> JournalEntry:
        return JournalEntry(pos, f"s.{pos}", "T", b"{}", 1.0, "S", pos, msg_id, entity="k")

    async with SQLiteJournal(tmp_path / "a.db", actor="a") as j:
        await j.append(_batch([entry(1, "m1")]))
        heads = dict(j.staged_heads.heads)

        async def refused() -> None:
            calls.append(j.last_pos)
            raise RuntimeError("fenced")

        with pytest.raises(DuplicateMessageIdError):
            await j.append(_batch([entry(2, "m2"), entry(3, "m1")]), admit=refused)
        assert calls == []  # the duplicate was found first: nothing to append
        with pytest.raises(RuntimeError, match="fenced"):
            await j.append(_batch([entry(2, "m2")]), admit=refused)
        assert calls == [1]
        assert (j.last_pos, j.stream_positions, dict(j.staged_heads.heads)) == (
            1,
            {"S": 1},
            heads,
        )
        batch = _batch([entry(2, "m2")])

        async def admitted() -> None:
            with sqlite3.connect(tmp_path / "a.db") as db:  # not committed yet
                assert db.execute("SELECT max(pos) FROM events").fetchone() == (1,)
            batch.positions["asj.a.0"] = 7

        await j.append(batch, admit=admitted)
        assert j.stream_positions == {"S": 2, "asj.a.0": 7}
        assert [e.msg_id for e in await _all(j)] == ["m1", "m2"]
    async with SQLiteJournal(tmp_path / "a.db", actor="a") as j:
        assert j.stream_positions == {"S": 2, "asj.a.0": 7}

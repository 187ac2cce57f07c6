"""Large snapshots in parts: the header last, every part checked, old journals read as they are.

Journal-level tests use tiny parts (``snapshot_part_bytes``) so that a few kilobytes make a
parted snapshot; the actor-level ones use a real state past 1 MiB (the default parts).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from actorsource import actor, handles
from actorsource._journal.journal import SCHEMA_VERSION, JournalBatch, NewSnapshot, SQLiteJournal
from actorsource._journal.offline import summarize
from actorsource._journal.recovery import restore_state
from actorsource._model.actor import definition_of
from actorsource._model.events import JournalEntry
from actorsource.testing import ActorKit, ActorProbe

PART = 1_024


def state_of(pos: int, size: int = 10 * PART) -> bytes:
    """A JSON state of ``size`` bytes or so that says which position it is of."""
    return b'{"pos":%d,"pad":"%s"}' % (pos, b"x" * size)


def entry(pos: int) -> JournalEntry:
    return JournalEntry(pos, "t.x", "T", b"{}", 0.0, "S", pos, None, {"Event-Type": "T"})


def rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


async def write_events(journal: SQLiteJournal, upto: int) -> None:
    first = journal.last_pos + 1
    entries = [entry(p) for p in range(first, upto + 1)]
    await journal.append(JournalBatch(entries=entries, positions={"S": upto}, dead_letters=[]))


async def save(journal: SQLiteJournal, pos: int, keep: int = 3) -> None:
    await journal.save_snapshot(
        pos=pos, model_version=1, codec="msgspec-json", state=state_of(pos), keep=keep
    )


async def test_a_large_snapshot_is_stored_in_parts_and_read_back_whole(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    async with SQLiteJournal(path, actor="a", snapshot_part_bytes=PART) as journal:
        await write_events(journal, 5)
        await save(journal, 5)
        [info] = await journal.snapshots()
        snapshot = await journal.read_snapshot(info.id)
    assert snapshot is not None
    assert snapshot.verifies()
    assert snapshot.state == state_of(5)
    assert info.size == len(state_of(5)) == summarize(path).snapshots[0].size
    assert rows(path, "SELECT length(state), parts FROM snapshots") == [(0, 11)]
    assert len(rows(path, "SELECT n FROM snapshot_parts")) == 11


async def test_a_small_snapshot_stays_one_blob_in_its_row(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    async with SQLiteJournal(path, actor="a", snapshot_part_bytes=PART) as journal:
        await write_events(journal, 1)
        await journal.save_snapshot(pos=1, model_version=1, codec="c", state=b"{}", keep=3)
    assert rows(path, "SELECT state, parts FROM snapshots") == [(b"{}", None)]
    assert rows(path, "SELECT count(*) FROM snapshot_parts") == [(0,)]


async def test_parts_without_their_header_are_not_a_snapshot_and_go_at_the_next_open(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.db"
    async with SQLiteJournal(path, actor="a", snapshot_part_bytes=PART) as journal:
        await write_events(journal, 9)
        await save(journal, 5)
        write = journal.parted(NewSnapshot(state_of(9), 9, 1, "msgspec-json"))
        for _ in range(4):  # four parts of eleven, then the process dies
            assert not await journal.snapshot_step(write)
        assert [s.pos for s in await journal.snapshots()] == [5]
    assert len(rows(path, "SELECT n FROM snapshot_parts")) == 11 + 4
    async with SQLiteJournal(path, actor="a", snapshot_part_bytes=PART) as journal:
        [info] = await journal.snapshots()
        snapshot = await journal.read_snapshot(info.id)
        assert snapshot is not None
        assert snapshot.pos == 5
        assert snapshot.verifies()
    assert len(rows(path, "SELECT n FROM snapshot_parts")) == 11  # the orphans are gone


async def test_a_snapshot_missing_a_part_does_not_verify(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    async with SQLiteJournal(path, actor="a", snapshot_part_bytes=PART) as journal:
        await write_events(journal, 5)
        await save(journal, 5)
        await journal._execute("DELETE FROM snapshot_parts WHERE n = 3")
        [info] = await journal.snapshots()
        snapshot = await journal.read_snapshot(info.id)
    assert snapshot is not None
    assert snapshot.parts_missing == 1
    assert not snapshot.verifies()


async def test_pruning_keeps_the_newest_snapshots_and_only_their_parts(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    async with SQLiteJournal(path, actor="a", snapshot_part_bytes=PART) as journal:
        await write_events(journal, 4)
        for pos in (1, 2, 3, 4):
            await save(journal, pos, keep=2)
        infos = await journal.snapshots()
    assert [s.pos for s in infos] == [4, 3]
    kept = {s.id for s in infos}
    assert {r[0] for r in rows(path, "SELECT DISTINCT snapshot FROM snapshot_parts")} == kept


async def test_deleting_every_snapshot_deletes_their_parts(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    async with SQLiteJournal(path, actor="a", snapshot_part_bytes=PART) as journal:
        await write_events(journal, 2)
        await save(journal, 1)
        await save(journal, 2)
        assert await journal.delete_snapshots() == 2
    assert rows(path, "SELECT count(*) FROM snapshot_parts") == [(0,)]


async def test_an_inline_snapshot_written_while_parts_are_written_takes_another_id(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.db"
    async with SQLiteJournal(path, actor="a", snapshot_part_bytes=PART) as journal:
        await write_events(journal, 2)
        write = journal.parted(NewSnapshot(state_of(1), 1, 1, "msgspec-json"))
        assert not await journal.snapshot_step(write)
        await journal.save_snapshot(pos=2, model_version=1, codec="c", state=b"{}", keep=3)
        while not await journal.snapshot_step(write):
            pass
        snapshots = {s.pos: await journal.read_snapshot(s.id) for s in await journal.snapshots()}
    assert snapshots[2] is not None
    assert snapshots[2].state == b"{}"
    assert snapshots[1] is not None
    assert snapshots[1].verifies()


# -- a journal written before snapshots had parts ----------------------------------------------


@dataclass
class Noted:
    key: str
    text: str


@actor("notes", subjects=["notes.>"], snapshot_every=1, snapshot_budget=None)
class Notes:
    notes: dict[str, str]

    def __init__(self) -> None:
        self.notes = {}

    @handles(Noted)
    def noted(self, event: Noted) -> None:
        self.notes[event.key] = event.text


def downgrade_to_schema_3(path: Path) -> None:
    """Make a journal what schema 3 wrote: snapshots without ``parts``/``size``, no parts
    (and entity rows found by an index, not chained: schema 5)."""
    with sqlite3.connect(path) as db:
        db.executescript(
            "ALTER TABLE snapshots DROP COLUMN parts; ALTER TABLE snapshots DROP COLUMN size;"
            "DROP TABLE snapshot_parts; ALTER TABLE events DROP COLUMN prev_pos;"
            "DROP TABLE entity_heads; CREATE INDEX events_by_entity ON events (entity, pos) "
            "WHERE entity IS NOT NULL; PRAGMA user_version = 3;"
        )


async def test_a_journal_of_schema_3_with_a_one_blob_snapshot_is_upgraded_and_restores_from_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "notes.db"
    definition = definition_of(Notes)
    state = definition.new_state()
    state.notes = {"a": "x" * 5_000}
    data = definition.state_codec.encode(state)
    async with SQLiteJournal(path, actor="notes") as journal:
        await write_events(journal, 3)
        await journal.save_snapshot(
            pos=3, model_version=1, codec="msgspec-json", state=data, keep=3
        )
    downgrade_to_schema_3(path)
    async with SQLiteJournal(path, actor="notes", snapshot_part_bytes=PART) as journal:
        restored, report = await restore_state(definition, journal)
    assert report.snapshot_pos == 3
    assert report.replayed == 0
    assert restored.notes == state.notes
    assert rows(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


# -- a running actor ---------------------------------------------------------------------------

NOTE = 400_000  # three notes: past 1 MiB, a snapshot in three parts of 512 KiB


async def note(kit: ActorKit, i: int) -> None:
    await kit.publish(f"notes.{i}", Noted(f"k{i}", f"{i}:" + "x" * NOTE))


async def notes_each_snapshotted(kit: ActorKit, probe: ActorProbe[Notes], n: int) -> None:
    """Notes 0 .. n-1, each applied and snapshotted (at its position) before the next."""
    for i in range(n):
        await note(kit, i)
        await probe.settled()
        await newest_snapshot_at(probe, i + 1)


async def newest_snapshot_at(probe: ActorProbe[Notes], pos: int) -> None:
    with anyio.fail_after(10):
        while not (s := await probe.snapshots()) or s[0].pos != pos:
            await anyio.sleep(0.01)


def parts_of_no_header(path: Path) -> int:
    [(n,)] = rows(
        path,
        "SELECT count(*) FROM snapshot_parts WHERE snapshot NOT IN (SELECT id FROM snapshots)",
    )
    return int(n)


async def test_a_crash_half_way_through_a_parted_snapshot_recovers_from_the_one_before(
    actor_kit: ActorKit,
) -> None:
    async with actor_kit.start(Notes) as notes:
        await notes_each_snapshotted(actor_kit, notes, 3)
        assert rows(notes.journal_path, "SELECT parts FROM snapshots WHERE pos = 3") == [(3,)]
        notes.arm_crash("between_snapshot_parts")
        await note(actor_kit, 3)  # its snapshot dies after its first part
        await notes.crashed(restart=False)
        assert parts_of_no_header(notes.journal_path) == 1
        await notes.start()
        assert notes.recovery.snapshot_pos == 3
        assert notes.recovery.skipped == []
        assert notes.state.notes == (await notes.fold()).notes
        assert len(notes.state.notes) == 4
        assert parts_of_no_header(notes.journal_path) == 0


async def test_a_corrupt_part_falls_back_to_the_snapshot_before(actor_kit: ActorKit) -> None:
    async with actor_kit.start(Notes) as notes:
        await notes_each_snapshotted(actor_kit, notes, 4)
        assert [s.pos for s in await notes.snapshots()] == [4, 3, 2]
        await notes.stop()
        with sqlite3.connect(notes.journal_path) as db:
            db.execute(
                "UPDATE snapshot_parts SET data = zeroblob(length(data)) WHERE n = 1 AND "
                "snapshot = (SELECT id FROM snapshots WHERE pos = 4)"
            )
        await notes.start()
        assert notes.recovery.skipped == [(4, "checksum mismatch")]
        assert notes.recovery.snapshot_pos == 3
        assert notes.state.notes == (await notes.fold()).notes

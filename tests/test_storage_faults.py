"""Storage faults: a full disk, a corrupt journal, a journal restored from an old backup."""

from __future__ import annotations

import logging
import shutil
import sqlite3
from pathlib import Path

import anyio
import pytest
from actors import Added, Counter, assert_exactly_once

from actorsource import ActorsourceError, JournalCorruptError, StreamMismatchError
from actorsource._journal.journal import SQLiteJournal
from actorsource._model.actor import definition_of, unacked_capacity
from actorsource.testing import ActorKit, ActorProbe


async def _publish(kit: ActorKit, events: list[Added]) -> None:
    for e in events:
        await kit.publish(f"count.{e.key}", e)


async def _fill_the_disk(
    kit: ActorKit, counter: ActorProbe[Counter], first: list[Added]
) -> SQLiteJournal:
    """Commit ``first``, then leave the journal no room for more (the disk is full)."""
    await _publish(kit, first)
    await counter.settled()
    journal = counter.journal
    [(pages,)] = await journal._execute("PRAGMA page_count")
    await journal._execute(f"PRAGMA max_page_count = {pages}")
    return journal


async def test_a_full_disk_stops_commits_without_acking_and_processing_resumes_when_space_returns(
    actor_kit: ActorKit, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="actorsource")
    events = [Added(f"k{i % 4}", i) for i in range(1, 301)]
    async with actor_kit.start(Counter) as counter:
        journal = await _fill_the_disk(actor_kit, counter, events[:5])
        await _publish(actor_kit, events[5:])
        with anyio.fail_after(15):
            while counter.stats.commit_failures == 0:
                await anyio.sleep(0.01)
        info = await actor_kit.js.consumer_info("COUNTER", "counter")
        committed = journal.stream_positions["COUNTER"]
        assert committed < 300
        assert info.ack_floor.stream_seq <= committed  # nothing acknowledged past the commit
        assert info.num_ack_pending > 0
        await journal._execute("PRAGMA max_page_count = 1073741823")  # space returns
        await counter.settled(timeout=30)
        await assert_exactly_once(counter, events)
    assert any(r.getMessage() == "journal commit failed; retrying" for r in caplog.records)


async def test_while_commits_fail_the_server_holds_back_only_what_the_pipeline_has_no_room_for(
    actor_kit: ActorKit,
) -> None:
    # The consumer's max_ack_pending is the pipeline's own bound (the mailbox's buffer and
    # pulls, the batch in hand, two commit jobs), not the server's default 1,000: a stalled
    # commit fills the pipeline past 1,024, and never past its capacity.
    events = [Added(f"k{i % 4}", i) for i in range(1, 3_001)]
    capacity = unacked_capacity(definition_of(Counter).max_batch)
    async with actor_kit.start(Counter) as counter:
        journal = await _fill_the_disk(actor_kit, counter, events[:5])
        for start in range(5, len(events), 100):
            chunk = events[start : start + 100]
            async with anyio.create_task_group() as tg:
                for e in chunk:
                    tg.start_soon(actor_kit.publish, f"count.{e.key}", e)
        seen, still = -1, 0
        with anyio.fail_after(10):
            while still < 5:  # the same count five looks in a row: the pipeline is full
                info = await actor_kit.js.consumer_info("COUNTER", "counter")
                still = still + 1 if info.num_ack_pending == seen else 0
                seen = info.num_ack_pending
                await anyio.sleep(0.05)
        assert counter.stats.commit_failures > 0
        assert 1_024 < seen <= capacity
        await journal._execute("PRAGMA max_page_count = 1073741823")  # space returns
        await counter.settled(timeout=30)
        await assert_exactly_once(counter, events)


def _corrupt_a_middle_page(path: Path) -> None:
    """Overwrite a page in the middle of the events table (a free page would not count:
    nothing reads it, so no check can find it)."""
    with sqlite3.connect(str(path)) as db:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        pages = [
            row[0]
            for row in db.execute("SELECT pageno FROM dbstat WHERE name = 'events' ORDER BY pageno")
        ]
    assert len(pages) > 6
    with path.open("r+b") as f:
        f.seek(page_size * (pages[len(pages) // 2] - 1))
        f.write(b"\xde\xad\xbe\xef" * (page_size // 4))


async def test_a_corrupt_journal_halts_the_actor_naming_the_file_and_acks_nothing(
    actor_kit: ActorKit,
) -> None:
    events = [Added(f"key-{i:04d}" * 8, i) for i in range(1, 201)]
    async with actor_kit.start(Counter) as counter:
        await _publish(actor_kit, events)
        await counter.settled()
        await counter.stop()
        _corrupt_a_middle_page(counter.journal_path)
        await actor_kit.publish("count.z", Added("z", 1))
        try:
            await counter.start()  # it may fail at once, or run until its integrity check
        except ActorsourceError as exc:
            error: BaseException | None = exc.__cause__
            counter.error = None
        else:
            error = await counter.halted()
    assert isinstance(error, JournalCorruptError)
    assert str(counter.journal_path) in str(error)
    assert "malformed" in str(error) or "integrity check" in str(error)
    assert "move it away" in str(error)
    info = await actor_kit.js.consumer_info("COUNTER", "counter")
    assert info.ack_floor.stream_seq == 200  # the new message was not acknowledged


async def test_a_journal_restored_from_an_old_backup_re_reads_what_it_missed(
    actor_kit: ActorKit, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="actorsource")
    events = [Added(f"k{i % 4}", i) for i in range(1, 41)]
    backup = tmp_path / "backup.sqlite"
    async with actor_kit.start(Counter) as counter:
        await _publish(actor_kit, events[:10])
        await counter.settled()
        await counter.stop()
        shutil.copy(counter.journal_path, backup)
        await counter.start()
        await _publish(actor_kit, events[10:])
        await counter.settled()
        await counter.stop()
        shutil.copy(backup, counter.journal_path)
        await counter.start()
        await counter.settled()
        await assert_exactly_once(counter, events)
    assert any("journal behind" in r.getMessage() for r in caplog.records)


async def test_a_journal_behind_events_the_stream_no_longer_holds_halts_with_a_clear_error(
    actor_kit: ActorKit, tmp_path: Path
) -> None:
    backup = tmp_path / "backup.sqlite"
    async with actor_kit.start(Counter) as counter:
        await _publish(actor_kit, [Added("a", i) for i in range(1, 11)])
        await counter.settled()
        await counter.stop()
        shutil.copy(counter.journal_path, backup)
        await counter.start()
        await _publish(actor_kit, [Added("a", i) for i in range(11, 21)])
        await counter.settled()
        await counter.stop()
        shutil.copy(backup, counter.journal_path)
        await actor_kit.js.purge_stream("COUNTER")  # retention removed 11..20
        with pytest.raises(ActorsourceError) as failed:
            await counter.start()
        counter.error = None
    error = failed.value.__cause__
    assert isinstance(error, StreamMismatchError)
    assert "behind what the consumer acknowledged" in str(error)
    assert "11..20" in str(error)


async def test_commits_go_on_while_the_integrity_check_runs_but_nothing_is_acknowledged_before_it_passes(
    actor_kit: ActorKit, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from actorsource._journal import journal as journal_module

    release = threading.Event()
    real_check = journal_module.quick_check

    def held_check(path: Path) -> list[str]:
        release.wait(30)  # the real check, held back until the test lets it run
        return real_check(path)

    monkeypatch.setattr(journal_module, "quick_check", held_check)
    events = [Added("k", i) for i in range(1, 4)]
    async with actor_kit.start(Counter) as counter:
        await _publish(actor_kit, events)
        with anyio.fail_after(10):
            while counter.journal.stream_positions.get("COUNTER", 0) < 3:
                await anyio.sleep(0.01)
        with sqlite3.connect(str(counter.journal_path)) as db:
            [(rows,)] = db.execute("SELECT count(*) FROM events").fetchall()
        assert rows == 3  # committed while the check runs
        info = await actor_kit.js.consumer_info("COUNTER", "counter")
        assert info.ack_floor.stream_seq == 0  # and not acknowledged
        assert info.num_ack_pending == 3
        release.set()
        await counter.settled()
        info = await actor_kit.js.consumer_info("COUNTER", "counter")
        assert info.ack_floor.stream_seq == 3
        await assert_exactly_once(counter, events)

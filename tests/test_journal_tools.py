"""`actorsource journal info|tail|show` on real journal files, live and offline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from actors import Added, Counter
from click.testing import CliRunner

from actorsource.cli import main
from actorsource.testing import ActorKit


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


async def _counter_with_events(kit: ActorKit, n: int) -> Path:
    async with kit.start(Counter) as counter:
        for i in range(1, n + 1):
            await kit.publish(f"count.k{i % 3}", Added(f"k{i % 3}", i), msg_id=f"m-{i}")
        await counter.settled()
        return counter.journal_path


async def test_journal_info_summarizes_events_positions_and_snapshots(actor_kit: ActorKit) -> None:
    path = await _counter_with_events(actor_kit, 25)
    code, out, _ = _cli("journal", "info", str(path))
    assert code == 0
    lines = dict(line.split(None, 1) for line in out.splitlines() if line.strip())
    assert lines["actor"] == "counter"
    assert lines["events"] == "25"
    assert lines["positions"] == "1 .. 25"
    assert "COUNTER up to 25" in out
    assert "pos 25 (v1" in out  # the snapshot written at the graceful stop


async def test_journal_tools_read_a_journal_while_its_worker_holds_it(actor_kit: ActorKit) -> None:
    async with actor_kit.start(Counter) as counter:
        await actor_kit.publish("count.a", Added("a", 7), msg_id="only")
        await counter.settled()
        code, out, _ = _cli("journal", "tail", str(counter.journal_path), "-n", "5")
        assert code == 0
        [entry] = [json.loads(line) for line in out.splitlines()]
        assert entry["pos"] == 1
        assert entry["msg_id"] == "only"
        assert json.loads(entry["payload"]) == {"key": "a", "amount": 7}
        assert entry["headers"]["Event-Type"] == "Added"


async def test_journal_tail_prints_the_last_n_entries_in_order(actor_kit: ActorKit) -> None:
    path = await _counter_with_events(actor_kit, 12)
    code, out, _ = _cli("journal", "tail", str(path), "-n", "3")
    assert code == 0
    assert [json.loads(line)["pos"] for line in out.splitlines()] == [10, 11, 12]


async def test_journal_show_prints_one_entry_or_says_there_is_none(actor_kit: ActorKit) -> None:
    path = await _counter_with_events(actor_kit, 4)
    code, out, _ = _cli("journal", "show", str(path), "2")
    assert code == 0
    assert json.loads(out)["msg_id"] == "m-2"
    code, _, err = _cli("journal", "show", str(path), "99")
    assert code == 1
    assert "no entry at position 99" in err


def test_journal_info_on_a_missing_or_foreign_file_says_so_in_one_line(tmp_path: Path) -> None:
    code, _, err = _cli("journal", "info", str(tmp_path / "nope.sqlite"))
    assert code == 1
    assert err.strip() == f"actorsource: no journal at {tmp_path / 'nope.sqlite'}"
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 50)
    code, _, err = _cli("journal", "info", str(junk))
    assert code == 1
    assert len(err.strip().splitlines()) == 1
    assert str(junk) in err


async def test_export_then_import_gives_an_identical_journal_that_recovers_the_same_state(
    actor_kit: ActorKit, tmp_path: Path
) -> None:
    from actorsource.journal import SQLiteJournal, restore_state

    path = await _counter_with_events(actor_kit, 30)
    code, exported, _ = _cli("journal", "export", str(path))
    assert code == 0
    assert len(exported.splitlines()) == 30
    copy = tmp_path / "copy" / "counter.journal.sqlite"
    dump = tmp_path / "dump.jsonl"
    dump.write_text(exported)
    # A subprocess: the import runs its own event loop, and this test already has one.
    out = subprocess.run(
        [
            *(sys.executable, "-m", "actorsource", "journal", "import", str(copy)),
            *("--actor", "counter", "--input", str(dump)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "imported 30 events" in out.stdout
    async with (
        SQLiteJournal(path, actor="counter") as original,
        SQLiteJournal(copy, actor="counter") as imported,
    ):
        assert [e async for c in imported.entries() for e in c] == [
            e async for c in original.entries() for e in c
        ]
        assert imported.stream_positions == original.stream_positions
        state, _ = await restore_state(Counter, imported)
        expected, _ = await restore_state(Counter, original, use_snapshots=False)
        assert state.totals == expected.totals


def test_import_refuses_an_existing_file_and_bad_lines(tmp_path: Path) -> None:
    existing = tmp_path / "exists.sqlite"
    existing.write_bytes(b"")
    code, _, err = _cli("journal", "import", str(existing), "--actor", "a")
    assert code == 1
    assert "import only creates a fresh journal" in err
    result = CliRunner().invoke(
        main, ["journal", "import", str(tmp_path / "new.sqlite"), "--actor", "a"], input="{}\n"
    )
    assert result.exit_code == 1
    assert "line 1 of the input is not an entry" in result.stderr


async def test_snapshots_list_shows_them_newest_first(actor_kit: ActorKit) -> None:
    path = await _counter_with_events(actor_kit, 25)  # snapshot_every=10, keep 3, final at stop
    code, out, _ = _cli("snapshots", "list", str(path))
    assert code == 0
    positions = [int(line.split()[0].replace(",", "")) for line in out.splitlines()[1:]]
    assert positions[0] == 25
    assert positions == sorted(positions, reverse=True)


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "actorsource", *args], capture_output=True, text=True, timeout=60
    )


async def test_snapshots_delete_is_refused_while_a_worker_holds_the_journal(
    actor_kit: ActorKit,
) -> None:
    async with actor_kit.start(Counter) as counter:
        await actor_kit.publish("count.a", Added("a", 1))
        await counter.settled()
        out = _run_cli("snapshots", "delete", str(counter.journal_path))
        assert out.returncode == 1
        assert "already open for writing" in out.stderr


async def test_deleted_snapshots_make_the_next_start_replay_everything(actor_kit: ActorKit) -> None:
    path = await _counter_with_events(actor_kit, 15)
    out = _run_cli("snapshots", "delete", str(path))
    assert out.returncode == 0, out.stderr
    assert "deleted" in out.stdout
    async with actor_kit.start(Counter) as counter:
        assert counter.recovery.snapshot_pos is None
        assert counter.recovery.replayed == 15


async def test_a_dead_letter_listed_then_replayed_after_a_fix_is_applied_exactly_once(
    actor_kit: ActorKit,
) -> None:
    from actors import FRAGILE, Fragile

    FRAGILE["broken"] = True
    try:
        async with actor_kit.start(Fragile) as fragile:
            await actor_kit.publish("fragile.a", Added("a", 5), msg_id="orig-5")
            await fragile.settled()
            assert fragile.state.totals == {}
            data_dir = str(actor_kit.data_dir)
            listed = _run_cli("dlq", "list", "fragile", "--data-dir", data_dir)
            assert listed.returncode == 0, listed.stderr
            [letter] = [json.loads(line) for line in listed.stdout.splitlines()]
            assert (letter["reason"], letter["msg_id"]) == ("handler-failed", "orig-5")
            assert "a bug in the handler" in letter["error"]
            FRAGILE["broken"] = False  # the fix is deployed
            url = actor_kit.server.url if actor_kit.server else ""
            for _ in range(2):  # replaying twice applies it once
                replay = _run_cli(
                    "dlq", "replay", "fragile", "--id", str(letter["id"]),
                    "--data-dir", data_dir, "--nats", url,
                )  # fmt: skip
                assert replay.returncode == 0, replay.stderr
                assert "re-published 1 dead letter of fragile" in replay.stdout
            await fragile.settled()
            assert fragile.state.totals == {"a": 5}
            assert len(await fragile.entries()) == 1
    finally:
        FRAGILE["broken"] = False


def test_dlq_replay_of_an_unknown_id_says_so(tmp_path: Path) -> None:
    import asyncio

    from actorsource.journal import SQLiteJournal, journal_path

    async def make() -> None:
        async with SQLiteJournal(journal_path(tmp_path, "fragile"), actor="fragile"):
            pass

    asyncio.run(make())
    out = _run_cli("dlq", "replay", "fragile", "--id", "7", "--data-dir", str(tmp_path))
    assert out.returncode == 1
    assert "no dead letter with id [7]" in out.stderr


def _run_cli_with_tests_on_path(*args: str) -> subprocess.CompletedProcess[str]:
    import os

    tests_dir = str(Path(__file__).resolve().parent)
    env = {**os.environ, "PYTHONPATH": tests_dir + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", "actorsource", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tests_dir,
    )


async def test_rebuild_replays_the_journal_and_leaves_one_fresh_snapshot(
    actor_kit: ActorKit,
) -> None:
    path = await _counter_with_events(actor_kit, 25)
    out = _run_cli_with_tests_on_path(
        "rebuild", "actors:Counter", "--data-dir", str(actor_kit.data_dir)
    )
    assert out.returncode == 0, out.stderr
    assert "rebuilt counter: replayed 25 events" in out.stdout
    assert "replaying" in out.stderr  # the progress bar
    code, listed, _ = _cli("snapshots", "list", str(path))
    assert code == 0
    assert [line.split()[0] for line in listed.splitlines()[1:]] == ["25"]
    async with actor_kit.start(Counter) as counter:
        assert counter.recovery.snapshot_pos == 25
        assert counter.recovery.replayed == 0
        assert counter.state.totals == (await counter.fold()).totals


async def test_rebuild_is_refused_while_a_worker_holds_the_journal(actor_kit: ActorKit) -> None:
    async with actor_kit.start(Counter) as counter:
        await actor_kit.publish("count.a", Added("a", 1))
        await counter.settled()
        out = _run_cli_with_tests_on_path(
            "rebuild", "actors:Counter", "--data-dir", str(actor_kit.data_dir)
        )
        assert out.returncode == 1
        assert "already open for writing" in out.stderr


async def test_journal_tail_follow_prints_entries_as_they_commit(actor_kit: ActorKit) -> None:
    async with actor_kit.start(Counter) as counter:
        await actor_kit.publish("count.a", Added("a", 1))
        await counter.settled()
        follower = subprocess.Popen(
            [
                *(sys.executable, "-m", "actorsource", "journal", "tail"),
                "-f",
                "-n",
                "1",
                str(counter.journal_path),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert follower.stdout is not None
            assert json.loads(follower.stdout.readline())["pos"] == 1
            await actor_kit.publish("count.a", Added("a", 2))
            await counter.settled()
            assert json.loads(follower.stdout.readline())["pos"] == 2
        finally:
            follower.terminate()
            follower.communicate(timeout=10)  # also closes the pipe


def _good_lines(n: int) -> list[str]:
    from actorsource._journal.offline import entry_as_dict
    from actorsource.journal import JournalEntry

    return [
        json.dumps(
            entry_as_dict(
                JournalEntry(
                    pos=i, subject=f"count.k{i}", type="Added",
                    payload=json.dumps({"key": f"k{i}", "n": i}).encode(), received_at=1.0,
                    stream="COUNT", stream_seq=i, msg_id=f"m-{i}",
                )
            )
        )
        for i in range(1, n + 1)
    ]  # fmt: skip


@pytest.mark.parametrize("good_before", [0, 3], ids=["first line", "after three good ones"])
def test_a_failed_import_leaves_nothing_behind_and_the_retry_with_a_fixed_file_succeeds(
    tmp_path: Path, good_before: int
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    new = store / "counter.journal.sqlite"
    dump = tmp_path / "dump.jsonl"
    good = _good_lines(good_before + 1)
    dump.write_text("\n".join([*good[:good_before], "{not json", good[-1]]) + "\n")
    code, _, err = _cli("journal", "import", str(new), "--actor", "counter", "--input", str(dump))
    assert code == 1
    assert f"line {good_before + 1} of the input is not an entry" in err
    assert list(store.iterdir()) == []  # no journal, no -wal/-shm, no .lock
    dump.write_text("\n".join(good) + "\n")
    code, out, err = _cli("journal", "import", str(new), "--actor", "counter", "--input", str(dump))
    assert code == 0, err
    assert f"imported {len(good)} event{'s' if len(good) > 1 else ''} into" in out


def test_import_with_an_invalid_actor_name_is_a_usage_error_and_creates_nothing(
    tmp_path: Path,
) -> None:
    dump = tmp_path / "dump.jsonl"
    dump.write_text("\n".join(_good_lines(1)) + "\n")
    new = tmp_path / "new.sqlite"
    code, _, err = _cli("journal", "import", str(new), "--actor", "no good", "--input", str(dump))
    assert code == 2
    assert "invalid actor name" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dump.jsonl"]


def test_dlq_list_says_so_when_there_are_no_dead_letters(tmp_path: Path) -> None:
    import asyncio

    from actorsource.journal import SQLiteJournal, journal_path

    async def make() -> None:
        async with SQLiteJournal(journal_path(tmp_path, "counter"), actor="counter"):
            pass

    asyncio.run(make())
    code, out, err = _cli("dlq", "list", "counter", "--data-dir", str(tmp_path))
    assert code == 0
    assert out == ""  # stdout stays JSON lines, for scripts
    assert err.strip() == "counter has no dead letters"

"""`actorsource rebuild --from-stream`: a lost journal rebuilt from the actor's stream."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
from actors import Added, Boom, Counter, assert_exactly_once, expected_totals
from click.testing import CliRunner

from actorsource import MSG_ID_HEADER
from actorsource._model.actor import definition_of
from actorsource._runtime.stream_rebuild import rebuild_from_stream
from actorsource.cli import main
from actorsource.journal import (
    SQLiteJournal,
    fold,
    read_dead_letters,
    read_entries,
    restore_state,
    summarize,
)
from actorsource.testing import ActorKit

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


async def _rebuild_cli(kit: ActorKit, *extra: str) -> subprocess.CompletedProcess[bytes]:
    """The real entry point, in a subprocess (it runs its own event loop)."""
    assert kit.server is not None
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)])}
    return await anyio.run_process(
        [
            *(sys.executable, "-m", "actorsource", "rebuild", "actors:Counter", "--from-stream"),
            *("--nats", kit.server.url, "--data-dir", str(kit.data_dir), *extra),
        ],
        check=False,
        env=env,
        cwd=TESTS,
    )


def _delete_journal(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


async def _publish(kit: ActorKit, events: list[Added], first: int = 1) -> None:
    # Every other event without a message id: only stream positions can tell those apart.
    for n, e in enumerate(events, first):
        await kit.publish(f"count.{e.key}", e, msg_id=f"m-{n}" if n % 2 else None)


async def test_a_lost_journal_rebuilt_from_the_stream_folds_to_the_same_state_and_continues(
    actor_kit: ActorKit,
) -> None:
    events = [Added(f"k{i % 4}", i) for i in range(1, 41)]
    async with actor_kit.start(Counter) as counter:
        await _publish(actor_kit, events)
        await actor_kit.publish_raw("count.bad", b"{not json", headers={"Event-Type": "Added"})
        await counter.settled()
        original = await counter.entries()
        original_totals = counter.state.totals
        path = counter.journal_path
    _delete_journal(path)

    out = await _rebuild_cli(actor_kit)

    assert out.returncode == 0, out.stderr.decode()
    stdout = out.stdout.decode()
    assert "rebuilt the journal of counter from stream COUNTER: 40 events, 1 dead letter," in stdout
    assert "up to stream sequence 41" in stdout
    assert "snapshot written at position 40" in stdout
    assert "moved aside" not in stdout  # there was nothing to move
    assert "reading the stream" in out.stderr.decode()  # the progress bar
    rebuilt = list(read_entries(path))
    assert [(e.pos, e.stream_seq, e.msg_id, e.payload) for e in rebuilt] == [
        (e.pos, e.stream_seq, e.msg_id, e.payload) for e in original
    ]
    assert (await fold(Counter, rebuilt)).totals == original_totals
    assert [dl.reason for _, dl in read_dead_letters(path)] == ["undecodable"]
    assert summarize(path).streams == {"COUNTER": 41}

    more = [Added("k9", i) for i in range(100, 110)]
    async with actor_kit.start(Counter) as counter:
        assert counter.recovery.snapshot_pos == 40
        assert counter.recovery.replayed == 0
        await _publish(actor_kit, more, first=41)
        await counter.settled()
        await assert_exactly_once(counter, events + more)


async def test_rebuild_from_the_stream_is_refused_while_a_worker_holds_the_journal(
    actor_kit: ActorKit,
) -> None:
    async with actor_kit.start(Counter) as counter:
        await _publish(actor_kit, [Added("a", 1)])
        await counter.settled()
        out = await _rebuild_cli(actor_kit)
        assert out.returncode == 1
        [line] = out.stderr.decode().strip().splitlines()[-1:]
        assert line.startswith("actorsource: journal ")
        assert "already open for writing" in line
        assert len(await counter.entries()) == 1
        assert not list(actor_kit.data_dir.glob("*.bak-*"))


async def test_rebuild_from_the_stream_moves_an_existing_journal_aside(
    actor_kit: ActorKit,
) -> None:
    async with actor_kit.start(Counter) as counter:
        await _publish(actor_kit, [Added("a", n) for n in range(1, 6)])
        await counter.settled()
        path = counter.journal_path

    out = await _rebuild_cli(actor_kit)

    assert out.returncode == 0, out.stderr.decode()
    [backup] = actor_kit.data_dir.glob("counter.journal.sqlite.bak-*[0-9Z]")
    assert f"the previous journal was moved aside to {backup}" in out.stdout.decode()
    assert summarize(backup).events == 5  # kept as it was
    assert summarize(path).events == 5


async def test_rebuild_refuses_a_stream_that_lost_its_first_events_unless_forced(
    actor_kit: ActorKit,
) -> None:
    await actor_kit.prepare(Counter)
    await _publish(actor_kit, [Added("a", n) for n in range(1, 11)])
    await actor_kit.js.purge_stream("COUNTER", seq=4)  # sequences 1..3 are gone

    refused = await _rebuild_cli(actor_kit)
    assert refused.returncode == 1
    assert "no longer holds sequences 1..3" in refused.stderr.decode()
    assert not (actor_kit.data_dir / "counter.journal.sqlite").exists()

    forced = await _rebuild_cli(actor_kit, "--force")
    assert forced.returncode == 0, forced.stderr.decode()
    assert "7 events" in forced.stdout.decode()


async def test_a_handler_that_fails_during_the_rebuild_is_dead_lettered_and_leaves_no_trace(
    actor_kit: ActorKit,
) -> None:
    await actor_kit.prepare(Counter)
    await actor_kit.publish("count.a", Added("a", 1))
    await actor_kit.publish("count.a", Boom("a"))  # adds 1,000,000, then raises
    await actor_kit.publish("count.a", Added("a", 2))
    path = actor_kit.data_dir / "counter.journal.sqlite"

    report = await rebuild_from_stream(definition_of(Counter), actor_kit.nc, path)

    assert (report.events, report.dead_letters, report.last_seq) == (2, 1, 3)
    [(_, letter)] = read_dead_letters(path)
    assert (letter.reason, letter.stream_seq) == ("handler-failed", 2)
    async with SQLiteJournal(path, actor="counter") as journal:
        state, recovery = await restore_state(Counter, journal)
    assert recovery.snapshot_pos == 2
    assert state.totals == {"a": 3}


async def test_a_message_id_the_stream_holds_twice_is_journaled_once(
    actor_kit: ActorKit,
) -> None:
    # A stream whose deduplication window is short, so that it stores both copies.
    await actor_kit.js.add_stream(name="COUNTER", subjects=["count.>"], duplicate_window=0.1)
    await actor_kit.publish("count.a", Added("a", 5), msg_id="once")
    filler = [Added("b", 1)] * 300  # more than a fetch: the copy comes in a later batch
    for e in filler:
        await actor_kit.publish("count.b", e)
    with anyio.fail_after(10):
        while True:  # until JetStream takes the same id again
            await anyio.sleep(0.05)
            ack = await actor_kit.js.publish(
                "count.a", b'{"key": "a", "amount": 5}',
                headers={"Event-Type": "Added", MSG_ID_HEADER: "once"},
            )  # fmt: skip
            if not ack.duplicate:
                break
    path = actor_kit.data_dir / "counter.journal.sqlite"

    report = await rebuild_from_stream(definition_of(Counter), actor_kit.nc, path)

    assert (report.events, report.duplicates) == (301, 1)
    entries = list(read_entries(path))
    assert [e.msg_id for e in entries if e.msg_id] == ["once"]
    assert (await fold(Counter, entries)).totals == expected_totals([Added("a", 5), *filler])


async def test_a_rebuild_from_the_stream_names_a_lower_case_event_type_header(
    actor_kit: ActorKit,
) -> None:
    await actor_kit.prepare(Counter)
    await actor_kit.publish_raw(
        "count.a", b'{"key": "a", "amount": 1}', headers={"event-type": "Added"}
    )
    await actor_kit.publish("count.a", Added("a", 2))
    path = actor_kit.data_dir / "counter.journal.sqlite"

    report = await rebuild_from_stream(definition_of(Counter), actor_kit.nc, path)

    assert (report.events, report.dead_letters) == (1, 1)
    [(_, dead)] = read_dead_letters(path)
    assert "found 'event-type': header names are case-sensitive" in (dead.error or "")


def test_rebuild_from_the_stream_without_a_server_says_so_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["rebuild", "actors:Counter", "--from-stream", "--nats", "nats://127.0.0.1:1",
         "--data-dir", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 1
    [line] = [x for x in result.stderr.splitlines() if x.startswith("actorsource:")]
    assert "cannot connect to NATS at nats://127.0.0.1:1" in line
    assert not list(tmp_path.glob("counter.journal.sqlite*[!k]"))  # nothing but the lock


def test_nats_and_force_without_from_stream_are_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["rebuild", "actors:Counter", "--force", "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "--from-stream" in result.stderr


def test_connection_options_without_from_stream_are_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["rebuild", "actors:Counter", "--token", "t", "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "--token goes with --from-stream" in result.stderr


def test_a_journal_rebuild_is_not_refused_for_connection_settings_in_the_environment(
    tmp_path: Path,
) -> None:
    result = CliRunner().invoke(
        main,
        ["rebuild", "actors:Counter", "--data-dir", str(tmp_path)],
        env={"NATS_URL": "nats://127.0.0.1:1", "NATS_TOKEN": "t"},
    )
    assert result.exit_code == 1  # it went for the journal: there is none
    assert result.stderr.startswith("actorsource: no journal at ")

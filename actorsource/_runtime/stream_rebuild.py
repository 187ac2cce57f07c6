"""Rebuilding an actor's journal from its JetStream stream, for a journal that was lost.

The stream is read from its first message with an **ephemeral** pull consumer (acknowledging
nothing, gone after use); the actor's durable consumer is never touched: the next worker
start re-creates it at the rebuilt journal's position. Every message goes through the same
triage as in the runtime (:func:`~actorsource._runtime.triage.triage`):

- a ``Nats-Msg-Id`` already journaled is a duplicate (skipped);
- a payload too large, without or with an unknown ``Event-Type``, or undecodable with the
  actor's codec is a dead letter (or skipped, with ``on_unknown="ignore"``);
- everything else is journaled in stream order and applied to a fresh state through the
  handlers as when it was first received (``ctx.replaying`` is false), so that the events
  a handler records (``ctx.record``) are made again and journaled after their cause: they
  are not in the stream. What handlers publish is *not* sent again, and dead letters are
  recorded in the journal but not published again: all of that went out when the events
  were first handled. (An actor started on an empty journal instead re-sends what it
  publishes, with the same message ids, which receivers deduplicate.);
- a handler that raises is dead-lettered at once (replay is deterministic: retrying cannot
  help) and the state is rebuilt from the journal written so far.

The stream's identity (creation time) and the last sequence read are recorded with the
events, batch by batch, so the next ``actorsource run`` continues right after it, applying
nothing twice. A fresh snapshot is written at the end.

Nothing is destroyed: the rebuild holds the journal's writer lock throughout (refused while
a worker holds it), writes ``<journal>.rebuilding``, and only once that is complete moves an
existing journal file aside to ``<journal>.bak-<UTC time>`` (with its ``-wal``/``-shm``)
and puts the new one in its place. A stream that no longer starts at sequence 1 has dropped
events the journal once held: the rebuild refuses it unless ``force``.
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from .._errors import MailboxError, SnapshotError
from .._journal.journal import DeadLetter, JournalBatch, SQLiteJournal
from .._journal.lock import take_lock
from .._journal.recovery import restore_state
from .._log import get_logger
from .._mailbox.mailbox import Delivery
from .._mailbox.streams import filter_on, streams_storing
from .._model.actor import ActorDefinition
from .._model.dispatch import LiveState
from .._model.events import MSG_ID_HEADER
from .._model.snapshots import CODEC_NAME
from .deadletters import dead_letter
from .triage import triage

__all__ = ["StreamRebuildReport", "rebuild_from_stream"]

_SIDECARS = ("", "-wal", "-shm")


@dataclass
class StreamRebuildReport:
    """What a rebuild from the stream read and wrote."""

    stream: str
    events: int = 0
    dead_letters: int = 0
    duplicates: int = 0
    ignored: int = 0
    last_seq: int = 0
    snapshot_pos: int | None = None
    snapshot_error: str | None = None
    moved_aside: Path | None = None
    seconds: float = 0.0


async def rebuild_from_stream(
    definition: ActorDefinition,
    nc: NATS,
    path: Path,
    *,
    force: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
    log: structlog.stdlib.BoundLogger | None = None,
    fetch_timeout: float = 2.0,
) -> StreamRebuildReport:
    """Rebuild the journal at ``path`` from the actor's stream (see the module docstring).

    ``on_progress(read, total)`` is called after every batch (``total`` grows if events keep
    arriving). Raises :class:`JournalLockedError` while a worker holds the journal and
    :class:`MailboxError` when the stream cannot be found or read.
    """
    log = log or get_logger(actor=definition.name, component="rebuild")
    started = time.monotonic()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock = take_lock(path)
    work = path.with_name(path.name + ".rebuilding")
    try:
        js = nc.jetstream()
        stream, info = await _find_stream(js, definition)
        first = int(info.state.first_seq or 0)
        if first > 1 and not force:
            raise MailboxError(
                f"stream {stream!r} no longer holds sequences 1..{first - 1}: a journal rebuilt "
                "from it would miss whatever events of the actor they held; pass --force "
                "(force=True) to rebuild from what it still holds",
                actor=definition.name,
            )
        _remove(work)  # what an interrupted rebuild left: the lock says nobody else owns it
        report = StreamRebuildReport(stream=stream)
        async with SQLiteJournal(
            work, actor=definition.name, entities=definition.entity is not None
        ) as journal:
            # The same identity the runtime records (see _binding.bind_mailbox).
            await journal.bind_stream(stream, info.created.isoformat() if info.created else "")
            state = await _read_stream(
                definition, nc, journal, stream, report, on_progress, log, fetch_timeout
            )
            try:
                encoded = definition.state_codec.encode(state)
            except SnapshotError as exc:
                report.snapshot_error = str(exc)  # a snapshot is a cache: the journal stands
            else:
                await journal.save_snapshot(
                    pos=journal.last_pos,
                    model_version=definition.version,
                    codec=CODEC_NAME,
                    state=encoded,
                    keep=definition.snapshots.keep,
                )
                report.snapshot_pos = journal.last_pos
        report.moved_aside = _swap_into_place(work, path)
    finally:
        os.close(lock)
        _remove(work)
        work.with_name(work.name + ".lock").unlink(missing_ok=True)
    report.seconds = time.monotonic() - started
    log.info(
        "journal rebuilt from the stream",
        stream=report.stream,
        events=report.events,
        dead_letters=report.dead_letters,
        last_seq=report.last_seq,
        seconds=round(report.seconds, 3),
    )
    return report


async def _find_stream(js: JetStreamContext, definition: ActorDefinition) -> tuple[str, Any]:
    """The stream holding the actor's subjects, and its info; never creates one."""
    try:
        if definition.stream is not None:
            names = {definition.stream}
        else:
            names, _ = await streams_storing(js, definition.subjects)
        if not names:
            raise MailboxError(
                f"no stream stores the subjects {list(definition.subjects)} of actor "
                f"{definition.name!r}: there is nothing to rebuild from",
                actor=definition.name,
            )
        if len(names) > 1:
            raise MailboxError(
                f"the subjects of {definition.name!r} are stored in several streams "
                f"{sorted(names)}",
                actor=definition.name,
            )
        [name] = names
        try:
            return name, await js.stream_info(name)
        except nats.js.errors.NotFoundError as exc:
            raise MailboxError(
                f"stream {name!r} does not exist: there is nothing to rebuild from",
                actor=definition.name,
            ) from exc
    except (nats.errors.Error, OSError) as exc:
        raise MailboxError(f"cannot reach JetStream: {exc!r}", actor=definition.name) from exc


async def _read_stream(
    definition: ActorDefinition,
    nc: NATS,
    journal: SQLiteJournal,
    stream: str,
    report: StreamRebuildReport,
    on_progress: Callable[[int, int], None] | None,
    log: structlog.stdlib.BoundLogger,
    fetch_timeout: float,
) -> Any:
    """Read every message of the actor's subjects into ``journal``; returns the state."""
    js = nc.jetstream()
    config = ConsumerConfig(
        name=f"rebuild-{definition.name}-{os.getpid()}-{time.monotonic_ns()}",
        description=f"actorsource rebuild of {definition.name}",
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.NONE,
        inactive_threshold=60.0,  # the server drops it if this process dies mid-way
        mem_storage=True,
    )
    filter_on(config, definition.subjects)
    try:
        consumer = await js.add_consumer(stream, config=config)
        sub = await js.pull_subscribe_bind(consumer=consumer.name, stream=stream)
    except (nats.errors.Error, OSError) as exc:
        raise MailboxError(
            f"cannot read stream {stream!r}: {exc!r}", actor=definition.name
        ) from exc
    folder = LiveState(definition, log, max_payload=nc.max_payload)
    pending = int(consumer.num_pending or 0)
    read = 0
    misses = 0
    try:
        while pending > 0:
            try:
                msgs = await sub.fetch(definition.max_batch, timeout=fetch_timeout)
            except nats.errors.TimeoutError as exc:
                misses += 1
                if misses == 3:
                    raise MailboxError(
                        f"stream {stream!r} stopped delivering with {pending} messages to go",
                        actor=definition.name,
                    ) from exc
                continue
            misses = 0
            deliveries = [_delivery(m) for m in msgs]
            pending = int(msgs[-1].metadata.num_pending)
            await _journal_batch(definition, journal, deliveries, report, folder)
            read += len(deliveries)
            if on_progress is not None:
                on_progress(read, read + pending)
    except (nats.errors.Error, OSError) as exc:
        raise MailboxError(
            f"cannot read stream {stream!r}: {exc!r}", actor=definition.name
        ) from exc
    finally:
        try:
            await sub.unsubscribe()
            await js.delete_consumer(stream, consumer.name)
        except (nats.errors.Error, OSError):
            pass  # inactive_threshold removes it anyway
    return folder.state


async def _journal_batch(
    definition: ActorDefinition,
    journal: SQLiteJournal,
    deliveries: list[Delivery],
    report: StreamRebuildReport,
    folder: LiveState,
) -> None:
    """Triage, apply and commit one fetched batch."""
    stream = deliveries[0].stream
    ids = [mid for d in deliveries if d.headers and (mid := d.headers.get(MSG_ID_HEADER))]
    _, known_ids = await journal.known(stream, [], ids) if ids else (set(), set())
    start = 0
    now = time.time()
    while start < len(deliveries):
        high = report.last_seq
        t = await triage(
            deliveries,
            start,
            high=high,
            pos=journal.last_pos,
            known_seqs=set(),
            known_ids=known_ids,
            policy=definition.errors,
            codec=definition.codec,
            apply=folder.apply_live,
            plain=folder.dispatch.plain,
        )
        dead: list[DeadLetter] = [dl for _, dl in t.dead]
        top, start = t.top, len(deliveries)
        if t.failure is not None:
            failed = t.failure
            reason = "handler-failed"
            letter = dead_letter(failed.delivery, failed.entry.type, reason, failed.error, now)
            dead.append(letter)
            top, start = max(top, failed.delivery.stream_seq), failed.index + 1
        stamps = {d.stream_seq: d.timestamp_ns / 1e9 for d in deliveries}
        for entry in t.entries:
            # When the broker stored it: the closest thing to when it was first received.
            entry.received_at = stamps.get(entry.stream_seq or 0, entry.received_at)
        await journal.append(
            JournalBatch(
                entries=t.entries,
                positions={stream: top} if top > high else {},
                dead_letters=dead,
            )
        )
        report.events += len(t.entries)
        report.dead_letters += len(dead)
        report.duplicates += t.duplicates
        report.ignored += t.ignored
        report.last_seq = max(report.last_seq, top)
        if t.failure is not None:
            # A failed handler may have changed the state half-way: fold the journal again.
            state, _ = await restore_state(definition, journal, use_snapshots=False)
            folder.replace(state)


def _delivery(msg: Msg) -> Delivery:
    md = msg.metadata
    return Delivery(
        subject=msg.subject,
        data=msg.data,
        headers=msg.headers,
        reply=msg.reply,
        stream=md.stream,
        stream_seq=int(md.sequence.stream),
        delivered=int(md.num_delivered),
        timestamp_ns=int(md.timestamp.timestamp() * 1e9),
    )


def _remove(path: Path) -> None:
    for suffix in _SIDECARS:
        path.with_name(path.name + suffix).unlink(missing_ok=True)


def _swap_into_place(work: Path, path: Path) -> Path | None:
    """Move an existing journal at ``path`` aside (returned), then ``work`` to ``path``."""
    moved: Path | None = None
    if any(path.with_name(path.name + s).exists() for s in _SIDECARS):
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        moved = path.with_name(f"{path.name}.bak-{stamp}")
        n = 1
        while moved.exists():
            n += 1
            moved = path.with_name(f"{path.name}.bak-{stamp}-{n}")
        for suffix in _SIDECARS:
            old = path.with_name(path.name + suffix)
            if old.exists():
                old.rename(moved.with_name(moved.name + suffix))
    for suffix in _SIDECARS:
        new = work.with_name(work.name + suffix)
        if new.exists():
            new.rename(path.with_name(path.name + suffix))
    return moved

"""Recovery: rebuild an actor's state from its journal (newest usable snapshot + later entries).

Used by the runner at every start and after a failed handler, and offline by tools that
check or rebuild a journal. A snapshot is used only if its model version matches, its codec
is known, its position is within the journal, all its parts are there (a large one is stored
in parts), its checksum verifies and its bytes decode;
every other one is skipped with the reason, and older ones are tried. With no usable
snapshot the whole journal is replayed. Replay streams the journal in chunks (constant
memory) through the same handlers as live processing, with ``ctx.replaying`` set.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel
import structlog

from .._errors import SnapshotError
from .._log import get_logger
from .._model.actor import ActorDefinition
from .._model.dispatch import Dispatch
from .._model.snapshots import CODEC_NAME
from .journal import SQLiteJournal

__all__ = ["RecoveryReport", "restore_state"]


@dataclass
class RecoveryReport:
    """What recovery did: which snapshot it used, what it skipped, what it replayed."""

    snapshot_pos: int | None = None
    skipped: list[tuple[int, str]] = field(default_factory=list)
    replayed: int = 0
    journal_pos: int = 0
    seconds: float = 0.0


async def restore_state(
    definition: ActorDefinition,
    journal: SQLiteJournal,
    *,
    use_snapshots: bool = True,
    log: structlog.stdlib.BoundLogger | None = None,
    progress_every: float = 2.0,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[Any, RecoveryReport]:
    """Return ``(state, report)``: the fold of ``journal``, from its newest usable snapshot.

    ``on_progress(done, total)`` is called after every chunk (for progress bars); a log
    line with position, rate and ETA is written every ``progress_every`` seconds.
    Raises :class:`ActorCrashed` naming the journal position if an entry cannot be decoded
    or its handler raises during replay (the journal is left untouched).
    """
    log = log or get_logger(actor=definition.name)
    started = time.monotonic()
    report = RecoveryReport()
    state = definition.new_state()
    after = 0
    for info in await journal.snapshots() if use_snapshots else []:
        why = ""
        if info.model_version != definition.version:
            why = f"model version {info.model_version}, actor is at {definition.version}"
        elif info.codec != CODEC_NAME:
            why = f"unknown codec {info.codec!r}"
        elif info.pos > journal.last_pos:
            why = f"position {info.pos} is past the journal's end {journal.last_pos}"
        else:
            snapshot = await journal.read_snapshot(info.id)
            if snapshot is None:
                continue
            if snapshot.parts_missing:
                why = f"{snapshot.parts_missing} of its parts missing"
            elif not snapshot.verifies():
                why = "checksum mismatch"
            else:
                try:
                    definition.state_codec.restore(state, snapshot.state)
                except SnapshotError as exc:
                    why = f"cannot decode: {exc}"
                    state = definition.new_state()
        if why:
            report.skipped.append((info.pos, why))
            log.warning("snapshot skipped", snapshot_pos=info.pos, reason=why)
            continue
        after = info.pos
        report.snapshot_pos = info.pos
        break
    report.journal_pos = after
    total = journal.last_pos - after
    last_log = time.monotonic()
    dispatch = Dispatch(definition, state, log)
    with journal._reader() as reader:
        for chunk in reader.replay_chunks(after, dispatch.replay_kinds()):
            # A handler that reads its Context's ``entry`` gets it whole, with the rest of
            # this chunk's entries, on that first use.
            await dispatch.replay(chunk)
            report.replayed += len(chunk.rows)
            report.journal_pos = chunk.last
            if on_progress is not None:
                on_progress(report.replayed, total)
            now = time.monotonic()
            if now - last_log >= progress_every:
                last_log = now
                rate = report.replayed / max(now - started, 1e-9)
                log.info(
                    "replaying",
                    pos=report.journal_pos,
                    done=report.replayed,
                    total=total,
                    rate=round(rate),
                    eta_s=round((total - report.replayed) / max(rate, 1e-9), 1),
                )
            await anyio.lowlevel.checkpoint()  # the loop's turn between chunks
    report.seconds = time.monotonic() - started
    return state, report

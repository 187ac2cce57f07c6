"""Loading one entity: its newest usable snapshot, then its later journal rows.

The rule is an actor's recovery rule, per entity: a snapshot is used only if its model
version matches, its codec is known, its position is within what is committed, its
checksum verifies and its bytes decode; every other one is skipped with the reason and an
older one tried; with none, all the entity's rows are replayed (a model version bump
rebuilds each entity lazily, when it is next loaded, through the upcasters). Rows are
found by walking the entity's chain down from its head (:mod:`.entity_reader`), so the
cost is the entity's, not the journal's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from .._errors import SnapshotError
from .._model.actor import ActorDefinition
from .._model.dispatch import Dispatch
from .._model.entity_dispatch import EntityDispatch
from .._model.snapshots import CODEC_NAME
from .entity_reader import EntityReader
from .entity_store import EntitySnapshot, NewEntitySnapshot
from .journal import SQLiteJournal
from .schema import JournalBatch

__all__ = ["EntitiesRebuilt", "EntityLoad", "load_entity", "rebuild_entities"]


@dataclass
class EntityLoad:
    """What loading one entity did."""

    snapshot_pos: int | None = None
    skipped: list[tuple[int, str]] = field(default_factory=list)
    replayed: int = 0
    #: The highest journal position applied to the entity (0: it has no events yet).
    applied: int = 0


async def load_entity(
    definition: ActorDefinition,
    reader: EntityReader,
    key: str,
    *,
    committed: int,
    log: structlog.stdlib.BoundLogger,
    use_snapshots: bool = True,
    replayer: EntityDispatch | None = None,
) -> tuple[Any, EntityLoad]:
    """Return ``(state, report)``: the fold of entity ``key``'s committed rows (up to
    ``committed``), from its newest usable snapshot, through ``replayer`` (the actor's
    entity dispatch) if given. Raises :class:`ActorCrashed` naming the position if one of
    its rows cannot be decoded or applied."""
    report = EntityLoad()
    kinds = replayer.replay_kinds if replayer is not None else Dispatch.replay_kinds_of(definition)
    state = definition.new_state()
    if use_snapshots:
        # Most loads: the newest snapshot (if any) and the rows after it, in one query.
        newest, rows = reader.newest(key, committed, kinds)
        restored = None
        if newest is not None:
            restored = _restore(definition, newest, committed, key, report, log)
            if restored is not None:
                state = restored
        if newest is not None and restored is None:
            # The long way: the newest usable of the older snapshots, and the rows after it.
            after = 0
            for snap in reader.snapshots(key):
                if snap.pos >= newest.pos:
                    continue  # the newest, skipped already
                restored = _restore(definition, snap, committed, key, report, log)
                if restored is not None:
                    state, after = restored, snap.pos
                    break
            rows = reader.replay_rows(key, after, committed, kinds)
    else:
        rows = reader.replay_rows(key, 0, committed, kinds)
    if rows.rows:  # (most loads find a snapshot of the entity's last event: no dispatch)
        if replayer is not None:
            await replayer.replay(state, rows, key)
        else:
            await Dispatch(definition, state, log, key=key).replay(rows)
        report.replayed = len(rows.rows)
        report.applied = rows.last
    return state, report


def _restore(
    definition: ActorDefinition,
    snap: EntitySnapshot,
    committed: int,
    key: str,
    report: EntityLoad,
    log: structlog.stdlib.BoundLogger,
) -> Any | None:
    """A new state restored from ``snap`` (recorded in ``report``), or None if the snapshot
    cannot be used (the reason recorded and logged)."""
    why = ""
    state = definition.new_state()
    if snap.version != definition.version:
        why = f"model version {snap.version}, actor is at {definition.version}"
    elif snap.codec != CODEC_NAME:
        why = f"unknown codec {snap.codec!r}"
    elif snap.pos > committed:
        why = f"position {snap.pos} is past the journal's end {committed}"
    elif not snap.verifies():
        why = "checksum mismatch"
    else:
        try:
            definition.state_codec.restore(state, snap.data)
        except SnapshotError as exc:
            why = f"cannot decode: {exc}"
    if why:
        report.skipped.append((snap.pos, why))
        log.warning("entity snapshot skipped", entity=key, snapshot_pos=snap.pos, reason=why)
        return None
    report.snapshot_pos = report.applied = snap.pos
    return state


@dataclass
class EntitiesRebuilt:
    """What :func:`rebuild_entities` did."""

    entities: int = 0
    replayed: int = 0
    seconds: float = 0.0


async def rebuild_entities(
    definition: ActorDefinition,
    journal: SQLiteJournal,
    *,
    log: structlog.stdlib.BoundLogger,
    on_progress: Callable[[int, int], None] | None = None,
) -> EntitiesRebuilt:
    """Drop every entity snapshot, then fold each entity from its rows through the current
    handlers and write one fresh snapshot of it (the eager form of what loading does lazily
    after a model version bump). ``on_progress(done, total)`` counts entities. A handler that
    fails raises :class:`ActorCrashed` naming the position; the journal's events are intact
    and the entities not rebuilt yet load from their rows."""
    started = time.monotonic()
    report = EntitiesRebuilt()
    assert definition.entity is not None
    keep = definition.entity.keep
    await journal.delete_entity_snapshots()
    pending: list[NewEntitySnapshot] = []
    with journal._entity_reader() as reader:
        keys = reader.keys()
        for key in keys:
            state, loaded = await load_entity(
                definition, reader, key, committed=journal.last_pos, log=log, use_snapshots=False
            )
            data = definition.state_codec.encode(state)
            pending.append(
                NewEntitySnapshot(key, loaded.applied, definition.version, CODEC_NAME, data, keep)
            )
            report.entities += 1
            report.replayed += loaded.replayed
            if len(pending) >= 500:
                await _store(journal, pending)
                pending = []
            if on_progress is not None:
                on_progress(report.entities, len(keys))
    await _store(journal, pending)
    report.seconds = time.monotonic() - started
    return report


async def _store(journal: SQLiteJournal, snapshots: list[NewEntitySnapshot]) -> None:
    if snapshots:
        await journal.append(
            JournalBatch(entries=[], positions={}, dead_letters=[], entity_snapshots=snapshots)
        )

"""Loading one entity: its newest usable snapshot, then its later journal rows.

The rule is an actor's recovery rule, per entity: a snapshot is used only if its model
version matches, its codec is known, its position is within what is committed, its
checksum verifies and its bytes decode; every other one is skipped with the reason and an
older one tried; with none, all the entity's rows are replayed (a model version bump
rebuilds each entity lazily, when it is next loaded, through the upcasters). Rows are
read by the partial index on ``(entity, pos)``, so the cost is the entity's, not the
journal's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import structlog

from .._errors import SnapshotError
from .._model.actor import ActorDefinition
from .._model.dispatch import Dispatch
from .._model.events import JournalEntry
from .._model.snapshots import CODEC_NAME
from .entity_reader import EntityReader
from .schema import row_entry

__all__ = ["EntityLoad", "load_entity"]


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
) -> tuple[Any, EntityLoad]:
    """Return ``(state, report)``: the fold of entity ``key``'s committed rows (up to
    ``committed``), from its newest usable snapshot. Raises :class:`ActorCrashed` naming the
    position if one of its rows cannot be decoded or applied."""
    report = EntityLoad()
    state = definition.new_state()
    after = 0
    for snap in reader.snapshots(key) if use_snapshots else ():
        why = ""
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
                state = definition.new_state()
        if why:
            report.skipped.append((snap.pos, why))
            log.warning("entity snapshot skipped", entity=key, snapshot_pos=snap.pos, reason=why)
            continue
        after = report.snapshot_pos = report.applied = snap.pos
        break
    rows = [r for r in reader.rows(key, after) if r[0] <= committed]
    if rows:
        entries: dict[int, JournalEntry] = {}

        def whole(pos: int) -> JournalEntry:
            if not entries:
                for row in reader.entry_rows(key, rows[0][0], rows[-1][0]):
                    entries[row[0]] = row_entry(row)
            return entries[pos]

        await Dispatch(definition, state, log).replay(rows, whole)
        report.replayed = len(rows)
        report.applied = rows[-1][0]
    return state, report

"""An actor's journal from the outside: open it, read it, fold it, check its snapshots.

For tools and operators; an actor itself never needs this module. Each actor's journal is
one SQLite file, found with :func:`journal_path`::

    from actorsource.journal import SQLiteJournal, journal_path, restore_state

    async with SQLiteJournal(journal_path(data_dir, "accounts"), actor="accounts") as journal:
        state, report = await restore_state(Accounts, journal)

:class:`SQLiteJournal` takes the journal's single-writer lock, so it fails
(:class:`~actorsource.JournalLockedError`) while a worker runs the actor;
:func:`read_entries`, :func:`read_dead_letters` and :func:`summarize` open the file
read-only, take no lock, and work while the worker runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import structlog

from ._journal.entity_store import NewEntitySnapshot
from ._journal.journal import SQLiteJournal
from ._journal.offline import JournalSummary, read_dead_letters, read_entries, summarize
from ._journal.recovery import RecoveryReport
from ._journal.recovery import restore_state as _restore_state
from ._journal.schema import DeadLetter, JournalBatch, NewSnapshot
from ._journal.snapshot_parts import PartedSnapshot
from ._journal.storage import journal_path
from ._model.actor import ActorDefinition as _ActorDefinition
from ._model.actor import definition_of as _definition_of
from ._model.dispatch import fold as _fold
from ._model.effects import OutboxMessage
from ._model.events import JournalEntry
from ._model.snapshots import Snapshot, SnapshotInfo
from ._public import publish as _publish

__all__ = [
    "DeadLetter",
    "JournalBatch",
    "JournalEntry",
    "JournalSummary",
    "NewEntitySnapshot",
    "NewSnapshot",
    "OutboxMessage",
    "PartedSnapshot",
    "RecoveryReport",
    "SQLiteJournal",
    "Snapshot",
    "SnapshotInfo",
    "fold",
    "journal_path",
    "read_dead_letters",
    "read_entries",
    "restore_state",
    "summarize",
]

_S = TypeVar("_S")


def _definition(actor: object) -> _ActorDefinition:
    # An ActorDefinition is still taken, as before these functions took the actor class.
    return actor if isinstance(actor, _ActorDefinition) else _definition_of(actor)


async def fold(actor: type[_S], entries: Iterable[JournalEntry]) -> _S:
    """A fresh state of the actor class ``actor`` folded over ``entries`` in the given
    order, ignoring every snapshot.

    This is the reference the runtime is held to: after any crash or restart the live state
    equals the fold of the journal.
    """
    state: _S = await _fold(_definition(actor), entries)
    return state


async def restore_state(
    actor: type[_S],
    journal: SQLiteJournal,
    *,
    use_snapshots: bool = True,
    log: structlog.stdlib.BoundLogger | None = None,
    progress_every: float = 2.0,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[_S, RecoveryReport]:
    """Return ``(state, report)``: the state of the actor class ``actor`` recovered from
    ``journal`` as the runtime recovers it, from the newest usable snapshot (unless
    ``use_snapshots=False``) and the entries after it.

    ``on_progress(done, total)`` is called after every chunk (for progress bars); a log
    line with position, rate and ETA is written every ``progress_every`` seconds.
    Raises :class:`~actorsource.ActorCrashed` naming the journal position if an entry cannot
    be decoded or its handler raises during replay (the journal is left untouched).
    """
    state: Any
    state, report = await _restore_state(
        _definition(actor),
        journal,
        use_snapshots=use_snapshots,
        log=log,
        progress_every=progress_every,
        on_progress=on_progress,
    )
    return state, report


_publish(__name__, globals(), __all__)

"""The resident entities of an entity actor: loaded on demand, passivated when idle.

:class:`Entities` is what the pipeline applies events to in an entity actor (in place of
the singleton's :class:`~actorsource._model.dispatch.LiveState`). Its residents live in an
``OrderedDict`` ordered by last use (an LRU; a plain ``dict`` keeps the slots of the keys
evicted from its front until it resizes, and finding the least recently used walked over
them: about 15 µs a load with 10,000 residents). A delivery for a key that is not resident loads it
(:func:`~actorsource._journal.entity_recovery.load_entity`: newest usable snapshot plus its
later committed rows), then applies.

**The pin rule.** Each resident remembers the highest journal position applied to it. The
committer commits batch N while batch N+1 is applied, so a resident may hold events that
are not committed yet; reloading it from the journal would lose them. So an entity is
passivated only when that position is at most the journal's committed end, and a key that
is not resident has nothing uncommitted: loading it from committed rows is exact. After a
failed handler or a duplicate message id (the committer drained), the residents above the
committed end are forgotten instead (:meth:`Entities.forget_uncommitted`): only the
entities whose events were not stored reload, not all of them.

**Snapshots** are per entity: one whose own events reach ``snapshot_every`` since its last
snapshot is snapshotted in the transaction of the batch that got it there; one passivated
for being idle with unsaved events is snapshotted in the next transaction, and so is one
evicted over ``max_resident`` if the spec says ``snapshot_on_evict`` (else its next load
replays its rows after its newest snapshot: fewer than ``snapshot_every``). Both go to the committer with
a batch (:meth:`collect`). Residents held over ``max_resident`` by the pin rule are let go
once their batch is committed (:meth:`trim`).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import anyio
import structlog

from .._errors import SnapshotError
from .._journal.entity_recovery import load_entity
from .._journal.entity_store import NewEntitySnapshot
from .._journal.journal import SQLiteJournal
from .._model.actor import ActorDefinition
from .._model.effects import Effects
from .._model.entity_dispatch import EntityDispatch
from .._model.events import JournalEntry
from .._model.keys import EntitySpec, key_function
from .._model.snapshots import CODEC_NAME
from .control import Control, Passivate

__all__ = ["Entities", "PassivationTicks", "Resident"]


@dataclass(slots=True)
class Resident:
    """One entity in memory: its state, the highest position applied to it, how many of
    its events are not in a snapshot, and when it was last used (wall clock)."""

    state: Any
    applied: int
    since: int
    used: float


class Entities:
    """The residency of one entity actor's entities (see the module's docstring)."""

    def __init__(
        self,
        definition: ActorDefinition,
        journal: SQLiteJournal,
        log: structlog.stdlib.BoundLogger,
        *,
        max_payload: int,
    ) -> None:
        assert definition.entity is not None
        self.definition = definition
        self.spec: EntitySpec = definition.entity
        self._journal = journal
        self._log = log
        self._dispatch = EntityDispatch(definition, log, max_payload=max_payload)
        #: The synchronous handlers without a context, unbound, for triage's short way
        #: (:meth:`apply_resident`): (decode, handler, current version) by type name.
        codec = definition.codec
        self.plain = {
            name: (codec.decoder(name), getattr(definition.cls, h.method), codec.version(name))
            for name, h in definition.handlers.items()
            if not h.takes_context and not h.is_async
        }
        #: ``key_of(subject, event)``: the entity key of a received message (for triage).
        self.key_of = key_function(self.spec)
        #: The resident entities by key, least recently used first.
        self.resident: OrderedDict[str, Resident] = OrderedDict()
        self._reader = journal._entity_reader()
        self._touched: set[str] = set()
        self._evicted: list[NewEntitySnapshot] = []
        #: Loads into residency, those that found committed events of their entity (the
        #: others made a new one), and entities passivated, since start (counters).
        self.loads = 0
        self.loads_found = 0
        self.passivated = 0

    def close(self) -> None:
        """Close the reader (idempotent)."""
        self._reader.close()

    # -- the data path -----------------------------------------------------------------------

    async def apply_live(self, event: object, entry: JournalEntry) -> Effects | None:
        """Apply a received event to its entity (loaded first if not resident), then the
        events its handlers recorded. The entity's applied position moves before the handler
        runs, so a handler that raises leaves it above the journal's end (forgotten then)."""
        key = entry.entity
        assert key is not None
        resident = self.resident.get(key)
        if resident is None:
            resident = self.resident[key] = await self._load(key)
        else:
            self.resident.move_to_end(key)
        self._use(key, resident, entry)

        def recorded(e: JournalEntry) -> None:
            resident.applied = e.pos
            resident.since += 1

        return await self._dispatch.apply(resident.state, event, entry, recorded)

    def apply_resident(self, entry: JournalEntry, handler: Any, event: object) -> bool:
        """:meth:`apply_live` for a synchronous handler without a context (``plain``), done
        here if the entity is resident; False if it is not (apply_live loads it)."""
        key = entry.entity
        assert key is not None
        resident = self.resident.get(key)
        if resident is None:
            return False
        self.resident.move_to_end(key)
        self._use(key, resident, entry)
        handler(resident.state, event)
        return True

    def _use(self, key: str, resident: Resident, entry: JournalEntry) -> None:
        """Mark ``resident`` (made the most recently used) as holding ``entry`` (before its
        handler runs: one that raises leaves it above the journal's end, forgotten then)."""
        resident.used = entry.received_at
        resident.applied = entry.pos
        resident.since += 1
        self._touched.add(key)

    async def _load(self, key: str) -> Resident:
        committed = self._journal.last_pos
        if len(self.resident) >= self.spec.max_resident:
            self._evict(
                self._lru_evictable(len(self.resident) - self.spec.max_resident + 1),
                snapshot=self.spec.snapshot_on_evict,
            )
        state, report = await load_entity(
            self.definition,
            self._reader,
            key,
            committed=committed,
            log=self._log,
            replayer=self._dispatch,
        )
        self.loads += 1
        self.loads_found += report.applied > 0
        return Resident(state, report.applied, report.replayed, time.time())

    def collect(self, *, failed: bool) -> list[NewEntitySnapshot]:
        """The entity snapshots to commit with the batch just triaged: those of entities
        passivated meanwhile, and (unless a handler ``failed`` in it) those of the entities it
        brought to ``snapshot_every`` of their own events since their last snapshot."""
        out, self._evicted = self._evicted, []
        if not failed:
            every = self.spec.snapshot_every
            for key in self._touched:
                resident = self.resident.get(key)
                if resident is not None and resident.since >= every:
                    snapshot = self._snapshot(key, resident)
                    if snapshot is not None:
                        out.append(snapshot)
        self._touched.clear()
        return out

    def forget_uncommitted(self) -> int:
        """Drop the residents holding events the journal does not (after the committer
        drained: a failed handler, a batch set aside); how many. They reload on next use."""
        committed = self._journal.last_pos
        stale = [k for k, r in self.resident.items() if r.applied > committed]
        for key in stale:
            del self.resident[key]
        self._touched.clear()
        if stale:
            self._log.info("entities forgotten, to reload from the journal", count=len(stale))
        return len(stale)

    # -- passivation -------------------------------------------------------------------------

    def passivate(self, now: float | None = None) -> list[NewEntitySnapshot]:
        """Passivate the entities idle for ``passivate_after`` seconds at ``now`` (default:
        the clock), and the least recently used beyond ``max_resident``, except those the pin
        rule holds; returns the snapshots of those with unsaved events (and any pending)."""
        now = time.time() if now is None else now
        committed = self._journal.last_pos
        idle = self.spec.passivate_after
        self._evict(
            [k for k, r in self.resident.items() if now - r.used > idle and r.applied <= committed],
            snapshot=True,
        )
        excess = len(self.resident) - self.spec.max_resident
        if excess > 0:
            self._evict(self._lru_evictable(excess), snapshot=self.spec.snapshot_on_evict)
        out, self._evicted = self._evicted, []
        return out

    def trim(self) -> None:
        """After a commit released pins: passivate the least recently used beyond
        ``max_resident`` (their snapshots go with the next transaction)."""
        excess = len(self.resident) - self.spec.max_resident
        if excess > 0:
            self._evict(self._lru_evictable(excess), snapshot=self.spec.snapshot_on_evict)

    def unsaved(self) -> list[NewEntitySnapshot]:
        """Snapshots of every resident with unsaved committed events (for a stop, or when
        asked); residents stay."""
        committed = self._journal.last_pos
        out = []
        for key, resident in self.resident.items():
            if resident.since and resident.applied <= committed:
                snapshot = self._snapshot(key, resident)
                if snapshot is not None:
                    out.append(snapshot)
        out.extend(self._evicted)
        self._evicted = []
        return out

    def _lru_evictable(self, count: int) -> list[str]:
        """Up to ``count`` keys, least recently used first, that the pin rule lets go."""
        committed = self._journal.last_pos
        out: list[str] = []
        for key, resident in self.resident.items():
            if len(out) >= count:
                break
            if resident.applied <= committed:
                out.append(key)
        return out

    def _evict(self, keys: list[str], *, snapshot: bool) -> None:
        """Let ``keys`` go; with ``snapshot``, those with unsaved events are snapshotted in
        the next transaction (without, their next load replays those events' rows)."""
        for key in keys:
            resident = self.resident.pop(key)
            if snapshot and resident.since:
                taken = self._snapshot(key, resident)
                if taken is not None:
                    self._evicted.append(taken)
        self.passivated += len(keys)

    def _snapshot(self, key: str, resident: Resident) -> NewEntitySnapshot | None:
        if not resident.applied:
            return None
        definition = self.definition
        try:
            data = definition.state_codec.encode(resident.state)
        except SnapshotError as exc:
            # A snapshot is only a cache: keep going, say loudly why there is none.
            self._log.error("entity snapshot failed", entity=key, error=str(exc))
            return None
        resident.since = 0
        return NewEntitySnapshot(
            key, resident.applied, definition.version, CODEC_NAME, data, self.spec.keep
        )

    # -- inspection --------------------------------------------------------------------------

    async def state_of(self, key: str) -> Any:
        """The state of entity ``key``: the resident one, or one loaded from the journal
        (not made resident, not counted as a load)."""
        resident = self.resident.get(key)
        if resident is not None:
            return resident.state
        state, _ = await load_entity(
            self.definition,
            self._reader,
            key,
            committed=self._journal.last_pos,
            log=self._log,
            replayer=self._dispatch,
        )
        return state

    async def existing(self, key: str) -> Any | None:
        """Like :meth:`state_of`, but None for an entity with no committed event (for a
        query: an entity that does not exist is not given a default state)."""
        resident = self.resident.get(key)
        if resident is not None:
            return resident.state
        state, report = await load_entity(
            self.definition,
            self._reader,
            key,
            committed=self._journal.last_pos,
            log=self._log,
            replayer=self._dispatch,
        )
        return state if report.applied else None


class PassivationTicks:
    """Asks the actor's loop to passivate idle entities, a few times per ``passivate_after``."""

    def __init__(self, spec: EntitySpec, control: Control) -> None:
        self._interval = min(max(spec.passivate_after / 4, 0.05), 30.0)
        self._control = control

    async def run(self) -> None:
        """Tick until cancelled (one request in the channel at most)."""
        while True:
            await anyio.sleep(self._interval)
            await self._control.ask(Passivate()).done.wait()

"""Handler dispatch for entities: one table of handlers for every entity of an actor.

:class:`~actorsource._model.dispatch.Dispatch` binds the handlers to one state object, which
suits a singleton. An entity actor holds thousands of states, so :class:`EntityDispatch`
resolves each event type's handler once per actor, unbound, and calls it with the entity's
state: live processing costs no per-entity table, and neither does loading one
(:meth:`EntityDispatch.replay`: the same replay loop as a singleton's, with the handlers
bound to the loaded state for the time of the load; a row that needs the long way, an
older version or an ``async`` handler, goes through a ``Dispatch`` made for it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
import structlog

from .._errors import HandlerTimeout
from .actor import ActorDefinition
from .context import Context, Scope
from .dispatch import Dispatch, ReplayChunk, replay_chunk
from .effects import RECORDED_SUBJECT, Effects
from .events import JournalEntry

__all__ = ["EntityDispatch"]


class EntityDispatch:
    """Applies live events to entity states through the actor's handlers, resolved once."""

    __slots__ = (
        "_codec",
        "_direct",
        "_log",
        "_name",
        "_scope",
        "_steps",
        "_timeout",
        "definition",
        "max_payload",
        "replay_kinds",
    )

    def __init__(
        self,
        definition: ActorDefinition,
        log: structlog.stdlib.BoundLogger,
        *,
        max_payload: int,
    ) -> None:
        self.definition = definition
        self.max_payload = max_payload
        self._name = definition.name
        self._log = log
        self._codec = definition.codec
        self._timeout = definition.errors.handler_timeout
        self._scope = Scope(self._name, log, replaying=False, partition=definition.partition)
        self._steps: dict[str, tuple[Callable[..., Any], bool, bool, str]] = {
            name: (getattr(definition.cls, h.method), h.takes_context, h.is_async, h.method)
            for name, h in definition.handlers.items()
        }
        #: What replay applies directly, by code (as ``Dispatch.replay_kinds``), unbound.
        self.replay_kinds = Dispatch.replay_kinds_of(definition)
        self._direct = [
            (self._codec.decoder(name), self._steps[name][0], self._steps[name][1])
            for name, _ in self.replay_kinds
        ]

    async def replay(self, state: object, rows: ReplayChunk, key: str) -> None:
        """Apply an entity's journal rows (coded by :attr:`replay_kinds`) to ``state``, in
        order, replaying (:func:`~.dispatch.replay_chunk`)."""
        direct = [(decode, handler.__get__(state), ctx) for decode, handler, ctx in self._direct]
        scope = Scope(
            self._name, self._log, replaying=True, key=key, partition=self.definition.partition
        )

        async def slow(pos: int, name: str, payload: bytes, version: int) -> None:
            bound = Dispatch(self.definition, state, self._log, key=key)
            await bound.replay_row(pos, name, payload, version)

        await replay_chunk(rows, direct, scope, slow, self._name)

    async def apply(
        self,
        state: object,
        event: object,
        entry: JournalEntry,
        on_recorded: Callable[[JournalEntry], None],
    ) -> Effects | None:
        """Apply a received event to ``state`` live, then the events its handlers recorded
        (``on_recorded`` is told of each before it is applied). Returns the effects, or None
        when there are none; raises what a handler raises (the state may be half-changed)."""
        handler, takes_context, is_async, method = self._steps[entry.type]
        if not takes_context:
            result = handler(state, event)
            if is_async:
                await self._await(result, method)
            return None
        effects = Effects(self.definition, max_payload=self.max_payload, now=time.time())
        await self._call(state, event, entry, effects)
        pos = entry.pos
        codec = self._codec
        while effects.pending:
            type_name, payload, version = effects.pending.pop(0)
            pos += 1
            recorded = JournalEntry(
                pos, RECORDED_SUBJECT, type_name, payload, effects.now, version=version,
                entity=entry.entity,
            )  # fmt: skip
            effects.entries.append(recorded)
            on_recorded(recorded)
            await self._call(state, codec.decode(type_name, payload, version), recorded, effects)
        return effects if effects.entries or effects.outbox else None

    async def _call(
        self, state: object, event: object, entry: JournalEntry, effects: Effects
    ) -> None:
        handler, takes_context, is_async, method = self._steps[entry.type]
        if takes_context:
            result = handler(state, event, Context(self._scope, entry.pos, entry, effects))
        else:
            result = handler(state, event)
        if is_async:
            await self._await(result, method)

    async def _await(self, result: Any, method: str) -> None:
        if self._timeout is None:
            await result
            return
        # As Dispatch.apply: a TimeoutError the handler raises itself is its own failure.
        with anyio.move_on_after(self._timeout) as deadline:
            await result
        if deadline.cancelled_caught:
            raise HandlerTimeout(f"handler {method}() ran past its {self._timeout} s deadline")

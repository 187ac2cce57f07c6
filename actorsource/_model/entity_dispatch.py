"""Handler dispatch for entities: one table of handlers for every entity of an actor.

:class:`~actorsource._model.dispatch.Dispatch` binds the handlers to one state object, which
suits a singleton. An entity actor holds thousands of states, so :class:`EntityDispatch`
resolves each event type's handler once per actor, unbound, and calls it with the entity's
state: live processing costs no per-entity table. Replay (loading an entity) still goes
through ``Dispatch.replay``, bound for the time of the load.
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
from .effects import RECORDED_SUBJECT, Effects
from .events import JournalEntry

__all__ = ["EntityDispatch"]


class EntityDispatch:
    """Applies live events to entity states through the actor's handlers, resolved once."""

    __slots__ = (
        "_codec",
        "_log",
        "_name",
        "_scope",
        "_steps",
        "_timeout",
        "definition",
        "max_payload",
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

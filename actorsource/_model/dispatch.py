"""Handler dispatch: how one event reaches its handler, the same live and in replay.

:class:`Dispatch` resolves, once per state object, what each event type needs: its decoder,
its current version and the handler bound to the state. Live processing, replay, the
reference :func:`fold` and the rebuild from a stream all apply events through it; replay
only adds a shorter path for the common case (a plain synchronous handler without a
context, a row at the current version). :class:`LiveState` is the state an actor applies
events to live, with the effects its handlers cause.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

import anyio
import structlog

from .._errors import ActorCrashed, HandlerTimeout
from .._log import get_logger
from .actor import ActorDefinition
from .context import Context, Scope
from .effects import RECORDED_SUBJECT, Effects
from .events import JournalEntry

__all__ = ["Dispatch", "LiveState", "ReplayChunk", "fold", "replay_chunk"]


class ReplayChunk(Protocol):
    """Consecutive journal rows as replay reads them (the journal reader's chunk).

    ``rows`` are ``(code, payload)``: ``code`` indexes :meth:`Dispatch.replay_kinds` (the
    row is stored at the current version of a type with a synchronous handler), or is -1
    for a row that needs the long way. The first row is at position ``first`` and each next
    one at the next position, unless ``positions`` lists them.
    """

    rows: list[tuple[int, bytes]]
    first: int
    last: int
    positions: list[int] | None

    def row(self, pos: int) -> tuple[str, bytes, int | None]:
        """``(type, payload, version as stored)`` of the row at ``pos``."""

    def entry(self, pos: int) -> JournalEntry:
        """The whole journal entry at ``pos``."""


class Dispatch:
    """The handlers of one state object (an actor's, or the entity ``key``'s), resolved
    once; applies events to it."""

    __slots__ = (
        "_codec",
        "_direct",
        "_direct_steps",
        "_live_scope",
        "_log",
        "_name",
        "_replay_scope",
        "_steps",
        "_timeout",
        "plain",
    )

    def __init__(
        self,
        definition: ActorDefinition,
        state: Any,
        log: structlog.stdlib.BoundLogger,
        *,
        key: str | None = None,
    ) -> None:
        self._name = definition.name
        self._log = log
        self._codec = definition.codec
        self._timeout = definition.errors.handler_timeout
        # Handlers mutate the state object; they never replace it, so bind them once.
        self._steps = {
            name: (
                definition.codec.decoder(name),
                definition.codec.version(name),
                getattr(state, h.method),
                h.takes_context,
                h.is_async,
                h.method,
            )
            for name, h in definition.handlers.items()
        }
        # What replay applies directly, by code (the journal reader codes each row): every
        # synchronous handler, for rows stored at its event's current version.
        self._direct = [
            (name, current, (decode, handler, ctx))
            for name, (decode, current, handler, ctx, is_async, _) in self._steps.items()
            if not is_async
        ]
        self._direct_steps = [step for _, _, step in self._direct]
        part = definition.partition
        self._live_scope = Scope(self._name, log, replaying=False, partition=part)
        self._replay_scope = Scope(self._name, log, replaying=True, key=key, partition=part)
        #: The same handlers for live processing: (decoder, handler, current version). They
        #: need no context, collect no effects and have no deadline: the caller may decode
        #: and call them directly (after the same checks as :meth:`apply`).
        self.plain = {
            name: (decode, handler, current)
            for name, (decode, current, handler, ctx, is_async, _) in self._steps.items()
            if not ctx and not is_async
        }

    async def apply(
        self,
        event: object,
        entry: JournalEntry,
        *,
        replaying: bool,
        effects: Effects | None = None,
    ) -> None:
        """Apply one decoded event; live, an ``async`` handler past the policy's
        ``handler_timeout`` raises :class:`HandlerTimeout`."""
        _, _, handler, takes_context, is_async, method = self._steps[entry.type]
        if takes_context:
            scope = self._replay_scope if replaying else self._live_scope
            result = handler(event, Context(scope, entry.pos, entry, effects))
        else:
            result = handler(event)
        if not is_async:
            return
        if replaying or self._timeout is None:
            await result
            return
        # move_on_after rather than fail_after: a TimeoutError the handler raises itself is
        # its own failure, not a deadline.
        with anyio.move_on_after(self._timeout) as deadline:
            await result
        if deadline.cancelled_caught:
            raise HandlerTimeout(f"handler {method}() ran past its {self._timeout} s deadline")

    def replay_kinds(self) -> list[tuple[str, int | None]]:
        """What replay applies directly, by code: (type name, version as stored, None for
        version 1) of each synchronous handler at its event's current version."""
        return [(name, None if current == 1 else current) for name, current, _ in self._direct]

    @staticmethod
    def replay_kinds_of(definition: ActorDefinition) -> list[tuple[str, int | None]]:
        """:meth:`replay_kinds` of any dispatch of ``definition``, without making one."""
        codec = definition.codec
        return [
            (name, None if (current := codec.version(name)) == 1 else current)
            for name, h in definition.handlers.items()
            if not h.is_async
        ]

    async def replay(self, chunk: ReplayChunk) -> None:
        """Apply a chunk of journal rows in order, replaying. Raises :class:`ActorCrashed`
        naming the position of an entry that cannot be decoded or applied."""
        await replay_chunk(
            chunk, self._direct_steps, self._replay_scope, self.replay_row, self._name
        )

    async def replay_row(self, pos: int, name: str, payload: bytes, version: int) -> None:
        """Replay one row the long way: an older version (upcast), an ``async`` handler."""
        decode, current, handler, takes_context, is_async, _ = self._steps[name]
        event = (
            decode(payload) if version == current else self._codec.decode(name, payload, version)
        )
        result = (
            handler(event, Context(self._replay_scope, pos)) if takes_context else handler(event)
        )
        if is_async:
            await result


#: How :func:`replay_chunk` replays a row the long way: (position, type, payload, version).
SlowRow = Callable[[int, str, bytes, int], Awaitable[None]]


async def replay_chunk(
    chunk: ReplayChunk,
    direct: list[tuple[Any, Any, bool]],
    scope: Scope,
    slow: SlowRow,
    actor: str,
) -> None:
    """Apply ``chunk``'s rows in order, replaying: a row coded ``k >= 0`` through
    ``direct[k]`` (decoder, bound handler, whether it takes a Context), any other through
    ``slow``. Raises :class:`ActorCrashed` naming the position of an entry that cannot be
    decoded or applied."""
    scope.load = chunk.entry
    # One Context serves the chunk's rows: a Context is valid during its handler's call
    # only, and moving it to the next row (its position, no entry read yet) costs a
    # seventh of making one.
    ctx = Context(scope, 0)
    rows = chunk.rows
    pos = chunk.first - 1
    try:
        for pos, (code, payload) in (
            enumerate(rows, chunk.first)
            if chunk.positions is None
            else zip(chunk.positions, rows, strict=True)
        ):
            if code >= 0:
                decode, handler, takes_context = direct[code]
                if takes_context:
                    ctx._pos = pos
                    ctx._entry = None
                    handler(decode(payload), ctx)
                else:
                    handler(decode(payload))
                continue
            name, payload, stored = chunk.row(pos)
            await slow(pos, name, payload, stored or 1)
    except Exception as exc:
        name = chunk.row(pos)[0] if chunk.first <= pos <= chunk.last else "?"
        raise ActorCrashed(
            f"actor {actor!r} cannot replay journal position {pos} "
            f"({name}): {exc!r}; the journal is intact, "
            "fix the handler or register the event type and restart",
            actor=actor,
        ) from exc


class LiveState:
    """The state an actor applies events to live, and the effects its handlers cause.

    After a failed handler the state may be half-changed: :meth:`replace` it with a fresh
    fold of the journal (the dispatch is bound again to the new object).
    """

    def __init__(
        self,
        definition: ActorDefinition,
        log: structlog.stdlib.BoundLogger,
        *,
        max_payload: int,
        state: Any = None,
    ) -> None:
        self.definition = definition
        self.log = log
        self.max_payload = max_payload
        self.state: Any = None
        self.dispatch: Dispatch
        self.replace(definition.new_state() if state is None else state)

    def replace(self, state: Any) -> None:
        """Make ``state`` the live state."""
        self.state = state
        self.dispatch = Dispatch(self.definition, state, self.log)

    async def apply_live(self, event: object, entry: JournalEntry) -> Effects | None:
        """Apply a received event live, then the events its handlers recorded, in order.

        Returns the effects (recorded entries and outbox rows), or None when there are none.
        Raises whatever a handler raises (:class:`HandlerTimeout` past the policy's deadline):
        the state may then be half-changed and the effects are void.
        """
        if not self.definition.handlers[entry.type].takes_context:
            await self.dispatch.apply(event, entry, replaying=False)
            return None
        effects = self.effects(time.time())
        await self.dispatch.apply(event, entry, replaying=False, effects=effects)
        if effects.pending:
            await self.apply_recorded(effects, after=entry.pos)
        return effects if effects.entries or effects.outbox else None

    def effects(self, now: float) -> Effects:
        """An empty collection of effects, for events applied at time ``now``."""
        return Effects(self.definition, max_payload=self.max_payload, now=now)

    async def apply_recorded(self, effects: Effects, *, after: int) -> None:
        """Journal and apply the events recorded in ``effects``, at positions after ``after``,
        in the order recorded (those their own handlers record come after them)."""
        pos = after
        codec = self.definition.codec
        while effects.pending:
            type_name, payload, version = effects.pending.pop(0)
            pos += 1
            recorded = JournalEntry(
                pos, RECORDED_SUBJECT, type_name, payload, effects.now, version=version
            )
            effects.entries.append(recorded)
            event = codec.decode(type_name, payload, version)
            await self.dispatch.apply(event, recorded, replaying=False, effects=effects)


async def fold(definition: ActorDefinition, entries: Iterable[JournalEntry]) -> Any:
    """A fresh state folded over ``entries`` in the given order, ignoring every snapshot.

    This is the reference the runtime is held to (invariant 3): after any crash or restart
    the live state equals the fold of the journal.
    """
    state = definition.new_state()
    dispatch = Dispatch(definition, state, get_logger(actor=definition.name))
    for entry in entries:
        event = definition.codec.decode(entry.type, entry.payload, entry.version)
        await dispatch.apply(event, entry, replaying=True)
    return state

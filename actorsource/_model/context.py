"""The Context a handler is given: the entry it applies, and what it may do besides.

What a handler publishes or records goes to an :class:`EffectSink` (the live
:class:`~actorsource._model.effects.Effects`); on replay there is none, and both are no-ops.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

import structlog

from .._errors import ActorDefinitionError
from .events import JournalEntry

__all__ = ["Context", "EffectSink", "Scope"]


class EffectSink(Protocol):
    """Collects what the handlers of one received event publish and record, live."""

    def publish(
        self,
        entry: JournalEntry,
        subject: str,
        event: object,
        headers: Mapping[str, str] | None,
    ) -> str: ...

    def record(self, event: object) -> None: ...


class Scope:
    """What every Context of one actor shares, live or in a replay: its name, its logger,
    whether it replays, (in a replay) how a Context reads its whole entry, and (loading an
    entity) the entity's key."""

    __slots__ = ("actor", "key", "load", "log", "partition", "replaying")

    def __init__(
        self,
        actor: str,
        log: structlog.stdlib.BoundLogger,
        *,
        replaying: bool,
        load: Callable[[int], JournalEntry] | None = None,
        key: str | None = None,
        partition: int | None = None,
    ) -> None:
        self.actor = actor
        self.log = log
        self.replaying = replaying
        self.load = load
        self.partition = partition
        self.key = key


class Context:
    """What a handler knows about the event it is applying, and what it may do beyond
    changing its state.

    ``entry`` is the journal entry (position, subject, stream sequence, headers ...);
    ``replaying`` is true while recovery replays the journal. Handlers must be deterministic
    functions of (state, event, entry): they run again on every replay. What is not
    deterministic (a clock, a random choice, an outside call) belongs in an event the
    handler :meth:`record` s, made only when not ``replaying``.

    Handlers are given their Context by the runtime; they never make one, and they do not
    keep it: a Context is valid during its handler's call only (a replay moves one Context
    from row to row).
    """

    __slots__ = ("_effects", "_entry", "_pos", "_scope")

    def __init__(
        self,
        scope: Scope,
        pos: int,
        entry: JournalEntry | None = None,
        effects: EffectSink | None = None,
    ) -> None:
        # Positional and four slots: replay makes one per event of a handler that takes it.
        self._scope = scope
        self._pos = pos
        self._entry = entry
        self._effects = effects

    @property
    def actor(self) -> str:
        """The name of the actor applying the event."""
        return self._scope.actor

    @property
    def log(self) -> structlog.stdlib.BoundLogger:
        """The actor's logger."""
        return self._scope.log

    @property
    def replaying(self) -> bool:
        """True while recovery replays the journal (nothing is published or recorded)."""
        return self._scope.replaying

    @property
    def entry(self) -> JournalEntry:
        """The journal entry being applied (read from the journal on first use in a replay)."""
        if self._entry is None:
            load = self._scope.load
            if load is None:
                raise ActorDefinitionError("this Context has no journal entry")
            self._entry = load(self._pos)
        return self._entry

    @property
    def key(self) -> str | None:
        """The key of the entity being applied to, in an entity actor; None in a singleton."""
        return self._scope.key if self._entry is None else self._entry.entity

    @property
    def partition(self) -> int | None:
        """The partition being applied to, in a partitioned actor (its events' subjects
        all hash to it); None in an actor without partitions."""
        return self._scope.partition

    @property
    def pos(self) -> int:
        """The journal position of the event being applied."""
        return self._pos

    @property
    def subject(self) -> str:
        """The subject the event was published to (``"@recorded"`` for recorded events); in
        a partitioned actor, without the partition token its stream stores."""
        return self.entry.subject

    def publish(
        self, subject: str, event: object, *, headers: Mapping[str, str] | None = None
    ) -> str | None:
        """Publish a domain event to ``subject`` once the event being applied is committed.

        The message goes to the actor's outbox in the same transaction as the journal entry
        and is sent afterwards with ``Nats-Msg-Id`` ``"<actor>:<pos>:<n>"``: never lost,
        and never applied twice by an actorsource receiver. Returns that id; on replay
        nothing is sent again and None is returned. Raises :class:`EffectError` for a
        wildcard subject, a reserved header or a message over the server's size limit.
        """
        if self._effects is None:
            return None
        return self._effects.publish(self.entry, subject, event, headers)

    def record(self, event: object) -> None:
        """Append an event of the actor's own to its journal, right after this one.

        The actor's handler for its type applies it next (its publishes and records count
        as its own). Use it for decisions that replay must not make again. No-op on
        replay, where the recorded event replays in its own journal position.
        """
        if self._effects is not None:
            self._effects.record(event)

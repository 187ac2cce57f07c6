"""Retrying a failed handler in place, then giving up with a dead letter.

When a handler raises, the batch so far is committed and the state is restored from the
journal; the failed delivery is then retried here, with the :class:`ErrorPolicy`'s backoff,
the state restored again after each failed attempt. Later deliveries wait: they never
overtake it. What comes out is what to commit for that one delivery: its entry and effects,
or its dead letter; or nothing, when the actor is stopping (the message then stays
unacknowledged and is delivered again to the next run).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import anyio
import structlog

from .._errors import HandlerTimeout
from .._journal.journal import DeadLetter
from .._model.actor import ActorDefinition
from .._model.effects import Effects, outbound_trace
from .._model.events import JournalEntry
from .deadletters import dead_letter
from .status import ActorStats
from .triage import Failure

__all__ = ["Applier", "Retried", "retry_in_place"]


class Applier(Protocol):
    """What applies events live: a singleton's LiveState, an entity actor's Entities."""

    @property
    def definition(self) -> ActorDefinition: ...

    async def apply_live(self, event: object, entry: JournalEntry) -> Effects | None: ...


@dataclass
class Retried:
    """The outcome for the failed delivery: applied (with its effects) or dead-lettered."""

    effects: Effects | None = None
    letter: DeadLetter | None = None


async def retry_in_place(
    failure: Failure,
    live: Applier,
    *,
    restore: Callable[[], Awaitable[object]],
    stopping: Callable[[], bool],
    stats: ActorStats,
    log: structlog.stdlib.BoundLogger,
) -> Retried | None:
    """Retry ``failure`` up to the policy's ``retries`` times; None if stopping meanwhile.

    ``restore`` makes the live state the journal's fold again (after a failed attempt).
    """
    policy = live.definition.errors
    error = failure.error
    d = failure.delivery
    for attempt in range(1, policy.retries + 1):
        delay = policy.delay(attempt)
        log.warning(
            "handler failed; retrying",
            error=repr(error),
            subject=d.subject,
            stream_seq=d.stream_seq,
            attempt=attempt,
            of=policy.retries,
            retry_in=round(delay, 3),
        )
        await anyio.sleep(delay)
        if stopping():
            return None
        stats.retries += 1
        try:
            with outbound_trace(failure.outbound):
                effects = await live.apply_live(failure.event, failure.entry)
        except Exception as exc:
            error = exc
            if failure.traced is not None:
                failure.traced.failed(exc)
            await restore()
            continue
        return Retried(effects=effects)
    reason = "handler-timeout" if isinstance(error, HandlerTimeout) else "handler-failed"
    return Retried(letter=dead_letter(d, failure.entry.type, reason, error, time.time()))

"""The loop of a running actor: the requests of its control channel, one at a time.

What arrived in the mailbox goes down the data path as a batch
(:class:`~actorsource._runtime.pipeline.Pipeline`); the other requests are done between two
batches: a redo after a duplicate message id, a snapshot, the timers, the queries asked
meanwhile (answered once what was applied is committed). A consumer found gone
is re-created before the next batch. Once the actor is stopping, what is left in
the channel fails with :class:`ActorNotRunning` and the loop ends at :class:`Stop`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
import structlog

from .._errors import ActorNotRunning
from .._journal.journal import SQLiteJournal
from .._mailbox.mailbox import ConsumerGone, JetStreamMailbox
from .._model.dispatch import LiveState
from .binding import bind_mailbox
from .control import (
    AnswerQueries,
    Control,
    FireTimers,
    MailboxDoorbell,
    MailReady,
    Passivate,
    Redo,
    Request,
    Stop,
    TakeSnapshot,
)
from .entities import Entities
from .pipeline import Pipeline
from .queries import QueryDesk, ReflectedPosition
from .timers import decide

__all__ = ["ActorLoop"]


class ActorLoop:
    """Does the requests of one actor's control channel until it stops."""

    def __init__(
        self,
        control: Control,
        pipeline: Pipeline,
        doorbell: MailboxDoorbell,
        live: LiveState,
        *,
        mailbox: JetStreamMailbox,
        journal: SQLiteJournal,
        stopping: Callable[[], bool],
        log: structlog.stdlib.BoundLogger,
        queries: QueryDesk,
        entities: Entities | None = None,
    ) -> None:
        self._control = control
        self._pipeline = pipeline
        self._doorbell = doorbell
        self._live = live
        self._mailbox = mailbox
        self._journal = journal
        self._stopping = stopping
        self._log = log
        self._queries = queries
        self._entities = entities
        self._backoff = 0.1  # before re-creating a lost consumer; reset by the next batch

    async def run(self) -> None:
        """Take requests in arrival order and do each to its end; return at stop."""
        name = self._live.definition.name
        async for request in self._control.requests():
            if self._stopping():
                request.finish(ActorNotRunning(f"actor {name!r} is stopping", actor=name))
                if isinstance(request, Stop):
                    return
                continue
            try:
                await self._do(request)
            except BaseException:
                # Killed, cancelled or failed half-way: whoever asked must not take it as done.
                request.finish(
                    ActorNotRunning(f"actor {name!r} stopped before finishing it", actor=name)
                )
                raise
            request.finish()

    async def _do(self, request: Request) -> None:
        pipeline = self._pipeline
        if isinstance(request, MailReady):
            await self._take_mail()
        elif isinstance(request, Redo):
            await pipeline.redo()
        elif isinstance(request, TakeSnapshot):
            request.pos = await pipeline.snapshot()
            if pipeline.committer.failed is not None:
                # What was applied was not all committed: no snapshot was written.
                name = self._live.definition.name
                request.finish(
                    ActorNotRunning(f"actor {name!r} took no snapshot: a commit failed", actor=name)
                )
        elif isinstance(request, FireTimers):
            request.recorded = await self._fire(request)
        elif isinstance(request, Passivate):
            await pipeline.passivate(request.now)
        elif isinstance(request, AnswerQueries):
            committer = pipeline.committer
            await self._queries.answer(
                request,
                settle=self._settled,
                state_of=self._state_of,
                at=self._reflected,
                committing=bool(committer.in_flight or committer.conflict),
                mail_waiting=self._mailbox.buffered_count > 0,
            )

    async def _settled(self) -> BaseException | None:
        """Wait for the commits in flight; why one failed, if it did (the state then holds
        events the journal does not, and the actor is stopping)."""
        await self._pipeline.settle()
        return self._pipeline.committer.failed

    async def _state_of(self, key: str | None) -> Any:
        """The state a query reads: the live one, or entity ``key``'s (None: no events)."""
        if self._entities is None:
            return self._live.state
        assert key is not None
        return await self._entities.existing(key)

    def _reflected(self) -> ReflectedPosition:
        stream = self._mailbox.stream
        seq = self._journal.stream_positions.get(stream, 0) if stream else 0
        return ReflectedPosition(self._journal.last_pos, stream, seq)

    async def _fire(self, request: FireTimers) -> int:
        """Fire the timers asked for; how many events they recorded (handed to the committer)."""
        now = time.time() if request.now is None else request.now
        recorded = 0
        for timer in request.timers:
            effects = await decide(timer, self._live, now, self._log)
            if effects is not None:
                recorded += await self._pipeline.record(timer, effects)
        return recorded

    async def _take_mail(self) -> None:
        """Handle what arrived in the mailbox as one batch (ring again if more waits)."""
        self._doorbell.answered()
        try:
            deliveries = await self._mailbox.take()
        except ConsumerGone as exc:
            await self._rebind(exc)
            self._doorbell.ring()
            return
        if deliveries:
            self._backoff = 0.1
            await self._pipeline.handle(deliveries)
        if self._mailbox.buffered_count:
            self._doorbell.ring()

    async def _rebind(self, error: ConsumerGone) -> None:
        """Re-create the consumer rather than spin on 503s: wait, then bind again (which
        also notices a stream that was deleted and re-created meanwhile)."""
        self._log.warning("consumer gone, re-creating", reason=str(error), backoff=self._backoff)
        await self._pipeline.settle()
        await anyio.sleep(self._backoff)
        self._backoff = min(self._backoff * 2, 5.0)
        await bind_mailbox(self._mailbox, self._journal, log=self._log)
        self._pipeline.sync_cursor()

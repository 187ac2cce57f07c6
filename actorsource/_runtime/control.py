"""The control channel of a running actor: everything its loop does arrives as a request.

The loop (:meth:`ActorRunner._loop <actorsource._runtime.runner.ActorRunner>`) takes one request at
a time, in arrival order, and does it to the end before the next, so each sees the state
between two batches:

- :class:`Batch`: deliveries the :class:`MailboxPump` took from the mailbox (at most one
  batch waits in the channel: the pump takes the next only once the loop took this one);
- :class:`Redo`: the committer found a message id already journaled and set deliveries
  aside; they are handled again, in order, once the state is the journal's fold;
- :class:`TakeSnapshot`, :class:`FireTimers`: asked from outside (an operator, a test, an
  ``@every`` tick);
- :class:`ConsumerLost`: the durable consumer disappeared and is to be re-created;
- :class:`Stop`.

A request is an awaitable ticket: whoever asked waits on :meth:`Request.wait`, which raises
:class:`ActorNotRunning` if the actor stopped before doing it. The requests to come (answer a
query between batches, passivate an entity, hand a partition over, a fenced commit) are
further subclasses handled by the same loop.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TypeVar

import anyio

from .._errors import ActorNotRunning
from .._mailbox.mailbox import ConsumerGone, Delivery, JetStreamMailbox
from .._model.actor import Timer

__all__ = [
    "Batch",
    "ConsumerLost",
    "Control",
    "FireTimers",
    "MailboxPump",
    "Redo",
    "Request",
    "Stop",
    "TakeSnapshot",
]


@dataclass(eq=False)
class Request:
    """Something for the actor's loop to do; ``done`` once it is done or cannot be."""

    done: anyio.Event = field(default_factory=anyio.Event, init=False, repr=False)
    failed: BaseException | None = field(default=None, init=False, repr=False)

    def finish(self, failed: BaseException | None = None) -> None:
        """Mark the request done (``failed``: why it was not)."""
        if not self.done.is_set():
            self.failed = failed
            self.done.set()

    async def wait(self) -> None:
        """Wait until the loop did it; raises why it could not."""
        await self.done.wait()
        if self.failed is not None:
            raise self.failed


@dataclass(eq=False)
class Batch(Request):
    """Deliveries taken from the mailbox, in stream order."""

    deliveries: list[Delivery] = field(default_factory=list)


@dataclass(eq=False)
class Redo(Request):
    """Handle the deliveries the committer set aside after a duplicate message id."""


@dataclass(eq=False)
class TakeSnapshot(Request):
    """Snapshot the state once everything handled before is committed; ``pos`` is where."""

    pos: int = 0


@dataclass(eq=False)
class FireTimers(Request):
    """Call these ``@every`` methods at ``now`` (None: the clock); ``recorded`` events."""

    timers: tuple[Timer, ...] = ()
    now: float | None = None
    recorded: int = 0


@dataclass(eq=False)
class ConsumerLost(Request):
    """The durable consumer is gone (deleted, the server lost it): re-create it."""

    error: ConsumerGone | None = None


@dataclass(eq=False)
class Stop(Request):
    """Finish the request in hand and stop."""


R = TypeVar("R", bound=Request)


class Control:
    """The channel of requests into one actor's loop (unbounded: asking never waits)."""

    def __init__(self, actor: str) -> None:
        self._actor = actor
        self._send, self._receive = anyio.create_memory_object_stream[Request](math.inf)

    def ask(self, request: R) -> R:
        """Hand ``request`` to the loop; returns it, to wait on."""
        try:
            self._send.send_nowait(request)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            request.finish(self._gone())
        return request

    async def requests(self) -> AsyncIterator[Request]:
        """The requests, in the order they were asked."""
        async for request in self._receive:
            yield request

    def close(self) -> None:
        """No more requests: those not done yet fail, so nobody waits for them forever."""
        self._send.close()
        while True:
            try:
                request = self._receive.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
            request.finish(self._gone())
        self._receive.close()

    def _gone(self) -> ActorNotRunning:
        return ActorNotRunning(f"actor {self._actor!r} stopped before doing it", actor=self._actor)


class MailboxPump:
    """Takes batches from the mailbox and hands them to the loop, one waiting at a time.

    While the loop works on a batch the pump already waits for the next, so the loop never
    waits for the mailbox when messages are there. The batch it holds (taken, not yet
    handled) is in :attr:`holding`, kept alive with the rest. A lost consumer is handed to
    the loop as :class:`ConsumerLost`; the pump waits until the loop has re-created it.
    """

    def __init__(self, mailbox: JetStreamMailbox, control: Control) -> None:
        self._mailbox = mailbox
        self._control = control
        self._room = anyio.Semaphore(1)
        self.holding: list[Delivery] = []
        self.holding_since = 0.0

    def taken(self, batch: Batch) -> None:
        """The loop took ``batch``: the pump may take the next."""
        if batch.deliveries is self.holding:
            self.holding = []
            self._room.release()

    async def run(self) -> None:
        """Pump until cancelled."""
        while True:
            await self._room.acquire()
            try:
                deliveries = await self._mailbox.next_batch()
            except ConsumerGone as exc:
                self._room.release()
                await self._control.ask(ConsumerLost(error=exc)).wait()
                continue
            except BaseException:
                self._room.release()
                raise
            self.holding, self.holding_since = deliveries, time.monotonic()
            self._control.ask(Batch(deliveries=deliveries))

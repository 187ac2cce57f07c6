"""The control channel of a running actor: everything its loop does arrives as a request.

The loop (:class:`~actorsource._runtime.loop.ActorLoop`) takes one request at
a time, in arrival order, and does it to the end before the next, so each sees the state
between two batches:

- :class:`MailReady`: the mailbox has something (rung by :class:`MailboxDoorbell`, one
  waiting at most): the loop takes what arrived, in stream order, and handles it as a batch
  (a consumer found gone is re-created there);
- :class:`Redo`: the committer found a message id already journaled and set deliveries
  aside; they are handled again, in order, once the state is the journal's fold;
- :class:`TakeSnapshot`, :class:`FireTimers`: asked from outside (an operator, a test, an
  ``@every`` tick); :class:`Passivate`: an entity actor's idle entities are let go;
- :class:`AnswerQueries`: the queries asked meanwhile, answered together once what was
  applied is committed (:mod:`.queries`);
- :class:`Stop`.

A request is an awaitable ticket: whoever asked waits on :meth:`Request.wait`, which raises
:class:`ActorNotRunning` if the actor stopped before doing it. In cluster mode a partition
is handed over with :class:`Stop` (then its lease is released), and a fenced commit fails
the runner from its committer (:mod:`.commit_guard`): neither needs a request of its own.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio

from .._errors import ActorNotRunning
from .._mailbox.mailbox import JetStreamMailbox
from .._model.actor import Timer

__all__ = [
    "AnswerQueries",
    "Control",
    "FireTimers",
    "MailReady",
    "MailboxDoorbell",
    "Passivate",
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
class MailReady(Request):
    """Something arrived in the mailbox: messages, an expired request, a failure."""


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
class Passivate(Request):
    """Passivate an entity actor's entities idle at ``now`` (None: the clock)."""

    now: float | None = None


@dataclass(eq=False)
class AnswerQueries(Request):
    """Answer these queries (:class:`~.queries.PendingQuery`; more join it until the loop
    takes it) once everything handled is committed."""

    queries: list[Any] = field(default_factory=list)

    def finish(self, failed: BaseException | None = None) -> None:
        """Done; if it could not be, each of its queries fails with the reason."""
        super().finish(failed)
        if failed is not None:
            for pending in self.queries:
                pending.fail(failed)


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


class MailboxDoorbell:
    """Tells the loop that the mailbox has something for it: one :class:`MailReady` waits
    in the channel at most, rung by the mailbox itself as messages arrive (no task in
    between, so a message waits for one hop, not two). The loop takes what arrived with
    ``mailbox.take()``. :meth:`watch` rings when the consumer fell silent (its requests
    were lost), so that the loop asks again.
    """

    def __init__(self, mailbox: JetStreamMailbox, control: Control) -> None:
        self._mailbox = mailbox
        self._control = control
        self._rung = False
        mailbox.on_arrival(self.ring)

    def ring(self) -> None:
        """Have the loop look at the mailbox (unless it is already asked to)."""
        if not self._rung:
            self._rung = True
            self._control.ask(MailReady())

    def answered(self) -> None:
        """The loop is looking now: what arrives from here on rings again."""
        self._rung = False

    async def watch(self) -> None:
        """Ring once at start (the first requests), then whenever the consumer fell silent."""
        self.ring()
        while True:
            await anyio.sleep(self._mailbox.quiet_period)
            if self._mailbox.forget_lost_requests():
                self.ring()

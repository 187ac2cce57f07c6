"""JetStream that cannot answer yet, and the set-up steps asked again until it can.

A worker's start sets up streams and buckets (the journal stream, the lease, members and
checkpoint buckets, each actor's stream), and on a cluster several workers usually start
at once and create the same ones. For a moment after one of them creates a replicated
stream, the requests of the others about it go unanswered or are refused: it has no leader
yet (a timeout, no responders, ``503``), or the server asked has not learnt of it yet
(``stream not found`` just after ``already in use``). So does every request while the
cluster has no meta leader (an election, servers starting). Each such step creates what is
missing and finds what exists, so :func:`patiently` asks it again, with a backoff, until it
succeeds or ``patience`` runs out (then the last error is raised).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import nats.errors
import nats.js.errors

from .._errors import MailboxError

__all__ = ["SETUP_PATIENCE", "patiently", "unavailable"]

T = TypeVar("T")

#: How long a worker's start waits for JetStream to answer its set-up, in seconds.
SETUP_PATIENCE = 60.0

_NOT_ANSWERING = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
    # A stream or bucket another worker has just created, unknown to this server yet.
    nats.js.errors.NotFoundError,
)


def unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says JetStream cannot answer yet (rather than refusing for good);
    a :class:`MailboxError` says what its cause says."""
    if isinstance(exc, MailboxError) and exc.__cause__ is not None:
        return unavailable(exc.__cause__)
    return isinstance(exc, _NOT_ANSWERING)


async def patiently(
    step: Callable[[], Awaitable[T]],
    *,
    patience: float,
    log: Any = None,
    what: str = "set-up",
    stopping: Callable[[], bool] | None = None,
) -> T:
    """``step()``, asked again while it fails with :func:`unavailable` errors, until
    ``patience`` seconds have passed since the first attempt (backoff 0.05 s doubling to
    1 s) or ``stopping()`` says the worker stops. Other errors, and the last one once it
    gives up, are raised."""
    give_up = time.monotonic() + patience
    delay = 0.05
    while True:
        try:
            return await step()
        except Exception as exc:
            if not unavailable(exc) or time.monotonic() + delay >= give_up:
                raise
            if stopping is not None and stopping():
                raise
            if log is not None:
                log.warning("JetStream does not answer yet; retrying", step=what, error=repr(exc))
        await anyio.sleep(delay)
        delay = min(delay * 2, 1.0)

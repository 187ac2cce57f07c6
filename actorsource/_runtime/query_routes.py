"""Query subjects served only while this worker may answer them (cluster mode).

In cluster mode a partition moves between workers, and only its current owner may answer
for it: a worker that stopped owning it (handed back, fenced, lease run out) holds a state
that others may have moved past. So a partition's query subject,
``actorsource.query.<actor>-p<k>.>``, is subscribed here only while ``serving(name)`` says
so (its runner runs, under a lease still valid), and unsubscribed as soon as it does not:
NATS then routes each query to the owner alone, and while nobody owns the partition the
caller gets "no responders" at once and asks again (:func:`actorsource.ask`). The check is
made again when a request arrives (:class:`~.query_service.QueryEndpoints`), so a request
already on its way to a worker that just stopped serving is answered ``not-running``.

:class:`OwnedRoutes` looks every ``every`` seconds (50 ms): that is how long a new owner
may take to serve its partition after it starts running.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

import anyio
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from .._model.query_wire import endpoint_subject

__all__ = ["QUERY_QUEUE", "OwnedRoutes"]

#: The queue group of an actor's own query subject (every worker answers it alike). A
#: partition's subject has none: should an old owner still be subscribed (paused, say),
#: the request reaches the new owner too, whose answer the caller takes, while the old
#: one answers ``not-running`` or nothing.
QUERY_QUEUE = "actorsource-query"


class OwnedRoutes:
    """The query subjects of ``names``, each subscribed while ``serving(name)``."""

    def __init__(
        self,
        nc: NATS,
        names: Iterable[str],
        serving: Callable[[str], bool],
        handler: Callable[[Msg], Awaitable[None]],
        *,
        every: float = 0.05,
    ) -> None:
        self._nc = nc
        self._names = tuple(names)
        self._serving = serving
        self._handler = handler
        self._every = every
        self._subscriptions: dict[str, Subscription] = {}

    @property
    def served(self) -> frozenset[str]:
        """The names whose query subject is subscribed now."""
        return frozenset(self._subscriptions)

    async def run(self) -> None:
        """Follow ``serving`` until cancelled; then unsubscribe everything."""
        try:
            while True:
                await self.update()
                await anyio.sleep(self._every)
        finally:
            with anyio.CancelScope(shield=True):
                for name in list(self._subscriptions):
                    await self._drop(name)

    async def update(self) -> None:
        """Subscribe what is served now and was not; unsubscribe what no longer is."""
        for name in self._names:
            on = self._serving(name)
            if on and name not in self._subscriptions:
                try:
                    self._subscriptions[name] = await self._nc.subscribe(
                        endpoint_subject(name), cb=self._handler
                    )
                except (nats.errors.Error, OSError):
                    pass  # reconnecting: tried again at the next look
            elif not on and name in self._subscriptions:
                await self._drop(name)

    async def _drop(self, name: str) -> None:
        subscription = self._subscriptions.pop(name)
        try:
            await subscription.unsubscribe()
        except (nats.errors.Error, OSError):
            pass  # the connection is gone: so is the interest

"""The test kit: actors hosted against a real NATS server, events published to them."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from .._log import get_logger
from .._mailbox.connection import NatsOptions, connect
from .._mailbox.server import NatsServer
from .._model.actor import definition_of
from .._model.events import MSG_ID_HEADER, encode_event, event_headers
from .._runtime.binding import mailbox_for
from ._probe import ActorProbe

__all__ = ["ActorKit"]

S = TypeVar("S")


class ActorKit:
    """Starts actors against a real NATS server, publishes events, and inspects the results."""

    def __init__(
        self,
        nc: NATS,
        *,
        data_dir: Path,
        server: NatsServer | None = None,
        ack_wait: float = 1.0,
    ) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.data_dir = Path(data_dir)
        self.server = server
        self.ack_wait = ack_wait
        self.published = 0
        self._probes: list[ActorProbe[Any]] = []

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        url: str,
        *,
        data_dir: str | os.PathLike[str],
        server: NatsServer | None = None,
        ack_wait: float = 1.0,
    ) -> AsyncIterator[ActorKit]:
        """Connect to ``url`` and yield a kit; the connection is closed afterwards."""
        kits: list[ActorKit] = []

        async def on_reconnect() -> None:
            for kit in kits:
                kit._reset_mailboxes()

        nc = await connect(
            NatsOptions(servers=(url,), reconnect_time_wait=0.1, name="actorsource-testing"),
            log=get_logger(component="testing"),
            on_reconnect=on_reconnect,
        )
        try:
            kit = cls(nc, data_dir=Path(data_dir), server=server, ack_wait=ack_wait)
            kits.append(kit)
            yield kit
        finally:
            with anyio.CancelScope(shield=True):
                await nc.close()

    def _reset_mailboxes(self) -> None:
        for probe in self._probes:
            runner = probe._runner
            if runner is not None and runner.mailbox is not None:
                runner.mailbox.reset_credit()

    async def prepare(self, actor_cls: type) -> str:
        """Create the actor's stream and consumer without starting it; returns the stream."""
        definition = definition_of(actor_cls)
        return await mailbox_for(definition, self.nc, ack_wait=self.ack_wait).ensure()

    @asynccontextmanager
    async def start(
        self, actor_cls: type[S], *, ack_wait: float | None = None
    ) -> AsyncIterator[ActorProbe[S]]:
        """Host ``actor_cls`` until the block ends (then stop it gracefully).

        ``ack_wait`` (default: the kit's, 1 s) is short so that messages left unacknowledged
        by a crash are redelivered quickly.
        """
        probe = ActorProbe(
            self.nc,
            actor_cls,
            data_dir=self.data_dir,
            ack_wait=ack_wait or self.ack_wait,
            js=self.js,
        )
        self._probes.append(probe)
        async with anyio.create_task_group() as tg:
            probe._tg = tg
            await probe._launch()
            try:
                yield probe
                await probe.stop()
            finally:
                tg.cancel_scope.cancel()

    async def publish(
        self,
        subject: str,
        event: object,
        *,
        msg_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> int:
        """Publish an event (JSON, with its ``Event-Type`` and ``Event-Version``); returns its
        stream sequence."""
        _, payload = encode_event(event)
        hdrs = {**event_headers(type(event)), **(headers or {})}
        if msg_id is not None:
            hdrs[MSG_ID_HEADER] = msg_id
        return await self.publish_raw(subject, payload, headers=hdrs)

    async def publish_raw(
        self, subject: str, payload: bytes, *, headers: Mapping[str, str] | None = None
    ) -> int:
        """Publish raw bytes with the given headers; returns the stream sequence."""
        ack = await self.js.publish(subject, payload, headers=dict(headers) if headers else None)
        self.published += 1
        return int(ack.seq)

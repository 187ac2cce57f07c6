"""The test kit: actors hosted against a real NATS server, events published to them."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.abc
import nats.micro
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.micro.service import ServiceConfig

from .._log import get_logger
from .._mailbox.connection import NatsOptions, connect
from .._mailbox.server import NatsServer
from .._model.actor import definition_of
from .._model.events import MSG_ID_HEADER, encode_event, event_headers
from .._model.query_wire import QueryAnswer
from .._runtime.ask import ask
from .._runtime.binding import mailbox_for
from .._runtime.query_service import QueryEndpoints
from .._runtime.runner import ActorRunner
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
        self, actor_cls: type[S], *, ack_wait: float | None = None, tracing: Any = False
    ) -> AsyncIterator[ActorProbe[S]]:
        """Host ``actor_cls`` until the block ends (then stop it gracefully).

        ``ack_wait`` (default: the kit's, 1 s) is short so that messages left unacknowledged
        by a crash are redelivered quickly. Its queries are served over NATS as a worker
        serves them (by a micro service of its own, ``actorsource-testing``), each checked
        read-only: a query that changed the state fails the block at its end (with
        ``probe.query_violations``) unless the test cleared that list. ``tracing``: True
        (the global tracer provider) or an OpenTelemetry ``TracerProvider`` continues the
        trace context of received messages (the otel extra), as ``run --tracing`` does.
        """
        probe = ActorProbe(
            self.nc,
            actor_cls,
            data_dir=self.data_dir,
            ack_wait=ack_wait or self.ack_wait,
            js=self.js,
            tracing=tracing,
        )
        self._probes.append(probe)
        async with anyio.create_task_group() as tg:
            probe._tg = tg
            await self._serve_queries(tg, probe)
            await probe._launch()
            try:
                yield probe
                await probe.stop()
            finally:
                tg.cancel_scope.cancel()
        if probe.query_violations:
            raise AssertionError("; ".join(probe.query_violations))

    async def _serve_queries(self, tg: anyio.abc.TaskGroup, probe: ActorProbe[Any]) -> None:
        """Serve the probe's queries on the kit's connection until ``tg`` ends."""

        def runners() -> dict[str, ActorRunner]:
            runner = probe._runner
            return {} if runner is None else {probe.name: runner}

        service = await nats.micro.add_service(
            self.nc, ServiceConfig(name="actorsource-testing", version="0.0.0")
        )
        definition = probe._definition

        async def serve(
            *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
        ) -> None:
            try:
                await QueryEndpoints(self.nc, runners).serve(
                    service, [definition], task_status=task_status
                )
            finally:
                with anyio.CancelScope(shield=True):
                    try:
                        await service.stop()
                    except Exception:
                        pass

        await tg.start(serve)
        await self.nc.flush()

    async def ask(
        self,
        actor: type | str,
        name: str,
        /,
        *,
        key: str | None = None,
        after_seq: int | None = None,
        timeout: float = 5.0,
        **args: Any,
    ) -> QueryAnswer:
        """Ask a running actor (its class or name) its query ``name`` over NATS, as
        :func:`actorsource.ask` does; returns the :class:`QueryAnswer`."""
        actor_name = actor if isinstance(actor, str) else definition_of(actor).name
        return await ask(
            self.nc, actor_name, name, key=key, after_seq=after_seq, timeout=timeout, **args
        )

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

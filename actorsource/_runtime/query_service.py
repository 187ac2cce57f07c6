"""Serving queries over NATS: one micro service endpoint per hosted actor.

Each hosted actor gets the endpoint ``query-<actor>`` on the worker's ``actorsource``
micro service, serving ``actorsource.query.<actor>.>`` (subjects and bodies:
:mod:`actorsource._model.query_wire`), so ``nats micro info actorsource`` lists it with the
actor's queries in its metadata. Each request is answered in a task of its own: one that
waits for ``after_seq`` never holds up the others.

The endpoint's queue group is the service instance's own id, so a query reaches every
worker that hosts the actor. Only one of them can run it (one writer per journal); the
others answer ``not-running`` after a short pause, so the running one's answer comes first
and is the one the caller takes.

A partitioned actor's partitions answer as ``<actor>-p<k>``; its own name answers every
query with the fault ``partitioned`` (the partition count), from which the caller computes
the key's partition (:mod:`actorsource._model.query_wire`). A partition asked with a key
not in it is refused (``bad-arguments``); a partitioned actor that is not an entity uses the
key for routing only. In cluster mode (``serving`` given) only what ``serving`` allows is
answered: the partitions' query subjects are subscribed only while their owner may answer
(:mod:`.query_routes`), and every request is checked again on arrival.

Every failure is an error reply with a machine-readable code (:class:`QueryError`),
never silence: a caller that sees no reply at all (within its timeout) learns that no
worker hosts the actor (NATS answers "no responders" at once) or that the worker is gone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import anyio
import anyio.abc
import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.micro.request import Request
from nats.micro.service import Service

from .._errors import QueryArgumentsError, QueryError, QueryNotRunningError
from .._model.actor import ActorDefinition
from .._model.query_wire import (
    PARTITIONED,
    STATUS_OF,
    QueryFault,
    QueryRequest,
    endpoint_subject,
    fault_of,
    partition_of_key,
)
from .query_routes import QUERY_QUEUE, OwnedRoutes
from .read_your_writes import reach
from .runner import ActorRunner
from .status import ActorStatus

__all__ = ["QueryEndpoints", "answer_budget"]

#: How long a worker that does not run the actor waits before saying so (see above).
NOT_RUNNING_PAUSE = 0.2

_decode_request = msgspec.json.Decoder(QueryRequest).decode


def answer_budget(timeout: float) -> float:
    """How long the worker may take for a caller that waits ``timeout`` seconds: a little
    less, so that its own timeout reply (saying how far the actor is) arrives in time."""
    return max(0.0, timeout - min(0.5, max(0.05, timeout * 0.1)))


class QueryEndpoints:
    """The query endpoints of the actors one process hosts (a worker, or the test kit)."""

    def __init__(
        self,
        nc: NATS,
        runners: Callable[[], Mapping[str, ActorRunner]],
        halted: Callable[[], Mapping[str, BaseException]] = dict,
        serving: Callable[[str], bool] | None = None,
    ) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._runners = runners
        self._halted = halted
        #: Cluster mode: whether this worker may answer for an actor (partition) now.
        self._serving = serving
        self._tg: anyio.abc.TaskGroup | None = None
        self._served: set[str] = set()
        self._definitions: dict[str, ActorDefinition] = {}
        #: The partitions whose query subject follows ``serving`` (cluster mode).
        self._owned: list[str] = []

    async def serve(
        self,
        service: Service,
        definitions: Sequence[ActorDefinition],
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Add the endpoints of ``definitions`` and answer their queries until cancelled."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            for definition in definitions:
                await self.add(service, definition)
            if self._owned:
                routes = OwnedRoutes(self._nc, self._owned, self._may_answer, self._on_msg)
                await routes.update()
                tg.start_soon(routes.run)
            task_status.started()
            await anyio.sleep_forever()

    async def add(self, service: Service, definition: ActorDefinition) -> None:
        """Serve the queries of one more actor (once per name)."""
        if definition.name in self._served:
            return
        self._served.add(definition.name)
        self._definitions[definition.name] = definition
        if definition.partitions is not None and definition.partition is not None:
            await self._add_partitioned(service, definition)
            if self._serving is not None:
                self._owned.append(definition.name)
                return
        await service.add_endpoint(
            name=f"query-{definition.name}",
            subject=endpoint_subject(definition.name),
            queue_group=service.id,
            handler=self._on_request,
            metadata={
                "actor": definition.name,
                "queries": ",".join(sorted(definition.queries)),
                "keyed": "true" if definition.entity is not None else "false",
            },
        )

    async def _add_partitioned(self, service: Service, partition: ActorDefinition) -> None:
        """The actor's own query subject, answering with its partition count."""
        actor = partition.actor
        if actor in self._served or partition.partitions is None:
            return
        self._served.add(actor)
        count = partition.partitions.count
        fault = msgspec.json.encode(
            QueryFault(
                code=PARTITIONED,
                message=f"actor {actor!r} has {count} partitions: ask the key's partition",
                actor=actor,
                details={"partitions": count},
            )
        )

        async def partitioned(request: Request) -> None:
            await request.respond_error(STATUS_OF[PARTITIONED], "partitioned", data=fault)

        await service.add_endpoint(
            name=f"query-{actor}",
            subject=endpoint_subject(actor),
            queue_group=QUERY_QUEUE,
            handler=partitioned,
            metadata={
                "actor": actor,
                "partitions": str(count),
                "queries": ",".join(sorted(partition.queries)),
                "keyed": "true" if partition.entity is not None else "false",
            },
        )

    def _may_answer(self, name: str) -> bool:
        runner = self._runners().get(name)
        return (
            runner is not None
            and runner.status is ActorStatus.RUNNING
            and (self._serving is None or self._serving(name))
        )

    async def _on_msg(self, msg: Msg) -> None:
        await self._on_request(Request(msg))

    async def _on_request(self, request: Request) -> None:
        assert self._tg is not None
        self._tg.start_soon(self._answer, request)

    def _routed_key(self, actor: str, key: str | None) -> str | None:
        """The key to answer for: a partition's key must be in it; a partitioned actor
        that is not an entity takes its key for routing only."""
        definition = self._definitions.get(actor)
        if key is None or definition is None or definition.partition is None:
            return key
        assert definition.partitions is not None
        k = partition_of_key(key, definition.partitions.count)
        if k != definition.partition:
            raise QueryArgumentsError(
                f"key {key!r} is in partition {k} of actor {definition.actor!r}, not in "
                f"{actor!r}: ask {definition.actor!r} with key= (the partition is computed)"
            )
        return key if definition.entity is not None else None

    async def _answer(self, request: Request) -> None:
        started = anyio.current_time()
        tokens = request.subject.split(".")
        actor = tokens[2] if len(tokens) > 2 else ""
        name = tokens[3] if len(tokens) > 3 else ""
        key: str | None = None
        try:
            try:
                body = _decode_request(request.data) if request.data else QueryRequest()
            except msgspec.DecodeError as exc:
                raise QueryArgumentsError(f"the request is not a query: {exc}") from None
            key = body.key
            if not name:
                raise QueryArgumentsError("no query named: ask actorsource.query.<actor>.<query>")
            deadline = started + answer_budget(body.timeout)
            routed = self._routed_key(actor, key)
            runner = await self._running(actor, name, deadline)
            pending = runner.queries.prepare(name, routed, body.args)
            if body.after_seq is not None:
                if isinstance(body.after_seq, bool) or body.after_seq < 1:
                    raise QueryArgumentsError(
                        f"after_seq must be a stream sequence >= 1, got {body.after_seq!r}"
                    )
                await reach(runner, self._js, body.after_seq, deadline=deadline)
            answer = await runner.queries.ask(
                pending, timeout=max(0.0, deadline - anyio.current_time())
            )
        except QueryError as exc:
            exc.actor = exc.actor or actor
            exc.query = exc.query or name
            exc.key = exc.key or key
            await request.respond_error(
                STATUS_OF.get(exc.code, "500"),
                str(exc),
                data=msgspec.json.encode(fault_of(exc)),
            )
            return
        await request.respond(answer)

    async def _running(self, actor: str, name: str, deadline: float) -> ActorRunner:
        """The actor's runner if it runs; else (after a pause) :class:`QueryNotRunningError`."""
        runner = self._runners().get(actor)
        halted = self._halted().get(actor)
        if halted is None and self._may_answer(actor):
            assert runner is not None
            return runner
        if halted is not None:
            why = f"halted: {halted}"
        elif runner is None:
            why = "starting"
        elif runner.status is ActorStatus.RUNNING:
            why = "not owned by this worker now"
        else:
            why = runner.status.value
        if actor not in self._owned:  # others may answer on the same subject: let them first
            await anyio.sleep(min(NOT_RUNNING_PAUSE, max(0.0, deadline - anyio.current_time())))
        raise QueryNotRunningError(
            f"actor {actor!r} is not running ({why}): it cannot answer {name!r} now", actor=actor
        )

"""The worker's NATS micro service: discovery, per-actor status, and snapshots on request.

Every :class:`~actorsource.Worker` registers as one instance of the ``actorsource`` service
(``nats.micro``), so the standard discovery subjects answer for it, for any NATS tooling:
``$SRV.PING|INFO|STATS`` (all services), ``...actorsource`` (every worker),
``...actorsource.<id>`` (one worker). Its INFO metadata names the worker, host, pid and the
actors it hosts. Two endpoints are addressed to the one instance:

- ``actorsource.<id>.status``: a :class:`WorkerReport` (JSON), one :class:`ActorReport` per
  hosted actor: state, journal position, consumer lag, events/s over the last minute, last
  snapshot, dead letters, restarts;
- ``actorsource.<id>.snapshot`` (payload: an actor name): takes a snapshot now and answers
  a :class:`SnapshotReply`, or a service error (``Nats-Service-Error`` headers).

And one endpoint per hosted actor, ``query-<actor>`` on ``actorsource.query.<actor>.>``,
answers its queries (:mod:`.query_service`).

Events/s cost nothing on the hot path: the service samples each runner's ``stats.applied``
once a second and keeps a minute of samples.
"""

from __future__ import annotations

import collections
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Protocol

import anyio
import anyio.abc
import msgspec
import nats.errors
import nats.micro
from nats.aio.client import Client as NATS
from nats.micro.request import Request, ServiceError
from nats.micro.service import Service, ServiceConfig

from .._errors import ActorsourceError
from .._model.actor import ActorDefinition
from .progress import Progress, read_progress
from .query_service import QueryEndpoints
from .runner import ActorRunner

__all__ = [
    "SERVICE_NAME",
    "ActorReport",
    "RateMeter",
    "SnapshotReply",
    "WorkerReport",
    "WorkerService",
]


class Hosting(Protocol):
    """What the service reports on: a worker's actors and how each is doing."""

    @property
    def name(self) -> str: ...
    @property
    def definitions(self) -> Sequence[ActorDefinition]: ...
    @property
    def runners(self) -> Mapping[str, ActorRunner]: ...
    @property
    def restarts(self) -> Mapping[str, int]: ...
    @property
    def halted(self) -> Mapping[str, BaseException]: ...
    def hosted(self) -> list[str]: ...
    def epoch_of(self, name: str) -> int | None: ...
    def query_route(self) -> Callable[[str], bool] | None: ...


#: The nats.micro service name every worker registers under.
SERVICE_NAME = "actorsource"


class ActorReport(msgspec.Struct, frozen=True, kw_only=True):
    """One hosted actor as its worker sees it now.

    ``state`` is the runner's status (``starting``, ``recovering``, ``running``,
    ``stopping``, ``stopped``, ``failed``) or ``halted`` (the worker gave up on it, see
    ``error``). ``lag`` is what the consumer has not delivered yet plus what is delivered
    and buffered, not yet handled (``None`` when the consumer cannot be asked).
    ``snapshot_age`` is in seconds, measured on the worker's clock. ``outbox`` is how many
    committed messages (published events, dead letters) JetStream has not confirmed yet.

    ``caught_up`` says that, at one instant, the consumer had nothing left to deliver and
    the journal held everything it delivered (see :mod:`actorsource._runtime.progress`), as
    ``progress`` details; it is false while that cannot be read. The outbox is not part of
    it. A partitioned actor is reported partition by partition (``actor`` is the
    partition's name, ``orders-p3``; ``of`` the actor's, ``partition`` its number,
    ``partitions`` their count), each with its own ``caught_up`` and ``progress``: the
    actor is caught up when all of them are. In cluster mode a worker reports only what it
    owns, with the ``epoch`` of its lease (an actor without partitions is one partition).
    """

    actor: str
    state: str
    journal_pos: int = 0
    stream: str | None = None
    stream_seq: int | None = None
    lag: int | None = None
    events_per_s: float = 0.0
    applied: int = 0
    snapshot_pos: int | None = None
    snapshot_age: float | None = None
    dead_letters: int | None = None
    outbox: int | None = None
    restarts: int = 0
    error: str | None = None
    caught_up: bool = False
    progress: Progress | None = None
    of: str | None = None
    partition: int | None = None
    partitions: int | None = None
    epoch: int | None = None


class WorkerReport(msgspec.Struct, frozen=True, kw_only=True):
    """What one worker answers on its ``status`` endpoint."""

    id: str
    worker: str
    host: str
    pid: int
    actors: list[ActorReport]


class SnapshotReply(msgspec.Struct, frozen=True, kw_only=True):
    """What a worker answers on its ``snapshot`` endpoint."""

    worker: str
    actor: str
    pos: int


def package_version() -> str:
    """actorsource's version, as the service announces it."""
    try:
        return version("actorsource")
    except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
        return "0.0.0"


class RateMeter:
    """Events per second over a sliding window, from counters sampled now and then.

    A runner's counters start at zero when it is created (``stats.since``), which is the
    first sample of its series; a new runner (after a restart) replaces the old one's
    samples instead of making the rate negative.
    """

    def __init__(self, window: float = 60.0) -> None:
        self.window = window
        self._samples: dict[str, collections.deque[tuple[float, int]]] = {}
        self._owners: dict[str, int] = {}

    def sample(self, name: str, runner: ActorRunner, now: float) -> None:
        """Record ``runner.stats.applied`` at ``now`` (monotonic seconds)."""
        samples = self._series(name, runner)
        samples.append((now, runner.stats.applied))
        # Keep one sample at or before the window's start, so the window stays full.
        while len(samples) > 2 and samples[1][0] <= now - self.window:
            samples.popleft()

    def rate(self, name: str, runner: ActorRunner, now: float) -> float:
        """Events per second from the oldest sample in the window to ``now``."""
        then, applied_then = self._series(name, runner)[0]
        elapsed = now - then
        if elapsed <= 0:
            return 0.0
        return max(0, runner.stats.applied - applied_then) / elapsed

    def _series(self, name: str, runner: ActorRunner) -> collections.deque[tuple[float, int]]:
        if self._owners.get(name) != id(runner):
            self._owners[name] = id(runner)
            self._samples[name] = collections.deque([(runner.stats.since, 0)])
        return self._samples[name]


class WorkerService:
    """The micro service of one worker; :meth:`run` serves until :meth:`close`.

    ``snapshot_timeout`` bounds how long a ``snapshot`` request waits for the actor to reach
    the end of its batch in hand.
    """

    def __init__(
        self,
        worker: Hosting,
        nc: NATS,
        *,
        sample_every: float = 1.0,
        snapshot_timeout: float = 30.0,
    ) -> None:
        self._worker = worker
        self._nc = nc
        self._sample_every = sample_every
        self._snapshot_timeout = snapshot_timeout
        self.meter = RateMeter()
        self.id: str | None = None
        self._scope = anyio.CancelScope()

    def close(self) -> None:
        """Stop serving (idempotent); :meth:`run` returns after unregistering."""
        self._scope.cancel()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Register the service and its endpoints, then sample the counters until closed."""
        worker = self._worker
        service: Service = await nats.micro.add_service(
            self._nc,
            ServiceConfig(
                name=SERVICE_NAME,
                version=package_version(),
                description="actorsource worker: event-sourced actors with SQLite journals",
                metadata={
                    "worker": worker.name,
                    "host": socket.gethostname(),
                    "pid": str(os.getpid()),
                    "actors": ",".join(d.name for d in worker.definitions),
                },
            ),
        )
        try:
            self.id = service.id
            group = service.add_group(name=f"{SERVICE_NAME}.{service.id}")
            await group.add_endpoint(name="status", handler=self._on_status)
            await group.add_endpoint(name="snapshot", handler=self._on_snapshot)
            queries = QueryEndpoints(
                self._nc, lambda: worker.runners, lambda: worker.halted, worker.query_route()
            )
            with self._scope:
                async with anyio.create_task_group() as tg:
                    await tg.start(queries.serve, service, worker.definitions)
                    await self._nc.flush()
                    task_status.started()
                    while True:
                        self._sample()
                        await anyio.sleep(self._sample_every)
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await service.stop()
                except (nats.errors.Error, OSError):
                    pass  # the connection is going away: so are the subscriptions

    def _sample(self) -> None:
        now = time.monotonic()
        for name, runner in list(self._worker.runners.items()):
            self.meter.sample(name, runner, now)

    # -- status ------------------------------------------------------------------------------

    async def report(self) -> WorkerReport:
        """The status of every actor of the worker, now."""
        worker = self._worker
        return WorkerReport(
            id=self.id or "",
            worker=worker.name,
            host=socket.gethostname(),
            pid=os.getpid(),
            actors=[await self._actor_report(d) for d in self._reported()],
        )

    def _reported(self) -> list[ActorDefinition]:
        hosted = set(self._worker.hosted())
        return [d for d in self._worker.definitions if d.name in hosted]

    async def _actor_report(self, definition: ActorDefinition) -> ActorReport:
        worker = self._worker
        name = definition.name
        where: dict[str, Any] = {"epoch": worker.epoch_of(name)}
        if definition.partitions is not None and definition.partition is not None:
            where.update(
                of=definition.actor,
                partition=definition.partition,
                partitions=definition.partitions.count,
            )
        elif where["epoch"] is not None:  # cluster mode: one partition
            where.update(of=definition.actor, partition=0, partitions=1)
        restarts = worker.restarts.get(name, 0)
        halted = worker.halted.get(name)
        error = str(halted) if halted is not None else None
        runner = worker.runners.get(name)
        if runner is None:
            state = "halted" if halted is not None else "starting"
            return ActorReport(actor=name, state=state, restarts=restarts, error=error, **where)
        fields: dict[str, Any] = dict(where)
        try:
            journal = runner.journal
        except ActorsourceError:
            journal = None  # not open (yet, or any more)
        if journal is not None:
            fields["stream_seq"] = journal.stream_positions.get(runner.stream or "")
            # Reads on the journal's own connection: they queue behind a commit, never
            # inside one (a commit is a single call on SQLite's thread).
            snapshots = await journal.snapshots()
            if snapshots:
                fields["snapshot_pos"] = snapshots[0].pos
                fields["snapshot_age"] = max(0.0, time.time() - snapshots[0].created_at)
            fields["dead_letters"] = await journal.dead_letter_count()
            fields["outbox"] = journal.unsent
        progress = await read_progress(runner)
        if progress is not None:
            fields["lag"] = progress.pending + progress.buffered
            fields["caught_up"] = progress.caught_up and halted is None
            fields["progress"] = progress
        return ActorReport(
            actor=name,
            state="halted" if halted is not None else runner.status.value,
            journal_pos=runner.journal_pos,
            stream=runner.stream,
            events_per_s=round(self.meter.rate(name, runner, time.monotonic()), 2),
            applied=runner.stats.applied,
            restarts=restarts,
            error=error,
            **fields,
        )

    async def _on_status(self, request: Request) -> None:
        await request.respond(msgspec.json.encode(await self.report()))

    # -- snapshot ----------------------------------------------------------------------------

    async def _on_snapshot(self, request: Request) -> None:
        worker = self._worker
        name = request.data.decode(errors="replace").strip()
        runner = worker.runners.get(name)
        if runner is None or name in worker.halted:
            raise ServiceError("404", f"worker {worker.name} does not run actor {name!r}")
        try:
            with anyio.fail_after(self._snapshot_timeout):
                pos = await runner.snapshot()
        except TimeoutError:
            raise ServiceError(
                "504",
                f"actor {name!r} did not reach the end of its batch within "
                f"{self._snapshot_timeout} s",
            ) from None
        except ActorsourceError as exc:
            raise ServiceError("409", str(exc)) from exc
        reply = SnapshotReply(worker=worker.name, actor=name, pos=pos)
        await request.respond(msgspec.json.encode(reply))

"""The worker: one NATS connection, many actors, one task group, supervision, clean shutdown."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Literal

import anyio
import anyio.abc
import structlog
from nats.aio.client import Client as NATS

from .._errors import (
    ActorDefinitionError,
    JournalAccessError,
    JournalCorruptError,
    JournalLockedError,
    StreamMismatchError,
)
from .._journal.storage import prepare_data_dir
from .._log import get_logger
from .._mailbox.connection import NatsOptions, connect, require_server_version
from .._model.actor import ActorDefinition, definition_of
from .runner import ActorRunner
from .service import WorkerService
from .status import ActorStats

__all__ = ["FATAL_ERRORS", "Worker", "run_worker"]

#: Errors after which restarting an actor cannot help: it is halted instead. A journal
#: that cannot be written for good (permission denied, not a directory, a read-only file
#: system) is one; a full disk or a busy file is not, and is retried.
FATAL_ERRORS = (JournalLockedError, JournalCorruptError, JournalAccessError, StreamMismatchError)


class Worker:
    """Hosts several actors in one process over one NATS connection.

    Each actor gets its own journal (under ``data_dir``), consumer and task. An actor that
    fails is restarted with exponential backoff (``restart_backoff`` = (first, max) seconds)
    while the others keep running. An actor whose journal is held by another process, is
    corrupt, cannot be written (permission denied, not a directory, a read-only file system),
    or belongs to another incarnation of its stream is halted instead (restarting
    cannot help); :meth:`run` raises only when every actor has halted. :meth:`stop` makes every actor finish its batch in hand,
    write a final snapshot and close.

    While it runs, the worker answers NATS micro service discovery as an instance of the
    ``actorsource`` service, with ``status`` and ``snapshot`` endpoints (see
    ``actorsource status`` and ``actorsource snapshots take``).
    """

    def __init__(
        self,
        actors: Sequence[type],
        *,
        nats: NatsOptions | None = None,
        data_dir: str | os.PathLike[str] = "data",
        restart_backoff: tuple[float, float] = (0.5, 30.0),
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        name: str | None = None,
        tracing: bool = False,
    ) -> None:
        # A partitioned actor runs as one actor per partition (``orders-p0`` ...).
        definitions = [unit for a in actors for unit in definition_of(a).units()]
        names = [d.name for d in definitions]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ActorDefinitionError(f"a worker cannot host two actors named {duplicates}")
        self.definitions: tuple[ActorDefinition, ...] = tuple(definitions)
        self.nats_options = nats or NatsOptions()
        self.data_dir = Path(data_dir)
        self.name = name or f"worker-{os.getpid()}"
        self._backoff = restart_backoff
        self._synchronous = synchronous
        #: Continue the trace context of received messages (the otel extra; see
        #: :mod:`actorsource._runtime.tracing`).
        self.tracing = tracing
        self.log = get_logger(worker=self.name)
        self.runners: dict[str, ActorRunner] = {}
        self.restarts: dict[str, int] = dict.fromkeys(names, 0)
        self.halted: dict[str, BaseException] = {}
        # Per actor: the counters of its runners that have ended, summed, and the last of
        # them; replaced in one assignment, so that a reader in another thread (a metrics
        # scrape) never counts a runner twice.
        self._ended: dict[str, tuple[ActorStats, ActorRunner | None]] = {}
        self.nc: NATS | None = None
        #: The worker's micro service (discovery, ``actorsource status``), while running.
        self.service: WorkerService | None = None
        self._stopping = False
        self._sleep_scopes: set[anyio.CancelScope] = set()
        self.ready = anyio.Event()
        self._ready_names: set[str] = set()

    def stop(self) -> None:
        """Ask every actor to stop gracefully; :meth:`run` returns once they have."""
        self._stopping = True
        for runner in list(self.runners.values()):
            runner.stop()
        for scope in list(self._sleep_scopes):
            scope.cancel()

    async def _reset_mailboxes(self) -> None:
        for runner in list(self.runners.values()):
            if runner.mailbox is not None:
                runner.mailbox.reset_credit()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Connect, host every actor until :meth:`stop`, then close the connection.

        A data directory that cannot be created or written fails the start at once
        (:class:`JournalAccessError`), before the connection is attempted.
        """
        prepare_data_dir(self.data_dir)
        nc: NATS | None = None
        # Waiting for the server (NatsOptions.wait_for_server) ends early on stop().
        with anyio.CancelScope() as waiting:
            self._sleep_scopes.add(waiting)
            try:
                if not self._stopping:
                    nc = await connect(
                        replace(self.nats_options, name=self.nats_options.name or self.name),
                        log=self.log,
                        on_reconnect=self._reset_mailboxes,
                    )
            finally:
                self._sleep_scopes.discard(waiting)
        if nc is None:
            return  # stopped before a server answered
        self.nc = nc
        try:
            await self._prepare(nc)
            async with anyio.create_task_group() as tg:
                service = WorkerService(self, nc)
                self.service = service
                await tg.start(service.run)
                await self._host(tg, nc, service)
                task_status.started()
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await nc.drain()
                except Exception:
                    await nc.close()

    async def _host(self, tg: anyio.abc.TaskGroup, nc: NATS, service: WorkerService) -> None:
        """Start hosting the actors in ``tg``: one supervised runner each."""
        remaining = len(self.definitions)

        async def supervise(definition: ActorDefinition) -> None:
            nonlocal remaining
            try:
                await self._supervise(definition, nc)
            finally:
                remaining -= 1
                if remaining == 0:
                    service.close()  # answer status requests until the last actor stops

        for definition in self.definitions:
            tg.start_soon(supervise, definition)

    def totals(self, name: str) -> ActorStats:
        """The counters of actor ``name`` since the worker started: those of its runners that
        have ended plus those of the current one. Safe to call from another thread."""
        ended, last = self._ended.get(name, (None, None))
        runner = self.runners.get(name)
        if runner is not None and runner is not last:
            return runner.stats if ended is None else ended.plus(runner.stats)
        return ended if ended is not None else ActorStats()

    def _retire(self, name: str, runner: ActorRunner) -> None:
        """Fold the counters of ``runner``, which has ended, into the actor's totals."""
        ended, last = self._ended.get(name, (None, None))
        if last is runner:
            return
        self._ended[name] = (runner.stats if ended is None else ended.plus(runner.stats), runner)

    def hosted(self) -> list[str]:
        """The names of the actors (partitions) this worker reports on."""
        return [d.name for d in self.definitions]

    def epoch_of(self, name: str) -> int | None:
        """The epoch this worker owns ``name`` under (None: not in cluster mode)."""
        return None

    def query_route(self) -> Callable[[str], bool] | None:
        """Whether this worker may answer queries for an actor (partition) now, where that
        changes (cluster mode: while it owns it); None: for all of its actors, always."""
        return None

    async def _prepare(self, nc: NATS) -> None:
        """Checks and set-up once connected, before any actor starts."""
        if any(d.partition is not None for d in self.definitions):
            require_server_version(nc, (2, 10), "a partitioned actor (its stream transform)")

    def _on_ready(self, runner: ActorRunner) -> None:
        self._ready_names.add(runner.name)
        if len(self._ready_names) == len(self.definitions):
            self.ready.set()

    async def _supervise(self, definition: ActorDefinition, nc: NATS) -> None:
        first, most = self._backoff
        delay = first
        log = self.log.bind(actor=definition.name)
        while not self._stopping:
            started = time.monotonic()
            try:
                runner = ActorRunner(
                    definition,
                    nc,
                    data_dir=self.data_dir,
                    synchronous=self._synchronous,
                    log=log,
                    on_ready=self._on_ready,
                    tracing=self.tracing,
                )
                self.runners[definition.name] = runner
                try:
                    await runner.run()
                finally:
                    self._retire(definition.name, runner)
                return
            except FATAL_ERRORS as exc:
                # Restarting cannot help (another owner, another history, a broken file):
                # halt this actor, keep the others, and say why.
                self.halted[definition.name] = exc
                log.error("actor halted", error=str(exc), reason=type(exc).__name__)
                if len(self.halted) == len(self.definitions):
                    raise
                return
            except Exception as exc:
                if time.monotonic() - started > 60:
                    delay = first
                self.restarts[definition.name] += 1
                log.error(
                    "actor failed; restarting",
                    error=repr(exc),
                    restart=self.restarts[definition.name],
                    backoff=round(delay, 2),
                )
            with anyio.CancelScope() as scope:
                self._sleep_scopes.add(scope)
                try:
                    await anyio.sleep(delay)
                finally:
                    self._sleep_scopes.discard(scope)
            delay = min(delay * 2, most)


async def run_worker(worker: Worker, *, log: structlog.stdlib.BoundLogger | None = None) -> None:
    """Run ``worker`` until SIGINT or SIGTERM, then stop it gracefully."""
    log = log or worker.log
    async with anyio.create_task_group() as tg:

        async def watch_signals() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    log.info("stopping on signal", signal=signal.Signals(signum).name)
                    worker.stop()
                    return

        tg.start_soon(watch_signals)
        await worker.run()
        tg.cancel_scope.cancel()

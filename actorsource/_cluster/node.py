"""A worker in cluster mode: it runs the partitions the cluster assigns it, each as a fenced
owner.

Every actor is split into partitions: ``partitions=P`` gives P (``orders-p0`` ...), an actor
without it is one (its own name), so two workers never run the same singleton. For each
partition the worker keeps one task, :meth:`ClusterWorker._own`, whose life is::

    wait until the assignment gives it to this worker
    acquire its lease (held by another: wait until it is freed) -> the epoch
    run its runner with a PartitionGuard:
        epoch marker + import of the journal subject's tail, consumer <partition>-e<epoch>
        (earlier epochs' deleted), every batch appended to the journal subject before the
        SQLite commit; renew the lease every L/3 meanwhile; a checkpoint every N events
    until: assigned elsewhere or stopping -> graceful stop, a checkpoint, release the lease
           fenced or lease lost          -> drop it (nothing more committed or acked)
           failed                        -> release, back off, start again

The assignment (:mod:`.assignment`) is computed on every worker over the live members of
the members bucket (:mod:`.membership`): a bounded-load rendezvous per actor, with the
actor's name mixed into the members' names so that singletons spread over the workers;
:mod:`.follower` keeps it up to date and wakes the partitions' tasks. It only says what a
worker *should* own; the lease decides who may start, and the fence who may commit. A new
owner restores a checkpoint first if its journal file needs one (:mod:`.restore`); an
owner checkpoints and compacts the subject (:mod:`.checkpointer`).

A hand-off is prompt: the worker watches the lease bucket (:meth:`Leases.freed`), so a
partition it wants but another holds is acquired the moment that holder releases it (a
graceful stop, or the holder's own assignment moving it away) or its lease runs out, not
at a retry interval. A graceful stop releases every lease before leaving the members
bucket, so the others take over at once.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Callable, Sequence
from contextlib import aclosing
from functools import partial
from typing import Any

import anyio
import anyio.abc
import nats.errors
from nats.aio.client import Client as NATS

from .._errors import ClusterError, Fenced, LeaseHeld, LeaseLost
from .._mailbox.connection import require_server_version
from .._model.actor import ActorDefinition, definition_of
from .._runtime.binding import ensure_dlq_stream, mailbox_for
from .._runtime.runner import ActorRunner
from .._runtime.service import WorkerService
from .._runtime.worker import FATAL_ERRORS, Worker
from .checkpointer import Checkpointer
from .checkpoints import CheckpointStore, checkpoint_store
from .fence import JournalFence, ensure_journal_stream
from .follower import AssignmentFollower, PartitionState
from .guard import PartitionGuard
from .lease import Lease, Leases
from .membership import Membership
from .unavailable import SETUP_PATIENCE, patiently

__all__ = ["ClusterWorker", "PartitionState", "default_worker_id"]


def default_worker_id() -> str:
    """``<host>-<pid>``, with what a KV key may not hold replaced by ``-``."""
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}"


class ClusterWorker(Worker):
    """A :class:`~actorsource.Worker` that shares its actors' partitions with the other
    workers of a NATS cluster (see the module's docstring).

    ``replicas``: of the streams, buckets and journal subjects it creates (3 on a 3-node
    cluster). ``lease_time``: L, the lease (and membership) TTL; a dead worker's partitions
    are taken over after about L. ``join_delay`` and ``hold``: see
    :class:`~actorsource._cluster.assignment.MemberSet`. ``checkpoint_every``: admitted events
    between an owner's checkpoints (0: none), see :mod:`.checkpointer`.
    """

    def __init__(
        self,
        actors: Sequence[type],
        *,
        replicas: int = 1,
        lease_time: float = 10.0,
        join_delay: float = 2.0,
        hold: float = 1.0,
        name: str | None = None,
        checkpoint_every: int = 50_000,
        **kwargs: Any,
    ) -> None:
        super().__init__(actors, name=name or default_worker_id(), **kwargs)
        self.actor_definitions = tuple(definition_of(a) for a in actors)
        self.replicas = replicas
        self.lease_time = lease_time
        self.partitions: dict[str, PartitionState] = {
            d.name: PartitionState(d) for d in self.definitions
        }
        self._follower = AssignmentFollower(
            self.name,
            self.actor_definitions,
            self.partitions,
            join_delay=join_delay,
            hold=hold,
            lease_time=lease_time,
            log=self.log,
            stopping=lambda: self._stopping,
        )
        self._leases: Leases | None = None
        self.checkpoint_every = checkpoint_every
        self._checkpoints: Any = None  # the checkpoints bucket (an ObjectStore)

    # -- what the worker hosts ---------------------------------------------------------------

    @property
    def members(self) -> frozenset[str]:
        """The members the assignment is currently computed over."""
        return self._follower.members

    def hosted(self) -> list[str]:
        """The partitions this worker runs now (owned: a runner exists for them)."""
        return [name for name in self.runners if self.partitions[name].epoch]

    def epoch_of(self, name: str) -> int | None:
        """The epoch this worker owns ``name`` under (0 while it does not)."""
        state = self.partitions.get(name)
        return state.epoch if state is not None else None

    def query_route(self) -> Callable[[str], bool]:
        """Queries are answered only for what this worker owns under a lease still valid:
        a partition handed back, fenced or whose lease lapsed stops answering first."""
        return self._may_answer

    def _may_answer(self, name: str) -> bool:
        state = self.partitions.get(name)
        return state is not None and state.lease is not None and state.lease.valid()

    async def _prepare(self, nc: NATS) -> None:
        # The members bucket's limit markers (watchers see a dead worker go) need 2.11.
        require_server_version(nc, (2, 11), "cluster mode (KV limit markers)")
        # Other workers starting now create the same streams and buckets: asked again
        # while a just-created one has no leader yet or this server has not learnt of it.
        await patiently(
            partial(self._set_up, nc),
            patience=SETUP_PATIENCE,
            log=self.log,
            what="set-up",
            stopping=lambda: self._stopping,
        )

    async def _set_up(self, nc: NATS) -> None:
        """The journal stream, the buckets and each actor's streams, created if missing."""
        js = nc.jetstream()
        await ensure_journal_stream(js, replicas=self.replicas)
        self._leases = Leases(js, ttl=self.lease_time, replicas=self.replicas)
        await self._leases.kv()
        self._checkpoints = await checkpoint_store(js, replicas=self.replicas)
        # Each actor's streams once, here, rather than by its partitions' runners all at
        # once (concurrent creations of one replicated stream wait out API timeouts).
        for definition in self.actor_definitions:
            unit = definition.units()[0]
            await ensure_dlq_stream(js, unit.errors, unit.name, replicas=self.replicas)
            mailbox = mailbox_for(unit, nc, ack_wait=unit.ack_wait, replicas=self.replicas)
            await mailbox.resolve_stream()

    def stop(self) -> None:
        super().stop()
        self._follower.wake()

    async def _host(self, tg: anyio.abc.TaskGroup, nc: NATS, service: WorkerService) -> None:
        """Join the members, follow the assignment, and own what it gives this worker."""
        membership = Membership(
            nc.jetstream(),
            self.name,
            ttl=self.lease_time,
            replicas=self.replicas,
            stopping=lambda: self._stopping,
        )
        await tg.start(self._cluster, membership, nc, service)

    async def _cluster(
        self,
        membership: Membership,
        nc: NATS,
        service: WorkerService,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            async with anyio.create_task_group() as around:
                # Restarted after a crash under the same id: its old key lives up to L.
                await around.start(partial(membership.run, patience=self.lease_time * 1.5))
                around.start_soon(self._follower.follow, membership)
                around.start_soon(self._follow_releases)
                self.ready.set()
                task_status.started()
                async with anyio.create_task_group() as owners:
                    for unit in self.definitions:
                        owners.start_soon(self._own, unit, nc)
                around.cancel_scope.cancel()  # every partition is stopped and released: leave
        finally:
            service.close()

    # -- the leases' ends --------------------------------------------------------------------

    async def _follow_releases(self) -> None:
        """Count each lease's ends into its partition's ``freed`` and wake the waiters.
        A watch that fails is started again (the waiters retry meanwhile anyway)."""
        assert self._leases is not None
        while True:
            try:
                async with aclosing(self._leases.freed()) as freed:
                    async for key in freed:
                        state = self.partitions.get(key)
                        if state is not None:
                            state.freed += 1
                            self._follower.wake()
            except (nats.errors.Error, OSError) as exc:
                self.log.warning("lease watch failed; watching again", error=repr(exc))
            await anyio.sleep(min(1.0, self.lease_time / 4))

    # -- owning one partition ----------------------------------------------------------------

    async def _own(self, unit: ActorDefinition, nc: NATS) -> None:
        state = self.partitions[unit.name]
        log = self.log.bind(actor=unit.name)
        first, most = self._backoff
        delay = first
        while not self._stopping:
            await self._follower.until(lambda: state.wanted or self._stopping)
            if self._stopping:
                return
            assert self._leases is not None
            freed = state.freed
            try:
                lease = await self._leases.acquire(unit.name, self.name)
            except LeaseHeld:
                # Its owner is alive, or its lease has not run out yet: try again when the
                # watch sees it freed (or after a while, should the watch miss it).
                with anyio.move_on_after(self.lease_time / 3):
                    await self._follower.until(
                        lambda seen=freed: state.freed != seen or not state.wanted or self._stopping
                    )
                continue
            except (nats.errors.Error, OSError, ClusterError) as exc:
                log.warning("cannot acquire the lease; retrying", error=repr(exc))
                await anyio.sleep(delay)
                continue
            outcome = await self._run_owned(unit, nc, lease, state, log)
            if outcome == "fenced":
                state.fenced += 1
            elif outcome == "failed":
                self.restarts[unit.name] += 1
                with anyio.move_on_after(delay):
                    await self._follower.until(lambda: self._stopping)
                delay = min(delay * 2, most)
                continue
            elif outcome == "halted":
                return
            delay = first

    async def _run_owned(
        self,
        unit: ActorDefinition,
        nc: NATS,
        lease: Lease,
        state: PartitionState,
        log: Any,
    ) -> str:
        """Run the partition under ``lease`` until it ends; how it ended: ``released``
        (stopped on purpose), ``fenced``, ``failed`` or ``halted``."""
        js = nc.jetstream()
        store = CheckpointStore(js, self._checkpoints, unit.name)
        fence = JournalFence(js, unit.actor, unit.partition or 0)
        guard = PartitionGuard(lease, fence, checkpoints=store, log=log)
        runner = ActorRunner(
            unit,
            nc,
            data_dir=self.data_dir,
            synchronous=self._synchronous,
            log=log.bind(epoch=lease.epoch),
            guard=guard,
            replicas=self.replicas,
            tracing=self.tracing,
        )
        every = self.checkpoint_every
        checkpointer = Checkpointer(guard, runner.journal_path, every=every, log=log)
        state.epoch, state.lease, state.owned_since = lease.epoch, lease, time.time()
        self.runners[unit.name] = runner
        log.info("partition owned", epoch=lease.epoch)
        outcome = "released"
        lost: LeaseLost | None = None
        try:
            async with anyio.create_task_group() as tg:

                async def keep() -> None:
                    nonlocal lost
                    try:
                        await lease.keep()
                    except LeaseLost as exc:
                        lost = exc
                        tg.cancel_scope.cancel()  # stop at once: it may not commit any more

                async def give_up_when_unwanted() -> None:
                    await self._follower.until(lambda: not state.wanted or self._stopping)
                    log.info("partition handed back", epoch=lease.epoch)
                    runner.stop()

                tg.start_soon(keep)
                tg.start_soon(give_up_when_unwanted)
                tg.start_soon(checkpointer.run)
                try:
                    await runner.run()
                except (Fenced, LeaseLost) as exc:
                    outcome = "fenced"
                    reason = "fenced" if isinstance(exc, Fenced) else "lease lost"
                    log.warning(
                        "partition dropped", epoch=lease.epoch, reason=reason, error=str(exc)
                    )
                except FATAL_ERRORS as exc:
                    outcome = "halted"
                    self.halted[unit.name] = exc
                    log.error("partition halted", error=str(exc), reason=type(exc).__name__)
                except Exception as exc:
                    outcome = "failed"
                    log.error("partition failed; restarting", error=repr(exc))
                tg.cancel_scope.cancel()
            if lost is not None and outcome != "fenced":
                outcome = "fenced"
                log.warning(
                    "partition dropped", epoch=lease.epoch, reason="lease lost", error=str(lost)
                )
            if outcome == "released" and not lease.valid():
                # Stopped on purpose, but its lease lapsed meanwhile (the worker was paused
                # past it): another worker may own the partition now. Nothing was committed
                # (the fence refuses it); nothing is checkpointed or released either.
                outcome = "fenced"
                log.warning("partition dropped", epoch=lease.epoch, reason="lease lapsed")
            if outcome == "released":
                state.epoch, state.lease = 0, None  # no more queries for it here
                with anyio.move_on_after(max(30.0, self.lease_time)):
                    await checkpointer.final()  # then the lease goes to the next owner
        finally:
            state.epoch, state.lease = 0, None
            self._retire(unit.name, runner)
            if self.runners.get(unit.name) is runner:
                del self.runners[unit.name]
            if outcome != "fenced":
                with anyio.CancelScope(shield=True), anyio.move_on_after(2.0):
                    try:
                        await lease.release()
                    except (nats.errors.Error, OSError) as exc:
                        log.warning("cannot release the lease", error=repr(exc))
        return outcome

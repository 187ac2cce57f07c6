"""A cluster worker's partitions: what it knows of each, and which the assignment gives it.

:class:`PartitionState` is the worker's record of one partition (for ``status`` and
tests). :class:`AssignmentFollower` keeps each record's ``wanted`` in step with the
assignment (:mod:`.assignment`) over the live members that a watch of the members bucket
(:mod:`.membership`) reports, and wakes the worker's tasks that wait on a change (a
partition to take, or to hand back). A watch that fails (JetStream cannot answer: an
election, a server restarting) is started again after a short delay; the assignment stays
computed over the members last seen meanwhile.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import aclosing
from typing import Any

import anyio
import nats.errors

from .._model.actor import ActorDefinition
from .assignment import MemberSet, assign
from .lease import Lease
from .membership import Membership

__all__ = ["AssignmentFollower", "PartitionState"]


class PartitionState:
    """What this worker knows of one partition (for ``status`` and tests)."""

    __slots__ = (
        "actor",
        "epoch",
        "fenced",
        "freed",
        "lease",
        "name",
        "owned_since",
        "partition",
        "wanted",
    )

    def __init__(self, unit: ActorDefinition) -> None:
        self.name = unit.name
        self.actor = unit.actor
        self.partition = unit.partition or 0
        #: Whether the assignment gives it to this worker.
        self.wanted = False
        #: The epoch this worker owns it under (0 while it does not).
        self.epoch = 0
        self.lease: Lease | None = None
        self.owned_since = 0.0
        #: How many times this worker's ownership ended fenced (or its lease lost).
        self.fenced = 0
        #: How many times this worker saw the lease end (released or run out), anyone's.
        self.freed = 0


class AssignmentFollower:
    """Marks the partitions the assignment gives worker ``name`` as ``wanted``, and wakes
    whoever waits in :meth:`until` whenever that (or anything else :meth:`wake` s it)
    changes.

    ``definitions``: the worker's actors; ``partitions``: its records, by partition name.
    ``join_delay`` and ``hold``: see :class:`~actorsource._cluster.assignment.MemberSet`.
    ``lease_time``: L; waiters look again every L/4 whatever happens.
    """

    def __init__(
        self,
        name: str,
        definitions: Sequence[ActorDefinition],
        partitions: Mapping[str, PartitionState],
        *,
        join_delay: float,
        hold: float,
        lease_time: float,
        log: Any,
        stopping: Callable[[], bool],
    ) -> None:
        self.name = name
        self._definitions = definitions
        self._partitions = partitions
        self._join_delay = join_delay
        self._hold = hold
        self._lease_time = lease_time
        self._log = log
        self._stopping = stopping
        #: The members the assignment is currently computed over.
        self.members: frozenset[str] = frozenset()
        self._changed = anyio.Event()

    def assign(self, members: frozenset[str]) -> None:
        """Compute the assignment over ``members``; wake the waiters if this worker's
        share changed."""
        wanted: set[str] = set()
        for d in self._definitions:
            count = d.partitions.count if d.partitions is not None else 1
            salted = {f"{d.name}/{m}": m for m in members}
            for k, who in assign(count, salted).items():
                if salted[who] == self.name:
                    wanted.add(d.units()[k].name if d.partitions is not None else d.name)
        changed = False
        for name, state in self._partitions.items():
            if state.wanted != (name in wanted):
                state.wanted = name in wanted
                changed = True
        self.members = members
        if changed:
            self._log.info(
                "assignment", members=sorted(members), mine=sorted(wanted), count=len(wanted)
            )
            self.wake()

    def wake(self) -> None:
        """Wake every task waiting in :meth:`until`, to look at its condition again."""
        self._changed.set()
        self._changed = anyio.Event()

    async def until(self, condition: Callable[..., bool]) -> None:
        """Return once ``condition()`` holds (looked at on every wake, and every L/4)."""
        while not condition():
            changed = self._changed
            with anyio.move_on_after(self._lease_time / 4):
                await changed.wait()

    async def follow(self, membership: Membership) -> None:
        """Follow the live members of ``membership`` until the worker stops. A watch that
        fails is started again (after L/4, at most 1 s); meanwhile the members last seen
        stay the ones the assignment is computed over."""
        members = MemberSet(join_delay=self._join_delay, hold=self._hold)
        live: set[str] = set()
        seen = anyio.Event()

        async def watch() -> None:
            nonlocal live, seen
            while True:
                try:
                    async with aclosing(membership.watch()) as updates:
                        async for now_live in updates:
                            live = set(now_live)
                            seen.set()
                            seen = anyio.Event()
                except (nats.errors.Error, OSError) as exc:
                    self._log.warning("members watch failed; watching again", error=repr(exc))
                await anyio.sleep(min(1.0, self._lease_time / 4))

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            while not self._stopping():
                now = time.monotonic()
                self.assign(members.observe(live, now))
                at = members.next_change_at(now)
                wait = math.inf if at is None else max(0.0, at - now) + 0.01
                waiting = seen
                with anyio.move_on_after(min(wait, self._lease_time)):
                    await waiting.wait()
            tg.cancel_scope.cancel()

"""How far apart the snapshots of a large state must be, from what the last one cost.

A snapshot of a large state takes the actor's time: encoding it on the event loop, then
committing megabytes while later batches wait for the journal. :class:`SnapshotSpacing`
keeps that within the policy's ``budget``: after a snapshot that cost ``c`` seconds, the next
one is not taken sooner than ``c / budget`` seconds after it, however many events came
meanwhile (the policy's ``every`` stays the least spacing), unless ``STRETCH_LIMIT * every``
events did, so that replay after a crash stays bounded.

The time between two snapshots is wall-clock time: the actor's busy time when it is
saturated, the only case where snapshots take throughput away; an actor that has idle time
spends it there. A snapshot under ``SMALL_STATE_BYTES`` (or a policy without a budget) is
never spaced out: small states snapshot exactly by ``every`` and ``interval``.
"""

from __future__ import annotations

from .._model.snapshots import SMALL_STATE_BYTES, STRETCH_LIMIT, SnapshotPolicy

__all__ = ["SnapshotSpacing"]


class SnapshotSpacing:
    """The least time between two snapshots, from the measured cost of the last one."""

    def __init__(self, policy: SnapshotPolicy) -> None:
        self._budget = policy.budget
        #: Events after which a snapshot is due whatever it costs (None: no such bound).
        self.limit = STRETCH_LIMIT * policy.every if policy.every is not None else None
        #: The last snapshot's cost in seconds: encoding it, committing it.
        self.encode = 0.0
        self.commit = 0.0
        self.size = 0
        #: Seconds from one snapshot to the next, at least (0: as the policy says).
        self.gap = 0.0

    def encoded(self, seconds: float, size: int) -> None:
        """A snapshot of ``size`` bytes took ``seconds`` to encode (its commit is to come)."""
        self.encode, self.size = seconds, size
        self._update()

    def committed(self, seconds: float) -> None:
        """The last snapshot encoded took ``seconds`` from being handed over to committed."""
        self.commit = seconds
        self._update()

    def allows(self, events_since: int, seconds_since: float) -> bool:
        """Tell whether a snapshot the policy finds due, ``events_since`` events and
        ``seconds_since`` seconds after the last one started, may be taken now."""
        if seconds_since >= self.gap:
            return True
        return self.limit is not None and events_since >= self.limit

    def _update(self) -> None:
        if self._budget is None or self.size < SMALL_STATE_BYTES:
            self.gap = 0.0
        else:
            self.gap = (self.encode + self.commit) / self._budget

"""The decorators that turn a class into an actor, and the definition the runtime hosts.

An actor is a plain class: its instance *is* the state, its ``@handles`` methods are the
fold. Everything the runtime needs is checked when the class is defined, so a mistake
(no subjects, two handlers for one event type, a handler with the wrong signature) raises
:class:`ActorDefinitionError` at import time with the method's name and the likely fix.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from .._errors import ActorDefinitionError
from .events import EventCodec
from .handlers import (
    Handler,
    Timer,
    check_constructible,
    collect_handlers,
    collect_timers,
    every,
    handles,
)
from .keys import EntitySpec
from .partitions import Partitioning, partition_name, partitioning_for
from .policy import ErrorPolicy
from .publishes import Publishes, declared_publishes
from .query import Query, collect_queries
from .snapshots import SnapshotPolicy, StateCodec
from .subjects import validate_name, validate_subject

__all__ = [
    "ActorDefinition",
    "Handler",
    "Timer",
    "actor",
    "definition_of",
    "every",
    "handles",
]

C = TypeVar("C", bound=type)

_DEFINITION_ATTR = "__actorsource_actor__"

#: The most deliveries one commit job gathers (the committer's group commit).
MERGE_LIMIT = 1_024


def unacked_capacity(max_batch: int) -> int:
    """How many deliveries a runner's pipeline holds unacknowledged at most, the consumer's
    ``max_ack_pending``: the mailbox's buffer and pulls outstanding (2 x ``max_batch``), the
    batch being handled, and two commit jobs (the one committing, the one gathering
    behind it). The server then never holds back a delivery the pipeline has room for: at
    1,000 it did, the commit jobs stayed small, and each partition of a fenced actor paid
    its append and its transaction for fewer events (2-3 µs more per event,
    ``bench/fence_pairs.py``)."""
    return 3 * max_batch + 2 * MERGE_LIMIT


@dataclass(frozen=True)
class ActorDefinition:
    """Everything the runtime needs to host an actor class; built by :func:`actor`."""

    name: str
    cls: type
    subjects: tuple[str, ...]
    stream: str | None
    stream_subjects: tuple[str, ...] | None
    version: int
    snapshots: SnapshotPolicy
    handlers: Mapping[str, Handler]
    codec: EventCodec
    state_codec: StateCodec
    ack_wait: float
    max_batch: int
    max_ack_pending: int
    errors: ErrorPolicy
    timers: tuple[Timer, ...] = ()
    #: How an entity actor keys its entities (None: a singleton actor, one state).
    entity: EntitySpec | None = None
    #: The ``@query`` methods by name (answered over NATS, see :mod:`.query`).
    queries: Mapping[str, Query] = field(default_factory=dict)
    #: How a partitioned actor splits its stream (None: one partition, the whole stream).
    partitions: Partitioning | None = None
    #: Which partition this definition runs (see :meth:`for_partition`); None: all of them.
    partition: int | None = None
    #: The actor's own name, which a partition's ``name`` (``orders-p3``) is derived from.
    actor: str = ""
    #: What its handlers publish, by subject pattern (None: not declared, not checked).
    publishes: Publishes | None = None

    def __post_init__(self) -> None:
        if not self.actor:
            object.__setattr__(self, "actor", self.name)

    def new_state(self) -> Any:
        """A fresh, empty instance of the actor class (the fold's initial value)."""
        return self.cls()

    @property
    def stream_name(self) -> str:
        """The stream's name when the actor creates it: ``stream=``, else the upper-cased
        actor name (a partition's is its actor's)."""
        return self.stream or self.actor.upper().replace("-", "_")

    def for_partition(self, partition: int) -> ActorDefinition:
        """The definition partition ``partition`` of a partitioned actor runs as: named
        ``<actor>-p<k>`` (its consumer, journal file, message ids), reading only its
        partition's stored subjects of the actor's own stream."""
        if self.partitions is None:
            raise ActorDefinitionError(f"actor {self.name!r} is not partitioned")
        if self.partition is not None:
            raise ActorDefinitionError(f"{self.name!r} is already partition {self.partition}")
        return replace(
            self,
            name=partition_name(self.name, partition),
            subjects=(self.partitions.filter_subject(partition),),
            stream=self.stream_name,
            partition=partition,
        )

    def units(self) -> tuple[ActorDefinition, ...]:
        """What a worker runs for this actor: one definition per partition, or itself."""
        if self.partitions is None or self.partition is not None:
            return (self,)
        return tuple(self.for_partition(k) for k in range(self.partitions.count))


def actor(
    name: str,
    *,
    subjects: Sequence[str],
    stream: str | None = None,
    stream_subjects: Sequence[str] | None = None,
    version: int = 1,
    snapshot_every: int | None = 1_000,
    snapshot_interval: float | None = None,
    keep_snapshots: int = 3,
    snapshot_budget: float | None = 0.1,
    ack_wait: float = 30.0,
    max_batch: int = 256,
    errors: ErrorPolicy | None = None,
    snapshots: SnapshotPolicy | None = None,
    partitions: int | None = None,
    partition_token: int | None = None,
    publishes: Mapping[str, Sequence[type]] | None = None,
) -> Callable[[C], C]:
    """Make a class an event-sourced actor.

    ``name`` names the durable consumer and the journal file; ``subjects`` (NATS wildcards
    allowed) are the consumer's filter subjects; ``stream`` names the JetStream stream that
    stores them (default: found by subject, else created as the upper-cased actor name);
    ``stream_subjects`` are the subjects that stream is created with when the actor is the
    first to need it (default: the actor's own), e.g. ``["shop.>"]`` for a stream that
    several services share.
    ``version`` is the model version: bump it when handlers or the state shape change, and
    recovery ignores older snapshots and rebuilds from the journal. ``snapshot_every``,
    ``snapshot_interval``, ``keep_snapshots`` and ``snapshot_budget`` (the share of time a
    large state's snapshots may take) form the :class:`SnapshotPolicy`; or pass one whole
    as ``snapshots=SnapshotPolicy(...)`` (not both).
    ``ack_wait`` is how long JetStream waits for an ack before redelivering; ``max_batch``
    bounds one fetch and one journal transaction (the consumer lets the runner hold
    unacknowledged what its pipeline has room for, :func:`unacked_capacity`). ``errors`` is
    the :class:`ErrorPolicy` for bad input and failing handlers (retries, timeouts, dead
    letters).
    ``partitions=P`` splits the actor into P partitions by one subject token (the first
    ``*`` of its one subject filter, or ``partition_token=N``): its stream is its own,
    created with a subject transform that stores the partition in the subject; P is fixed
    for the stream's life (see :mod:`actorsource._model.partitions`).
    ``publishes={"shop.payments.*": [PaymentCaptured, ...]}`` declares the event types its
    handlers publish to each subject pattern: listed by ``actorsource asyncapi``, and
    checked once declared (see :mod:`actorsource._model.publishes`).
    """
    validate_name(name)
    if isinstance(subjects, str):
        raise ActorDefinitionError(
            f"actor {name!r}: subjects must be a list of subjects, e.g. subjects=[{subjects!r}]"
        )
    subject_list = tuple(subjects)
    if not subject_list:
        raise ActorDefinitionError(f"actor {name!r} has no subjects: pass subjects=['orders.>']")
    for subject in subject_list:
        validate_subject(subject)
    if len(set(subject_list)) != len(subject_list):
        raise ActorDefinitionError(f"actor {name!r} lists a subject twice: {list(subject_list)}")
    if stream is not None:
        validate_name(stream, what="stream name")
    stored = _stream_subjects(name, stream, stream_subjects)
    partitioning = partitioning_for(name, subject_list, partitions, partition_token)
    if partitioning is not None and stored is not None:
        raise ActorDefinitionError(
            f"actor {name!r}: a partitioned actor's stream is its own and stores its subject "
            "filter only: leave stream_subjects out"
        )
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ActorDefinitionError(f"actor {name!r}: version must be an int >= 1, got {version!r}")
    if not ack_wait > 0:
        raise ActorDefinitionError(f"actor {name!r}: ack_wait must be > 0 seconds")
    if not isinstance(max_batch, int) or not 1 <= max_batch <= 10_000:
        raise ActorDefinitionError(f"actor {name!r}: max_batch must be an int in 1..10000")
    policy = _snapshot_policy(
        name, snapshots, (snapshot_every, snapshot_interval, keep_snapshots, snapshot_budget)
    )
    if errors is not None and not isinstance(errors, ErrorPolicy):
        raise ActorDefinitionError(f"actor {name!r}: errors must be an ErrorPolicy, got {errors!r}")
    policy_errors = errors or ErrorPolicy()
    declared = declared_publishes(name, publishes)

    def make(cls: C) -> C:
        if not isinstance(cls, type):
            raise ActorDefinitionError(f"@actor({name!r}) must decorate a class, not {cls!r}")
        check_constructible(cls)
        handlers = collect_handlers(cls)
        if not handlers:
            raise ActorDefinitionError(
                f"actor {cls.__qualname__} has no handlers: decorate methods with @handles(EventType)"
            )
        definition = ActorDefinition(
            name=name,
            cls=cls,
            subjects=subject_list,
            stream=stream,
            stream_subjects=stored,
            version=version,
            snapshots=policy,
            handlers=handlers,
            codec=EventCodec(h.event_cls for h in handlers.values()),
            state_codec=StateCodec(cls),
            ack_wait=float(ack_wait),
            max_batch=max_batch,
            max_ack_pending=unacked_capacity(max_batch),
            errors=policy_errors,
            timers=collect_timers(cls),
            queries=collect_queries(cls),
            partitions=partitioning,
            publishes=declared,
        )
        setattr(cls, _DEFINITION_ATTR, definition)
        return cls

    return make


def definition_of(target: object) -> ActorDefinition:
    """The :class:`ActorDefinition` of an actor class (or instance)."""
    cls = target if isinstance(target, type) else type(target)
    definition = cls.__dict__.get(_DEFINITION_ATTR)
    if not isinstance(definition, ActorDefinition):
        raise ActorDefinitionError(
            f"{cls.__qualname__} is not an actor: decorate it with @actor(...)"
        )
    return definition


_SNAPSHOT_DEFAULTS = (1_000, None, 3, 0.1)


def _snapshot_policy(
    name: str,
    snapshots: SnapshotPolicy | None,
    settings: tuple[int | None, float | None, int, float | None],
) -> SnapshotPolicy:
    if snapshots is None:
        every, interval, keep, budget = settings
        return SnapshotPolicy(every=every, interval=interval, keep=keep, budget=budget)
    if not isinstance(snapshots, SnapshotPolicy):
        raise ActorDefinitionError(
            f"actor {name!r}: snapshots must be a SnapshotPolicy, got {snapshots!r}"
        )
    if settings != _SNAPSHOT_DEFAULTS:
        raise ActorDefinitionError(
            f"actor {name!r}: pass snapshots=SnapshotPolicy(...) or snapshot_every/"
            "snapshot_interval/keep_snapshots/snapshot_budget, not both"
        )
    return snapshots


def _stream_subjects(
    name: str, stream: str | None, subjects: Sequence[str] | None
) -> tuple[str, ...] | None:
    if subjects is None:
        return None
    if stream is None:
        raise ActorDefinitionError(
            f"actor {name!r}: stream_subjects needs stream=... (the stream they are for)"
        )
    if isinstance(subjects, str) or not subjects:
        raise ActorDefinitionError(
            f"actor {name!r}: stream_subjects must be a non-empty list, e.g. ['shop.>']"
        )
    for subject in subjects:
        validate_subject(subject)
    return tuple(subjects)

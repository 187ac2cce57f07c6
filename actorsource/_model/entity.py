"""The ``@entity`` decorator: a keyed actor, one state instance per entity key.

An entity actor is declared like an actor, and its handlers are written for ONE entity:
``self`` is that cart, that account. The runtime keeps the entities in use in memory,
loads the others on demand from their snapshot and journal rows, passivates idle ones and
snapshots each entity on its own, so the cost of a snapshot does not grow with the number
of keys. The actor as a whole keeps one consumer, one journal file, one transaction per
batch and one outbox (:class:`~actorsource._model.actor.ActorDefinition` with its
``entity`` set).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from .._errors import ActorDefinitionError
from .actor import _DEFINITION_ATTR, actor, definition_of
from .keys import EntitySpec, check_key_field, check_key_token, default_key_token
from .partitions import partitioning_for
from .policy import ErrorPolicy
from .subjects import validate_name, validate_subject

__all__ = ["entity"]

C = TypeVar("C", bound=type)


def entity(
    name: str,
    *,
    subjects: Sequence[str],
    key_token: int | None = None,
    key_field: str | None = None,
    partitions: int | None = None,
    max_resident: int = 10_000,
    passivate_after: float = 120.0,
    snapshot_every: int = 100,
    keep: int = 2,
    snapshot_on_evict: bool = False,
    stream: str | None = None,
    stream_subjects: Sequence[str] | None = None,
    version: int = 1,
    ack_wait: float = 30.0,
    max_batch: int = 256,
    errors: ErrorPolicy | None = None,
    publishes: Mapping[str, Sequence[type]] | None = None,
) -> Callable[[C], C]:
    """Make a class a keyed entity actor: one instance of it per entity key.

    The key of a message is, by default, the subject token matched by the first ``*`` of
    ``subjects`` (``cart.*``: token 1); ``key_token=N`` picks another token, and
    ``key_field="cart_id"`` takes it from the decoded event instead. A message without a key
    is a dead letter (``no-entity-key``). ``max_resident`` entities stay in memory at most
    (the least recently used are passivated beyond it), and one unused for
    ``passivate_after`` seconds is passivated. Each entity is snapshotted after
    ``snapshot_every`` of its own events, and when passivated for being idle with unsaved
    events; the newest ``keep`` snapshots per entity are kept. An entity evicted because
    ``max_resident`` are in memory is not snapshotted unless ``snapshot_on_evict=True``: its
    next load reads its newest snapshot and its fewer than ``snapshot_every`` later rows,
    whereas a snapshot at every eviction is one more write at a random place of the journal
    per event once the keys in use outnumber ``max_resident`` many times
    (``bench/entity_storage.py``). ``@every`` timers are refused: they are
    per actor, not per entity. The other arguments are :func:`actor`'s; with ``partitions=P``
    the key token also picks the partition, so an entity lives in one partition (hence
    ``key_field`` does not combine with partitions).
    """
    if key_field is not None and partitions is not None:
        raise ActorDefinitionError(
            f"entity {name!r}: key_field cannot be combined with partitions=: partitions "
            "split the stream by a subject token, so the key must be that token (key_token=)"
        )
    if key_token is not None and key_field is not None:
        raise ActorDefinitionError(f"entity {name!r}: pass key_token or key_field, not both")
    for what, value in (("max_resident", max_resident), ("snapshot_every", snapshot_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ActorDefinitionError(
                f"entity {name!r}: {what} must be an int >= 1, got {value!r}"
            )
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ActorDefinitionError(f"entity {name!r}: keep must be an int >= 1, got {keep!r}")
    if (
        isinstance(passivate_after, bool)
        or not isinstance(passivate_after, int | float)
        or not passivate_after > 0
    ):
        raise ActorDefinitionError(
            f"entity {name!r}: passivate_after must be a number of seconds > 0, "
            f"got {passivate_after!r}"
        )
    validate_name(name)
    subject_list = () if isinstance(subjects, str) else tuple(subjects)
    for subject in subject_list:
        validate_subject(subject)
    token = None
    if key_field is None and subject_list:  # else actor() says what is wrong
        token = (
            default_key_token(name, subject_list)
            if key_token is None
            else check_key_token(name, subject_list, key_token)
        )
    if partitions is not None:
        # The key token picks the partition, so every message of an entity is in one.
        partitioning_for(
            name, subject_list, partitions, token, what="entity", token_arg="key_token"
        )
    as_actor = actor(
        name,
        subjects=subjects,
        stream=stream,
        stream_subjects=stream_subjects,
        version=version,
        snapshot_every=None,  # entities are snapshotted one by one, never the actor whole
        ack_wait=ack_wait,
        max_batch=max_batch,
        errors=errors,
        partitions=partitions,
        partition_token=token if partitions is not None else None,
        publishes=publishes,
    )

    def make(cls: C) -> C:
        as_actor(cls)
        definition = definition_of(cls)
        if definition.timers:
            timer = definition.timers[0].method
            raise ActorDefinitionError(
                f"{cls.__qualname__}.{timer}: @every timers are per actor, not per entity; "
                "an entity actor has none (drive time-based changes from a singleton actor "
                "that publishes events to the entities)"
            )
        if key_field is not None:
            check_key_field(name, key_field, (h.event_cls for h in definition.handlers.values()))
        spec = EntitySpec(
            key_token=token,
            key_field=key_field,
            max_resident=max_resident,
            passivate_after=float(passivate_after),
            snapshot_every=snapshot_every,
            keep=keep,
            snapshot_on_evict=bool(snapshot_on_evict),
        )
        setattr(cls, _DEFINITION_ATTR, dataclasses.replace(definition, entity=spec))
        return cls

    return make

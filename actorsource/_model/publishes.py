"""What an actor declares it publishes: event types by subject, checked when it publishes.

``@actor(..., publishes={"shop.payments.*.*": [PaymentCaptured, PaymentDeclined]})`` (and
``@entity``) declares, for each subject pattern (NATS wildcards allowed), the event types
its handlers publish there. It is part of the actor's contract (the AsyncAPI document,
:mod:`actorsource._model.asyncapi`, lists it) and, once declared, it holds at run time:
``ctx.publish`` to a subject no pattern matches, or of a type not declared for the patterns
that match it, fails the handler with :class:`EffectError` (retried, then dead-lettered).
An actor that declares nothing is not checked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .._errors import ActorDefinitionError, EffectError
from .events import check_event_class, event_type_name
from .subjects import subject_matches, validate_subject

__all__ = ["Publishes", "check_published", "declared_publishes"]

#: Subject patterns and the event classes declared for each, in the order declared.
Publishes = tuple[tuple[str, tuple[type, ...]], ...]


def declared_publishes(
    name: str, publishes: Mapping[str, Sequence[type]] | None
) -> Publishes | None:
    """Check an actor's ``publishes=`` argument; the declaration, or None if not given."""
    if publishes is None:
        return None
    if not isinstance(publishes, Mapping) or not publishes:
        raise ActorDefinitionError(
            f"actor {name!r}: publishes must map subjects to event types, e.g. "
            "publishes={'shop.payments.*': [PaymentCaptured]}"
        )
    out = []
    for subject, types in publishes.items():
        try:
            validate_subject(subject)
        except ValueError as exc:
            raise ActorDefinitionError(f"actor {name!r}: publishes: {exc}") from None
        if isinstance(types, type) or not isinstance(types, Sequence) or not types:
            raise ActorDefinitionError(
                f"actor {name!r}: publishes[{subject!r}] must be a non-empty list of event types"
            )
        for cls in types:
            try:
                check_event_class(cls)
            except ActorDefinitionError as exc:
                raise ActorDefinitionError(
                    f"actor {name!r}: publishes[{subject!r}]: {exc}"
                ) from None
        out.append((subject, tuple(types)))
    return tuple(out)


def check_published(name: str, declared: Publishes, subject: str, cls: type) -> None:
    """Raise :class:`EffectError` unless ``declared`` allows publishing ``cls`` to ``subject``."""
    allowed: list[type] = []
    for pattern, types in declared:
        if subject_matches(pattern, subject):
            if cls in types:
                return
            allowed.extend(types)
    if not allowed:
        patterns = ", ".join(repr(p) for p, _ in declared)
        raise EffectError(
            f"actor {name!r} cannot publish to {subject!r}: it declares publishes= for "
            f"{patterns} only"
        )
    names = ", ".join(sorted({event_type_name(t) for t in allowed}))
    raise EffectError(
        f"actor {name!r} cannot publish {event_type_name(cls)} to {subject!r}: "
        f"publishes= declares only {names} there"
    )

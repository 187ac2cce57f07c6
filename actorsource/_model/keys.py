"""Entity keys: which entity of a keyed actor a message belongs to.

An entity actor (:func:`~actorsource._model.entity.entity`) keeps one state per key. The key
of a received message is one token of its subject (by default the token matched by the
first ``*`` of the actor's filter subjects: ``cart.*`` gives token 1) or one field of its
decoded event (``key_field="cart_id"``). A message without one is a dead letter with reason
``no-entity-key``; events a handler records belong to the entity that recorded them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import msgspec

from .._errors import ActorDefinitionError, EntityKeyError

__all__ = ["EntitySpec", "KeyOf", "default_key_token", "event_has_field", "key_function"]

#: ``key_of(subject, event)``: the entity key, or :class:`EntityKeyError` saying why none.
KeyOf = Callable[[str, object], str]


@dataclass(frozen=True, slots=True)
class EntitySpec:
    """How an entity actor keys, keeps and checkpoints its entities."""

    key_token: int | None
    key_field: str | None
    max_resident: int
    passivate_after: float
    snapshot_every: int
    keep: int
    #: Snapshot an entity evicted over ``max_resident`` when it has unsaved events (an
    #: entity passivated for being idle always is).
    snapshot_on_evict: bool = False

    def describe_key(self) -> str:
        """Where the key comes from, in words (for errors and logs)."""
        if self.key_field is not None:
            return f"field {self.key_field!r} of the event"
        return f"subject token {self.key_token}"


def key_function(spec: EntitySpec) -> KeyOf:
    """The key of a message under ``spec``, made once per actor (it runs once per event)."""
    field = spec.key_field
    if field is not None:

        def from_field(subject: str, event: object) -> str:
            value = getattr(event, field, None)
            if isinstance(value, str) and value:
                return value
            if isinstance(value, int) and not isinstance(value, bool):
                return str(value)
            raise EntityKeyError(
                f"no entity key: {type(event).__name__}.{field} is {value!r}, "
                "expected a non-empty str or an int"
            )

        return from_field
    token = spec.key_token
    assert token is not None

    def from_subject(subject: str, event: object) -> str:
        tokens = subject.split(".")
        if len(tokens) <= token:
            raise EntityKeyError(f"no entity key: subject {subject!r} has no token {token}")
        return tokens[token]

    return from_subject


def default_key_token(name: str, subjects: Sequence[str]) -> int:
    """The token matched by the first ``*`` of every filter subject (they must agree)."""
    found = {s: s.split(".").index("*") if "*" in s.split(".") else None for s in subjects}
    missing = [s for s, i in found.items() if i is None]
    if missing:
        raise ActorDefinitionError(
            f"entity {name!r}: subject {missing[0]!r} has no '*' token to take the key from: "
            "subscribe to e.g. 'cart.*', or pass key_token=N or key_field='...'"
        )
    tokens = set(found.values())
    if len(tokens) != 1:
        raise ActorDefinitionError(
            f"entity {name!r}: the first '*' of its subjects is at different tokens "
            f"({found}): pass key_token=N"
        )
    [index] = tokens
    assert index is not None
    return index


def check_key_token(name: str, subjects: Sequence[str], token: object) -> int:
    """``token`` if every filter subject leaves that token open (a ``*`` or under ``>``)."""
    if isinstance(token, bool) or not isinstance(token, int) or token < 0:
        raise ActorDefinitionError(
            f"entity {name!r}: key_token must be an int >= 0 (a subject token index), got {token!r}"
        )
    for subject in subjects:
        tokens = subject.split(".")
        if ">" in tokens and token >= tokens.index(">"):
            continue
        if token >= len(tokens):
            raise ActorDefinitionError(
                f"entity {name!r}: subject {subject!r} has no token {token} (key_token)"
            )
        if tokens[token] != "*":
            raise ActorDefinitionError(
                f"entity {name!r}: token {token} of subject {subject!r} is the literal "
                f"{tokens[token]!r}, so every message would have the same key: point "
                "key_token at a '*' token"
            )
    return token


def event_has_field(event_cls: type, field: str) -> bool:
    """Whether instances of the event class ``event_cls`` have the attribute ``field``."""
    if dataclasses.is_dataclass(event_cls):
        return field in {f.name for f in dataclasses.fields(event_cls)}
    if isinstance(event_cls, type) and issubclass(event_cls, msgspec.Struct):
        return field in event_cls.__struct_fields__
    return hasattr(event_cls, field)


def check_key_field(name: str, field: object, event_classes: Iterable[type]) -> str:
    """``field`` if it is a name that at least one handled event class has."""
    if not isinstance(field, str) or not field.isidentifier():
        raise ActorDefinitionError(
            f"entity {name!r}: key_field must be an attribute name, got {field!r}"
        )
    classes = list(event_classes)
    if not any(event_has_field(cls, field) for cls in classes):
        names = ", ".join(sorted(c.__name__ for c in classes))
        raise ActorDefinitionError(
            f"entity {name!r}: key_field {field!r} is a field of none of its events ({names})"
        )
    return field

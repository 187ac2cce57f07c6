"""Event types, the journal entry that wraps a received event, and the JSON codec.

An event type is a dataclass, a ``msgspec.Struct`` or a pydantic v2 ``BaseModel``
(:mod:`.pydantic_models`: validated by pydantic, encoded by its serializer; pydantic is
never imported here). On the wire its payload is JSON and
its type name travels in the ``Event-Type`` header, its version (when above 1) in
``Event-Version``; publishers that are not actorsource can set those headers themselves.
Payloads are decoded with msgspec straight into the declared type, so a payload of the
wrong shape is an error at the boundary, never a half-built object. Nothing received is
ever unpickled.

Schema evolution: ``@event("shop.OrderPlaced", version=3)`` declares the current shape, and
``@upcaster(OrderPlaced, from_version=1)`` functions turn an older payload (a JSON object,
as a dict) into the next version's. They run at read time, live and on replay, so the
journal keeps every payload exactly as it was received.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import msgspec

from .._errors import ActorDefinitionError, EventCodecError, UnknownEventTypeError
from . import pydantic_models

# The header names and helpers live in .headers, and are re-exported here with the events.
from .headers import (
    EVENT_TYPE_HEADER,
    EVENT_VERSION_HEADER,
    MSG_ID_HEADER,
    missing_header,
    parse_version,
    version_header,
)

__all__ = [
    "EVENT_TYPE_HEADER",
    "EVENT_VERSION_HEADER",
    "MSG_ID_HEADER",
    "EventCodec",
    "JournalEntry",
    "check_event_class",
    "Upcaster",
    "encode_event",
    "event",
    "event_headers",
    "event_type_name",
    "event_version",
    "missing_header",
    "parse_version",
    "upcaster",
    "version_header",
]

_NAME_ATTR = "__actorsource_event__"
_VERSION_ATTR = "__actorsource_event_version__"
_UPCASTERS_ATTR = "__actorsource_upcasters__"

#: Turns the JSON object of one version of an event into the next version's.
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
T = TypeVar("T", bound=type)

_encoder = msgspec.json.Encoder()


def event(name: str, *, version: int = 1) -> Callable[[T], T]:
    """Give an event class the type name it is known by on the wire (default: its class
    name) and the version of its shape (default 1).

    Two bounded contexts that model the same event with different classes agree on this
    name, not on the Python class::

        @event("bank.Deposited")
        @dataclass
        class Deposited:
            account: str
            amount: int

    Bump ``version`` when the shape changes, and register an :func:`upcaster` from each
    older version so that events already published or journaled still read.
    """
    if not isinstance(name, str) or not name or any(c.isspace() for c in name):
        raise ActorDefinitionError(
            f"@event name must be a non-empty string without spaces: {name!r}"
        )
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ActorDefinitionError(
            f"@event({name!r}): version must be an int >= 1, got {version!r}"
        )

    def mark(cls: T) -> T:
        check_event_class(cls)
        setattr(cls, _NAME_ATTR, name)
        setattr(cls, _VERSION_ATTR, version)
        return cls

    return mark


def upcaster(event_cls: type, *, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register a function that turns version ``from_version`` of ``event_cls``'s payload
    into version ``from_version + 1``::

        @upcaster(OrderPlaced, from_version=1)
        def add_currency(data: dict[str, Any]) -> dict[str, Any]:
            return {**data, "currency": "EUR"}

    The chain runs at read time, live and on replay, up to the class's current version.
    """
    check_event_class(event_cls)
    current = event_version(event_cls)
    if not isinstance(from_version, int) or not 1 <= from_version < current:
        raise ActorDefinitionError(
            f"@upcaster({event_cls.__qualname__}, from_version={from_version!r}): "
            f"from_version must be an int in 1..{current - 1} (the class is at version "
            f"{current}; declare the new version with @event(..., version=N))"
        )
    chain: dict[int, Upcaster] = event_cls.__dict__.get(_UPCASTERS_ATTR) or {}
    if _UPCASTERS_ATTR not in event_cls.__dict__:
        setattr(event_cls, _UPCASTERS_ATTR, chain)

    def register(func: Upcaster) -> Upcaster:
        if not callable(func):
            raise ActorDefinitionError("@upcaster must decorate a function (dict) -> dict")
        if from_version in chain and chain[from_version] is not func:
            raise ActorDefinitionError(
                f"{event_cls.__qualname__} already has an upcaster from version "
                f"{from_version}: {chain[from_version].__qualname__}"
            )
        chain[from_version] = func
        return func

    return register


def event_type_name(cls: type) -> str:
    """The wire name of an event class: the ``@event`` name, else the class name."""
    name = cls.__dict__.get(_NAME_ATTR)
    return name if isinstance(name, str) else cls.__name__


def event_version(cls: type) -> int:
    """The current version of an event class's shape (``@event(..., version=N)``, else 1)."""
    version = cls.__dict__.get(_VERSION_ATTR)
    return version if isinstance(version, int) else 1


def event_headers(cls: type) -> dict[str, str]:
    """The headers that name an event class on the wire: its type and, above 1, its version."""
    version = event_version(cls)
    name = event_type_name(cls)
    if version == 1:
        return {EVENT_TYPE_HEADER: name}
    return {EVENT_TYPE_HEADER: name, EVENT_VERSION_HEADER: str(version)}


def check_event_class(cls: object) -> None:
    """Raise :class:`ActorDefinitionError` unless ``cls`` is a class events can be."""
    if not isinstance(cls, type) or not (
        dataclasses.is_dataclass(cls)
        or issubclass(cls, msgspec.Struct)
        or pydantic_models.is_model_class(cls)
    ):
        raise ActorDefinitionError(
            f"{cls!r} is not an event type: declare events as @dataclass classes "
            "(or msgspec.Struct subclasses, or pydantic BaseModel subclasses)"
        )


def _decoder_of(cls: type) -> Callable[[bytes], Any]:
    """JSON bytes -> an instance of ``cls``, strictly (raises msgspec errors)."""
    if pydantic_models.is_model_class(cls):
        return pydantic_models.model_decoder(cls)
    return msgspec.json.Decoder(cls).decode


def _convert(data: Any, cls: type) -> Any:
    """A JSON object -> an instance of ``cls``, strictly (raises msgspec errors)."""
    if pydantic_models.is_model_class(cls):
        return pydantic_models.model_converter(cls)(data)
    return msgspec.convert(data, cls)


_headers_decoder = msgspec.json.Decoder(dict[str, str])


class JournalEntry:
    """One event as the actor accepted it: its journal position and where it came from.

    ``pos`` is the actor's own position (1, 2, 3 ...); ``stream``/``stream_seq`` locate the
    message in JetStream (``None`` for events the actor recorded itself); ``payload`` holds
    the bytes exactly as received, in the event's ``version`` of the time; ``headers`` the
    message headers (decoded from the journal only when asked for, so replay does not pay
    for them); ``entity`` the key of the entity it belongs to in an entity actor (None in a
    singleton actor). Read-only by convention.
    """

    __slots__ = (
        "_headers",
        "_raw_headers",
        "entity",
        "msg_id",
        "payload",
        "pos",
        "received_at",
        "stream",
        "stream_seq",
        "subject",
        "type",
        "version",
    )

    def __init__(
        self,
        pos: int,
        subject: str,
        type: str,
        payload: bytes,
        received_at: float,
        stream: str | None = None,
        stream_seq: int | None = None,
        msg_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        raw_headers: bytes | None = None,
        version: int = 1,
        entity: str | None = None,
    ) -> None:
        self.pos = pos
        self.subject = subject
        self.type = type
        self.payload = payload
        self.received_at = received_at
        self.stream = stream
        self.stream_seq = stream_seq
        self.msg_id = msg_id
        self._headers = headers
        self._raw_headers = raw_headers
        self.version = version
        self.entity = entity

    @property
    def headers(self) -> Mapping[str, str]:
        """The message's headers as received (by default, its ``Event-Type`` and
        ``Nats-Msg-Id``)."""
        if self._headers is None:
            raw = self._raw_headers
            self._headers = _headers_decoder.decode(raw) if raw else self.usual_headers()
        return self._headers

    def has_usual_headers(self) -> bool:
        """Whether the headers are only the usual ones (:meth:`usual_headers`): what a
        journal row and a journal batch store as no headers. The usual case is checked
        without building them."""
        headers = self.headers
        if self.version == 1 and len(headers) == 1 + (self.msg_id is not None):
            return headers.get(EVENT_TYPE_HEADER) == self.type and (
                self.msg_id is None or headers.get(MSG_ID_HEADER) == self.msg_id
            )
        return headers == self.usual_headers()

    def usual_headers(self) -> dict[str, str]:
        """The headers an entry has when nothing but its type, version and message id was sent."""
        usual = {EVENT_TYPE_HEADER: self.type}
        if self.version != 1:
            usual[EVENT_VERSION_HEADER] = str(self.version)
        if self.msg_id is not None:
            usual[MSG_ID_HEADER] = self.msg_id
        return usual

    def _key(self) -> tuple[object, ...]:
        return (
            self.pos,
            self.subject,
            self.type,
            self.payload,
            self.received_at,
            self.stream,
            self.stream_seq,
            self.msg_id,
            self.version,
            self.entity,
            dict(self.headers),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, JournalEntry):
            return NotImplemented
        return self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"JournalEntry(pos={self.pos}, subject={self.subject!r}, type={self.type!r}, "
            f"version={self.version}, stream={self.stream!r}, stream_seq={self.stream_seq}, "
            f"msg_id={self.msg_id!r}"
            + (f", entity={self.entity!r})" if self.entity is not None else ")")
        )


class EventCodec:
    """Maps type names to event classes and turns payload bytes into typed events.

    Built once per actor definition from the classes its handlers accept. Decoding is strict:
    a missing field or a value of the wrong type raises :class:`EventCodecError`. A payload
    of an older version goes through the class's upcasters first; a newer one is refused.
    """

    __slots__ = ("_classes", "_decoders", "_versions")

    def __init__(self, classes: Iterable[type]) -> None:
        self._classes: dict[str, type] = {}
        self._decoders: dict[str, Callable[[bytes], Any]] = {}
        self._versions: dict[str, int] = {}
        for cls in classes:
            check_event_class(cls)
            name = event_type_name(cls)
            other = self._classes.get(name)
            if other is not None and other is not cls:
                raise ActorDefinitionError(
                    f"event type name {name!r} is used by both {other.__qualname__} and "
                    f"{cls.__qualname__}: give one of them another name with @event(...)"
                )
            self._classes[name] = cls
            self._decoders[name] = _decoder_of(cls)
            self._versions[name] = event_version(cls)

    def version(self, type_name: str) -> int:
        """The current version of ``type_name`` (what :meth:`decoder` reads)."""
        return self._versions[type_name]

    def decoder(self, type_name: str) -> Callable[[bytes], Any]:
        """The raw decode function for the current version of ``type_name`` (raises msgspec
        errors; for replay)."""
        decoder = self._decoders.get(type_name)
        if decoder is None:
            raise self._unknown(type_name)
        return decoder

    def decode(self, type_name: str, payload: bytes, version: int = 1) -> Any:
        """Decode ``payload``, of ``version``, into the class registered for ``type_name``."""
        decoder = self._decoders.get(type_name)
        if decoder is None:
            raise self._unknown(type_name)
        try:
            if version == self._versions[type_name]:
                return decoder(payload)
            return self._upcast(type_name, payload, version)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise EventCodecError(
                f"cannot decode a {type_name!r} payload (version {version}): {exc}",
                type_name=type_name,
            ) from exc

    def _upcast(self, type_name: str, payload: bytes, version: int) -> Any:
        cls = self._classes[type_name]
        current = self._versions[type_name]
        if version > current:
            raise EventCodecError(
                f"{type_name!r} version {version} is newer than this service knows "
                f"({current}): deploy the version of the service that reads it",
                type_name=type_name,
            )
        data = msgspec.json.decode(payload)
        chain: dict[int, Upcaster] = cls.__dict__.get(_UPCASTERS_ATTR) or {}
        for step in range(version, current):
            upcast = chain.get(step)
            if upcast is None:
                raise EventCodecError(
                    f"no upcaster from version {step} of {type_name!r} to {step + 1}: "
                    f"register one with @upcaster({cls.__qualname__}, from_version={step})",
                    type_name=type_name,
                )
            if not isinstance(data, dict):
                raise EventCodecError(
                    f"a {type_name!r} payload of version {step} is not a JSON object",
                    type_name=type_name,
                )
            try:
                data = upcast(data)
            except Exception as exc:
                raise EventCodecError(
                    f"upcaster {upcast.__qualname__} ({type_name!r} version {step} to "
                    f"{step + 1}) failed: {exc!r}",
                    type_name=type_name,
                ) from exc
        return _convert(data, cls)

    def _unknown(self, type_name: str) -> UnknownEventTypeError:
        return UnknownEventTypeError(
            f"unknown event type {type_name!r}; known: {sorted(self._classes)}",
            type_name=type_name,
        )


def encode_event(obj: object) -> tuple[str, bytes]:
    """Encode an event object into ``(type name, JSON payload)``."""
    check_event_class(type(obj))
    try:
        if pydantic_models.is_model(obj):
            return event_type_name(type(obj)), pydantic_models.encode_model(obj)
        return event_type_name(type(obj)), _encoder.encode(obj)
    except (TypeError, ValueError, msgspec.EncodeError) as exc:
        raise EventCodecError(f"cannot encode {obj!r}: {exc}") from exc

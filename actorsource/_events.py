"""Event types, the journal entry that wraps a received event, and the JSON codec.

An event type is a dataclass (or a ``msgspec.Struct``). On the wire its payload is JSON and
its type name travels in the ``Event-Type`` header; publishers that are not actorsource can
set that header themselves. Payloads are decoded with msgspec straight into the declared
type, so a payload of the wrong shape is an error at the boundary, never a half-built object.
Nothing received is ever unpickled.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import msgspec

from ._errors import ActorDefinitionError, EventCodecError, UnknownEventTypeError

__all__ = [
    "EVENT_TYPE_HEADER",
    "MSG_ID_HEADER",
    "EventCodec",
    "JournalEntry",
    "event",
    "event_type_name",
]

EVENT_TYPE_HEADER = "Event-Type"
MSG_ID_HEADER = "Nats-Msg-Id"

_NAME_ATTR = "__actorsource_event__"
T = TypeVar("T", bound=type)

_encoder = msgspec.json.Encoder()


def event(name: str) -> Callable[[T], T]:
    """Give an event class the type name it is known by on the wire (default: its class name).

    Two bounded contexts that model the same event with different classes agree on this
    name, not on the Python class::

        @event("bank.Deposited")
        @dataclass
        class Deposited:
            account: str
            amount: int
    """
    if not isinstance(name, str) or not name or any(c.isspace() for c in name):
        raise ActorDefinitionError(
            f"@event name must be a non-empty string without spaces: {name!r}"
        )

    def mark(cls: T) -> T:
        _check_event_class(cls)
        setattr(cls, _NAME_ATTR, name)
        return cls

    return mark


def event_type_name(cls: type) -> str:
    """The wire name of an event class: the ``@event`` name, else the class name."""
    name = cls.__dict__.get(_NAME_ATTR)
    return name if isinstance(name, str) else cls.__name__


def _check_event_class(cls: object) -> None:
    if not isinstance(cls, type) or not (
        dataclasses.is_dataclass(cls) or issubclass(cls, msgspec.Struct)
    ):
        raise ActorDefinitionError(
            f"{cls!r} is not an event type: declare events as @dataclass classes "
            "(or msgspec.Struct subclasses)"
        )


_headers_decoder = msgspec.json.Decoder(dict[str, str])


class JournalEntry:
    """One event as the actor accepted it: its journal position and where it came from.

    ``pos`` is the actor's own position (1, 2, 3 ...); ``stream``/``stream_seq`` locate the
    message in JetStream (``None`` for events the actor recorded itself); ``payload`` holds
    the bytes exactly as received; ``headers`` the message headers (decoded from the journal
    only when asked for, so replay does not pay for them). Read-only by convention.
    """

    __slots__ = (
        "_headers",
        "_raw_headers",
        "msg_id",
        "payload",
        "pos",
        "received_at",
        "stream",
        "stream_seq",
        "subject",
        "type",
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

    @property
    def headers(self) -> Mapping[str, str]:
        """The message's headers as received (by default, its ``Event-Type`` and
        ``Nats-Msg-Id``)."""
        if self._headers is None:
            raw = self._raw_headers
            self._headers = _headers_decoder.decode(raw) if raw else self.usual_headers()
        return self._headers

    def usual_headers(self) -> dict[str, str]:
        """The headers an entry has when nothing but its type and message id was sent."""
        if self.msg_id is None:
            return {EVENT_TYPE_HEADER: self.type}
        return {EVENT_TYPE_HEADER: self.type, MSG_ID_HEADER: self.msg_id}

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
            f"stream={self.stream!r}, stream_seq={self.stream_seq}, msg_id={self.msg_id!r})"
        )


class EventCodec:
    """Maps type names to event classes and turns payload bytes into typed events.

    Built once per actor definition from the classes its handlers accept. Decoding is strict:
    a missing field or a value of the wrong type raises :class:`EventCodecError`.
    """

    __slots__ = ("_classes", "_decoders")

    def __init__(self, classes: Iterable[type]) -> None:
        self._classes: dict[str, type] = {}
        self._decoders: dict[str, msgspec.json.Decoder[Any]] = {}
        for cls in classes:
            _check_event_class(cls)
            name = event_type_name(cls)
            other = self._classes.get(name)
            if other is not None and other is not cls:
                raise ActorDefinitionError(
                    f"event type name {name!r} is used by both {other.__qualname__} and "
                    f"{cls.__qualname__}: give one of them another name with @event(...)"
                )
            self._classes[name] = cls
            self._decoders[name] = msgspec.json.Decoder(cls)

    @property
    def type_names(self) -> frozenset[str]:
        """Every type name this codec can decode."""
        return frozenset(self._classes)

    def decoder(self, type_name: str) -> Callable[[bytes], Any]:
        """The raw decode function for ``type_name`` (raises msgspec errors; for replay)."""
        decoder = self._decoders.get(type_name)
        if decoder is None:
            raise UnknownEventTypeError(
                f"unknown event type {type_name!r}; known: {sorted(self._classes)}",
                type_name=type_name,
            )
        return decoder.decode

    def knows(self, type_name: str) -> bool:
        """Tell whether ``type_name`` is a registered event type."""
        return type_name in self._decoders

    def decode(self, type_name: str, payload: bytes) -> Any:
        """Decode ``payload`` into the class registered for ``type_name``."""
        decoder = self._decoders.get(type_name)
        if decoder is None:
            raise UnknownEventTypeError(
                f"unknown event type {type_name!r}; known: {sorted(self._classes)}",
                type_name=type_name,
            )
        try:
            return decoder.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise EventCodecError(
                f"cannot decode a {type_name!r} payload: {exc}", type_name=type_name
            ) from exc


def encode_event(obj: object) -> tuple[str, bytes]:
    """Encode an event object into ``(type name, JSON payload)``."""
    _check_event_class(type(obj))
    try:
        return event_type_name(type(obj)), _encoder.encode(obj)
    except (TypeError, msgspec.EncodeError) as exc:
        raise EventCodecError(f"cannot encode {obj!r}: {exc}") from exc

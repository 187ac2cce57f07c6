"""What a handler does besides changing its state: domain events it publishes, events it records.

An actor journals the events it *receives*; the events it *publishes* are its domain events,
in a shape it owns, for other services. ``ctx.publish(subject, event)`` does not send
anything: it adds an outbox row that is committed in the same transaction as the journal
entry that caused it, and the outbox publisher sends it afterwards with the deterministic
``Nats-Msg-Id`` ``"<actor>:<pos>:<n>"`` (the n-th message published while applying journal
position ``pos``). Re-sending after a crash is therefore harmless: JetStream deduplicates
within its window and a receiver's journal refuses the id again forever after.

``ctx.record(event)`` appends an event of the actor's own (a decision, a timer firing, the
answer of an outside call) to its journal right after the event being applied; the actor's
handler for that type applies it next. The state then stays a pure fold of the journal even
when the decision itself was not deterministic.

On replay both are no-ops: what was published is already in the outbox, and what was
recorded is already in the journal and replays in its own place.

Trace context: while the runtime applies a received event that carried a W3C trace context
(and tracing is on, :mod:`actorsource._runtime.tracing`), :data:`OUTBOUND_TRACE` holds the
``traceparent`` (and ``tracestate``) that its handling passes on; every message published
meanwhile, by its handlers or those of the events they record, carries them in its outbox
row, so a resend after a crash carries the same context. Nothing else sets it: replay,
rebuilds and timers publish without it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from .._errors import EffectError, EventCodecError
from .actor import ActorDefinition
from .events import JournalEntry, encode_event, event_headers, event_type_name, event_version
from .headers import EVENT_TYPE_HEADER, EVENT_VERSION_HEADER, MSG_ID_HEADER
from .publishes import check_published
from .subjects import validate_subject

__all__ = [
    "MAX_RECORDED",
    "OUTBOUND_TRACE",
    "RECORDED_SUBJECT",
    "Effects",
    "OutboxMessage",
    "outbound_trace",
]

#: The ``subject`` of journal entries an actor recorded itself (never a NATS subject).
RECORDED_SUBJECT = "@recorded"

#: How many events one received event may cause to be recorded, transitively.
MAX_RECORDED = 1_000

_RESERVED = {h.lower() for h in (EVENT_TYPE_HEADER, EVENT_VERSION_HEADER, MSG_ID_HEADER)}
_HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

#: The trace context headers the event being applied passes on to what its handlers publish
#: (set by the runtime's tracing around one event's handling, in the actor's own task).
OUTBOUND_TRACE: ContextVar[Mapping[str, str] | None] = ContextVar(
    "actorsource_outbound_trace", default=None
)


@contextmanager
def outbound_trace(headers: Mapping[str, str] | None) -> Iterator[None]:
    """:data:`OUTBOUND_TRACE` set to ``headers`` in the block (nothing done for None)."""
    if headers is None:
        yield
        return
    token = OUTBOUND_TRACE.set(headers)
    try:
        yield
    finally:
        OUTBOUND_TRACE.reset(token)


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """A message to publish once its transaction is committed (at least once, deduplicated
    downstream by ``msg_id``); ``id`` is set when read back from the journal."""

    subject: str
    msg_id: str
    payload: bytes
    headers: dict[str, str] | None = None
    pos: int | None = None
    id: int = 0


class Effects:
    """Collects what the handlers of one received event asked for, while it is applied live.

    ``entries`` are the recorded events turned into journal entries (positions after the
    received one); ``outbox`` the messages to publish once committed. A failed attempt's
    effects are thrown away with it.
    """

    __slots__ = ("_counts", "_definition", "_max_payload", "entries", "now", "outbox", "pending")

    def __init__(self, definition: ActorDefinition, *, max_payload: int, now: float) -> None:
        self._definition = definition
        self._max_payload = max_payload
        self.now = now
        self._counts: dict[int, int] = {}
        self.entries: list[JournalEntry] = []
        self.outbox: list[OutboxMessage] = []
        self.pending: list[tuple[str, bytes, int]] = []

    def publish(
        self,
        entry: JournalEntry,
        subject: str,
        event: object,
        headers: Mapping[str, str] | None,
    ) -> str:
        try:
            validate_subject(subject, wildcards=False)
        except ValueError as exc:
            raise EffectError(f"cannot publish {type(event).__name__}: {exc}") from None
        declared = self._definition.publishes
        if declared is not None:
            check_published(self._definition.name, declared, subject, type(event))
        try:
            _, payload = encode_event(event)
        except EventCodecError as exc:
            raise EffectError(f"cannot publish to {subject!r}: {exc}") from None
        all_headers = event_headers(type(event))
        for key, value in (headers or {}).items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise EffectError(f"header {key!r}: names and values must be strings")
            if not _HEADER_NAME.fullmatch(key) or "\r" in value or "\n" in value:
                raise EffectError(
                    f"header {key!r}: a name is letters, digits and -_. only, and a value "
                    "holds no line break (it would forge other headers)"
                )
            if key.lower() in _RESERVED:
                raise EffectError(f"header {key!r} is set by actorsource; leave it out")
            all_headers[key] = value
        trace = OUTBOUND_TRACE.get()
        if trace is not None:
            for key, value in trace.items():
                all_headers.setdefault(key, value)
        n = self._counts.get(entry.pos, 0) + 1
        msg_id = f"{self._definition.name}:{entry.pos}:{n}"
        size = len(payload) + sum(len(k) + len(v) + 4 for k, v in all_headers.items())
        size += len(MSG_ID_HEADER) + len(msg_id) + 4
        if size > self._max_payload:
            raise EffectError(
                f"{type(event).__name__} for {subject!r} is {size} bytes with its headers, "
                f"over the server's max_payload of {self._max_payload}"
            )
        self._counts[entry.pos] = n
        self.outbox.append(OutboxMessage(subject, msg_id, payload, all_headers, pos=entry.pos))
        return msg_id

    def record(self, event: object) -> None:
        handler = self._definition.handlers.get(event_type_name(type(event)))
        if handler is None or handler.event_cls is not type(event):
            raise EffectError(
                f"actor {self._definition.name!r} cannot record {type(event).__qualname__}: "
                "it records only events it has a @handles method for"
            )
        if len(self.entries) + len(self.pending) >= MAX_RECORDED:
            raise EffectError(
                f"more than {MAX_RECORDED} events recorded for one received event: "
                "do handlers record each other in a loop?"
            )
        type_name, payload = encode_event(event)
        self.pending.append((type_name, payload, event_version(type(event))))

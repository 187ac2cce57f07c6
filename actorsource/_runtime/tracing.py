"""Traces: the W3C trace context of the messages an actor receives, continued (the otel extra).

Imported only when tracing is asked for (``ActorRunner(tracing=True)``, ``actorsource run
--tracing``, ``ActorKit.start(..., tracing=...)``): it is the one module that imports
opentelemetry (the API; a service installs and configures the SDK, or not).

A delivery whose headers hold a sampled ``traceparent`` is *traced*: it gets a span, a
child of the publisher's span, started when its batch is triaged, ``applied`` when its
handlers ran, ended once its batch is committed and acknowledged (or with an error status
when the actor dies first), with the actor, the subject, the stream sequence, the journal
position and the outcome (``applied``, ``duplicate``, ``dead-letter``, ``ignored``) as
attributes; what its handlers publish carries the span's context
(:data:`~actorsource._model.effects.OUTBOUND_TRACE`). A span whose batch was handled but
never committed (the actor died while an earlier batch committed) ends as ``abandoned``:
nothing of it stays, and the message is delivered again, to a span of its own. One whose
context is not sampled gets no span and costs a header lookup: its context is passed on
as it came to what its handlers publish (looked at only for handlers that take a
context). Without an SDK (the global
provider not set, or a no-op one) nothing would record a span, so none is started: every
context is passed on as it came. An actor that runs without
tracing leaves every delivery alone: the data path checks one ``is None`` per delivery.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .._mailbox.mailbox import Delivery

__all__ = ["TRACEPARENT", "TRACESTATE", "Traced", "Tracing"]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

#: Outcomes, the ``actorsource.outcome`` attribute of a span.
APPLIED, DUPLICATE, DEAD_LETTER, IGNORED = "applied", "duplicate", "dead-letter", "ignored"
ABANDONED = "abandoned"

_PROPAGATOR = TraceContextTextMapPropagator()


class Traced:
    """One traced delivery: its span and the context its handlers pass on."""

    __slots__ = ("outbound", "outcome", "span")

    def __init__(self, span: trace.Span, outbound: dict[str, str]) -> None:
        self.span: trace.Span | None = span
        #: The context what its handlers publish carries: its span's.
        self.outbound = outbound
        self.outcome: str | None = None

    def note(self, outcome: str, pos: int | None = None) -> None:
        """Its outcome is known (and its journal position, when journaled)."""
        self.outcome = outcome
        span = self.span
        if span is not None:
            span.set_attribute("actorsource.outcome", outcome)
            if pos is not None:
                span.set_attribute("actorsource.journal_pos", pos)
            if outcome == APPLIED:
                span.add_event("applied")

    def failed(self, error: BaseException) -> None:
        """A handler raised on it (it is retried, or becomes a dead letter)."""
        if self.span is not None:
            self.span.record_exception(error)

    def end(self, error: BaseException | None = None, *, committed: bool = True) -> None:
        """Committed and acknowledged; or, with ``error``, never to be by this process:
        its batch committed (its outcome stays) or not (``abandoned``: it comes again)."""
        if self.span is not None and error is not None and not committed:
            self.note(ABANDONED)
        span, self.span = self.span, None  # ended once
        if span is None:
            return
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, f"not acknowledged: {error!r}"))
        span.end()


class Tracing:
    """Starts the spans of one actor's traced deliveries."""

    __slots__ = ("_actor", "_provider", "_tracer")

    def __init__(self, actor: str, tracer_provider: trace.TracerProvider | None = None) -> None:
        self._actor = actor
        self._provider = tracer_provider
        self._tracer = trace.get_tracer("actorsource", tracer_provider=tracer_provider)

    def recording(self) -> bool:
        """Whether a span would be recorded: an SDK's provider is given or set globally
        (read each time: a service may set it after the actor started)."""
        provider = self._provider or trace.get_tracer_provider()
        return not isinstance(provider, _NO_SDK)

    def begin(self, d: Delivery, headers: Mapping[str, str]) -> Traced | None:
        """A :class:`Traced` for ``d`` if its ``headers`` hold a sampled trace context."""
        parent = headers.get(TRACEPARENT)
        if parent is None or parent[54:55] not in _SAMPLED or not self.recording():
            return None
        context = _PROPAGATOR.extract(_passed(parent, headers))
        if not trace.get_current_span(context).get_span_context().is_valid:
            return None  # a malformed traceparent: nothing to continue
        span = self._tracer.start_span(
            f"{self._actor} process",
            context=context,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "nats",
                "messaging.operation.type": "process",
                "messaging.destination.name": d.subject,
                "actorsource.actor": self._actor,
                "actorsource.stream_seq": d.stream_seq,
            },
        )
        own = span.get_span_context()
        if not own.is_valid:
            return Traced(span, _passed(parent, headers))
        outbound = {TRACEPARENT: f"00-{own.trace_id:032x}-{own.span_id:016x}-{own.trace_flags:02x}"}
        if own.trace_state:
            outbound[TRACESTATE] = own.trace_state.to_header()
        return Traced(span, outbound)

    def outbound(
        self, traced: Traced | None, headers: Mapping[str, str]
    ) -> Mapping[str, str] | None:
        """The context a delivery's handlers pass on: its span's when it is traced; else
        its own as it came (unsampled, or no SDK); else None (none, or a malformed one)."""
        if traced is not None:
            return traced.outbound
        parent = headers.get(TRACEPARENT)
        if parent is None:
            return None
        flag = parent[54:55]
        if flag in _UNSAMPLED or (flag in _SAMPLED and not self.recording()):
            return _passed(parent, headers)
        return None


#: The last hex digit of a ``traceparent`` (version-traceid-parentid-flags) whose sampled
#: flag (bit 0 of the flags) is set, or not.
_SAMPLED = frozenset("13579bdfBDF")
_UNSAMPLED = frozenset("02468aceACE")

#: The providers of the API alone: nothing they make records anything.
_NO_SDK = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)


def _passed(parent: str, headers: Mapping[str, str]) -> dict[str, str]:
    state = headers.get(TRACESTATE)
    return {TRACEPARENT: parent} if state is None else {TRACEPARENT: parent, TRACESTATE: state}

"""Traces: the W3C trace context of the messages an actor receives, continued (the otel extra).

Imported only when tracing is asked for (``ActorRunner(tracing=True)``, ``actorsource run
--tracing``, ``ActorKit.start(..., tracing=True)``): it is the one module that imports
opentelemetry (the API; a service installs and configures the SDK, or not).

A delivery whose headers hold a ``traceparent`` is *traced*; one without is left alone, and
so is every delivery of an actor that runs without tracing (the data path then checks one
``is None`` per delivery, nothing more). A traced delivery whose context is sampled gets a
span, a child of the publisher's span: started when the batch is triaged, ``applied`` when
its handlers ran, ended once its batch is committed and acknowledged, with the actor, the
subject, the stream sequence, the journal position and the outcome (``applied``,
``duplicate``, ``dead-letter``, ``ignored``) as attributes. What its handlers publish carries
the span's context (:data:`~actorsource._model.effects.OUTBOUND_TRACE`). An unsampled one
gets no span: its context is passed on to what it publishes as it came. Without an SDK the
API's spans record nothing and the context is passed on as it came, too.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import Token

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .._mailbox.mailbox import Delivery
from .._model.effects import OUTBOUND_TRACE

__all__ = ["TRACEPARENT", "TRACESTATE", "Traced", "Tracing"]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

#: Outcomes, the ``actorsource.outcome`` attribute of a span.
APPLIED, DUPLICATE, DEAD_LETTER, IGNORED = "applied", "duplicate", "dead-letter", "ignored"

_PROPAGATOR = TraceContextTextMapPropagator()


class Traced:
    """One traced delivery: its span (None when unsampled) and the context it passes on."""

    __slots__ = ("_token", "outbound", "outcome", "span")

    def __init__(self, span: trace.Span | None, outbound: dict[str, str]) -> None:
        self.span = span
        self.outbound = outbound
        self.outcome: str | None = None
        self._token: Token[Mapping[str, str] | None] | None = None

    def __enter__(self) -> None:
        """Its handlers run in this block: what they publish carries :attr:`outbound`."""
        self._token = OUTBOUND_TRACE.set(self.outbound)

    def __exit__(self, *exc_info: object) -> None:
        if self._token is not None:
            OUTBOUND_TRACE.reset(self._token)
            self._token = None

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

    def end(self, error: BaseException | None = None) -> None:
        """Committed and acknowledged; or, with ``error``, never to be by this process."""
        span, self.span = self.span, None  # ended once
        if span is None:
            return
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, f"not acknowledged: {error!r}"))
        span.end()


class Tracing:
    """Starts the spans of one actor's traced deliveries."""

    __slots__ = ("_actor", "_tracer")

    def __init__(self, actor: str, tracer_provider: trace.TracerProvider | None = None) -> None:
        self._actor = actor
        self._tracer = trace.get_tracer("actorsource", tracer_provider=tracer_provider)

    def begin(self, d: Delivery, headers: Mapping[str, str]) -> Traced | None:
        """A :class:`Traced` for ``d`` if its ``headers`` hold a trace context, else None."""
        parent = headers.get(TRACEPARENT)
        if parent is None:
            return None
        state = headers.get(TRACESTATE)
        passed = (
            {TRACEPARENT: parent} if state is None else {TRACEPARENT: parent, TRACESTATE: state}
        )
        if not _sampled(parent):
            return Traced(None, passed)
        context = _PROPAGATOR.extract(passed)
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
        outbound: dict[str, str] = {}
        _PROPAGATOR.inject(outbound, context=trace.set_span_in_context(span))
        return Traced(span, outbound or passed)


def _sampled(traceparent: str) -> bool:
    """The sampled flag of a ``traceparent`` (version-traceid-parentid-flags); a malformed
    one counts as sampled here (and is then refused by the propagator)."""
    try:
        return bool(int(traceparent[53:55], 16) & 1)
    except ValueError:
        return True

"""Traces across services (the otel extra): the W3C trace context of a received message is
continued, each sampled message gets a span (a child of its publisher's), and what a handler
publishes carries the context on, through the outbox, also after a crash. Replay never
makes a span. The spans are collected with the SDK's InMemorySpanExporter.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import anyio
import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from actorsource import Context, ErrorPolicy, actor, handles
from actorsource.testing import ActorKit, ActorProbe
from examples.shop import Order, Payments, Shipping
from examples.shop.frontend import random_requests
from examples.shop.orders import CANCELLED, SHIPPED, OrderRequested

PROPAGATOR = TraceContextTextMapPropagator()


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


async def _place_traced(
    kit: ActorKit, provider: TracerProvider, requests: list[OrderRequested]
) -> dict[str, int]:
    """Each request published from a span of the front end's own; its trace id by order."""
    tracer = provider.get_tracer("shop-frontend")
    traces = {}
    for request in requests:
        with tracer.start_as_current_span("place order", kind=trace.SpanKind.PRODUCER) as span:
            headers: dict[str, str] = {}
            PROPAGATOR.inject(headers)
            await kit.publish(
                f"shop.requests.order.{request.order_id}",
                request,
                msg_id=f"request-{request.order_id}",
                headers=headers,
            )
        traces[request.order_id] = span.get_span_context().trace_id
    return traces


async def _all_final(orders: ActorProbe[Order], ids: list[str]) -> None:
    with anyio.fail_after(60):
        while True:
            book = [await orders.entity(oid) for oid in ids]
            if all(o.stage in (SHIPPED, CANCELLED) for o in book):
                return
            await anyio.sleep(0.05)


def _check_tree(trace_spans: list[ReadableSpan]) -> dict[int, ReadableSpan]:
    """One root (the front end's span); every other span's parent is a span of the trace."""
    by_id = {s.context.span_id: s for s in trace_spans if s.context is not None}
    roots = [s for s in trace_spans if s.parent is None]
    assert [s.name for s in roots] == ["place order"]
    for s in trace_spans:
        if s.parent is not None:
            assert s.parent.span_id in by_id, (s.name, s.attributes)
    return by_id


def _one(spans: list[ReadableSpan], actor: str, subject: str) -> ReadableSpan:
    found = [
        s
        for s in spans
        if s.attributes
        and s.attributes["actorsource.actor"] == actor
        and s.attributes["messaging.destination.name"] == subject
        and s.attributes.get("actorsource.outcome") == "applied"
    ]
    assert len(found) == 1, (actor, subject, found)
    return found[0]


def _outcome(span: ReadableSpan) -> object:
    return (span.attributes or {}).get("actorsource.outcome")


def _parent_of(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> ReadableSpan:
    assert span.parent is not None
    return by_id[span.parent.span_id]


async def _check_orders(
    exporter: InMemorySpanExporter, orders: ActorProbe[Order], traces: dict[str, int]
) -> list[ReadableSpan]:
    finished = list(exporter.get_finished_spans())
    for oid, trace_id in traces.items():
        mine = [s for s in finished if s.context is not None and s.context.trace_id == trace_id]
        by_id = _check_tree(mine)
        assert {s.attributes.get("actorsource.actor") for s in mine if s.attributes} >= {
            "orders",
            "payments",
        }
        requested = _one(mine, "orders", f"shop.requests.order.{oid}")
        assert _parent_of(requested, by_id).name == "place order"
        assert requested.kind == trace.SpanKind.CONSUMER
        attrs = requested.attributes or {}
        assert attrs["actorsource.journal_pos"] > 0
        assert attrs["actorsource.stream_seq"] > 0
        assert [e.name for e in requested.events] == ["applied"]
        placed = _one(mine, "payments", f"shop.orders.placed.{oid}")
        assert _parent_of(placed, by_id) is requested
        assert _parent_of(_one(mine, "shipping", f"shop.orders.placed.{oid}"), by_id) is requested
        order = await orders.entity(oid)
        if order.stage == SHIPPED:
            captured = _one(mine, "shipping", f"shop.payments.captured.{oid}")
            assert _parent_of(captured, by_id) is placed  # published by a recorded event's handler
            scheduled = _one(mine, "orders", f"shop.shipping.scheduled.{oid}")
            assert _parent_of(scheduled, by_id) is captured
    return finished


async def test_one_order_is_one_trace_across_the_three_services(
    actor_kit: ActorKit, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    requests = random_requests(12, seed=3)
    async with (
        actor_kit.start(Order, tracing=provider) as orders,
        actor_kit.start(Payments, tracing=provider) as payments,
        actor_kit.start(Shipping, tracing=provider) as shipping,
    ):
        traces = await _place_traced(actor_kit, provider, requests)
        await _all_final(orders, list(traces))
        for service in (orders, payments, shipping):
            await service.settled()
        finished = await _check_orders(exporter, orders, traces)
        assert len(set(traces.values())) == len(requests)
        stages = Counter([(await orders.entity(oid)).stage for oid in traces])
        assert stages[SHIPPED] > 0

        # Replay (a restart recovers payments from its journal) makes no span and sends
        # nothing again.
        await payments.restart()
        await payments.settled()
        assert len(exporter.get_finished_spans()) == len(finished)


async def test_the_trace_holds_across_a_service_killed_after_its_commit(
    actor_kit: ActorKit, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    requests = random_requests(40, seed=5)
    async with (
        actor_kit.start(Order, tracing=provider) as orders,
        actor_kit.start(Payments, tracing=provider) as payments,
        actor_kit.start(Shipping, tracing=provider) as shipping,
    ):
        traces = await _place_traced(actor_kit, provider, requests[:10])
        with anyio.fail_after(20):
            while len(payments.state.payments) < 5:
                await anyio.sleep(0.01)
        # Committed (its outbox rows too), then killed before publishing or acknowledging:
        # the restart resends those rows with the context they stored.
        payments.arm_crash("after_commit")
        traces |= await _place_traced(actor_kit, provider, requests[10:])
        await payments.crashed()
        await _all_final(orders, list(traces))
        for service in (orders, payments, shipping):
            await service.settled()
        assert payments.crashes == 1
        finished = await _check_orders(exporter, orders, traces)
        # The spans of the batch the crash cut short end with an error; what they published
        # went out after the restart, their children all the same. A batch handled behind
        # it and never committed ends abandoned: it published nothing, and its messages
        # came again, each applied once (checked above) under a span of its own.
        killed = [s for s in finished if s.name == "payments process" and not s.status.is_ok]
        committed = [s for s in killed if _outcome(s) != "abandoned"]
        assert committed
        parents = {s.parent.span_id for s in finished if s.parent is not None}
        for s in killed:
            assert s.context is not None
            assert (s.context.span_id in parents) == (s in committed), _outcome(s)


async def test_untraced_and_unsampled_messages_get_no_span_and_the_context_passes_on(
    actor_kit: ActorKit, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    request = random_requests(1, seed=1)[0]
    unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
    async with actor_kit.start(Order, tracing=provider) as orders:
        await actor_kit.publish(f"shop.requests.order.{request.order_id}", request)
        await actor_kit.publish(
            "shop.requests.order.o0002",
            OrderRequested("o0002", "c1", request.items, request.total),
            headers={"traceparent": unsampled, "tracestate": "shop=1"},
        )
        await actor_kit.publish_raw(
            "shop.requests.order.o0003",
            b"{not json",
            headers={"Event-Type": "shop.OrderRequested", "traceparent": unsampled[:-2] + "01"},
        )
        await orders.settled()
        sub = await actor_kit.js.subscribe("shop.orders.placed.*", deliver_policy="all")
        placed = {}
        with anyio.fail_after(5):
            while len(placed) < 2:
                msg = await sub.next_msg(timeout=5)
                placed[msg.subject] = msg.headers or {}
        await sub.unsubscribe()
    assert "traceparent" not in placed[f"shop.orders.placed.{request.order_id}"]
    passed = placed["shop.orders.placed.o0002"]
    assert (passed["traceparent"], passed["tracestate"]) == (unsampled, "shop=1")
    [dead] = exporter.get_finished_spans()  # only the sampled one
    attrs = dead.attributes or {}
    assert (attrs["actorsource.outcome"], attrs["messaging.destination.name"]) == (
        "dead-letter",
        "shop.requests.order.o0003",
    )
    assert "actorsource.journal_pos" not in attrs


async def test_with_the_api_alone_a_sampled_context_passes_on_as_it_came(
    actor_kit: ActorKit,
) -> None:
    # No SDK provider set globally (nothing in the tests sets one): no span is started.
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    request = random_requests(1, seed=1)[0]
    sampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with actor_kit.start(Order, tracing=True) as orders:
        await actor_kit.publish(
            f"shop.requests.order.{request.order_id}", request, headers={"traceparent": sampled}
        )
        await orders.settled()
        msg = await actor_kit.js.get_last_msg("SHOP", f"shop.orders.placed.{request.order_id}")
    assert (msg.headers or {})["traceparent"] == sampled


@dataclass
class Ping:
    n: int


@dataclass
class Pong:
    n: int


FAILURES = {"left": 0}


@actor(
    "flaky-traced",
    subjects=["flakytr.in.>"],
    stream="FLAKYTR",
    stream_subjects=["flakytr.>"],
    errors=ErrorPolicy(retries=2, backoff=0.01),
    publishes={"flakytr.out.*": [Pong]},
)
@dataclass
class Flaky:
    seen: int = 0

    @handles(Ping)
    def ping(self, e: Ping, ctx: Context) -> None:
        self.seen += 1
        ctx.publish(f"flakytr.out.{e.n}", Pong(e.n))
        if FAILURES["left"]:
            FAILURES["left"] -= 1
            raise RuntimeError("not this time")


@pytest.mark.parametrize("flags", ["01", "00"])
async def test_what_a_retried_handler_publishes_carries_the_context_on(
    actor_kit: ActorKit, spans: tuple[TracerProvider, InMemorySpanExporter], flags: str
) -> None:
    provider, exporter = spans
    parent = f"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-{flags}"
    FAILURES["left"] = 1
    async with actor_kit.start(Flaky, tracing=provider) as flaky:
        await actor_kit.publish("flakytr.in.1", Ping(1), headers={"traceparent": parent})
        await flaky.settled()
        msg = await actor_kit.js.get_last_msg("FLAKYTR", "flakytr.out.1")
    assert FAILURES["left"] == 0
    sent = (msg.headers or {})["traceparent"]
    if flags == "00":  # not sampled: no span, the context passed on as it came
        assert sent == parent
        assert exporter.get_finished_spans() == ()
        return
    [span] = exporter.get_finished_spans()
    assert span.context is not None
    assert sent == f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-01"
    assert (span.attributes or {})["actorsource.outcome"] == "applied"
    assert [e.name for e in span.events] == ["exception", "applied"]  # the failed attempt


async def test_a_duplicate_and_a_dead_letter_get_spans_with_their_outcome(
    actor_kit: ActorKit, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    FAILURES["left"] = 0
    stream = await actor_kit.prepare(Flaky)
    info = await actor_kit.js.stream_info(stream)
    info.config.duplicate_window = 0.1  # the server minimum: the second copy is stored
    await actor_kit.js.update_stream(info.config)
    sampled = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    async with actor_kit.start(Flaky, tracing=provider) as flaky:
        await actor_kit.publish("flakytr.in.1", Ping(1), msg_id="ping-1", headers=sampled)
        await flaky.settled()
        await anyio.sleep(0.15)  # let the server-side window pass (not a wait for work)
        await actor_kit.publish("flakytr.in.1", Ping(1), msg_id="ping-1", headers=sampled)
        await actor_kit.publish_raw("flakytr.in.2", b"{", headers={"Event-Type": "Ping", **sampled})
        await flaky.settled()
    outcomes = [
        (
            (s.attributes or {})["actorsource.outcome"],
            (s.attributes or {})["actorsource.stream_seq"],
        )
        for s in exporter.get_finished_spans()
    ]
    assert sorted(outcomes, key=lambda o: o[1]) == [
        ("applied", 1),
        ("duplicate", 3),  # 2 is the Pong it published
        ("dead-letter", 4),
    ]

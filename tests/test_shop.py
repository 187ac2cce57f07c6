"""The shop example: three services connected only by events, one of them killed mid-flow.

Whatever service dies and wherever, every order must end in exactly one final state, no
payment or shipment may exist twice, money and stock must add up, and each service's state
must equal the fold of its own journal.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

from actorsource._model.actor import definition_of
from actorsource._runtime.stream_rebuild import rebuild_from_stream
from actorsource.journal import fold, read_entries, summarize
from actorsource.testing import ActorKit, ActorProbe
from examples.shop import Orders, Payments, Shipping
from examples.shop.frontend import place, random_requests
from examples.shop.orders import CANCELLED, SHIPPED
from examples.shop.payments import CREDIT_LIMIT
from examples.shop.shipping import INITIAL_STOCK


async def _all_final(orders: ActorProbe[Orders], n: int, timeout: float = 60) -> None:
    with anyio.fail_after(timeout):
        while True:
            book = orders.state.orders
            if len(book) == n and all(o.status in (SHIPPED, CANCELLED) for o in book.values()):
                return
            await anyio.sleep(0.05)


async def _settled(*services: ActorProbe[Any]) -> None:
    for service in services:
        await service.settled()


def _lose_journal(path: Path) -> None:
    """Delete a journal file and its WAL, as a lost disk would (the lock file stays)."""
    for lost in path.parent.glob(path.name + "*"):
        if not lost.name.endswith(".lock"):
            lost.unlink()


async def _stream_events(kit: ActorKit) -> list[tuple[str, dict[str, object]]]:
    info = await kit.js.stream_info("SHOP")
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await kit.js.get_msg("SHOP", seq)
        out.append((msg.headers["Event-Type"], json.loads(msg.data)))
    return out


@pytest.mark.parametrize(
    ("victim", "point"),
    [
        ("payments", "before_publish"),  # decided and committed, nothing sent yet
        ("shipping", "after_publish"),  # shipment sent, not marked sent: sent again
        ("orders", "after_commit"),  # committed, not acknowledged: delivered again
    ],
)
async def test_every_order_ends_in_one_final_state_when_a_service_dies_mid_flow(
    actor_kit: ActorKit, victim: str, point: str
) -> None:
    requests = random_requests(80, seed=11)
    async with (
        actor_kit.start(Orders) as orders,
        actor_kit.start(Payments) as payments,
        actor_kit.start(Shipping) as shipping,
    ):
        probe = {"orders": orders, "payments": payments, "shipping": shipping}[victim]
        await place(actor_kit.js, requests[:30])
        with anyio.fail_after(20):
            while len(payments.state.payments) < 10:
                await anyio.sleep(0.01)
        probe.arm_crash(point)  # type: ignore[arg-type]
        await place(actor_kit.js, requests[30:])
        await probe.crashed()
        await _all_final(orders, len(requests))
        await _settled(orders, payments, shipping)
        assert probe.crashes == 1

        book = orders.state.orders
        paid = payments.state.payments
        shipped = shipping.state.shipments
        events = await _stream_events(actor_kit)
        per_order = Counter((kind, body["order_id"]) for kind, body in events)

        # Each order: exactly one final state, reached once, consistent with the others.
        for request in requests:
            oid = request.order_id
            order = book[oid]
            assert order.history[-1] == order.status
            assert [s for s in order.history if s in (SHIPPED, CANCELLED)] == [order.status]
            assert per_order["shop.OrderPlaced", oid] == 1
            for kind in ("PaymentCaptured", "PaymentDeclined", "PaymentRefunded"):
                assert per_order[f"shop.{kind}", oid] <= 1, (kind, oid)
            assert per_order["shop.ShipmentScheduled", oid] <= 1
            if order.status == SHIPPED:
                assert paid[oid].status == "captured"
                assert shipped[oid] == order.shipment_id
            elif paid[oid].status == "declined":
                assert order.reason.startswith("payment declined")
                assert oid not in shipped
            else:
                assert paid[oid].status == "refunded"
                assert order.reason.startswith("refunded: out of stock")
                assert oid in shipping.state.failed
        assert Counter(o.status for o in book.values())[SHIPPED] == len(shipped)

        # Money and stock add up.
        for customer, spent in payments.state.spent.items():
            captured = [p for p in paid.values() if p.customer == customer]
            assert spent == sum(p.amount for p in captured if p.status == "captured")
            assert 0 <= spent <= CREDIT_LIMIT
        units: Counter[str] = Counter()
        for kind, body in events:
            if kind == "shop.ShipmentScheduled":
                for item in body["items"]:  # type: ignore[attr-defined]
                    units[item["sku"]] += item["quantity"]
        for sku, initial in INITIAL_STOCK.items():
            assert shipping.state.stock[sku] == initial - units[sku] >= 0

        # Every service's state is the fold of its own journal, nothing applied twice.
        for service in (orders, payments, shipping):
            entries = await service.entries()
            seqs = [e.stream_seq for e in entries if e.stream_seq is not None]
            assert len(seqs) == len(set(seqs))
            assert await service.fold() == service.state

        # The flow exercised every path, compensations included.
        assert {p.status for p in paid.values()} == {"captured", "declined", "refunded"}


async def test_a_service_whose_journal_is_lost_rebuilds_from_the_shared_stream(
    actor_kit: ActorKit,
) -> None:
    requests = random_requests(40, seed=5)
    async with (
        actor_kit.start(Orders) as orders,
        actor_kit.start(Payments) as payments,
        actor_kit.start(Shipping) as shipping,
    ):
        await place(actor_kit.js, requests)
        await _all_final(orders, len(requests))
        await _settled(orders, payments, shipping)
        before = payments.state
        stored = (await actor_kit.js.stream_info("SHOP")).state.messages
        seen_by_orders = len(await orders.entries())
        await payments.stop()
        _lose_journal(payments.journal_path)
        await payments.start()  # an empty journal: re-read every event from SHOP
        await _settled(payments, orders, shipping)
        # The same events in the same order make the same decisions at the same positions,
        # so what it publishes again carries the same message ids: nobody applies it twice.
        assert payments.state == before
        assert (await actor_kit.js.stream_info("SHOP")).state.messages == stored
        assert len(await orders.entries()) == seen_by_orders
        assert await payments.fold() == before


async def test_payments_rebuilt_offline_from_the_stream_records_its_decisions_and_sends_nothing(
    actor_kit: ActorKit,
) -> None:
    requests = random_requests(50, seed=3)
    async with (
        actor_kit.start(Orders) as orders,
        actor_kit.start(Payments) as payments,
        actor_kit.start(Shipping) as shipping,
    ):
        await place(actor_kit.js, requests[:30])
        await _all_final(orders, 30)
        await _settled(orders, payments, shipping)
        await payments.stop()
        before, journal = payments.state, payments.journal_path
        lost = [(e.type, e.stream_seq, e.payload) for e in read_entries(journal)]
        _lose_journal(journal)

        report = await rebuild_from_stream(definition_of(Payments), actor_kit.nc, journal)

        rebuilt = [(e.type, e.stream_seq, e.payload) for e in read_entries(journal)]
        assert rebuilt == lost  # the recorded authorizations are back, after their causes
        assert report.events == len(lost)
        assert summarize(journal).unsent_outbox == 0  # nothing to send again
        assert await fold(Payments, read_entries(journal)) == before
        stored = (await actor_kit.js.stream_info("SHOP")).state.messages
        await payments.start()
        assert payments.state == before
        await payments.settled()
        assert (await actor_kit.js.stream_info("SHOP")).state.messages == stored
        await place(actor_kit.js, requests[30:])  # and it goes on where it was
        await _all_final(orders, len(requests))
        await _settled(orders, payments, shipping)
        assert len(payments.state.payments) == len(requests)

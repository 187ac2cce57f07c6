"""The shop example: three services connected only by events, one of them killed mid-flow.

Whatever service dies and wherever, every order must end in exactly one final state, no
payment or shipment may exist twice, money and stock must add up, and each service's state
must equal the fold of its own journal.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

from actorsource._model.actor import definition_of
from actorsource._runtime.stream_rebuild import rebuild_from_stream
from actorsource.journal import fold, read_entries, summarize
from actorsource.testing import ActorKit, ActorProbe
from examples.shop import Order, Payments, Shipping
from examples.shop.frontend import place, random_requests
from examples.shop.orders import CANCELLED, SHIPPED
from examples.shop.payments import CREDIT_LIMIT
from examples.shop.shipping import INITIAL_STOCK


async def _book(orders: ActorProbe[Order], ids: list[str]) -> dict[str, Order]:
    """Each order entity by id (resident, or loaded from the journal)."""
    return {oid: await orders.entity(oid) for oid in ids}


async def _all_final(orders: ActorProbe[Order], ids: list[str], timeout: float = 60) -> None:
    with anyio.fail_after(timeout):
        while True:
            book = await _book(orders, ids)
            if all(o.stage in (SHIPPED, CANCELLED) for o in book.values()):
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
    ids = [r.order_id for r in requests]
    async with (
        actor_kit.start(Order) as orders,
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
        await _all_final(orders, ids)
        await _settled(orders, payments, shipping)
        assert probe.crashes == 1

        book = await _book(orders, ids)
        paid = payments.state.payments
        shipped = shipping.state.shipments
        events = await _stream_events(actor_kit)
        per_order = Counter((kind, body["order_id"]) for kind, body in events)

        # Each order: exactly one final state, reached once, consistent with the others.
        for oid, order in book.items():
            assert order.history[-1] == order.stage
            assert [s for s in order.history if s in (SHIPPED, CANCELLED)] == [order.stage]
            assert per_order["shop.OrderPlaced", oid] == 1
            for kind in ("PaymentCaptured", "PaymentDeclined", "PaymentRefunded"):
                assert per_order[f"shop.{kind}", oid] <= 1, (kind, oid)
            assert per_order["shop.ShipmentScheduled", oid] <= 1
            if order.stage == SHIPPED:
                assert paid[oid].status == "captured"
                assert shipped[oid] == order.shipment_id
            elif paid[oid].status == "declined":
                assert order.reason.startswith("payment declined")
                assert oid not in shipped
            else:
                assert paid[oid].status == "refunded"
                assert order.reason.startswith("refunded: out of stock")
                assert oid in shipping.state.failed
            assert order.paid == (paid[oid].status == "captured")
        assert Counter(o.stage for o in book.values())[SHIPPED] == len(shipped)

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

        # Every service's state is the fold of its own journal (each order: of its own
        # entries), nothing applied twice.
        for service in (orders, payments, shipping):
            entries = await service.entries()
            seqs = [e.stream_seq for e in entries if e.stream_seq is not None]
            assert len(seqs) == len(set(seqs))
        assert {e.entity for e in await orders.entries()} == set(ids)
        for oid, order in book.items():
            assert await orders.fold_entity(oid) == order, oid
        for service in (payments, shipping):
            assert await service.fold() == service.state

        # The flow exercised every path, compensations included.
        assert {p.status for p in paid.values()} == {"captured", "declined", "refunded"}


async def test_a_service_whose_journal_is_lost_rebuilds_from_the_shared_stream(
    actor_kit: ActorKit,
) -> None:
    requests = random_requests(40, seed=5)
    ids = [r.order_id for r in requests]
    async with (
        actor_kit.start(Order) as orders,
        actor_kit.start(Payments) as payments,
        actor_kit.start(Shipping) as shipping,
    ):
        await place(actor_kit.js, requests)
        await _all_final(orders, ids)
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
    ids = [r.order_id for r in requests]
    async with (
        actor_kit.start(Order) as orders,
        actor_kit.start(Payments) as payments,
        actor_kit.start(Shipping) as shipping,
    ):
        await place(actor_kit.js, requests[:30])
        await _all_final(orders, ids[:30])
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
        await _all_final(orders, ids)
        await _settled(orders, payments, shipping)
        assert len(payments.state.payments) == len(requests)


async def test_each_order_is_an_entity_passivated_and_reloaded_with_its_status(
    actor_kit: ActorKit,
) -> None:
    requests = random_requests(20, seed=2)
    ids = [r.order_id for r in requests]
    async with (
        actor_kit.start(Order) as orders,
        actor_kit.start(Payments) as payments,
        actor_kit.start(Shipping) as shipping,
    ):
        await place(actor_kit.js, requests)
        await _all_final(orders, ids)
        await _settled(orders, payments, shipping)
        assert sorted(orders.resident) == ids
        before = {oid: copy.deepcopy(order) for oid, order in (await _book(orders, ids)).items()}

        await orders.tick(now=time.time() + 3_600)  # all idle: passivated, snapshotted
        assert orders.resident == []
        await orders.restart()
        assert orders.entity_loads == 0  # a restart loads no order
        order = await orders.entity("o0001")  # loaded: its snapshot, then any later rows
        assert order == before["o0001"] == await orders.fold_entity("o0001")
        assert order.status().shipped == (order.stage == SHIPPED)

        assert all([await orders.entity_snapshots(oid) for oid in ids])
        assert await _book(orders, ids) == before
        request = requests[0]
        status = (await orders.entity(request.order_id)).status()
        assert json.loads(json.dumps(dataclasses.asdict(status))) == {
            "order_id": request.order_id,
            "status": before[request.order_id].stage,
            "lines": [dataclasses.asdict(item) for item in request.items],
            "total": request.total,
            "paid": before[request.order_id].stage == SHIPPED,
            "shipped": before[request.order_id].stage == SHIPPED,
            "reason": before[request.order_id].reason,
        }
        assert await orders.entity("o9999") == Order()  # never requested: an empty order

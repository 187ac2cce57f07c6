"""The shop's order-status query: each order answers for itself, placed then asked with
read-your-writes, through payments and shipping to its final state."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from actorsource import NoSuchEntityError
from actorsource.testing import ActorKit, ActorProbe
from examples.shop import Order, Payments, Shipping
from examples.shop.frontend import PRICES, place_and_ask, place_one
from examples.shop.orders import CANCELLED, SHIPPED, Item, OrderRequested

ROOT = Path(__file__).resolve().parent.parent


def _request(order_id: str, *items: Item, total: int | None = None) -> OrderRequested:
    cost = sum(PRICES[i.sku] * i.quantity for i in items)
    return OrderRequested(order_id, "c1", list(items), cost if total is None else total)


async def _status_becomes(orders: ActorProbe[Order], order_id: str, *stages: str) -> Any:
    """The order's status, asked until it is one of ``stages`` (later events are on
    their way through payments and shipping)."""
    with anyio.fail_after(20):
        while True:
            status = await orders.query("status", key=order_id)
            if status["status"] in stages:
                return status
            await anyio.sleep(0.02)


async def test_an_order_asked_right_after_it_is_placed_shows_the_placement(
    actor_kit: ActorKit,
) -> None:
    request = _request("o-1", Item("apple", 2), Item("fig", 1))
    async with actor_kit.start(Order):
        answer = await place_and_ask(actor_kit.nc, request)
        assert answer.value == {
            "order_id": "o-1",
            "status": "placed",
            "lines": [{"sku": "apple", "quantity": 2}, {"sku": "fig", "quantity": 1}],
            "total": 2 * 120 + 450,
            "paid": False,
            "shipped": False,
            "reason": "",
        }
        assert (answer.actor, answer.query, answer.key) == ("orders", "status", "o-1")
        assert answer.stream == "SHOP"
        assert answer.pos == 1  # the request, nothing else of this order's yet
        again = await place_and_ask(actor_kit.nc, request)  # the same request: the same order
        assert again.value == answer.value
        assert again.stream_seq == answer.stream_seq


async def test_the_status_follows_the_order_through_payment_and_shipping(
    actor_kit: ActorKit,
) -> None:
    async with actor_kit.start(Order) as orders, actor_kit.start(Payments):
        first = await place_and_ask(actor_kit.nc, _request("o-2", Item("pear", 3)))
        assert first.value["status"] in ("placed", "paid")
        paid = await _status_becomes(orders, "o-2", "paid")
        assert (paid["paid"], paid["shipped"], paid["total"]) == (True, False, 450)
        async with actor_kit.start(Shipping):  # it reads the stream from its start
            shipped = await _status_becomes(orders, "o-2", SHIPPED, CANCELLED)
            assert (shipped["status"], shipped["paid"], shipped["shipped"]) == (
                SHIPPED,
                True,
                True,
            )


async def test_declined_and_refunded_orders_say_why_they_are_cancelled(
    actor_kit: ActorKit,
) -> None:
    async with (
        actor_kit.start(Order) as orders,
        actor_kit.start(Payments),
        actor_kit.start(Shipping),
    ):
        too_dear = _request("o-3", Item("fig", 30))  # 13,500 cents: over the credit
        # Paid (the total is what the front end says), but the warehouse has 50 figs.
        too_many = _request("o-4", Item("fig", 60), total=900)
        for request in (too_dear, too_many):
            placed = await place_and_ask(actor_kit.nc, request)
            assert placed.value["order_id"] == request.order_id
            assert placed.value["status"] in ("placed", "paid", CANCELLED)
        declined = await _status_becomes(orders, "o-3", SHIPPED, CANCELLED)
        assert declined["status"] == CANCELLED
        assert declined["reason"].startswith("payment declined: credit exceeded")
        refunded = await _status_becomes(orders, "o-4", SHIPPED, CANCELLED)
        assert (refunded["status"], refunded["paid"]) == (CANCELLED, False)
        assert refunded["reason"] == "refunded: out of stock: fig"


async def test_an_order_never_placed_is_no_such_entity(actor_kit: ActorKit) -> None:
    async with actor_kit.start(Order) as orders:
        seq = await place_one(actor_kit.js, _request("o-5", Item("plum", 1)))
        await orders.ask("status", key="o-5", after_seq=seq)
        with pytest.raises(NoSuchEntityError, match="has no entity 'o-404'") as caught:
            await orders.query("status", key="o-404")
        assert (caught.value.code, caught.value.key) == ("no-such-entity", "o-404")


async def test_the_query_command_prints_an_order_s_status(actor_kit: ActorKit) -> None:
    assert actor_kit.server is not None
    async with actor_kit.start(Order):
        await place_and_ask(actor_kit.nc, _request("o-6", Item("apple", 1)))
        command = [sys.executable, "-m", "actorsource", "query", "orders", "status"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        out = await anyio.run_process(
            [*command, "--key", "o-6", "--nats", actor_kit.server.url], check=False, env=env
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["status"] == "placed"
        out = await anyio.run_process(
            [*command, "--key", "o-7", "--nats", actor_kit.server.url], check=False, env=env
        )
        assert (out.returncode, out.stdout) == (1, b"")
        assert out.stderr.decode() == (
            "actorsource: actor 'orders' has no entity 'o-7' (no event of it is journaled)\n"
        )

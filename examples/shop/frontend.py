"""The shop's front end, as far as the services are concerned: it publishes order requests,
and asks an order's status (read-your-writes: the status includes the request just placed).
"""

from __future__ import annotations

import random

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

import actorsource
from actorsource import MSG_ID_HEADER, QueryAnswer, encode_event, event_headers

from .orders import Item, OrderRequested

#: Unit prices in cents.
PRICES = {"apple": 120, "pear": 150, "plum": 300, "fig": 450}


def random_requests(n: int, *, seed: int = 1, customers: int = 8) -> list[OrderRequested]:
    """``n`` order requests with 1-3 lines each, reproducible from ``seed``."""
    rng = random.Random(seed)
    requests = []
    for i in range(1, n + 1):
        skus = rng.sample(sorted(PRICES), rng.randint(1, 3))
        items = [Item(sku, rng.randint(1, 4)) for sku in skus]
        total = sum(PRICES[item.sku] * item.quantity for item in items)
        customer = f"c{rng.randrange(customers)}"
        requests.append(OrderRequested(f"o{i:04d}", customer, items, total))
    return requests


async def place_one(js: JetStreamContext, request: OrderRequested) -> int:
    """Publish ``request`` on ``shop.requests.order.<order id>``, its order id as message id;
    its stream sequence (a request placed again answers the first one's)."""
    _, payload = encode_event(request)
    headers = {**event_headers(OrderRequested), MSG_ID_HEADER: f"request-{request.order_id}"}
    ack = await js.publish(f"shop.requests.order.{request.order_id}", payload, headers=headers)
    return int(ack.seq)


async def place(js: JetStreamContext, requests: list[OrderRequested]) -> None:
    """Publish each request (:func:`place_one`), one after another."""
    for request in requests:
        await place_one(js, request)


async def place_and_ask(nc: NATS, request: OrderRequested, *, timeout: float = 5.0) -> QueryAnswer:
    """Place one order, then ask its status with read-your-writes: the answer waits until
    the orders service has committed the request (the PubAck's sequence), so its ``value``
    (an ``OrderStatus`` as a dict) shows the order placed, or already further on."""
    seq = await place_one(nc.jetstream(), request)
    return await actorsource.ask(
        nc, "orders", "status", key=request.order_id, after_seq=seq, timeout=timeout
    )

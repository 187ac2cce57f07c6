"""The shop's front end, as far as the services are concerned: it publishes order requests."""

from __future__ import annotations

import random

from nats.js import JetStreamContext

from actorsource import MSG_ID_HEADER, encode_event, event_headers

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


async def place(js: JetStreamContext, requests: list[OrderRequested]) -> None:
    """Publish each request on ``shop.requests.order.<order id>``, its order id as message id."""
    for request in requests:
        _, payload = encode_event(request)
        headers = {**event_headers(OrderRequested), MSG_ID_HEADER: f"request-{request.order_id}"}
        await js.publish(f"shop.requests.order.{request.order_id}", payload, headers=headers)

"""The shipping service: reserves stock for paid orders and schedules their shipment."""

from __future__ import annotations

from dataclasses import dataclass, field

from actorsource import Context, actor, event, handles

#: Units of each SKU in the warehouse when it opens.
INITIAL_STOCK = {"apple": 120, "pear": 100, "plum": 80, "fig": 50}


@dataclass
class Item:
    sku: str
    quantity: int


@event("shop.OrderPlaced")
@dataclass
class OrderPlaced:
    """Shipping's view of a placed order: what to send."""

    order_id: str
    items: list[Item]


@event("shop.PaymentCaptured")
@dataclass
class PaymentCaptured:
    order_id: str


@event("shop.ShipmentScheduled")
@dataclass
class ShipmentScheduled:
    order_id: str
    shipment_id: str
    items: list[Item]


@event("shop.ShipmentFailed")
@dataclass
class ShipmentFailed:
    order_id: str
    reason: str


@actor(
    "shipping",
    subjects=["shop.orders.placed.>", "shop.payments.captured.>"],
    stream="SHOP",
    stream_subjects=["shop.>"],
    publishes={
        "shop.shipping.scheduled.*": [ShipmentScheduled],
        "shop.shipping.failed.*": [ShipmentFailed],
    },
)
@dataclass
class Shipping:
    stock: dict[str, int] = field(default_factory=lambda: dict(INITIAL_STOCK))
    waiting: dict[str, list[Item]] = field(default_factory=dict)
    shipments: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    @handles(OrderPlaced)
    def placed(self, e: OrderPlaced) -> None:
        self.waiting.setdefault(e.order_id, e.items)

    @handles(PaymentCaptured)
    def paid(self, e: PaymentCaptured, ctx: Context) -> None:
        items = self.waiting.pop(e.order_id, None)
        if items is None:
            return  # already handled (or never placed)
        short = [i.sku for i in items if self.stock.get(i.sku, 0) < i.quantity]
        if short:
            reason = f"out of stock: {', '.join(sorted(set(short)))}"
            self.failed[e.order_id] = reason
            ctx.publish(f"shop.shipping.failed.{e.order_id}", ShipmentFailed(e.order_id, reason))
            return
        for i in items:
            self.stock[i.sku] -= i.quantity
        shipment_id = f"ship-{ctx.pos}"
        self.shipments[e.order_id] = shipment_id
        ctx.publish(
            f"shop.shipping.scheduled.{e.order_id}",
            ShipmentScheduled(e.order_id, shipment_id, items),
        )

"""The orders service: an order's life from the customer's request to its one final state.

It owns ``shop.OrderPlaced`` and ``shop.OrderCancelled``; of payments and shipping it knows
only the few fields it needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from actorsource import Context, actor, event, handles

#: Final states: every order ends in exactly one of them.
SHIPPED = "shipped"
CANCELLED = "cancelled"


@dataclass
class Item:
    sku: str
    quantity: int


@event("shop.OrderRequested")
@dataclass
class OrderRequested:
    """A customer asks for an order (from the shop's front end)."""

    order_id: str
    customer: str
    items: list[Item]
    total: int


@event("shop.OrderPlaced")
@dataclass
class OrderPlaced:
    order_id: str
    customer: str
    items: list[Item]
    total: int


@event("shop.OrderCancelled")
@dataclass
class OrderCancelled:
    order_id: str
    reason: str


@event("shop.PaymentCaptured")
@dataclass
class PaymentCaptured:
    order_id: str


@event("shop.PaymentDeclined")
@dataclass
class PaymentDeclined:
    order_id: str
    reason: str


@event("shop.PaymentRefunded")
@dataclass
class PaymentRefunded:
    order_id: str
    reason: str


@event("shop.ShipmentScheduled")
@dataclass
class ShipmentScheduled:
    order_id: str
    shipment_id: str


@dataclass
class Order:
    customer: str
    total: int
    status: str = "placed"
    history: list[str] = field(default_factory=list)
    reason: str = ""
    shipment_id: str = ""


@actor(
    "orders",
    subjects=["shop.requests.>", "shop.payments.>", "shop.shipping.scheduled.>"],
    stream="SHOP",
    stream_subjects=["shop.>"],
)
@dataclass
class Orders:
    orders: dict[str, Order] = field(default_factory=dict)

    @handles(OrderRequested)
    def requested(self, e: OrderRequested, ctx: Context) -> None:
        if e.order_id in self.orders:
            return  # the same request twice (a different message id): one order
        self.orders[e.order_id] = Order(e.customer, e.total, history=["placed"])
        ctx.publish(
            f"shop.orders.placed.{e.order_id}",
            OrderPlaced(e.order_id, e.customer, e.items, e.total),
        )

    @handles(PaymentCaptured)
    def captured(self, e: PaymentCaptured) -> None:
        self._move(e.order_id, "paid")

    @handles(PaymentDeclined)
    def declined(self, e: PaymentDeclined, ctx: Context) -> None:
        self._cancel(e.order_id, f"payment declined: {e.reason}", ctx)

    @handles(PaymentRefunded)
    def refunded(self, e: PaymentRefunded, ctx: Context) -> None:
        self._cancel(e.order_id, f"refunded: {e.reason}", ctx)

    @handles(ShipmentScheduled)
    def shipped(self, e: ShipmentScheduled) -> None:
        if self._move(e.order_id, SHIPPED):
            self.orders[e.order_id].shipment_id = e.shipment_id

    def _move(self, order_id: str, status: str) -> bool:
        order = self.orders.get(order_id)
        if order is None or order.status in (SHIPPED, CANCELLED):
            return False
        order.status = status
        order.history.append(status)
        return True

    def _cancel(self, order_id: str, reason: str, ctx: Context) -> None:
        if self._move(order_id, CANCELLED):
            self.orders[order_id].reason = reason
            ctx.publish(f"shop.orders.cancelled.{order_id}", OrderCancelled(order_id, reason))

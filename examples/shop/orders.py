"""The orders service: one entity per order, from the customer's request to its one final
state.

Every subject it receives ends in the order id (``shop.requests.order.<id>``,
``shop.payments.captured.<id>`` ...): that token is the entity key, so each handler is
written for one order and ``self`` is that order. No decision of this service reads two
orders (a repeated request is the same order's own business), so nothing needs a
singleton; the decisions that do (a customer's credit, the shared stock) are payments'
and shipping's, which stay singletons. Each order answers the query ``status`` (an
:class:`OrderStatus`), asked with its id as the key.

It owns ``shop.OrderPlaced`` and ``shop.OrderCancelled``; of payments and shipping it knows
only the few fields it needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from actorsource import Context, entity, event, handles, query

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


@dataclass(frozen=True)
class OrderStatus:
    """What an order says of itself, the answer to its ``status`` query: ``status`` is
    ``placed``, ``paid``, ``shipped`` or ``cancelled`` (with the ``reason``), ``total`` the
    amount in cents."""

    order_id: str
    status: str
    lines: list[Item]
    total: int
    paid: bool
    shipped: bool
    reason: str


@entity(
    "orders",
    # The order id is token 3 of each: shop.requests.order.<id>, shop.payments.<what>.<id>,
    # shop.shipping.scheduled.<id>.
    subjects=["shop.requests.order.*", "shop.payments.*.*", "shop.shipping.scheduled.*"],
    key_token=3,
    stream="SHOP",
    stream_subjects=["shop.>"],
    publishes={"shop.orders.placed.*": [OrderPlaced], "shop.orders.cancelled.*": [OrderCancelled]},
)
@dataclass
class Order:
    """ONE order: the entity keyed by its id (its ``stage`` is ``""`` until it is requested)."""

    order_id: str = ""
    customer: str = ""
    items: list[Item] = field(default_factory=list)
    total: int = 0
    stage: str = ""  # placed, paid, then shipped or cancelled
    history: list[str] = field(default_factory=list)
    paid: bool = False
    reason: str = ""
    shipment_id: str = ""

    @handles(OrderRequested)
    def requested(self, e: OrderRequested, ctx: Context) -> None:
        if self.stage:
            return  # the same request twice (a different message id): one order
        self.order_id, self.customer = e.order_id, e.customer
        self.items, self.total = e.items, e.total
        self.stage = "placed"
        self.history.append("placed")
        ctx.publish(
            f"shop.orders.placed.{e.order_id}",
            OrderPlaced(e.order_id, e.customer, e.items, e.total),
        )

    @handles(PaymentCaptured)
    def captured(self, e: PaymentCaptured) -> None:
        if self._move("paid"):
            self.paid = True

    @handles(PaymentDeclined)
    def declined(self, e: PaymentDeclined, ctx: Context) -> None:
        self._cancel(f"payment declined: {e.reason}", ctx)

    @handles(PaymentRefunded)
    def refunded(self, e: PaymentRefunded, ctx: Context) -> None:
        if self._cancel(f"refunded: {e.reason}", ctx):
            self.paid = False

    @handles(ShipmentScheduled)
    def shipped(self, e: ShipmentScheduled) -> None:
        if self._move(SHIPPED):
            self.shipment_id = e.shipment_id

    @query
    def status(self) -> OrderStatus:
        """The order's status: ``actorsource query orders status --key <order id>``."""
        return OrderStatus(
            self.order_id,
            self.stage,
            list(self.items),
            self.total,
            self.paid,
            self.stage == SHIPPED,
            self.reason,
        )

    def _move(self, stage: str) -> bool:
        if not self.stage or self.stage in (SHIPPED, CANCELLED):
            return False  # never requested, or already final
        self.stage = stage
        self.history.append(stage)
        return True

    def _cancel(self, reason: str, ctx: Context) -> bool:
        if not self._move(CANCELLED):
            return False
        self.reason = reason
        ctx.publish(f"shop.orders.cancelled.{self.order_id}", OrderCancelled(self.order_id, reason))
        return True

"""The payments service: authorizes placed orders against each customer's credit.

The authorization stands for a call to a payment provider: its answer is not something a
replay may ask for again, so it is recorded as an event of the service's own
(``Authorization``) and the state follows from that event, live and on replay.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from actorsource import Context, actor, event, handles

#: What each customer may spend, in cents.
CREDIT_LIMIT = 10_000


@event("shop.OrderPlaced")
@dataclass
class OrderPlaced:
    """Payments' view of a placed order: who pays, how much."""

    order_id: str
    customer: str
    total: int


@event("shop.ShipmentFailed")
@dataclass
class ShipmentFailed:
    order_id: str
    reason: str


@event("payments.Authorization")
@dataclass
class Authorization:
    """The payment provider's answer, recorded by this service."""

    order_id: str
    customer: str
    amount: int
    approved: bool
    reason: str = ""


@event("shop.PaymentCaptured")
@dataclass
class PaymentCaptured:
    order_id: str
    payment_id: str
    amount: int


@event("shop.PaymentDeclined")
@dataclass
class PaymentDeclined:
    order_id: str
    reason: str


@event("shop.PaymentRefunded")
@dataclass
class PaymentRefunded:
    order_id: str
    payment_id: str
    amount: int
    reason: str


@dataclass
class Payment:
    customer: str
    amount: int
    status: str  # captured | declined | refunded
    payment_id: str = ""


@actor(
    "payments",
    subjects=["shop.orders.placed.>", "shop.shipping.failed.>"],
    stream="SHOP",
    stream_subjects=["shop.>"],
    publishes={
        "shop.payments.captured.*": [PaymentCaptured],
        "shop.payments.declined.*": [PaymentDeclined],
        "shop.payments.refunded.*": [PaymentRefunded],
    },
)
@dataclass
class Payments:
    payments: dict[str, Payment] = field(default_factory=dict)
    spent: dict[str, int] = field(default_factory=dict)

    @handles(OrderPlaced)
    def placed(self, e: OrderPlaced, ctx: Context) -> None:
        if e.order_id in self.payments or ctx.replaying:
            return
        ctx.record(self._authorize(e))

    def _authorize(self, e: OrderPlaced) -> Authorization:
        """Ask the provider (here: a credit check) whether the customer can pay."""
        left = CREDIT_LIMIT - self.spent.get(e.customer, 0)
        if e.total > left:
            reason = f"credit exceeded ({e.total} > {left} left)"
            return Authorization(e.order_id, e.customer, e.total, approved=False, reason=reason)
        return Authorization(e.order_id, e.customer, e.total, approved=True)

    @handles(Authorization)
    def authorized(self, a: Authorization, ctx: Context) -> None:
        if not a.approved:
            self.payments[a.order_id] = Payment(a.customer, a.amount, "declined")
            ctx.publish(
                f"shop.payments.declined.{a.order_id}", PaymentDeclined(a.order_id, a.reason)
            )
            return
        payment_id = f"pay-{ctx.pos}"
        self.payments[a.order_id] = Payment(a.customer, a.amount, "captured", payment_id)
        self.spent[a.customer] = self.spent.get(a.customer, 0) + a.amount
        ctx.publish(
            f"shop.payments.captured.{a.order_id}",
            PaymentCaptured(a.order_id, payment_id, a.amount),
        )

    @handles(ShipmentFailed)
    def shipment_failed(self, e: ShipmentFailed, ctx: Context) -> None:
        payment = self.payments.get(e.order_id)
        if payment is None or payment.status != "captured":
            return
        payment.status = "refunded"  # the compensation: the customer gets the money back
        self.spent[payment.customer] -= payment.amount
        ctx.publish(
            f"shop.payments.refunded.{e.order_id}",
            PaymentRefunded(e.order_id, payment.payment_id, payment.amount, e.reason),
        )

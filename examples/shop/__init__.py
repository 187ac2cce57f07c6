"""A shop of three bounded contexts: orders, payments and shipping, connected only by events.

Each service is an actor with its own journal and its own model of the events it cares
about; none imports another. They agree on event names (``shop.OrderPlaced`` ...), subjects
and one JetStream stream, ``SHOP``, that carries ``shop.>``:

- **orders** receives ``shop.requests.<id>`` (a customer's request), publishes
  ``shop.OrderPlaced``, follows payments and shipping, and ends every order ``shipped`` or
  ``cancelled``;
- **payments** authorizes each placed order against the customer's credit (recording the
  decision as its own event), publishes ``shop.PaymentCaptured`` or ``shop.PaymentDeclined``,
  and refunds (``shop.PaymentRefunded``) when shipping fails: a compensation;
- **shipping** reserves stock once a payment is captured and publishes
  ``shop.ShipmentScheduled``, or ``shop.ShipmentFailed`` when a SKU is out of stock.

Run all three in one worker with ``actorsource run examples.shop --embedded`` and place
orders with ``python -m examples.shop --orders 50``.
"""

from .orders import Orders
from .payments import Payments
from .shipping import Shipping

__all__ = ["Orders", "Payments", "Shipping"]

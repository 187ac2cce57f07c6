"""A shop of three bounded contexts: orders, payments and shipping, connected only by events.

Each service is an actor with its own journal and its own model of the events it cares
about; none imports another. They agree on event names (``shop.OrderPlaced`` ...), subjects
(``shop.<service>.<what>.<order id>``: the order id is always token 3) and one JetStream
stream, ``SHOP``, that carries ``shop.>``:

- **orders** is an entity actor, one entity per order keyed by the order id that ends every
  subject (token 3): it receives ``shop.requests.order.<id>`` (a customer's request),
  publishes ``shop.OrderPlaced``, follows payments and shipping, and ends every order
  ``shipped`` or ``cancelled``;
- **payments**, a singleton (a customer's credit spans orders), authorizes each placed order
  against the customer's credit (recording the decision as its own event), publishes
  ``shop.PaymentCaptured`` or ``shop.PaymentDeclined``, and refunds
  (``shop.PaymentRefunded``) when shipping fails: a compensation;
- **shipping**, a singleton (all orders share the stock), reserves stock once a payment is
  captured and publishes ``shop.ShipmentScheduled``, or ``shop.ShipmentFailed`` when a SKU
  is out of stock.

Run all three in one worker with ``actorsource run examples.shop --embedded``, place
orders with ``python -m examples.shop --orders 50`` and ask one's status with
``actorsource query orders status --key o0001`` (in code: ``frontend.place_and_ask``).
"""

from .orders import Order
from .payments import Payments
from .shipping import Shipping

__all__ = ["Order", "Payments", "Shipping"]

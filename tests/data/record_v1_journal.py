"""Records ``orders-v1.journal.sqlite``: a journal written by version 1 of an order book.

The file is test data for schema evolution: tests replay it through later models (with
upcasters) and compare with an independent fold of its raw payloads. It was recorded once by
running this script; re-running it would record with the journal format of the day, so keep
the checked-in file unless a test needs new data.

    python tests/data/record_v1_journal.py
"""

from __future__ import annotations

import contextlib
import random
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from actorsource import actor, event, handles
from actorsource.testing import ActorKit, NatsServer, NatsServerConfig

HERE = Path(__file__).parent


@event("shop.OrderPlaced")
@dataclass
class OrderPlaced:  # version 1: one line per order, a price in cents
    order_id: str
    sku: str
    quantity: int
    price_cents: int


@event("shop.OrderCancelled")
@dataclass
class OrderCancelled:
    order_id: str


@actor("orders-v1", subjects=["legacy.orders.>"], snapshot_every=25)
@dataclass
class OrderBookV1:
    open: dict[str, int] = field(default_factory=dict)
    cancelled: int = 0

    @handles(OrderPlaced)
    def placed(self, e: OrderPlaced) -> None:
        self.open[e.order_id] = e.quantity * e.price_cents

    @handles(OrderCancelled)
    def cancel(self, e: OrderCancelled) -> None:
        if self.open.pop(e.order_id, None) is not None:
            self.cancelled += 1


async def record(kit: ActorKit) -> None:
    rng = random.Random(7)
    async with kit.start(OrderBookV1) as probe:
        placed: list[str] = []
        for i in range(1, 61):
            order_id = f"o-{i:03d}"
            sku = rng.choice(["apple", "pear", "plum", "fig"])
            event_ = OrderPlaced(order_id, sku, rng.randint(1, 5), rng.randint(50, 900))
            await kit.publish("legacy.orders.placed", event_, msg_id=f"placed-{i}")
            placed.append(order_id)
            if i % 7 == 0:
                victim = OrderCancelled(rng.choice(placed))
                await kit.publish("legacy.orders.cancelled", victim, msg_id=f"cancel-{i}")
        await probe.settled()
    target = HERE / "orders-v1.journal.sqlite"
    shutil.copyfile(kit.data_dir / "orders-v1.journal.sqlite", target)
    # One self-contained file: whatever the WAL holds goes into it, and it leaves WAL mode,
    # so reading it needs (and creates) no -wal/-shm files next to it.
    with contextlib.closing(sqlite3.connect(target)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("PRAGMA journal_mode=DELETE")


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = NatsServerConfig(store_dir=Path(tmp) / "store")
        async with (
            NatsServer(config) as server,
            ActorKit.connect(server.url, data_dir=Path(tmp) / "data") as kit,
        ):
            await record(kit)


if __name__ == "__main__":
    anyio.run(main)

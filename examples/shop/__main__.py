"""Place orders in a running shop: ``python -m examples.shop --orders 50``."""

from __future__ import annotations

import argparse
import asyncio
import os

import nats

from .frontend import place, random_requests


async def _main(url: str, orders: int, seed: int) -> None:
    nc = await nats.connect(url)
    try:
        await place(nc.jetstream(), random_requests(orders, seed=seed))
    finally:
        await nc.close()
    print(f"placed {orders} orders on shop.requests.>")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--nats", default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    args = parser.parse_args()
    asyncio.run(_main(args.nats, args.orders, args.seed))


if __name__ == "__main__":
    main()

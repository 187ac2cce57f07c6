import asyncio
import gc
import warnings

from nats.aio.client import Client

warnings.simplefilter("error")


async def ecb(e):
    pass


async def main():
    nc = Client()
    try:
        await nc.connect(
            "nats://127.0.0.1:14998", allow_reconnect=False, max_reconnect_attempts=1, error_cb=ecb
        )
    except Exception as e:
        print("failed", repr(e), nc.is_closed, nc._transport)
    finally:
        pass
    print("after close", nc._transport)
    gc.collect()


asyncio.run(main())
gc.collect()
print("done")

"""What nats-server's delivery through a consumer filter costs, by filter shape and key count.

    python bench/filtered_delivery.py [--messages N] [--keys 100,1000,10000]
                                      [--batch B] [--repeat R] [--json]

Plain nats-py, no actorsource runtime. For each key count K, a file-storage stream ``FD``
(subjects ``fd.>``) is pre-filled with N messages stored as a partitioned actor's stream
stores them, ``fd.<partition>.<key>`` (8 partitions, FNV-1a of the key, K seeded random
keys, 100-byte payloads), and a stream ``FDP`` (``fdp.0.*``) with the messages of
partition 0 only, as a stream of its own would hold them. Each variant is one durable pull
consumer (AckPolicy ALL, the last of each batch acknowledged, two pull requests of B
outstanding, as the mailbox keeps them) draining its messages; the variants alternate,
R rounds, medians reported:

* ``unfiltered``: no filter on ``FD``; ``stream_filter``: ``fd.>``, the stream's subjects;
* ``narrow_all``: ``fd.*.*``, narrower than the stream's subjects but matching everything;
* ``partition``: ``fd.0.*``, one partition's filter (what a partition consumer reads);
* ``partition_stream``: ``FDP`` without a filter (the same messages in a stream of their own).

``k<K>_<variant>_events_per_s`` is delivered messages per second, and
``k<K>_<variant>_server_us_per_event`` the nats-server process's CPU time (user + system,
from ``/proc``, so Linux only) per delivered message over all rounds: on a shared machine
the CPU figure is the steadier one. ``k<K>_partition_ratio`` = partition / partition_stream events/s.

Why a filter costs (nats-server 2.10 to 2.15, ``server/filestore.go``): each delivered
message is looked up by ``msgBlock.firstMatching``; with a wildcard filter that is not the
stream's one subject, it walks every subject of the block that matches the filter
(``mb.fss.Match``) to find the lowest next sequence, unless the block has more than a
quarter as many subjects as messages are left in it (then it scans linearly). So one
delivery costs about one step per matching key of the block: K/8 for a partition filter.
Memory storage (``memstore.go``) scans linearly past 256 subjects and stops its walk at
the first subject that holds the start sequence: it does not pay this.

``states_equal`` is true when every consumer got exactly the messages of its filter. The
last line on stdout is one JSON object (with ``--json``, the only one).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import nats.js.errors
from _scaffold import BenchError, Say, connect, cpu_seconds, median, run_bench, scratch_server
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig

from actorsource._model.partitions import fnv1a_32

PARTITIONS = 8
PAYLOAD = b"x" * 100
#: variant -> (stream, filter subject or None, the partition it gets or None for all)
VARIANTS: dict[str, tuple[str, str | None, int | None]] = {
    "unfiltered": ("FD", None, None),
    "stream_filter": ("FD", "fd.>", None),
    "narrow_all": ("FD", "fd.*.*", None),
    "partition": ("FD", "fd.0.*", 0),
    "partition_stream": ("FDP", None, 0),
}


async def wait_stored(js: JetStreamContext, stream: str, n: int, timeout: float = 60) -> None:
    """Wait until ``stream`` holds at least ``n`` messages."""
    deadline = time.monotonic() + timeout
    while True:
        if (await js.stream_info(stream)).state.messages >= n:
            return
        if time.monotonic() > deadline:
            raise BenchError(f"stream {stream} did not reach {n} messages in {timeout} s")
        await asyncio.sleep(0.02)


async def fill(nc: NATS, js: JetStreamContext, stream: str, subjects: list[str]) -> None:
    """Publish one message to each of ``subjects`` (core publishes, at most 20,000 not yet
    stored) and wait until ``stream`` holds them all."""
    for i, subject in enumerate(subjects, 1):
        await nc.publish(subject, PAYLOAD)
        if i % 2_000 == 0:
            await nc.flush()
            await wait_stored(js, stream, i - 20_000)
    await nc.flush()
    await wait_stored(js, stream, len(subjects))


async def drain(
    nc: NATS, js: JetStreamContext, stream: str, filt: str | None, expected: list[str], batch: int
) -> float:
    """Create a durable pull consumer on ``stream`` (filter ``filt``), take its messages
    until ``len(expected)`` came, delete it; seconds taken. Raises :class:`BenchError` if
    the subjects delivered are not ``expected`` in order."""
    name = "fd"
    config = ConsumerConfig(
        durable_name=name,
        ack_policy=AckPolicy.ALL,
        ack_wait=30,
        max_ack_pending=4 * batch,
        max_deliver=-1,
        max_waiting=64,
    )
    if filt is not None:
        config.filter_subject = filt
    await js.add_consumer(stream, config=config)
    inbox = nc.new_inbox()
    next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{name}"
    request = json.dumps({"batch": batch, "expires": 10_000_000_000}).encode()
    got: list[str] = []
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    n = len(expected)

    async def on_message(msg: Msg) -> None:
        if not msg.reply:  # a status (a request expired): none expected while draining
            return
        got.append(msg.subject)
        k = len(got)
        if k % batch == 0 or k == n:
            await nc.publish(msg.reply, b"+ACK")
            if k < n:
                await nc.publish(next_subject, request, reply=inbox)
        if k == n and not done.done():
            done.set_result(None)

    sub = await nc.subscribe(inbox, cb=on_message, pending_msgs_limit=1_000_000)
    started = time.perf_counter()
    await nc.publish(next_subject, request, reply=inbox)
    await nc.publish(next_subject, request, reply=inbox)
    try:
        await asyncio.wait_for(done, 300)
    except TimeoutError as exc:
        raise BenchError(f"{stream} {filt}: {len(got)} of {n} delivered in 300 s") from exc
    seconds = time.perf_counter() - started
    await sub.unsubscribe()
    await js.delete_consumer(stream, name)
    if got != expected:
        raise BenchError(f"{stream} {filt}: the messages delivered are not the stream's")
    return seconds


async def bench(args: argparse.Namespace, root: Path, say: Say) -> dict[str, Any]:
    result: dict[str, Any] = {"messages": args.messages, "batch": args.batch}
    async with scratch_server(root) as server:
        pid = server.pid
        assert pid is not None
        nc = await connect(server.url)
        try:
            js = nc.jetstream(timeout=30)
            for keys in args.keys:
                rng = random.Random(keys)
                names = [f"k{i}" for i in range(keys)]
                partition = {k: fnv1a_32(k.encode()) % PARTITIONS for k in names}
                drawn = [names[rng.randrange(keys)] for _ in range(args.messages)]
                stored = [f"fd.{partition[k]}.{k}" for k in drawn]
                for name in ("FD", "FDP"):
                    with contextlib.suppress(nats.js.errors.NotFoundError):
                        await js.delete_stream(name)
                await js.add_stream(StreamConfig(name="FD", subjects=["fd.>"]))
                await js.add_stream(StreamConfig(name="FDP", subjects=["fdp.0.*"]))
                assert (await js.stream_info("FD")).config.storage == StorageType.FILE
                await fill(nc, js, "FD", stored)
                own = [f"fdp.0.{k}" for k in drawn if partition[k] == 0]
                await fill(nc, js, "FDP", own)
                partition_0 = [s for s in stored if s.startswith("fd.0.")]
                expected = {
                    variant: own if stream == "FDP" else partition_0 if part == 0 else stored
                    for variant, (stream, _, part) in VARIANTS.items()
                }
                rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
                spent = dict.fromkeys(VARIANTS, 0.0)
                for _ in range(args.repeat):
                    for variant, (stream, filt, _) in VARIANTS.items():
                        before = cpu_seconds(pid)
                        seconds = await drain(nc, js, stream, filt, expected[variant], args.batch)
                        spent[variant] += cpu_seconds(pid) - before
                        rates[variant].append(len(expected[variant]) / seconds)
                for variant in VARIANTS:
                    rate = median(rates[variant])
                    delivered = args.repeat * len(expected[variant])
                    cpu = spent[variant] / delivered * 1e6
                    result[f"k{keys}_{variant}_events_per_s"] = round(rate)
                    result[f"k{keys}_{variant}_server_us_per_event"] = round(cpu, 1)
                    say(f"K={keys} {variant}: {rate:,.0f} events/s, server {cpu:.1f} us/event")
                result[f"k{keys}_partition_ratio"] = round(
                    median(rates["partition"]) / median(rates["partition_stream"]), 3
                )
        finally:
            await nc.close()
    result["states_equal"] = True
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument(
        "--keys",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[100, 1_000, 10_000],
        help="comma-separated key counts",
    )
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print only the JSON line on stdout")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_bench(
        "filtered-delivery",
        bench,
        parse_args(argv),
        summary_keys=("_ratio", "server_us_per_event"),
    )


if __name__ == "__main__":
    sys.exit(main())

"""The hand-written baselines of ``bench/throughput.py``: a fetch() pipeline, the same fed by
hand-sent pull requests (fast pull), and a receive-only ceiling (see that module's docstring).
"""

from __future__ import annotations

import collections
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import nats.errors
from _scaffold import STREAM, BenchError, apply_raw, connect
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

BATCH = 256
STALL = 30.0  # seconds without progress before a run is declared stuck

Expected = tuple[dict[str, int], int]


# -- the hand-written pipeline -----------------------------------------------------------------


class Pipeline:
    """The per-batch work of the hand-written baselines: parse, insert + commit, fold, ack.

    What a competent engineer writes without a framework: the stream sequence from the
    message metadata (a redelivery at or below the last one is acknowledged, not applied
    again), the type from the ``Event-Type`` header, ``json.loads`` per payload, one
    ``executemany`` and one commit per batch, then the fold, then one ack per message.
    """

    def __init__(self, db_path: Path) -> None:
        self.db = sqlite3.connect(db_path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE events (seq INTEGER PRIMARY KEY, subject TEXT NOT NULL, "
            "type TEXT NOT NULL, payload BLOB NOT NULL, msg_id TEXT, received_at REAL NOT NULL)"
        )
        self.db.commit()
        self.balances: dict[str, int] = {}
        self.declined = 0
        self.last_seq = 0
        self.applied = 0

    async def handle(self, msgs: list[Msg]) -> None:
        now = time.time()
        rows: list[tuple[Any, ...]] = []
        decoded: list[tuple[str | None, dict[str, Any]]] = []
        for msg in msgs:
            seq = msg.metadata.sequence.stream
            if seq <= self.last_seq:
                continue
            headers = msg.headers or {}
            type_name = headers.get("Event-Type")
            decoded.append((type_name, json.loads(msg.data)))
            rows.append((seq, msg.subject, type_name, msg.data, headers.get("Nats-Msg-Id"), now))
            self.last_seq = seq
        if rows:
            self.db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", rows)
            self.db.commit()
        balances = self.balances
        for type_name, event in decoded:
            self.declined += apply_raw(balances, type_name, event)
        for msg in msgs:
            await msg.ack()
        self.applied += len(rows)

    def close(self) -> None:
        self.db.close()


async def add_baseline_consumer(nc: NATS, durable: str) -> None:
    await nc.jetstream().add_consumer(
        STREAM,
        config=ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            filter_subject="bank.>",
            max_ack_pending=4 * BATCH,  # what actorsource gives its consumer at max_batch 256
        ),
    )


class Progress:
    """Raises BenchError when ``count()`` has not moved for ``STALL`` seconds."""

    def __init__(self, what: str, n: int, count: Callable[[], int]) -> None:
        self._what, self._n, self._count = what, n, count
        self._last, self._since = -1, time.monotonic()

    def check(self) -> None:
        now, seen = time.monotonic(), self._count()
        if seen != self._last:
            self._last, self._since = seen, now
        elif now - self._since > STALL:
            raise BenchError(f"{self._what} stalled at {seen} of {self._n} events for {STALL} s")


async def baseline_fetch(nc: NATS, n: int, db_path: Path, durable: str) -> tuple[float, Expected]:
    """``PullSubscription.fetch(256)`` in a loop; returns (seconds, final state)."""
    started = time.perf_counter()
    await add_baseline_consumer(nc, durable)
    sub = await nc.jetstream().pull_subscribe_bind(durable=durable, stream=STREAM)
    pipeline = Pipeline(db_path)
    progress = Progress("the fetch baseline", n, lambda: pipeline.applied)
    try:
        while pipeline.applied < n:
            try:
                msgs = await sub.fetch(BATCH, timeout=1.0)
            except nats.errors.TimeoutError:
                progress.check()
                continue
            await pipeline.handle(msgs)
            progress.check()
        seconds = time.perf_counter() - started
    finally:
        pipeline.close()
        await sub.unsubscribe()
        await nc.jetstream().delete_consumer(STREAM, durable)
    return seconds, (pipeline.balances, pipeline.declined)


async def baseline_fastpull(
    nc: NATS,
    n: int,
    db_path: Path,
    durable: str,
    make_pipeline: Callable[[Path], Pipeline] = Pipeline,
) -> tuple[float, Expected]:
    """Hand-sent pull requests to a callback inbox; returns (seconds, final state)."""
    started = time.perf_counter()
    await add_baseline_consumer(nc, durable)
    next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{durable}"
    request = json.dumps({"batch": BATCH, "expires": 5_000_000_000}).encode()
    buffer: collections.deque[Msg] = collections.deque()
    arrived = anyio.Event()
    credit = 0

    async def on_msg(msg: Msg) -> None:
        nonlocal arrived, credit
        headers = msg.headers
        if not msg.data and headers and "Status" in headers:
            # 408: a request expired; 409/404/503 would be consumer trouble (none expected).
            pending = headers.get("Nats-Pending-Messages")
            credit = max(0, credit - int(pending)) if pending else 0
        else:
            credit -= 1
            buffer.append(msg)
        arrived.set()

    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, cb=on_msg)
    pipeline = make_pipeline(db_path)
    progress = Progress("the fast-pull baseline", n, lambda: pipeline.applied)
    try:
        while pipeline.applied < n:
            while credit + len(buffer) <= BATCH:  # keep about two requests in flight
                credit += BATCH
                await nc.publish(next_subject, request, reply=inbox)
            if not buffer:
                arrived = anyio.Event()
                with anyio.move_on_after(1.0):
                    await arrived.wait()
                if not buffer:
                    credit = 0  # requests lost or expired: ask again
                progress.check()
                continue
            take = min(BATCH, len(buffer))
            await pipeline.handle([buffer.popleft() for _ in range(take)])
            progress.check()
        seconds = time.perf_counter() - started
    finally:
        pipeline.close()
        await sub.unsubscribe()
        await nc.jetstream().delete_consumer(STREAM, durable)
    return seconds, (pipeline.balances, pipeline.declined)


async def receive_only(url: str, n: int, durable: str) -> float:
    """Seconds to receive ``n`` messages with hand-sent pulls and nothing else."""
    nc = await connect(url)
    try:
        js = nc.jetstream()
        await js.add_consumer(
            STREAM,
            config=ConsumerConfig(
                durable_name=durable,
                ack_policy=AckPolicy.NONE,
                deliver_policy=DeliverPolicy.ALL,
                filter_subject="bank.>",
            ),
        )
        next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{durable}"
        request = json.dumps({"batch": n, "expires": 60_000_000_000}).encode()
        done = anyio.Event()
        received = 0

        async def on_msg(msg: Msg) -> None:
            nonlocal received
            if msg.data:
                received += 1
                if received == n:
                    done.set()

        started = time.perf_counter()
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox, cb=on_msg)
        await nc.publish(next_subject, request, reply=inbox)
        with anyio.fail_after(STALL * 4):
            await done.wait()
        seconds = time.perf_counter() - started
        await sub.unsubscribe()
        await js.delete_consumer(STREAM, durable)
    finally:
        await nc.close()
    return seconds


# -- the benchmark -----------------------------------------------------------------------------

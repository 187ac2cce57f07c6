"""The FastStream contender: what a Python team would otherwise pick for the same job.

FastStream (``faststream[nats]`` 0.7.x, the ``bench`` extra) with its documented batch pull
subscriber, written as its documentation shows it:

* a ``NatsBroker`` of its own (its own connection), started and stopped inside the run;
* ``@broker.subscriber("bank.>", stream=JStream("ACCOUNTS", declare=False),
  durable="faststream-<round>", config=ConsumerConfig(deliver_policy=ALL,
  max_ack_pending=4 * batch), pull_sub=PullSub(512, timeout=0.1, batch=True))``: FastStream
  creates the durable consumer (``declare=False`` leaves the stream as it is), and one task
  calls ``PullSubscription.fetch`` until it holds ``batch_size`` messages (or ``timeout`` has
  passed), then calls the handler once with the whole list, in stream order;
* the handler takes the decoded bodies (``list[dict[str, Any]]``, FastStream's JSON decoding
  and its type validation) and the ``NatsBatchMessage`` (``msg.raw_message``: the nats-py
  messages, ``msg.batch_headers``: their headers); it reads each stream sequence from the
  message metadata and the type from the ``Event-Type`` header, skips a redelivery at or
  below the last sequence, journals the batch through aiosqlite (one ``executemany`` of
  ``(stream_seq, subject, type, payload, time)`` rows into a WAL table with ``stream_seq
  INTEGER PRIMARY KEY``, ``synchronous=NORMAL``, one commit), then folds it with the bank's
  rules (``apply_raw``);
* acknowledgement is FastStream's default (``AckPolicy.REJECT_ON_ERROR``): when the handler
  has returned, so after the commit, its middleware acks every message of the batch, one
  ``+ACK`` each (``NatsBatchMessage.ack``); an exception would terminate them instead.

The batch size: 512. 256, 512 and 1024 were tried (smoke runs of 20,000 events on a shared
2-core machine, ``timeout`` 0.1 s): 256 was the slowest; 1024 was no faster than 512 and its
batches were often cut short by the timeout (receiving 1024 messages through nats-py can take
longer than 0.1 s), while a longer timeout lengthens the wait below. ``timeout`` 0.1 s: the
last, partial batch (N is rarely a multiple of 512) waits the whole timeout for messages that
never come, and that wait is in the measured time; FastStream's default 5 s would dominate a
short run, and 0.05 s cut 512-batches short too.

Written against FastStream 0.7.8 and nats-py 2.16, with one correction to FastStream's batch
loop, :func:`_catch_bare_fetch_timeouts` (a timeout it fails to catch): without it, 2 of about
15 smoke runs here lost the messages the loop had collected until JetStream redelivered them
30 s later, and the run stalled.

FastStream's access log (a "Received" and a "Processed" line per batch, to stdout by
default) goes to a logger of its own at level WARNING, as the library's own logs are set
for the benchmark (``quiet_library``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Annotated, Any

import aiosqlite
import anyio
import nats.errors
import nats.js.errors
from _scaffold import STREAM, BenchError, apply_raw
from faststream import Context
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.nats.message import NatsBatchMessage
from faststream.nats.subscriber.usecases import stream_pull_subscriber
from nats.aio.client import Client as NATS
from nats.js.api import ConsumerConfig, DeliverPolicy

__all__ = ["BATCH", "TIMEOUT", "faststream_run"]

#: Messages per handler call (``PullSub.batch_size``).
BATCH = 512
#: Seconds a batch may wait to fill (``PullSub.timeout``): only the last, partial batch waits.
TIMEOUT = 0.1
STALL = 30.0

#: FastStream's per-batch access log, kept out of stdout and filtered as the library's.
LOGGER = logging.getLogger("bench.faststream")
LOGGER.setLevel(logging.WARNING)

BatchMessage = Annotated[NatsBatchMessage, Context("message")]


def _catch_bare_fetch_timeouts() -> None:
    """Let FastStream's pull loop end a batch on every fetch timeout, as it means to.

    nats-py 2.16's ``PullSubscription.fetch`` raises a bare ``asyncio.TimeoutError`` (not its
    own ``nats.errors.TimeoutError``, a subclass) when the server's 408 for a pull that found
    nothing arrives just before the client's own timer (the two are 100 µs apart), a race run
    whenever a batch cannot fill, as the last one does. FastStream 0.7.8's batch loop (``BatchPullStreamSubscriber._consume_pull``)
    catches only ``nats.errors.TimeoutError``: its task dies and is restarted, and the
    partial batch it held is lost until JetStream redelivers it after ``ack_wait`` (30 s,
    after the later messages). Catching the base class, which is all this changes, gives
    FastStream's intended behaviour: the partial batch goes to the handler.
    """
    if getattr(stream_pull_subscriber, "TimeoutError", None) is nats.errors.TimeoutError:
        setattr(stream_pull_subscriber, "TimeoutError", TimeoutError)  # noqa: B010


_catch_bare_fetch_timeouts()


class _Journal:
    """The handler's state: the aiosqlite journal, the fold, and when all ``n`` are in."""

    def __init__(self, db: aiosqlite.Connection, n: int) -> None:
        self.db = db
        self.n = n
        self.balances: dict[str, int] = {}
        self.declined = 0
        self.last_seq = 0
        self.applied = 0
        self.failure: Exception | None = None
        self.done = anyio.Event()

    async def handle(self, bodies: list[dict[str, Any]], msg: NatsBatchMessage) -> None:
        try:
            now = time.time()
            rows: list[tuple[int, str, str, bytes, float]] = []
            events: list[tuple[str, dict[str, Any]]] = []
            for raw, headers, body in zip(msg.raw_message, msg.batch_headers, bodies, strict=True):
                seq = raw.metadata.sequence.stream
                if seq <= self.last_seq:
                    continue  # a redelivery: FastStream acks it with the rest, not applied again
                self.last_seq = seq
                type_name = headers["Event-Type"]
                events.append((type_name, body))
                rows.append((seq, raw.subject, type_name, raw.data, now))
            if rows:
                await self.db.executemany("INSERT INTO journal VALUES (?, ?, ?, ?, ?)", rows)
                await self.db.commit()
            balances = self.balances
            for type_name, event in events:
                self.declined += apply_raw(balances, type_name, event)
            self.applied += len(rows)
        except Exception as exc:
            self.failure = exc
            self.done.set()
            raise
        if self.applied >= self.n:
            self.done.set()


async def _open_journal(db_path: Path) -> aiosqlite.Connection:
    db = await aiosqlite.connect(db_path)
    await db.execute("PRAGMA journal_mode=WAL")
    await db.execute("PRAGMA synchronous=NORMAL")
    await db.execute(
        "CREATE TABLE journal (stream_seq INTEGER PRIMARY KEY, subject TEXT NOT NULL, "
        "type TEXT NOT NULL, payload BLOB NOT NULL, received_at REAL NOT NULL)"
    )
    await db.commit()
    return db


async def faststream_run(
    nc: NATS, n: int, url: str, db_path: Path, durable: str, batch: int = BATCH
) -> tuple[float, tuple[dict[str, int], int]]:
    """Consume the whole stream with a FastStream batch subscriber; (seconds, final state).

    Timed from just before the journal is opened and the broker started (it creates the
    durable consumer) until the handler has folded the ``n``-th event; the broker is
    connected before and stopped after. ``nc`` deletes the consumer afterwards.
    """
    broker = NatsBroker(url, logger=LOGGER, max_reconnect_attempts=2, connect_timeout=5)
    await broker.connect()
    try:
        started = time.perf_counter()
        journal = _Journal(await _open_journal(db_path), n)
    except BaseException:
        await broker.stop()
        raise
    try:
        subscriber = broker.subscriber(
            "bank.>",
            stream=JStream(STREAM, declare=False),
            durable=durable,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, max_ack_pending=4 * batch),
            pull_sub=PullSub(batch, timeout=TIMEOUT, batch=True),
        )

        @subscriber
        async def journal_and_fold(bodies: list[dict[str, Any]], msg: BatchMessage) -> None:
            await journal.handle(bodies, msg)

        await broker.start()
        seen, since = -1, time.monotonic()
        while not journal.done.is_set():
            with anyio.move_on_after(1.0):
                await journal.done.wait()
            if journal.applied != seen:
                seen, since = journal.applied, time.monotonic()
            elif time.monotonic() - since > STALL:
                raise BenchError(f"the FastStream subscriber stalled at {seen} of {n} events")
        seconds = time.perf_counter() - started
        if journal.failure is not None:
            raise BenchError(f"the FastStream handler failed: {journal.failure!r}")
    finally:
        await broker.stop()
        await journal.db.close()
        with contextlib.suppress(nats.js.errors.NotFoundError):  # if it failed before that
            await nc.jetstream().delete_consumer(STREAM, durable)
    return seconds, (journal.balances, journal.declined)

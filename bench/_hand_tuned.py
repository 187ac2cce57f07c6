"""The hand-tuned durable pipeline: the fair ceiling for what a framework's per-message work costs.

Ordinary nats-py and SQLite code, public API only, as an engineer would tune it by hand for
one job, and pinned so that it cannot be slow by accident:

* a durable consumer with ``AckPolicy.ALL`` on the same stream and messages the actor reads
  (each with its ``Event-Type`` and ``Nats-Msg-Id`` headers);
* pull requests of 512 sent by hand to an inbox subscribed with the public
  ``nc.subscribe(inbox, cb=...)``, two requests outstanding;
* the stream sequence parsed from the reply subject, the type and id from the headers;
* ``msgspec.json.Decoder(BankEventStruct)`` per payload;
* one ``executemany`` of ``(stream_seq, subject, type, msg_id, payload, time)`` rows and one
  commit per batch of 512 through aiosqlite, into a WAL table with ``stream_seq INTEGER
  PRIMARY KEY`` and no other index (``synchronous=NORMAL``, as the actor's journal);
* then **one** ack, of the batch's last message; then a dict fold with the bank's rules.

It journals every event before acknowledging it and it folds: what it does not do is what
a framework adds (deduplication by message id for as long as the journal lives, headers
and versions kept, typed handlers with a context, snapshots, dead letters).
"""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path

import aiosqlite
import anyio
import msgspec
from _scaffold import STREAM, BankEventStruct, BenchError
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

__all__ = ["BATCH", "hand_tuned"]

BATCH = 512
STALL = 30.0


class _Fold:
    def __init__(self) -> None:
        self.balances: dict[str, int] = {}
        self.declined = 0

    def apply(self, type_name: str, e: BankEventStruct) -> None:
        balances = self.balances
        if type_name == "Deposited":
            balances[e.account] = balances.get(e.account, 0) + e.amount
            return
        if type_name == "Withdrawn":
            balance = balances.get(e.account, 0)
            if balance < e.amount:
                self.declined += 1
            else:
                balances[e.account] = balance - e.amount
            return
        if type_name == "Transferred":
            balance = balances.get(e.source, 0)
            if balance < e.amount:
                self.declined += 1
            else:
                balances[e.source] = balance - e.amount
                balances[e.target] = balances.get(e.target, 0) + e.amount
            return
        raise BenchError(f"unknown event type {type_name!r}")


async def hand_tuned(
    nc: NATS, n: int, db_path: Path, durable: str
) -> tuple[float, tuple[dict[str, int], int]]:
    """Consume the whole stream durably; returns (seconds, (balances, declined))."""
    started = time.perf_counter()
    js = nc.jetstream()
    await js.add_consumer(
        STREAM,
        config=ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.ALL,
            deliver_policy=DeliverPolicy.ALL,
            filter_subject="bank.>",
            max_ack_pending=4 * BATCH,
        ),
    )
    db = await aiosqlite.connect(db_path)
    await db.execute("PRAGMA journal_mode=WAL")
    await db.execute("PRAGMA synchronous=NORMAL")
    await db.execute(
        "CREATE TABLE journal (stream_seq INTEGER PRIMARY KEY, subject TEXT NOT NULL, "
        "type TEXT NOT NULL, msg_id TEXT, payload BLOB NOT NULL, received_at REAL NOT NULL)"
    )
    await db.commit()
    decode = msgspec.json.Decoder(BankEventStruct).decode
    fold = _Fold()
    next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{durable}"
    request = json.dumps({"batch": BATCH, "expires": 5_000_000_000}).encode()
    buffer: collections.deque[Msg] = collections.deque()
    arrived = anyio.Event()
    credit = 0

    async def on_msg(msg: Msg) -> None:
        nonlocal credit
        if not msg.data and msg.headers and "Status" in msg.headers:
            pending = msg.headers.get("Nats-Pending-Messages")
            credit = max(0, credit - int(pending)) if pending else 0
        else:
            credit -= 1
            buffer.append(msg)
        arrived.set()

    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, cb=on_msg)
    applied = 0
    last_seq = 0
    last_progress = time.monotonic()
    try:
        while applied < n:
            while credit + len(buffer) <= BATCH:  # two requests outstanding
                credit += BATCH
                await nc.publish(next_subject, request, reply=inbox)
            if not buffer:
                arrived = anyio.Event()
                with anyio.move_on_after(1.0):
                    await arrived.wait()
                if not buffer:
                    credit = 0
                    if time.monotonic() - last_progress > STALL:
                        raise BenchError(f"the hand-tuned pipeline stalled at {applied} of {n}")
                continue
            take = min(BATCH, len(buffer))
            msgs = [buffer.popleft() for _ in range(take)]
            now = time.time()
            rows = []
            events = []
            for msg in msgs:
                # $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ts>.<pending>
                seq = int(msg.reply.split(".", 6)[5])
                if seq <= last_seq:
                    continue  # a redelivery: acknowledged below with the rest, not applied
                last_seq = seq
                headers = msg.headers or {}
                type_name = headers["Event-Type"]
                events.append((type_name, decode(msg.data)))
                rows.append(
                    (seq, msg.subject, type_name, headers.get("Nats-Msg-Id"), msg.data, now)
                )
            await db.executemany("INSERT INTO journal VALUES (?, ?, ?, ?, ?, ?)", rows)
            await db.commit()
            await nc.publish(msgs[-1].reply, b"+ACK")  # AckPolicy.ALL: this and all before
            apply = fold.apply
            for type_name, event in events:
                apply(type_name, event)
            applied += len(rows)
            last_progress = time.monotonic()
        seconds = time.perf_counter() - started
    finally:
        await sub.unsubscribe()
        await db.close()
        await js.delete_consumer(STREAM, durable)
    return seconds, (fold.balances, fold.declined)

"""Helpers of the tests that run cluster-mode workers as processes on a 3-node JetStream
cluster: workers of ``partitioned_actors:Orders``, who holds which lease, each partition's
committed history (its journal subject) and the exactly-once-in-order check against an
independent fold."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import nats.errors
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from partitioned_actors import Placed, fold

from actorsource._cluster.batches import decode_batch
from actorsource._cluster.fence import JournalFence
from actorsource._cluster.lease import Leases
from actorsource.journal import JournalEntry
from actorsource.testing import NatsCluster, WorkerProcess

TESTS = Path(__file__).parent
LEASE = 3.0
PARTITIONS = 4
KEYS = [f"k{i}" for i in range(24)]


async def _quiet(exc: Exception) -> None:
    pass


@asynccontextmanager
async def connect(cluster: NatsCluster) -> AsyncIterator[Client]:
    nc = Client()
    await nc.connect(
        servers=list(cluster.urls),
        reconnect_time_wait=0.1,
        max_reconnect_attempts=-1,
        error_cb=_quiet,
    )
    try:
        yield nc
    finally:
        with anyio.move_on_after(2, shield=True):
            await nc.close()


def orders_worker(
    cluster: NatsCluster,
    tmp_path: Path,
    worker_id: str,
    *,
    lease: float = LEASE,
    targets: tuple[str, ...] = ("partitioned_actors:Orders",),
) -> WorkerProcess:
    return WorkerProcess(
        list(targets),
        urls=cluster.urls,
        data_dir=tmp_path / worker_id,
        args=["--cluster", "--replicas", "3", "--lease-time", str(lease), "--worker-id", worker_id],
        pythonpath=[TESTS],
    )


async def until(condition: Callable[[], object], timeout: float, what: str) -> None:
    try:
        with anyio.fail_after(timeout):
            while not await condition():  # type: ignore[misc]
                await anyio.sleep(0.1)
    except TimeoutError:
        pytest.fail(f"not within {timeout} s: {what}")


async def lease_holders(js: JetStreamContext, lease: float = LEASE) -> dict[int, str | None]:
    leases = Leases(js, ttl=lease)
    out: dict[int, str | None] = {}
    for k in range(PARTITIONS):
        try:
            held = await leases.holder(f"porders-p{k}")
        except (nats.errors.Error, OSError):
            held = None
        out[k] = held[0] if held else None
    return out


async def committed_history(js: JetStreamContext) -> dict[int, list[JournalEntry]]:
    """Every partition's committed history: the batches of its journal subject."""
    out: dict[int, list[JournalEntry]] = {}
    for k in range(PARTITIONS):
        entries: list[JournalEntry] = []
        async for record in JournalFence(js, "porders", k).tail(0):
            if record.kind == "batch":
                entries.extend(decode_batch(record.data).entries)
        out[k] = entries
    return out


def check_exactly_once_in_order(
    committed: dict[int, list[JournalEntry]], published: list[Placed]
) -> None:
    seen: dict[str, list[int]] = {}
    for k, entries in committed.items():
        assert [e.pos for e in entries] == list(range(1, len(entries) + 1)), f"partition {k}"
        for e in entries:
            event = json.loads(e.payload)
            seen.setdefault(event["key"], []).append(event["n"])
    assert seen == fold(published)


async def publish(js: JetStreamContext, event: Placed, prefix: str = "porders") -> int:
    """Publish ``event`` to ``<prefix>.<key>`` (retried through elections); its sequence."""
    msg_id = f"{prefix}:{event.key}:{event.n}"
    headers = {"Event-Type": "Placed", "Nats-Msg-Id": msg_id}
    payload = json.dumps({"key": event.key, "n": event.n}).encode()
    with anyio.fail_after(30):
        while True:
            try:
                ack = await js.publish(f"{prefix}.{event.key}", payload, headers=headers)
                return int(ack.seq)
            except (nats.errors.Error, OSError):
                await anyio.sleep(0.1)


async def wait_spread(
    js: JetStreamContext, *workers: str, lease: float = LEASE
) -> dict[int, str | None]:
    """Wait until every partition is held, each of ``workers`` holds its share (the
    assignment's bound: P/N rounded down or up), and two reads in a row agree: a hand-off
    under way (one worker holding a partition it is giving back) is not taken for it."""
    holders: dict[int, str | None] = {}
    last: dict[int, str | None] = {}

    async def spread() -> bool:
        nonlocal holders, last
        last, holders = holders, await lease_holders(js, lease)
        counts = [list(holders.values()).count(w) for w in workers]
        low, high = len(holders) // len(workers), -(-len(holders) // len(workers))
        balanced = set(holders.values()) == set(workers) and low <= min(counts)
        return balanced and max(counts) <= high and holders == last

    await until(spread, 40, f"the partitions spread over {workers}")
    return holders


async def total_committed(js: JetStreamContext) -> int:
    try:
        return sum(len(v) for v in (await committed_history(js)).values())
    except Exception:
        return -1

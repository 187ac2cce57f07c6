"""The runner's hooks in cluster mode: recovery imports the journal subject's tail first,
and every commit passes the fence first; against a real nats-server and SQLite files."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.js import JetStreamContext

from actorsource._cluster.fence import JournalFence, ensure_journal_stream
from actorsource._cluster.guard import PartitionGuard
from actorsource._cluster.lease import Leases
from actorsource._errors import Fenced, LeaseLost
from actorsource.journal import JournalBatch, JournalEntry, SQLiteJournal
from actorsource.testing import NatsServer


@pytest.fixture
async def js(nats_server: NatsServer) -> AsyncIterator[JetStreamContext]:
    client = await nats.connect(nats_server.url)
    try:
        context = client.jetstream()
        await ensure_journal_stream(context)
        yield context
    finally:
        await client.close()


def _batch(pos: int) -> JournalBatch:
    entry = JournalEntry(pos, f"orders.k{pos}", "Placed", b"{}", 1.0, "ORDERS", pos)
    return JournalBatch(entries=[entry], positions={"ORDERS": pos}, dead_letters=[])


async def _guard(js: JetStreamContext, owner: str) -> PartitionGuard:
    lease = await Leases(js, ttl=30).acquire("orders-p3", owner)
    return PartitionGuard(lease, JournalFence(js, "orders", 3))


async def _recover(guard: PartitionGuard, journal: SQLiteJournal) -> None:
    async for batch in guard.recover(after=journal.stream_positions.get(guard.position_key, 0)):
        await journal.append(batch)


async def test_a_crash_between_the_append_and_the_sqlite_commit_is_healed_by_the_tail(
    js: JetStreamContext, tmp_path: Path
) -> None:
    path = tmp_path / "orders-p3.db"
    first = await _guard(js, "worker-a")
    async with SQLiteJournal(path, actor="orders-p3") as journal:
        await _recover(first, journal)
        batch = _batch(1)
        batch.positions[first.position_key] = await first.before_commit(batch)
        await journal.append(batch)
        await first.before_commit(_batch(2))  # appended; the process dies before the commit
    await first.lease.release()

    second = await _guard(js, "worker-b")
    async with SQLiteJournal(path, actor="orders-p3") as journal:
        await _recover(second, journal)
        assert [e.pos for part in [p async for p in journal.entries(0)] for e in part] == [1, 2]
        assert journal.stream_positions["ORDERS"] == 2
        batch = _batch(3)
        batch.positions[second.position_key] = await second.before_commit(batch)
        await journal.append(batch)
    # The old owner's fence does not rest on its lease: even believing it owns the
    # partition (paused, say), its append is refused.
    with pytest.raises(Fenced):
        await first.fence.append(b"late")


async def test_a_lapsed_lease_commits_nothing(js: JetStreamContext) -> None:
    guard = await _guard(js, "worker-a")
    async for _ in guard.recover(after=0):
        pass
    guard.lease._renewed_at = time.monotonic() - 29  # as after a long pause
    with pytest.raises(LeaseLost, match="lapsed; not committing"):
        await guard.before_commit(_batch(1))
    assert [r.kind async for r in guard.fence.tail()] == ["epoch"]

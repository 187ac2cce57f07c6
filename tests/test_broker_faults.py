"""Broker faults: restarts, pauses, deleted consumers and re-created streams."""

from __future__ import annotations

import logging

import anyio
import pytest
from actors import Added, Counter, assert_exactly_once

from actorsource import StreamMismatchError
from actorsource.testing import ActorKit


async def _publish(kit: ActorKit, events: list[Added]) -> None:
    for e in events:
        await kit.publish(f"count.{e.key}", e, msg_id=f"{e.key}-{e.amount}")


async def test_a_nats_server_restart_mid_stream_loses_nothing(
    actor_kit: ActorKit, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="actorsource")
    assert actor_kit.server is not None
    events = [Added(f"k{i % 3}", i) for i in range(1, 61)]
    async with actor_kit.start(Counter) as counter:
        await _publish(actor_kit, events[:30])
        await actor_kit.server.restart()
        await _publish(actor_kit, events[30:])
        await counter.settled(timeout=30)
        await assert_exactly_once(counter, events)
    assert any(r.getMessage() == "nats reconnected" for r in caplog.records)


async def test_a_nats_server_paused_longer_than_ack_wait_loses_nothing_and_applies_nothing_twice(
    actor_kit: ActorKit,
) -> None:
    assert actor_kit.server is not None
    events = [Added(f"k{i % 3}", i) for i in range(1, 201)]
    async with actor_kit.start(Counter, ack_wait=0.5) as counter:
        await _publish(actor_kit, events)
        actor_kit.server.pause()
        try:
            await anyio.sleep(1.5)  # the fault is the passage of time while the broker is frozen
        finally:
            actor_kit.server.resume()
        await counter.settled(timeout=30)
        await assert_exactly_once(counter, events)


async def test_a_re_created_stream_halts_the_actor_instead_of_mixing_histories(
    actor_kit: ActorKit, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="actorsource")
    async with actor_kit.start(Counter) as counter:
        await _publish(actor_kit, [Added("a", i) for i in range(1, 11)])
        await counter.settled()
        info = await actor_kit.js.stream_info("COUNTER")
        await actor_kit.js.delete_stream("COUNTER")
        await actor_kit.js.add_stream(info.config)
        await actor_kit.publish("count.a", Added("a", 1000))  # sequence 1 again
        error = await counter.halted()
        assert isinstance(error, StreamMismatchError)
        assert "re-created" in str(error)
        assert len(await _entries_after_halt(counter.journal_path)) == 10
    assert any(
        r.getMessage() == "actor failed" and "re-created" in r.error  # type: ignore[attr-defined]
        for r in caplog.records
    )


async def _entries_after_halt(path: object) -> list[tuple[int, ...]]:
    import sqlite3

    with sqlite3.connect(str(path)) as db:
        return list(db.execute("SELECT pos FROM events"))

"""The core guarantees, each against a real nats-server and real SQLite journals.

Every test compares the actor's final state with an independent fold of exactly what was
published, and with a fresh fold of its own journal.
"""

from __future__ import annotations

import anyio
import pytest
from actors import (
    Added,
    BlockingCounter,
    Counter,
    SlowCounter,
    assert_exactly_once,
    expected_totals,
)

from actorsource._mailbox.fastpath import ENV_SWITCH
from actorsource.testing import ActorKit


def _events(n: int, keys: int = 5, start: int = 0) -> list[Added]:
    return [Added(f"k{i % keys}", i + 1) for i in range(start, start + n)]


async def _publish_all(kit: ActorKit, events: list[Added]) -> None:
    for e in events:
        await kit.publish(f"count.{e.key}", e, msg_id=f"m-{e.amount}")


# The inbox's fast lane on (the default) and off: the same guarantees either way.
@pytest.mark.parametrize("fastpath", ["1", "0"], ids=["fast lane", "nats-py callbacks"])
async def test_a_crash_after_commit_before_ack_loses_nothing_and_applies_nothing_twice(
    actor_kit: ActorKit, monkeypatch: pytest.MonkeyPatch, fastpath: str
) -> None:
    monkeypatch.setenv(ENV_SWITCH, fastpath)
    events = _events(30)
    async with actor_kit.start(Counter) as counter:
        await _publish_all(actor_kit, events[:10])
        await counter.settled()
        counter.arm_crash("after_commit")
        await _publish_all(actor_kit, events[10:])
        await counter.crashed()
        await counter.settled()
        assert counter.crashes == 1
        assert counter.state.totals == expected_totals(events)
        assert sorted(counter.state.order) == [e.amount for e in events]
        assert len(await counter.entries()) == len(events)
        assert counter._live_runner.mailbox is not None
        assert counter._live_runner.mailbox.fast_path is (fastpath == "1")


async def test_nothing_is_acknowledged_before_it_is_committed(actor_kit: ActorKit) -> None:
    async with actor_kit.start(Counter) as counter:
        await _publish_all(actor_kit, _events(5))
        await counter.settled()
        counter.arm_crash("before_commit")
        late = await actor_kit.publish("count.z", Added("z", 1))
        await counter.crashed(restart=False)
        stream = await actor_kit.js.stream_info("COUNTER")
        assert stream.state.last_seq == late
        info = await actor_kit.js.consumer_info("COUNTER", "counter")
        assert info.ack_floor.stream_seq == late - 1  # the uncommitted message is not acked
        assert info.num_ack_pending == 1
        await counter.start()
        await counter.settled()
        assert counter.state.totals["z"] == 1


async def test_a_message_redelivered_while_a_blocking_handler_runs_is_not_applied_twice(
    actor_kit: ActorKit,
) -> None:
    async with actor_kit.start(BlockingCounter, ack_wait=0.3) as slow:
        await actor_kit.publish("blocking.a", Added("a", 1))  # blocks the loop 1 s > ack_wait
        await actor_kit.publish("blocking.a", Added("a", 2))
        await slow.settled()
        assert slow.stats.duplicates >= 1  # JetStream redelivered it meanwhile
        assert slow.state.totals == {"a": 3}
        assert len(await slow.entries()) == 2


async def test_a_slow_async_handler_keeps_its_messages_alive(actor_kit: ActorKit) -> None:
    async with actor_kit.start(SlowCounter, ack_wait=0.3) as slow:
        await actor_kit.publish("slow.a", Added("a", 1))  # awaits 1 s > ack_wait
        await actor_kit.publish("slow.a", Added("a", 2))
        await slow.settled()
        assert slow.stats.duplicates == 0  # +WPI kept both from being redelivered
        info = await actor_kit.js.consumer_info("SLOW_COUNTER", "slow-counter")
        assert info.num_redelivered == 0
        assert slow.state.totals == {"a": 3}


async def test_a_crash_before_commit_loses_nothing(actor_kit: ActorKit) -> None:
    events = _events(40)
    async with actor_kit.start(Counter) as counter:
        await _publish_all(actor_kit, events[:20])
        await counter.settled()
        counter.arm_crash("before_commit")
        await _publish_all(actor_kit, events[20:])
        await counter.crashed()
        await counter.settled()
        assert counter.crashes == 1
        assert counter.state.totals == expected_totals(events)
        assert (await counter.fold()).totals == counter.state.totals
        assert len(await counter.entries()) == len(events)


async def test_a_crash_at_an_arbitrary_moment_keeps_state_equal_to_the_journal_fold(
    actor_kit: ActorKit,
) -> None:
    events = _events(60)
    async with actor_kit.start(Counter) as counter:
        await _publish_all(actor_kit, events[:30])
        await counter.crash()
        await _publish_all(actor_kit, events[30:])
        await counter.settled()
        assert counter.state.totals == expected_totals(events)
        assert (await counter.fold()).totals == counter.state.totals


async def test_a_redelivered_message_with_a_known_msg_id_is_not_applied_again(
    actor_kit: ActorKit,
) -> None:
    stream = await actor_kit.prepare(Counter)
    info = await actor_kit.js.stream_info(stream)
    # Shrink JetStream's own dedup window so the second publish is stored: only the
    # journal's msg-id check stands between it and a double application.
    info.config.duplicate_window = 0.1  # the server minimum
    await actor_kit.js.update_stream(info.config)
    async with actor_kit.start(Counter) as counter:
        first = await actor_kit.publish("count.a", Added("a", 5), msg_id="same-id")
        await counter.settled()
        await anyio.sleep(0.15)  # let the server-side window pass (not a wait for work)
        second = await actor_kit.publish("count.a", Added("a", 5), msg_id="same-id")
        assert second != first  # the broker stored it twice
        await counter.settled()
        assert counter.state.totals == {"a": 5}
        assert counter.stats.duplicates == 1
        assert len(await counter.entries()) == 1


async def test_events_on_interleaved_subjects_are_applied_in_stream_order(
    actor_kit: ActorKit,
) -> None:
    events = [Added(f"k{i % 7}", i) for i in range(1, 301)]
    async with actor_kit.start(Counter) as counter:
        seqs = []
        for e in events:
            seqs.append(await actor_kit.publish(f"count.{e.key}", e))
        await counter.settled()
        assert counter.state.order == [e.amount for e in events]
        entries = await counter.entries()
        assert [x.stream_seq for x in entries] == seqs
        assert [x.pos for x in entries] == list(range(1, len(events) + 1))


async def test_batches_arriving_during_a_slow_commit_are_applied_then_committed_together(
    actor_kit: ActorKit,
) -> None:
    events = _events(41)
    async with actor_kit.start(Counter, ack_wait=5.0) as counter:
        await _publish_all(actor_kit, events[:1])
        await counter.settled()
        batches = counter.stats.batches
        async with counter._live_runner._write_lock:  # a commit that cannot finish: a stalled disk
            await _publish_all(actor_kit, events[1:])
            with anyio.fail_after(10):  # the loop keeps applying meanwhile ...
                while sum(counter.state.totals.values()) < sum(e.amount for e in events):
                    await anyio.sleep(0.01)
            info = await actor_kit.js.consumer_info("COUNTER", "counter")
            assert info.num_ack_pending == 40  # ... and acknowledges none of it
        await counter.settled()
        await assert_exactly_once(counter, events)
        assert counter.stats.batches - batches <= 2  # the one stalled, then all the rest

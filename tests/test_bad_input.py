"""Bad input is dead-lettered with its reason and never stops the other events."""

from __future__ import annotations

from actors import Added, Boom, Counter, assert_exactly_once

from actorsource import EVENT_TYPE_HEADER
from actorsource.testing import ActorKit


async def test_an_undecodable_payload_is_dead_lettered_and_the_rest_flows(
    actor_kit: ActorKit,
) -> None:
    async with actor_kit.start(Counter) as counter:
        await actor_kit.publish("count.a", Added("a", 1))
        bad = await actor_kit.publish_raw(
            "count.a", b"{not json", headers={EVENT_TYPE_HEADER: "Added"}
        )
        await actor_kit.publish("count.a", Added("a", 2))
        await counter.settled()
        await assert_exactly_once(counter, [Added("a", 1), Added("a", 2)])
        [dead] = await counter.dead_letters()
        assert (dead.reason, dead.stream_seq, dead.payload) == ("undecodable", bad, b"{not json")
        assert counter.stats.dead_letters == 1


async def test_a_payload_of_the_wrong_shape_is_dead_lettered(actor_kit: ActorKit) -> None:
    async with actor_kit.start(Counter) as counter:
        await actor_kit.publish_raw(
            "count.a", b'{"key": "a", "amount": "ten"}', headers={EVENT_TYPE_HEADER: "Added"}
        )
        await actor_kit.publish("count.a", Added("a", 2))
        await counter.settled()
        assert counter.state.totals == {"a": 2}
        [dead] = await counter.dead_letters()
        assert dead.reason == "undecodable"
        assert "amount" in dead.error


async def test_an_unknown_event_type_or_a_missing_type_header_is_dead_lettered(
    actor_kit: ActorKit,
) -> None:
    async with actor_kit.start(Counter) as counter:
        await actor_kit.publish_raw("count.a", b"{}", headers={EVENT_TYPE_HEADER: "Nope"})
        await actor_kit.publish_raw("count.a", b"{}")
        await actor_kit.publish("count.a", Added("a", 2))
        await counter.settled()
        assert counter.state.totals == {"a": 2}
        assert [d.reason for d in await counter.dead_letters()] == ["unknown-type", "undecodable"]
        assert len(await counter.entries()) == 1


async def test_a_failing_handler_leaves_no_half_applied_state(actor_kit: ActorKit) -> None:
    async with actor_kit.start(Counter) as counter:
        await actor_kit.publish("count.a", Added("a", 1))
        await actor_kit.publish("count.a", Boom("a"))  # adds 1,000,000 and then raises
        await actor_kit.publish("count.a", Added("a", 2))
        await counter.settled()
        await assert_exactly_once(counter, [Added("a", 1), Added("a", 2)])
        [dead] = await counter.dead_letters()
        assert dead.reason == "handler-failed"
        assert "boom on a" in dead.error
        assert counter.stats.retries == 3  # the default ErrorPolicy
        assert counter.stats.rebuilds == 1 + 3  # after the failure and after each retry


async def test_a_dead_letter_is_not_redelivered_after_a_restart(actor_kit: ActorKit) -> None:
    async with actor_kit.start(Counter) as counter:
        await actor_kit.publish("count.a", Boom("a"))
        await actor_kit.publish("count.a", Added("a", 5))
        await counter.settled()
        await counter.crash()
        await counter.settled()
        assert len(await counter.dead_letters()) == 1
        assert counter.state.totals == {"a": 5}


async def test_a_lower_case_event_type_header_is_dead_lettered_naming_the_header_found(
    actor_kit: ActorKit,
) -> None:
    async with actor_kit.start(Counter) as counter:
        await actor_kit.publish_raw(
            "count.a", b'{"key": "a", "amount": 1}', headers={"event-type": "Added"}
        )
        await actor_kit.publish("count.a", Added("a", 2))
        await counter.settled()
        assert counter.state.totals == {"a": 2}
        [dead] = await counter.dead_letters()
        assert dead.reason == "undecodable"
        assert dead.error == (
            "EventCodecError: message has no Event-Type header (found 'event-type': header names are case-sensitive)"
        )


async def test_a_lower_case_event_version_header_is_dead_lettered_not_read_as_version_one(
    actor_kit: ActorKit,
) -> None:
    async with actor_kit.start(Counter) as counter:
        await actor_kit.publish_raw(
            "count.a",
            b'{"key": "a", "amount": 1}',
            headers={EVENT_TYPE_HEADER: "Added", "event-version": "2"},
        )
        await actor_kit.publish("count.a", Added("a", 2))
        await counter.settled()
        assert counter.state.totals == {"a": 2}
        [dead] = await counter.dead_letters()
        assert "found 'event-version': header names are case-sensitive" in dead.error

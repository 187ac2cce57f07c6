"""The error policy: retries in place, deadlines, size limits, unknown types, the DLQ subject."""

from __future__ import annotations

from dataclasses import dataclass

import anyio
from actors import Added

from actorsource import EVENT_TYPE_HEADER, Context, ErrorPolicy, actor, handles
from actorsource.testing import ActorKit

FLAKY = {"failures_left": 0}


@dataclass
class Tick:
    n: int


@actor("flaky", subjects=["flaky.>"], errors=ErrorPolicy(retries=3, backoff=0.01))
class Flaky:
    """Fails on its first attempts at an event while FLAKY says so (an outside dependency)."""

    seen: list[int]

    def __init__(self) -> None:
        self.seen = []

    @handles(Tick)
    def tick(self, event: Tick, ctx: Context) -> None:
        self.seen.append(event.n)  # changed before failing: must not survive the failure
        if not ctx.replaying and FLAKY["failures_left"] > 0:
            FLAKY["failures_left"] -= 1
            raise ConnectionError("dependency unavailable")


async def test_a_handler_that_fails_then_succeeds_is_applied_exactly_once_in_order(
    actor_kit: ActorKit,
) -> None:
    FLAKY["failures_left"] = 2
    async with actor_kit.start(Flaky) as flaky:
        for n in range(1, 6):
            await actor_kit.publish("flaky.t", Tick(n))
        await flaky.settled()
        assert flaky.state.seen == [1, 2, 3, 4, 5]
        assert flaky.stats.retries == 2
        assert await flaky.dead_letters() == []
        assert (await flaky.fold()).seen == [1, 2, 3, 4, 5]


@actor(
    "sleepy",
    subjects=["sleepy.>"],
    errors=ErrorPolicy(retries=1, backoff=0.01, handler_timeout=0.2),
)
class Sleepy:
    total: int

    def __init__(self) -> None:
        self.total = 0

    @handles(Added)
    async def added(self, event: Added) -> None:
        if event.key == "hang":
            await anyio.sleep(30)
        self.total += event.amount


async def test_an_async_handler_past_its_deadline_is_cancelled_and_dead_lettered(
    actor_kit: ActorKit,
) -> None:
    async with actor_kit.start(Sleepy) as sleepy:
        await actor_kit.publish("sleepy.a", Added("a", 1))
        await actor_kit.publish("sleepy.a", Added("hang", 100))
        await actor_kit.publish("sleepy.a", Added("a", 2))
        await sleepy.settled()
        assert sleepy.state.total == 3
        [dead] = await sleepy.dead_letters()
        assert dead.reason == "handler-timeout"
        assert "deadline" in dead.error


@actor("small", subjects=["small.>"], errors=ErrorPolicy(max_payload=64))
class Small:
    total: int

    def __init__(self) -> None:
        self.total = 0

    @handles(Added)
    def added(self, event: Added) -> None:
        self.total += event.amount


async def test_a_message_over_the_size_limit_is_dead_lettered_whole(actor_kit: ActorKit) -> None:
    async with actor_kit.start(Small) as small:
        big = b'{"key": "' + b"x" * 100 + b'", "amount": 5}'
        await actor_kit.publish_raw("small.a", big, headers={EVENT_TYPE_HEADER: "Added"})
        await actor_kit.publish("small.a", Added("a", 1))
        await small.settled()
        assert small.state.total == 1
        [dead] = await small.dead_letters()
        assert (dead.reason, dead.payload) == ("too-large", big)


@actor("lenient", subjects=["lenient.>"], errors=ErrorPolicy(on_unknown="ignore"))
class Lenient:
    total: int

    def __init__(self) -> None:
        self.total = 0

    @handles(Added)
    def added(self, event: Added) -> None:
        self.total += event.amount


async def test_unknown_event_types_can_be_ignored_by_policy(actor_kit: ActorKit) -> None:
    async with actor_kit.start(Lenient) as lenient:
        await actor_kit.publish_raw(
            "lenient.a", b"{}", headers={EVENT_TYPE_HEADER: "SomethingElse"}
        )
        await actor_kit.publish("lenient.a", Added("a", 4))
        await lenient.settled()
        assert lenient.state.total == 4
        assert lenient.stats.ignored == 1
        assert await lenient.dead_letters() == []
        assert len(await lenient.entries()) == 1


async def test_a_dead_letter_is_published_on_the_dlq_subject_with_its_reason(
    actor_kit: ActorKit,
) -> None:
    from actors import Counter

    async with actor_kit.start(Counter) as counter:
        seq = await actor_kit.publish_raw(
            "count.a", b"{broken", headers={EVENT_TYPE_HEADER: "Added", "Nats-Msg-Id": "orig-1"}
        )
        await counter.settled()
        msg = await actor_kit.js.get_last_msg("ACTORSOURCE_DLQ", "actorsource.dlq.counter")
        assert msg.data == b"{broken"
        headers = msg.headers or {}
        assert headers["Actorsource-Dlq-Reason"] == "undecodable"
        assert headers["Actorsource-Dlq-Subject"] == "count.a"
        assert headers["Actorsource-Dlq-Seq"] == str(seq)
        assert headers["Actorsource-Dlq-Msg-Id"] == "orig-1"
        assert headers["Nats-Msg-Id"] == f"dlq.counter.COUNTER.{seq}"
        assert "Actorsource-Dlq-Error" in headers


async def test_a_dead_letter_committed_but_not_yet_published_is_published_after_a_crash(
    actor_kit: ActorKit,
) -> None:
    from actors import Counter

    async with actor_kit.start(Counter) as counter:
        counter.arm_crash("after_commit")
        seq = await actor_kit.publish_raw(
            "count.a", b"{broken", headers={EVENT_TYPE_HEADER: "Added"}
        )
        await counter.crashed()
        await counter.settled()
        msg = await actor_kit.js.get_last_msg("ACTORSOURCE_DLQ", "actorsource.dlq.counter")
        assert (msg.headers or {})["Actorsource-Dlq-Seq"] == str(seq)
        info = await actor_kit.js.stream_info("ACTORSOURCE_DLQ")
        assert info.state.messages == 1  # published once, even if it was sent twice

"""The test kit itself."""

from __future__ import annotations

from actors import Added, Counter

from actorsource.testing import ActorKit


async def test_a_crash_without_a_crash_point_is_counted(actor_kit: ActorKit) -> None:
    async with actor_kit.start(Counter) as counter:
        await actor_kit.publish("count.a", Added("a", 1))
        await counter.settled()
        await counter.crash()
        assert counter.crashes == 1
        assert counter.starts == 2

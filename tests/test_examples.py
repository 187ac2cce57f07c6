"""The bank example: its balances after crashes equal an independent fold of what was published."""

from __future__ import annotations

from actorsource.testing import ActorKit
from examples import bank


async def test_the_bank_example_survives_crashes_with_exact_balances(actor_kit: ActorKit) -> None:
    events = bank.random_events(600, seed=7, accounts=20)
    async with actor_kit.start(bank.Accounts) as accounts:
        await bank.publish(actor_kit.js, events[:200], prefix="t")
        accounts.arm_crash("after_commit")
        await bank.publish(actor_kit.js, events[200:400], prefix="t", start=200)
        await accounts.crashed()
        await accounts.crash()
        await bank.publish(actor_kit.js, events[400:], prefix="t", start=400)
        await accounts.settled()
        expected, declined = bank.expected_balances(events)
        assert accounts.state.balances == expected
        assert accounts.state.declined == declined
        assert len(await accounts.entries()) == len(events)
        folded = await accounts.fold()
        assert (folded.balances, folded.declined) == (expected, declined)


def test_the_bank_events_are_reproducible_from_their_seed() -> None:
    assert bank.random_events(50, seed=3) == bank.random_events(50, seed=3)
    assert bank.random_events(50, seed=3) != bank.random_events(50, seed=4)

"""An accounts service: deposits, withdrawals and transfers, as an event-sourced actor.

Run it in a worker with ``actorsource run examples.bank:Accounts``, feed it with
``python -m examples.bank publish --events 1000`` and ask it an account's balance with
``actorsource query accounts balance --arg account=acct-0007``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
from dataclasses import dataclass

import nats

from actorsource import (
    EVENT_TYPE_HEADER,
    MSG_ID_HEADER,
    Context,
    actor,
    encode_event,
    handles,
    query,
)


@dataclass
class Deposited:
    account: str
    amount: int


@dataclass
class Withdrawn:
    account: str
    amount: int


@dataclass
class Transferred:
    source: str
    target: str
    amount: int


BankEvent = Deposited | Withdrawn | Transferred


@actor("accounts", subjects=["bank.>"], snapshot_every=1_000, version=1)
class Accounts:
    """Balances per account. A withdrawal or transfer that would overdraw is declined."""

    balances: dict[str, int]
    declined: int

    def __init__(self) -> None:
        self.balances = {}
        self.declined = 0

    @handles(Deposited)
    def deposited(self, event: Deposited) -> None:
        self.balances[event.account] = self.balances.get(event.account, 0) + event.amount

    @handles(Withdrawn)
    def withdrawn(self, event: Withdrawn, ctx: Context) -> None:
        balance = self.balances.get(event.account, 0)
        if balance < event.amount:
            self.declined += 1
            return
        self.balances[event.account] = balance - event.amount

    @handles(Transferred)
    def transferred(self, event: Transferred) -> None:
        balance = self.balances.get(event.source, 0)
        if balance < event.amount:
            self.declined += 1
            return
        self.balances[event.source] = balance - event.amount
        self.balances[event.target] = self.balances.get(event.target, 0) + event.amount

    @query
    def balance(self, account: str) -> int:
        """The balance of ``account`` (0 for one never seen)."""
        return self.balances.get(account, 0)


def subject_for(event: BankEvent) -> str:
    """The subject an event is published on: ``bank.<kind>.<account>``."""
    if isinstance(event, Deposited):
        return f"bank.deposit.{event.account}"
    if isinstance(event, Withdrawn):
        return f"bank.withdraw.{event.account}"
    return f"bank.transfer.{event.source}"


def random_events(n: int, *, seed: int = 0, accounts: int = 50) -> list[BankEvent]:
    """``n`` reproducible bank events over ``accounts`` accounts."""
    rng = random.Random(seed)
    names = [f"acct-{i:04d}" for i in range(accounts)]
    events: list[BankEvent] = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.5:
            events.append(Deposited(rng.choice(names), rng.randint(1, 500)))
        elif kind < 0.75:
            events.append(Withdrawn(rng.choice(names), rng.randint(1, 400)))
        else:
            source, target = rng.sample(names, 2)
            events.append(Transferred(source, target, rng.randint(1, 300)))
    return events


def expected_balances(events: list[BankEvent]) -> tuple[dict[str, int], int]:
    """An independent fold of the events: what the balances must be, and how many declined."""
    balances: dict[str, int] = {}
    declined = 0
    for e in events:
        if isinstance(e, Deposited):
            balances[e.account] = balances.get(e.account, 0) + e.amount
        elif isinstance(e, Withdrawn):
            if balances.get(e.account, 0) >= e.amount:
                balances[e.account] -= e.amount
            else:
                declined += 1
        elif balances.get(e.source, 0) >= e.amount:
            balances[e.source] -= e.amount
            balances[e.target] = balances.get(e.target, 0) + e.amount
        else:
            declined += 1
    return balances, declined


async def publish(
    js: nats.js.JetStreamContext, events: list[BankEvent], *, prefix: str = "bank", start: int = 0
) -> None:
    """Publish events in order, each with a deterministic ``Nats-Msg-Id``; wait for every PubAck.

    Publishes are pipelined (``publish_async``) but issued one after another, so the stream
    holds them in list order: the order the independent fold assumes.
    """
    acks = []
    for i, event in enumerate(events, start):
        type_name, payload = encode_event(event)
        headers = {EVENT_TYPE_HEADER: type_name, MSG_ID_HEADER: f"{prefix}-{i}"}
        acks.append(await js.publish_async(subject_for(event), payload, headers=headers))
        if len(acks) >= 1_000:
            await asyncio.gather(*acks)
            acks.clear()
    await asyncio.gather(*acks)


async def _main() -> None:
    parser = argparse.ArgumentParser(description="Publish random bank events to NATS.")
    parser.add_argument("command", choices=["publish"])
    parser.add_argument("--events", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    args = parser.parse_args()
    nc = await nats.connect(args.nats)
    try:
        await publish(
            nc.jetstream(), random_events(args.events, seed=args.seed), prefix=f"seed{args.seed}"
        )
    finally:
        await nc.close()


if __name__ == "__main__":
    asyncio.run(_main())

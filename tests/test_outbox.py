"""Publishing from handlers: the outbox, its crash points, replay, and what the receiver sees.

A till publishes a ``SaleRecorded`` domain event for every ``Sale`` it receives; a ledger
(another actor, another journal) counts how many times it applied each one. Every test ends
by comparing the ledger with an independent fold of the sales that were published.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import anyio
import pytest

from actorsource import Context, ErrorPolicy, actor, event, handles
from actorsource._runtime.outbox import OutboxPublisher
from actorsource.testing import ActorKit, ActorProbe


@dataclass
class Sale:
    sale_id: str
    amount: int


@event("till.SaleRecorded")
@dataclass
class SaleRecorded:
    sale_id: str
    amount: int


@event("till.Big")
@dataclass
class Big:
    blob: str


@actor("till", subjects=["sales.>"], errors=ErrorPolicy(retries=0))
@dataclass
class Till:
    total: int = 0
    sent: list[str] = field(default_factory=list)

    @handles(Sale)
    def sale(self, e: Sale, ctx: Context) -> None:
        self.total += e.amount
        msg_id = ctx.publish(f"ledger.sale.{e.sale_id}", SaleRecorded(e.sale_id, e.amount))
        if msg_id is not None:
            self.sent.append(msg_id)


@actor("ledger", subjects=["ledger.>"])
@dataclass
class Ledger:
    applied: dict[str, int] = field(default_factory=dict)
    total: int = 0

    @handles(SaleRecorded)
    def recorded(self, e: SaleRecorded) -> None:
        self.applied[e.sale_id] = self.applied.get(e.sale_id, 0) + 1
        self.total += e.amount


def _sales(n: int, start: int = 0) -> list[Sale]:
    return [Sale(f"s{i}", i + 1) for i in range(start, start + n)]


async def _publish(kit: ActorKit, sales: list[Sale]) -> None:
    for s in sales:
        await kit.publish(f"sales.{s.sale_id}", s, msg_id=f"sale-{s.sale_id}")


async def _assert_ledger_saw_each_once(ledger: ActorProbe[Ledger], sales: list[Sale]) -> None:
    assert ledger.state.applied == {s.sale_id: 1 for s in sales}
    assert ledger.state.total == sum(s.amount for s in sales)
    entries = await ledger.entries()
    assert len(entries) == len(sales)
    assert (await ledger.fold()).applied == ledger.state.applied


async def test_a_published_event_reaches_the_receiver_once_with_a_deterministic_id(
    actor_kit: ActorKit,
) -> None:
    sales = _sales(20)
    async with actor_kit.start(Ledger) as ledger, actor_kit.start(Till) as till:
        await _publish(actor_kit, sales)
        await till.settled()
        await ledger.settled()
        await _assert_ledger_saw_each_once(ledger, sales)
        entries = await ledger.entries()
        till_entries = await till.entries()
        assert [e.msg_id for e in entries] == [f"till:{t.pos}:1" for t in till_entries]
        assert entries[0].headers["Event-Type"] == "till.SaleRecorded"
        assert till._live_runner.outbox is not None
        assert till._live_runner.outbox.pending == 0


@pytest.mark.parametrize("point", ["after_commit", "before_publish"])
async def test_a_crash_between_commit_and_publish_loses_no_downstream_event(
    actor_kit: ActorKit, point: str
) -> None:
    sales = _sales(30)
    async with actor_kit.start(Ledger) as ledger, actor_kit.start(Till) as till:
        await _publish(actor_kit, sales[:10])
        await till.settled()
        till.arm_crash(point)  # type: ignore[arg-type]
        await _publish(actor_kit, sales[10:])
        await till.crashed()
        await till.settled()
        await ledger.settled()
        await _assert_ledger_saw_each_once(ledger, sales)
        assert till.state.total == sum(s.amount for s in sales)


async def test_a_crash_between_publish_and_marking_sent_duplicates_nothing_downstream(
    actor_kit: ActorKit,
) -> None:
    sales = _sales(30)
    async with actor_kit.start(Ledger) as ledger, actor_kit.start(Till) as till:
        await _publish(actor_kit, sales[:10])
        await till.settled()
        await ledger.settled()
        till.arm_crash("after_publish")
        await _publish(actor_kit, sales[10:20])
        await till.crashed()  # sent, not marked: the restart sends them again, same ids
        await _publish(actor_kit, sales[20:])
        await till.settled()
        await ledger.settled()
        await _assert_ledger_saw_each_once(ledger, sales)
        stream = await actor_kit.js.stream_info("LEDGER")
        assert stream.state.messages == len(sales)  # JetStream dropped the re-sends


async def test_a_re_send_outside_the_brokers_dedup_window_is_refused_by_the_receiver(
    actor_kit: ActorKit,
) -> None:
    sales = _sales(12)
    stream = await actor_kit.prepare(Ledger)
    info = await actor_kit.js.stream_info(stream)
    info.config.duplicate_window = 0.1  # the server minimum: the broker stores re-sends
    await actor_kit.js.update_stream(info.config)
    async with actor_kit.start(Ledger) as ledger, actor_kit.start(Till) as till:
        till.arm_crash("after_publish")
        await _publish(actor_kit, sales)
        await till.crashed(restart=False)
        await anyio.sleep(0.2)  # let the server-side window pass (not a wait for work)
        await till.start()
        await till.settled()
        await ledger.settled()
        stored = (await actor_kit.js.stream_info(stream)).state.messages
        assert stored > len(sales)  # the broker kept the duplicates ...
        await _assert_ledger_saw_each_once(ledger, sales)  # ... the receiver's journal did not
        assert ledger.stats.duplicates == stored - len(sales)


async def test_replaying_an_actor_with_an_outbox_sends_nothing(actor_kit: ActorKit) -> None:
    sales = _sales(25)
    async with actor_kit.start(Ledger) as ledger, actor_kit.start(Till) as till:
        await _publish(actor_kit, sales)
        await till.settled()
        await ledger.settled()
        await till.stop()
        async with _journal(till) as journal:
            await journal.delete_snapshots()  # replay the whole journal
        await till.start()
        assert till.recovery.replayed == len(sales)
        assert till.state.sent == []  # publish() returned None on every replayed event
        assert till.state.total == sum(s.amount for s in sales)
        await till.settled()
        await ledger.settled()
        assert (await actor_kit.js.stream_info("LEDGER")).state.messages == len(sales)
        await _assert_ledger_saw_each_once(ledger, sales)


async def _refusing(till: ActorProbe[Till], *, pending: int) -> OutboxPublisher:
    """Wait until ``pending`` messages are committed and the outbox failed to send one."""
    with anyio.fail_after(10):
        while True:
            outbox = till._live_runner.outbox
            if outbox is not None and outbox.failures and outbox.pending == pending:
                return outbox
            await anyio.sleep(0.01)


async def test_an_event_without_a_stream_stays_pending_and_is_sent_once_one_exists(
    actor_kit: ActorKit,
) -> None:
    sales = _sales(5)
    async with actor_kit.start(Till) as till:
        await _publish(actor_kit, sales)
        outbox = await _refusing(till, pending=len(sales))
        assert outbox.refused == ("till:1:1", "ledger.sale.s0")
        assert "NoStreamResponse" in (outbox.last_error or "")
        async with actor_kit.start(Ledger) as ledger:  # creates the LEDGER stream
            await till.settled(timeout=20)
            await ledger.settled()
            await _assert_ledger_saw_each_once(ledger, sales)


async def test_an_event_too_large_for_its_stream_stays_pending_in_order_until_it_fits(
    actor_kit: ActorKit,
) -> None:
    stream = await actor_kit.prepare(Ledger)
    info = await actor_kit.js.stream_info(stream)
    info.config.max_msg_size = 200  # headers count too
    await actor_kit.js.update_stream(info.config)
    small, large, after = Sale("a", 1), Sale("b" * 200, 2), Sale("c", 3)
    async with actor_kit.start(Till) as till:
        await _publish(actor_kit, [small, large, after])
        # The refused one and the one behind it stay pending: order is kept.
        outbox = await _refusing(till, pending=2)
        assert outbox.refused == ("till:2:1", "ledger.sale." + "b" * 200)
        assert (await actor_kit.js.stream_info(stream)).state.messages == 1
        info.config.max_msg_size = -1
        await actor_kit.js.update_stream(info.config)
        async with actor_kit.start(Ledger) as ledger:
            await till.settled(timeout=40)
            await ledger.settled()
            await _assert_ledger_saw_each_once(ledger, [small, large, after])
            assert [e.msg_id for e in await ledger.entries()] == [
                "till:1:1",
                "till:2:1",
                "till:3:1",
            ]


@actor("mistakes", subjects=["mistakes.>"], errors=ErrorPolicy(retries=0))
@dataclass
class Mistakes:
    ok: int = 0

    @handles(Sale)
    def sale(self, e: Sale, ctx: Context) -> None:
        self.ok += 1
        if e.sale_id == "wildcard":
            ctx.publish("ledger.*", SaleRecorded(e.sale_id, 1))
        elif e.sale_id == "header":
            ctx.publish("ledger.x", SaleRecorded(e.sale_id, 1), headers={"Nats-Msg-Id": "mine"})
        elif e.sale_id == "forged":
            forged = {"Trace": "x\r\nNats-Msg-Id: mine"}
            ctx.publish("ledger.x", SaleRecorded(e.sale_id, 1), headers=forged)
        elif e.sale_id == "not-an-event":
            ctx.publish("ledger.x", {"sale_id": "x"})
        elif e.sale_id == "unhandled":
            ctx.record(SaleRecorded(e.sale_id, 1))
        elif e.sale_id == "huge":
            ctx.publish("ledger.x", Big("x" * 2_000_000))


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("wildcard", "wildcards are not allowed"),
        ("header", "'Nats-Msg-Id' is set by actorsource"),
        ("forged", "holds no line break"),
        ("not-an-event", "not an event type"),
        ("unhandled", "records only events it has a @handles method for"),
        ("huge", "over the server's max_payload"),
    ],
)
async def test_a_handler_that_publishes_or_records_something_invalid_is_dead_lettered(
    actor_kit: ActorKit, case: str, error: str
) -> None:
    async with actor_kit.start(Mistakes) as probe:
        await actor_kit.publish("mistakes.1", Sale(case, 1))
        await actor_kit.publish("mistakes.2", Sale("fine", 1))
        await probe.settled()
        [letter] = await probe.dead_letters()
        assert letter.reason == "handler-failed"
        assert error in letter.error
        assert probe.state.ok == 1  # the failed attempt's change was rolled back
        assert probe._live_runner.outbox is not None
        assert probe._live_runner.outbox.published == 1  # only the dead letter itself


@dataclass
class Roll:
    game: str


@dataclass
class Rolled:
    game: str
    value: int


@actor("dice", subjects=["dice.>"], snapshot_every=None)
@dataclass
class Dice:
    """Decides at random (not replayable), so it records the decision as its own event."""

    values: dict[str, int] = field(default_factory=dict)
    announced: list[str] = field(default_factory=list)

    @handles(Roll)
    def roll(self, e: Roll, ctx: Context) -> None:
        if not ctx.replaying:
            ctx.record(Rolled(e.game, random.randint(1, 1_000_000)))

    @handles(Rolled)
    def rolled(self, e: Rolled, ctx: Context) -> None:
        self.values[e.game] = e.value
        if ctx.publish(f"ledger.dice.{e.game}", SaleRecorded(e.game, e.value)):
            self.announced.append(e.game)


async def test_recorded_events_are_journaled_after_their_cause_and_replay_without_deciding_again(
    actor_kit: ActorKit,
) -> None:
    games = [f"g{i}" for i in range(8)]
    async with actor_kit.start(Ledger) as ledger, actor_kit.start(Dice) as dice:
        for g in games:
            await actor_kit.publish(f"dice.{g}", Roll(g))
        await dice.settled()
        await ledger.settled()
        live = dict(dice.state.values)
        assert sorted(live) == games
        assert dice.state.announced == games
        entries = await dice.entries()
        assert [e.type for e in entries] == ["Roll", "Rolled"] * len(games)
        recorded = entries[1::2]
        assert all(e.subject == "@recorded" and e.stream is None for e in recorded)
        # The publish made while applying a recorded event carries that event's position.
        assert [e.msg_id for e in await ledger.entries()] == [f"dice:{e.pos}:1" for e in recorded]
        assert ledger.state.applied == dict.fromkeys(games, 1)
        await dice.stop()
        async with _journal(dice) as journal:
            await journal.delete_snapshots()  # replay the whole journal
        await dice.start()
        assert dice.recovery.replayed == 2 * len(games)
        assert dice.state.values == live  # the random decisions came back from the journal
        assert dice.state.announced == []
        assert (await dice.fold()).values == live
        await dice.crash()
        await dice.settled()
        assert dice.state.values == live
        assert (await actor_kit.js.stream_info("LEDGER")).state.messages == len(games)


def _journal(probe: ActorProbe[object]):  # type: ignore[no-untyped-def]
    from actorsource.journal import SQLiteJournal

    return SQLiteJournal(probe.journal_path, actor=probe.name)


async def test_a_nats_server_restart_while_publishing_loses_and_duplicates_nothing(
    actor_kit: ActorKit,
) -> None:
    assert actor_kit.server is not None
    sales = _sales(150)
    async with actor_kit.start(Ledger) as ledger, actor_kit.start(Till) as till:
        await _publish(actor_kit, sales[:100])
        await actor_kit.server.restart()
        await _publish(actor_kit, sales[100:])
        await till.settled(timeout=30)
        await ledger.settled(timeout=30)
        await _assert_ledger_saw_each_once(ledger, sales)

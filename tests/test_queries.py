"""Queries: actors and entities answer read-only questions over NATS, on committed state,
with read-your-writes; against a real nats-server and real SQLite files."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec
import pytest

import actorsource
from actorsource import (
    ActorDefinitionError,
    Context,
    NoSuchEntityError,
    QueryArgumentsError,
    QueryFailedError,
    QueryMutatedStateError,
    QueryNotRunningError,
    QueryTimeoutError,
    SeqBeyondStreamError,
    UnknownActorError,
    UnknownQueryError,
    actor,
    entity,
    handles,
    query,
)
from actorsource.testing import ActorKit, ActorStatus
from examples.bank import Accounts, Deposited


@dataclass
class Added:
    name: str
    n: int


@dataclass
class Summary:
    names: int
    total: int


#: Seconds each live event takes to apply in ``Counts`` (a slow actor on demand).
SLOW = {"live": 0.0, "replay": 0.0}
#: The names of the slow events ``Counts`` has begun to apply (so a test knows it is busy).
APPLYING: list[str] = []


@actor("q-counts", subjects=["qc.>"])
class Counts:
    totals: dict[str, int]

    def __init__(self) -> None:
        self.totals = {}

    @handles(Added)
    async def added(self, event: Added, ctx: Context) -> None:
        delay = SLOW["replay"] if ctx.replaying else SLOW["live"]
        if delay:
            APPLYING.append(event.name)
            await anyio.sleep(delay)
        self.totals[event.name] = self.totals.get(event.name, 0) + event.n

    @query
    def total(self, name: str) -> int:
        return self.totals.get(name, 0)

    @query
    def summary(self) -> Summary:
        return Summary(len(self.totals), sum(self.totals.values()))

    @query()
    def top(self, n: int = 1, at_least: int = 0) -> list[str]:
        ranked = sorted(self.totals, key=lambda k: -self.totals[k])
        return [k for k in ranked if self.totals[k] >= at_least][:n]

    @query
    def fails(self) -> int:
        raise KeyError("no such thing")

    @query
    def resets(self) -> int:
        self.totals.clear()  # a query that writes: the kit's read-only check catches it
        return 0

    @query
    def opaque(self) -> object:
        return object()


@dataclass
class ItemAdded:
    sku: str
    quantity: int


class CartView(msgspec.Struct):
    items: dict[str, int]
    lines: int


@entity("q-carts", subjects=["qcart.*"], passivate_after=60)
class Cart:
    items: dict[str, int]

    def __init__(self) -> None:
        self.items = {}

    @handles(ItemAdded)
    def added(self, event: ItemAdded) -> None:
        self.items[event.sku] = self.items.get(event.sku, 0) + event.quantity

    @query
    def view(self) -> CartView:
        return CartView(dict(self.items), len(self.items))

    @query
    def quantity(self, sku: str) -> int:
        return self.items.get(sku, 0)


@actor("q-narrow", subjects=["qn.in.*"], stream="QN", stream_subjects=["qn.>"])
class Narrow:
    """Reads one subject of a stream that holds others too."""

    seen: int

    def __init__(self) -> None:
        self.seen = 0

    @handles(Added)
    def added(self, event: Added) -> None:
        self.seen += event.n

    @query
    def count(self) -> int:
        return self.seen


@pytest.fixture(autouse=True)
def _fast() -> None:
    SLOW["live"] = SLOW["replay"] = 0.0
    APPLYING.clear()


# -- declaring -----------------------------------------------------------------------------


def test_a_query_that_takes_a_context_is_refused_when_the_class_is_defined() -> None:
    with pytest.raises(ActorDefinitionError, match=r"Bad\.peek takes a Context"):

        @actor("q-bad", subjects=["qb.>"])
        class Bad:
            @handles(Added)
            def added(self, event: Added) -> None: ...

            @query
            def peek(self, ctx: Context) -> int:
                return 0


@pytest.mark.parametrize(
    ("source", "match"),
    [
        ("async def peek(self) -> int: return 0", "plain .not async. method"),
        ("def peek(self, *names: str) -> int: return 0", "no \\*args"),
        ("def peek(self, **names: str) -> int: return 0", "no \\*args"),
    ],
)
def test_a_query_with_a_wrong_signature_is_refused_naming_it(source: str, match: str) -> None:
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    with pytest.raises(ActorDefinitionError, match=rf"Bad\.peek.*{match}"):

        @actor("q-bad", subjects=["qb.>"])
        class Bad:
            @handles(Added)
            def added(self, event: Added) -> None: ...

            peek = query(namespace["peek"])


def test_a_method_cannot_be_both_a_handler_and_a_query() -> None:
    with pytest.raises(ActorDefinitionError, match="both a query and a handler"):

        @actor("q-bad", subjects=["qb.>"])
        class Bad:
            @query
            @handles(Added)
            def added(self, event: Added) -> None: ...


# -- answering -----------------------------------------------------------------------------


async def test_a_singleton_answers_with_the_committed_position_it_reflects(
    actor_kit: ActorKit,
) -> None:
    async with actor_kit.start(Counts) as counts:
        await actor_kit.publish("qc.a", Added("a", 2))
        seq = await actor_kit.publish("qc.b", Added("b", 5))
        await counts.settled()
        answer = await actor_kit.ask(Counts, "summary")
        assert answer.value == {"names": 2, "total": 7}
        assert (answer.actor, answer.query, answer.key) == ("q-counts", "summary", None)
        assert (answer.pos, answer.stream, answer.stream_seq) == (2, "Q_COUNTS", seq)
        assert await counts.query("total", name="b") == 5
        assert await counts.query("top", n=2) == ["b", "a"]


async def test_an_entity_answers_for_its_key_resident_or_passivated(actor_kit: ActorKit) -> None:
    async with actor_kit.start(Cart) as carts:
        await actor_kit.publish("qcart.c1", ItemAdded("x", 2))
        await actor_kit.publish("qcart.c2", ItemAdded("y", 1))
        await carts.settled()
        assert await carts.query("view", key="c1") == {"items": {"x": 2}, "lines": 1}
        await carts.tick(now=time.time() + 3_600)  # both passivated
        assert carts.resident == []
        answer = await carts.ask("quantity", key="c2", sku="y")
        assert (answer.value, answer.key, answer.pos) == (1, "c2", 2)
        assert carts.resident == []  # loaded to answer, not made resident
        with pytest.raises(NoSuchEntityError, match="has no entity 'c3'") as caught:
            await carts.query("view", key="c3")
        assert (caught.value.code, caught.value.key) == ("no-such-entity", "c3")


async def test_arguments_are_converted_and_bad_ones_refused_by_name(actor_kit: ActorKit) -> None:
    async with actor_kit.start(Counts) as counts:
        await actor_kit.publish("qc.a", Added("a", 3))
        await counts.settled()
        assert await counts.query("top", n="1", at_least="2") == ["a"]  # as the CLI sends
        cases: list[tuple[dict[str, Any], str]] = [
            ({}, "needs the argument 'name'"),
            ({"name": "a", "colour": "red"}, "has no argument 'colour'"),
        ]
        for args, message in cases:
            with pytest.raises(QueryArgumentsError, match=message) as caught:
                await counts.query("total", **args)
            assert caught.value.code == "bad-arguments"
        with pytest.raises(QueryArgumentsError, match="argument 'n' of query 'top'"):
            await counts.query("top", n="many")
        with pytest.raises(QueryArgumentsError, match="is a singleton: a query to it takes no key"):
            await counts.query("summary", key="a")
    async with actor_kit.start(Cart) as carts:
        with pytest.raises(QueryArgumentsError, match="entity actor: say which entity"):
            await carts.query("view")


async def test_unknown_queries_and_actors_are_named(actor_kit: ActorKit) -> None:
    async with actor_kit.start(Counts) as counts:
        with pytest.raises(UnknownQueryError, match=r"no query 'nope' \(its queries: fails,"):
            await counts.query("nope")
        with pytest.raises(UnknownActorError, match="no running worker hosts actor 'ghost'") as c:
            await actorsource.ask(actor_kit.nc, "ghost", "status")
        assert c.value.code == "unknown-actor"


async def test_a_query_that_raises_is_an_error_and_the_actor_runs_on(actor_kit: ActorKit) -> None:
    async with actor_kit.start(Counts) as counts:
        await actor_kit.publish("qc.a", Added("a", 1))
        await counts.settled()
        with pytest.raises(QueryFailedError, match=r"query 'fails' raised KeyError") as caught:
            await counts.query("fails")
        assert caught.value.code == "query-failed"
        with pytest.raises(QueryFailedError, match="does not encode to JSON"):
            await counts.query("opaque")
        await actor_kit.publish("qc.a", Added("a", 1))
        await counts.settled()
        assert counts.state.totals == {"a": 2} == (await counts.fold()).totals
        assert counts.status is ActorStatus.RUNNING


async def test_the_kit_fails_a_query_that_changes_the_state_naming_it(actor_kit: ActorKit) -> None:
    async with actor_kit.start(Counts) as counts:
        await actor_kit.publish("qc.a", Added("a", 1))
        await counts.settled()
        with pytest.raises(QueryMutatedStateError, match="query 'resets' of actor 'q-counts'"):
            await counts.query("resets")
        assert len(counts.query_violations) == 1
        counts.query_violations.clear()  # else the block fails with it at its end


async def test_a_mutating_query_fails_the_kit_block_even_if_its_error_is_swallowed(
    actor_kit: ActorKit,
) -> None:
    async def swallowing() -> None:
        async with actor_kit.start(Counts) as counts:
            await actor_kit.publish("qc.a", Added("a", 1))
            await counts.settled()
            with pytest.raises(QueryMutatedStateError):
                await counts.query("resets")

    with pytest.raises(AssertionError, match=r"query 'resets' .* changed the state"):
        await swallowing()


# -- committed only, read-your-writes ------------------------------------------------------


async def test_a_reply_waits_for_the_commit_and_never_reflects_uncommitted_events(
    actor_kit: ActorKit,
) -> None:
    async with actor_kit.start(Counts, ack_wait=10.0) as counts:
        await actor_kit.publish("qc.a", Added("a", 1))
        await counts.settled()
        answers: list[Any] = []

        async def ask() -> None:
            answers.append(await counts.ask("total", name="a"))

        # The lock (commits stall, as on a slow disk) is released before the task group
        # ends: the commit goes through, then the answer.
        async with anyio.create_task_group() as tg, counts._live_runner._write_lock:
            seq = await actor_kit.publish("qc.a", Added("a", 10))
            with anyio.fail_after(5):
                while counts.state.totals["a"] != 11:  # applied, not committed
                    await anyio.sleep(0.01)
            tg.start_soon(ask)
            await anyio.sleep(0.3)
            assert answers == []  # it waits for the commit in flight
        [answer] = answers
        assert (answer.value, answer.pos, answer.stream_seq) == (11, 2, seq)


async def test_after_seq_answers_once_a_slow_actor_has_applied_the_callers_event(
    actor_kit: ActorKit,
) -> None:
    SLOW["live"] = 0.02
    async with actor_kit.start(Counts) as counts:
        for _ in range(30):
            seq = await actor_kit.publish("qc.a", Added("a", 1))
        answer = await counts.ask("total", name="a", after_seq=seq, timeout=10)
        assert answer.value == 30
        assert answer.stream_seq >= seq


async def test_after_seq_of_a_message_the_actor_does_not_read_is_answered_at_once(
    actor_kit: ActorKit,
) -> None:
    async with actor_kit.start(Narrow) as narrow:
        await actor_kit.publish("qn.in.x", Added("x", 1))
        await narrow.settled()
        others = [await actor_kit.publish("qn.other", Added("o", 1)) for _ in range(3)]
        started = time.monotonic()
        answer = await narrow.ask("count", after_seq=others[-1])
        assert answer.value == 1
        assert answer.stream_seq == 1  # the journal never holds the others
        assert time.monotonic() - started < 1.0


async def test_after_seq_beyond_the_stream_is_refused_at_once(actor_kit: ActorKit) -> None:
    async with actor_kit.start(Counts) as counts:
        seq = await actor_kit.publish("qc.a", Added("a", 1))
        started = time.monotonic()
        with pytest.raises(SeqBeyondStreamError, match="beyond the last message") as caught:
            await counts.query("total", name="a", after_seq=seq + 100)
        assert time.monotonic() - started < 1.0
        assert caught.value.code == "seq-beyond-stream"
        assert caught.value.details["last_seq"] == seq


async def test_after_seq_not_reached_in_time_says_how_far_the_actor_is(
    actor_kit: ActorKit,
) -> None:
    async with actor_kit.start(Counts, ack_wait=10.0) as counts:
        await actor_kit.publish("qc.a", Added("a", 1))
        await counts.settled()
        async with counts._live_runner._write_lock:  # commits stall
            seq = await actor_kit.publish("qc.a", Added("a", 1))
            with pytest.raises(
                QueryTimeoutError, match="has not reached stream sequence 2 of"
            ) as c:
                await counts.query("total", name="a", after_seq=seq, timeout=1.0)
        assert c.value.code == "timeout"
        assert c.value.details["journal_seq"] == 1
        assert "its journal holds up to 1" in str(c.value)


async def test_a_query_while_recovering_is_not_running(actor_kit: ActorKit) -> None:
    async with actor_kit.start(Counts) as counts:
        await actor_kit.publish("qc.a", Added("a", 1))
        await counts.settled()
        await counts.stop()
        # The graceful stop snapshotted the event: drop the snapshot so that the restart
        # replays it, slowly, and stays RECOVERING long enough to be asked.
        with sqlite3.connect(counts.journal_path) as db:
            db.execute("DELETE FROM snapshots")
        SLOW["replay"] = 1.0
        async with anyio.create_task_group() as tg:
            tg.start_soon(counts.start)
            with anyio.fail_after(5):
                while counts._runner is None or counts.status is not ActorStatus.RECOVERING:
                    await anyio.sleep(0.01)
            with pytest.raises(QueryNotRunningError, match=r"is not running \(recovering\)") as c:
                await counts.query("total", name="a")
            assert c.value.code == "not-running"
        assert await counts.query("total", name="a") == 1


# -- the bank: read-your-writes in a few lines ---------------------------------------------


async def test_the_bank_answers_a_balance_that_includes_the_callers_deposit(
    actor_kit: ActorKit,
) -> None:
    async with actor_kit.start(Accounts):
        nc, js = actor_kit.nc, actor_kit.nc.jetstream()
        ack = await js.publish(
            "bank.deposit.acct-7",
            b'{"account": "acct-7", "amount": 50}',
            headers={"Event-Type": "Deposited", "Nats-Msg-Id": "deposit-1"},
        )
        answer = await actorsource.ask(
            nc, "accounts", "balance", account="acct-7", after_seq=ack.seq
        )
        assert answer.value == 50  # the deposit just made is in it
        assert answer.stream_seq >= ack.seq
        assert Deposited("acct-7", 50).amount == answer.value

"""Keyed entities: one state per key, loaded on demand, passivated when idle, snapshotted
one by one; against a real nats-server and real SQLite files."""

from __future__ import annotations

import itertools
import json
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from actorsource import ActorDefinitionError, Context, ErrorPolicy, entity, every, handles
from actorsource._journal.entity_reader import EntityReader
from actorsource._journal.entity_recovery import load_entity
from actorsource._log import get_logger
from actorsource._model.actor import definition_of
from actorsource._runtime.control import Passivate
from actorsource.journal import JournalBatch, JournalEntry, SQLiteJournal
from actorsource.testing import ActorKit, ActorProbe


@dataclass
class ItemAdded:
    sku: str
    quantity: int


@dataclass
class CheckedOut:
    total: int


@dataclass
class Flaky:
    """Fails while FAILS[its key] > 0 (after changing the state: the change must not stay)."""

    sku: str


FAILS: dict[str, int] = {}


@dataclass
class CartModel:
    items: dict[str, int]
    keys: list[str]
    checked_out: int

    def __init__(self) -> None:
        self.items = {}
        self.keys = []
        self.checked_out = 0

    @handles(ItemAdded)
    def added(self, e: ItemAdded, ctx: Context) -> None:
        self.items[e.sku] = self.items.get(e.sku, 0) + e.quantity
        assert ctx.key is not None
        self.keys.append(ctx.key)
        if sum(self.items.values()) >= 100 and not ctx.replaying:
            ctx.record(CheckedOut(sum(self.items.values())))

    @handles(CheckedOut)
    def checked(self, e: CheckedOut, ctx: Context) -> None:
        self.checked_out += 1
        self.items = {}
        ctx.publish(f"cart-events.{ctx.key}.checked-out", e)

    @handles(Flaky)
    def flaky(self, e: Flaky, ctx: Context) -> None:
        self.items[e.sku] = self.items.get(e.sku, 0) + 1_000
        if FAILS.get(ctx.key or "", 0) > 0:
            FAILS[ctx.key or ""] -= 1
            raise RuntimeError(f"flaky {ctx.key}")
        self.items[e.sku] -= 999


@entity("carts", subjects=["cart.*"], snapshot_every=3, keep=2)
class Cart(CartModel):
    """One shopping cart per subject token 1."""


@entity("small-carts", subjects=["small.*"], snapshot_every=2, max_resident=3)
class SmallCart(CartModel):
    """At most three resident."""


@entity(
    "small-saved-carts",
    subjects=["saved.*"],
    snapshot_every=2,
    max_resident=3,
    snapshot_on_evict=True,
)
class SmallSavedCart(CartModel):
    """At most three resident, snapshotted when evicted with unsaved events."""


@entity("one-cart", subjects=["one.*"], max_resident=1)
class OneCart(CartModel):
    """At most one resident: the pin rule is all that keeps an uncommitted one."""


@dataclass
class Tossed:
    """Handled without a Context: triage's short way when its entity is resident."""

    sku: str


@entity(
    "plain-retried-carts",
    subjects=["plainretried.*"],
    errors=ErrorPolicy(retries=2, backoff=0.01),
)
class PlainRetriedCart(CartModel):
    """RetriedCart with a handler that takes no Context."""

    @handles(Tossed)
    def tossed(self, e: Tossed) -> None:
        self.items[e.sku] = self.items.get(e.sku, 0) + 1_000
        if FAILS.get(e.sku, 0) > 0:
            FAILS[e.sku] -= 1
            raise RuntimeError(f"tossed {e.sku}")
        self.items[e.sku] -= 999


@entity(
    "retried-carts",
    subjects=["retried.*"],
    errors=ErrorPolicy(retries=2, backoff=0.01),
)
class RetriedCart(CartModel):
    """Retries a failing handler twice."""


@dataclass
class Deposited:
    account_id: str
    amount: int


@entity("accounts-by-field", subjects=["deposits.>"], key_field="account_id")
class Account:
    balance: int

    def __init__(self) -> None:
        self.balance = 0

    @handles(Deposited)
    def deposited(self, e: Deposited) -> None:
        self.balance += e.amount


def _fold(events: list[tuple[str, ItemAdded]]) -> dict[str, dict[str, int]]:
    """An independent fold of exactly what was published, per key (no checkout reached)."""
    out: dict[str, dict[str, int]] = {}
    for key, e in events:
        items = out.setdefault(key, {})
        items[e.sku] = items.get(e.sku, 0) + e.quantity
    return out


_MSG_IDS = itertools.count()


async def _publish(kit: ActorKit, prefix: str, events: list[tuple[str, ItemAdded]]) -> None:
    for key, e in events:
        await kit.publish(f"{prefix}.{key}", e, msg_id=f"{prefix}-{next(_MSG_IDS)}")


def _events(n: int, keys: int, seed: int = 1) -> list[tuple[str, ItemAdded]]:
    rng = random.Random(seed)
    return [
        (f"k{rng.randrange(keys)}", ItemAdded(rng.choice("xyz"), rng.randint(1, 3)))
        for _ in range(n)
    ]


async def _wait(condition: Any, timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.01)


async def _check_every_entity(probe: ActorProbe[Any], expected: dict[str, dict[str, int]]) -> None:
    for key, items in expected.items():
        state = await probe.entity(key)
        assert state.items == items, key
        assert set(state.keys) == {key}
        assert (await probe.fold_entity(key)).items == items


@entity("cart-lines", subjects=["shop.cart.*"], snapshot_every=100, max_resident=10_000)
class CartLines:
    items: dict[str, int]  # the state of ONE cart

    def __init__(self) -> None:
        self.items = {}

    @handles(ItemAdded)
    def added(self, e: ItemAdded, ctx: Context) -> None:
        # self is the cart named by the subject's last token: shop.cart.<cart id> (ctx.key)
        self.items[e.sku] = self.items.get(e.sku, 0) + e.quantity


async def test_the_readme_entity_keeps_one_cart_per_key(actor_kit: ActorKit) -> None:
    async with actor_kit.start(CartLines) as carts:
        await actor_kit.publish("shop.cart.c-1", ItemAdded("fig", 2))
        await actor_kit.publish("shop.cart.c-2", ItemAdded("fig", 5))
        await carts.settled()
        assert (await carts.entity("c-1")).items == {"fig": 2}
        assert carts.resident == ["c-1", "c-2"]
        await carts.tick(now=time.time() + 3_600)  # idle: passivated, snapshotted
        assert carts.resident == []


# -- keys --------------------------------------------------------------------------------------


async def test_each_entity_is_keyed_by_its_subject_token_and_folds_only_its_own_events(
    actor_kit: ActorKit,
) -> None:
    events = _events(40, keys=5)
    async with actor_kit.start(Cart) as carts:
        await _publish(actor_kit, "cart", events)
        await carts.settled()
        await _check_every_entity(carts, _fold(events))
        entries = await carts.entries()
        assert [e.entity for e in entries] == [key for key, _ in events]


async def test_the_key_can_come_from_a_field_of_the_event(actor_kit: ActorKit) -> None:
    async with actor_kit.start(Account) as accounts:
        await actor_kit.publish("deposits.eu.1", Deposited("a-1", 5))
        await actor_kit.publish("deposits.us", Deposited("a-2", 7))
        await actor_kit.publish("deposits.eu.2", Deposited("a-1", 10))
        await accounts.settled()
        assert (await accounts.entity("a-1")).balance == 15
        assert (await accounts.entity("a-2")).balance == 7
        assert [e.entity for e in await accounts.entries()] == ["a-1", "a-2", "a-1"]


@entity("lines", subjects=["line.>"], key_token=2)
class Line(CartModel):
    """Keyed by token 2 of subjects under ``line.>``."""


async def test_a_message_without_an_entity_key_is_a_dead_letter_and_the_rest_flows(
    actor_kit: ActorKit,
) -> None:
    async with actor_kit.start(Line) as lines:
        await actor_kit.publish("line.eu", ItemAdded("x", 1))  # no token 2
        await actor_kit.publish("line.eu.l-1", ItemAdded("x", 2))
        await lines.settled()
        [letter] = await lines.dead_letters()
        assert letter.reason == "no-entity-key"
        assert "subject 'line.eu' has no token 2" in letter.error
        assert letter.subject == "line.eu"
        assert (await lines.entity("l-1")).items == {"x": 2}
    async with actor_kit.start(Account) as accounts:
        await actor_kit.publish("deposits.x", Deposited("", 1))
        await actor_kit.publish("deposits.y", Deposited("a-1", 1))
        await accounts.settled()
        [letter] = await accounts.dead_letters()
        assert letter.reason == "no-entity-key"
        assert "Deposited.account_id is ''" in letter.error
        assert (await accounts.entity("a-1")).balance == 1


async def test_recorded_events_belong_to_their_entity_and_what_it_publishes_is_sent_once(
    actor_kit: ActorKit,
) -> None:
    await actor_kit.js.add_stream(name="CART_EVENTS", subjects=["cart-events.>"])
    async with actor_kit.start(Cart) as carts:
        await actor_kit.publish("cart.b", ItemAdded("x", 1))
        await actor_kit.publish("cart.a", ItemAdded("x", 60))
        await actor_kit.publish("cart.a", ItemAdded("y", 40))  # reaches 100: checks out
        await carts.settled()
        entries = await carts.entries()
        assert [(e.type, e.entity) for e in entries][-1] == ("CheckedOut", "a")
        state = await carts.entity("a")
        assert (state.items, state.checked_out) == ({}, 1)
        msg = await actor_kit.js.get_last_msg("CART_EVENTS", "cart-events.a.checked-out")
        assert msg.headers["Nats-Msg-Id"] == f"carts:{entries[-1].pos}:1"


# -- loading and passivation --------------------------------------------------------------------


async def test_entities_loaded_on_demand_equal_an_independent_fold_of_their_events(
    actor_kit: ActorKit,
) -> None:
    events = _events(120, keys=12, seed=3)
    async with actor_kit.start(SmallCart) as carts:
        for i in range(0, len(events), 10):  # batches, so commits let residents go
            await _publish(actor_kit, "small", events[i : i + 10])
            await carts.settled()
        assert len(carts.resident) <= 3
        assert carts.entity_loads > 12  # entities were passivated and loaded again
        await _check_every_entity(carts, _fold(events))
        assert carts.resident == list(carts.resident)  # entity() did not make them resident


async def test_an_entity_idle_longer_than_passivate_after_is_passivated_with_a_snapshot(
    actor_kit: ActorKit,
) -> None:
    async with actor_kit.start(Cart) as carts:
        await actor_kit.publish("cart.a", ItemAdded("x", 1))
        await actor_kit.publish("cart.b", ItemAdded("x", 2))
        await carts.settled()
        assert carts.resident == ["a", "b"]
        await carts.tick(now=time.time())  # not idle yet
        assert carts.resident == ["a", "b"]
        assert await carts.entity_snapshots("a") == []
        await carts.tick(now=time.time() + 121)  # passivate_after defaults to 120 s
        assert carts.resident == []
        assert await carts.entity_snapshots("a") == [1]
        assert await carts.entity_snapshots("b") == [2]
        loads = carts.entity_loads
        await actor_kit.publish("cart.a", ItemAdded("x", 4))
        await carts.settled()
        assert carts.entity_loads == loads + 1
        assert (await carts.entity("a")).items == {"x": 5}


async def test_beyond_max_resident_the_least_recently_used_entity_is_evicted_unsnapshotted(
    actor_kit: ActorKit,
) -> None:
    async with actor_kit.start(SmallCart) as carts:
        for key in ["a", "b", "c", "a", "d"]:
            await actor_kit.publish(f"small.{key}", ItemAdded("x", 1))
            await carts.settled()
        assert carts.resident == ["c", "a", "d"]  # b was the least recently used
        assert await carts.entity_snapshots("b") == []  # evicted: its row is its state
        assert (await carts.entity("b")).items == {"x": 1}
        # Loaded again, b counts its replayed event towards snapshot_every=2.
        await actor_kit.publish("small.b", ItemAdded("x", 2))
        await carts.settled()
        assert await carts.entity_snapshots("b") == [6]
        assert (await carts.entity("b")).items == {"x": 3}


async def test_with_snapshot_on_evict_an_evicted_entity_is_snapshotted(
    actor_kit: ActorKit,
) -> None:
    async with actor_kit.start(SmallSavedCart) as carts:
        for key in ["a", "b", "c", "a", "d"]:
            await actor_kit.publish(f"saved.{key}", ItemAdded("x", 1))
            await carts.settled()
        assert carts.resident == ["c", "a", "d"]
        assert await carts.entity_snapshots("b") == [2]  # its unsaved event, on eviction
        assert (await carts.entity("b")).items == {"x": 1}


async def test_an_entity_with_uncommitted_events_is_never_passivated(actor_kit: ActorKit) -> None:
    async with actor_kit.start(OneCart, ack_wait=10.0) as carts:
        async with carts._live_runner._write_lock:  # commits stall, as on a slow disk
            await actor_kit.publish("one.a", ItemAdded("x", 1))
            await _wait(lambda: "a" in carts.resident)
            await actor_kit.publish("one.b", ItemAdded("x", 2))
            await _wait(lambda: "b" in carts.resident)
            assert carts.resident == ["a", "b"]  # over max_resident=1: "a" is pinned
            # Passivation at a time when both are idle (tick() would wait for the commit).
            await carts._live_runner._control.ask(Passivate(now=time.time() + 1_000)).wait()
            assert carts.resident == ["a", "b"]
            await actor_kit.publish("one.a", ItemAdded("x", 4))
            await _wait(lambda: carts.resident[-1:] == ["a"])
            assert (await carts.entity("a")).items == {"x": 5}
        await carts.settled()
        await carts.tick(now=time.time())  # committed now: back to max_resident
        assert carts.resident == ["a"]
        assert (await carts.entity("a")).items == {"x": 5}
        assert (await carts.entity("b")).items == {"x": 2}


async def test_restart_to_ready_loads_no_entity(actor_kit: ActorKit) -> None:
    events = _events(60, keys=30, seed=5)
    async with actor_kit.start(Cart) as carts:
        await _publish(actor_kit, "cart", events)
        await carts.settled()
        await carts.restart()
        assert carts.recovery.replayed == 0
        assert carts.entity_loads == 0
        assert carts.resident == []
        await _check_every_entity(carts, _fold(events))


# -- snapshots, crashes and failures -------------------------------------------------------------


async def test_each_entity_is_snapshotted_after_its_own_snapshot_every_events_keeping_keep(
    actor_kit: ActorKit,
) -> None:
    async with actor_kit.start(Cart) as carts:  # snapshot_every=3, keep=2
        await _publish(actor_kit, "cart", [("b", ItemAdded("x", 1))])
        for _ in range(3):
            # Three of a's events at a time: due at the end of the batch that reaches three,
            # so the positions do not depend on how the consumer batches them.
            await _publish(actor_kit, "cart", [("a", ItemAdded("x", 1))] * 3)
            await carts.settled()
        assert await carts.entity_snapshots("a") == [10, 7]  # the one at 4 pruned
        assert await carts.entity_snapshots("b") == []  # one event: not due


async def test_after_crashes_between_commit_and_snapshot_every_entity_equals_its_fold(
    actor_kit: ActorKit,
) -> None:
    events = _events(150, keys=10, seed=7)
    async with actor_kit.start(SmallCart) as carts:
        for i in range(0, len(events), 50):
            carts.arm_crash("after_commit")
            await _publish(actor_kit, "small", events[i : i + 50])
            await carts.crashed()  # died after a commit; restarted from the journal
        await carts.settled()
        await _check_every_entity(carts, _fold(events))
        assert len(await carts.entries()) == len(events)


async def test_a_corrupt_entity_snapshot_falls_back_to_an_older_one_then_to_the_rows(
    actor_kit: ActorKit,
) -> None:
    async with actor_kit.start(Cart) as carts:
        for n in (3, 3, 1):  # snapshots at 3 and 6 whatever the batching, 7 at the stop
            await _publish(actor_kit, "cart", [("a", ItemAdded("x", 1))] * n)
            await carts.settled()
        path = carts.journal_path
    definition = definition_of(Cart)
    log = get_logger(actor="carts")
    with sqlite3.connect(path) as db:
        assert [r[0] for r in db.execute("SELECT pos FROM entity_snapshots")] == [6, 7]
        db.execute("UPDATE entity_snapshots SET data = '{\"items\": {}}' WHERE pos = 7")
    with EntityReader(path) as reader:
        state, report = await load_entity(definition, reader, "a", committed=7, log=log)
        assert (report.snapshot_pos, report.skipped, report.replayed) == (
            6,
            [(7, "checksum mismatch")],
            1,
        )
        assert state.items == {"x": 7}
    with sqlite3.connect(path) as db:
        db.execute("UPDATE entity_snapshots SET checksum = 'bad' WHERE pos = 6")
    with EntityReader(path) as reader:
        state, report = await load_entity(definition, reader, "a", committed=7, log=log)
        assert (report.snapshot_pos, report.replayed) == (None, 7)
        assert state.items == {"x": 7}
    async with actor_kit.start(Cart) as carts:
        assert (await carts.entity("a")).items == {"x": 7}


async def test_a_failing_handler_reloads_only_its_entity(actor_kit: ActorKit) -> None:
    FAILS["c"] = 1
    async with actor_kit.start(RetriedCart) as carts:
        for key in "abc":
            await actor_kit.publish(f"retried.{key}", ItemAdded("x", 1))
        await carts.settled()
        assert carts.entity_loads == 3
        await actor_kit.publish("retried.a", ItemAdded("x", 1))
        await actor_kit.publish("retried.c", Flaky("x"))  # fails once, then succeeds
        await actor_kit.publish("retried.b", ItemAdded("x", 1))
        await carts.settled()
        assert carts.entity_loads == 4  # c again, not a and b
        assert carts.stats.rebuilds == 1
        assert (await carts.entity("c")).items == {"x": 2}
        assert (await carts.entity("a")).items == {"x": 2}
        assert (await carts.fold_entity("c")).items == {"x": 2}
        FAILS["b"] = 5
        await actor_kit.publish("retried.b", Flaky("y"))  # fails for good: a dead letter
        await carts.settled()
        [letter] = await carts.dead_letters()
        assert letter.reason == "handler-failed"
        assert (await carts.entity("b")).items == {"x": 2}
        assert "a" in carts.resident
        assert "c" in carts.resident


async def test_a_handler_without_context_applies_to_a_resident_entity_and_fails_alone(
    actor_kit: ActorKit,
) -> None:
    FAILS["t1"] = 1
    async with actor_kit.start(PlainRetriedCart) as carts:
        for key in "abc":
            await actor_kit.publish(f"plainretried.{key}", ItemAdded("x", 1))
        await carts.settled()
        assert carts.entity_loads == 3
        await actor_kit.publish("plainretried.a", Tossed("t2"))  # resident: no load
        await actor_kit.publish("plainretried.c", Tossed("t1"))  # fails once, then succeeds
        await actor_kit.publish("plainretried.d", Tossed("t3"))  # not resident: loaded
        await carts.settled()
        assert carts.entity_loads == 5  # c again and d, not a
        assert (await carts.entity("a")).items == {"x": 1, "t2": 1}
        assert (await carts.entity("c")).items == {"x": 1, "t1": 1}
        assert (await carts.entity("d")).items == {"t3": 1}
        for key in "acd":
            assert (await carts.fold_entity(key)).items == (await carts.entity(key)).items


# -- versions and old journals --------------------------------------------------------------------


RECORDED = Path(__file__).parent / "data" / "orders-v1.journal.sqlite"


async def test_a_journal_written_before_entities_opens_unchanged_with_an_entity_column(
    tmp_path: Path,
) -> None:
    path = tmp_path / "orders-v1.journal.sqlite"
    shutil.copyfile(RECORDED, path)
    query = "SELECT pos, type, payload FROM events ORDER BY pos"
    with sqlite3.connect(f"file:{RECORDED}?mode=ro", uri=True) as old:
        before = old.execute(query).fetchall()
    async with SQLiteJournal(path, actor="orders-v1") as journal:
        assert journal.last_pos == 68
        entries = [e async for chunk in journal.entries() for e in chunk]
    assert [e.entity for e in entries] == [None] * 68
    with sqlite3.connect(path) as db:
        assert db.execute(query).fetchall() == before
        assert db.execute("SELECT count(*) FROM entity_snapshots").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM entity_heads").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM events WHERE prev_pos IS NOT NULL").fetchone() == (
            0,
        )
        indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert "events_by_entity" not in indexes


RECORDED_V4 = Path(__file__).parent / "data" / "carts-v4.journal.sqlite"


def _raw_rows(path: Path) -> list[tuple[int, str, bytes]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows: list[tuple[int, str, bytes]] = db.execute(
            "SELECT pos, entity, payload FROM events ORDER BY pos"
        ).fetchall()
    return rows


def _raw_fold(rows: list[tuple[int, str, bytes]]) -> dict[str, dict[str, int]]:
    """An independent fold of the raw payloads, per key."""
    out: dict[str, dict[str, int]] = {}
    for _, key, payload in rows:
        added = json.loads(payload)
        items = out.setdefault(key, {})
        items[added["sku"]] = items.get(added["sku"], 0) + added["quantity"]
    return out


async def _loaded(path: Path, keys: list[str], committed: int) -> dict[str, dict[str, int]]:
    definition = definition_of(Cart)
    out = {}
    with EntityReader(path) as reader:
        assert reader.keys() == sorted(keys)
        for key in keys:
            state, _ = await load_entity(
                definition, reader, key, committed=committed, log=get_logger()
            )
            out[key] = state.items
    return out


async def test_an_entity_journal_of_schema_4_is_chained_once_and_loads_as_before(
    tmp_path: Path,
) -> None:
    path = tmp_path / "carts.journal.sqlite"
    shutil.copyfile(RECORDED_V4, path)
    rows = _raw_rows(RECORDED_V4)
    expected = _raw_fold(rows)
    keys = sorted(expected)
    async with SQLiteJournal(path, actor="carts") as journal:
        assert journal.last_pos == 40
    with sqlite3.connect(path) as db:
        # Each row points at its entity's row before it (0 for the first), each head at
        # the entity's last row, as an independent pass over the rows says; the index went.
        prev: dict[str, int] = {}
        want = []
        for pos, key, _ in rows:
            want.append((pos, prev.get(key, 0)))
            prev[key] = pos
        assert db.execute("SELECT pos, prev_pos FROM events ORDER BY pos").fetchall() == want
        assert dict(db.execute("SELECT entity, pos FROM entity_heads").fetchall()) == prev
        indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert "events_by_entity" not in indexes
    # k0 and k1 load from their snapshots and later rows, k2 and k3 from all their rows.
    assert await _loaded(path, keys, 40) == expected
    # New rows continue the chains.
    async with SQLiteJournal(path, actor="carts") as journal:
        more = [
            JournalEntry(
                41 + i,
                f"cart.{key}",
                "ItemAdded",
                json.dumps({"sku": "w", "quantity": 5}).encode(),
                1.0,
                "CARTS",
                41 + i,
                f"n-{i}",
                entity=key,
            )
            for i, key in enumerate(["k2", "k9", "k2", "k0"])
        ]
        await journal.append(JournalBatch(entries=more, positions={"CARTS": 44}, dead_letters=[]))
    rows = _raw_rows(path)
    assert await _loaded(path, sorted({k for _, k, _ in rows}), 44) == _raw_fold(rows)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT prev_pos FROM events WHERE pos > 40 ORDER BY pos").fetchall() == [
            (prev["k2"],), (0,), (41,), (prev["k0"],),
        ]  # fmt: skip


async def test_an_entity_load_walks_its_rows_by_the_primary_key(tmp_path: Path) -> None:
    from actorsource._journal.entity_reader import _HEAD_BY_KEY, _HEAD_GIVEN, _ROWS, _newest_sql

    path = tmp_path / "carts.journal.sqlite"
    shutil.copyfile(RECORDED_V4, path)
    async with SQLiteJournal(path, actor="carts"):
        pass
    # From the head in the table, and from a staged head, with the newest snapshot or
    # without: each step of the walk is one row by its position; never a range of the journal.
    queries = [(sql, (head, 0, 0, 40)) for sql, head in zip(_ROWS, ["k2", 40], strict=True)]
    newest = (_newest_sql("-1", _HEAD_BY_KEY), _newest_sql("-1", _HEAD_GIVEN))
    queries += [(sql, ("k2", head, 40)) for sql, head in zip(newest, ["k2", 40], strict=True)]
    for sql, params in queries:
        with sqlite3.connect(path) as db:
            plan = [r[3] for r in db.execute("EXPLAIN QUERY PLAN " + sql, params)]
        on_events = [step for step in plan if "events" in step]
        assert on_events
        assert set(on_events) == {"SEARCH events USING INTEGER PRIMARY KEY (rowid=?)"}, plan


@dataclass
class ItemAddedV1:
    sku: str
    qty: int


async def test_entities_of_an_older_model_version_are_rebuilt_from_their_rows_on_load(
    actor_kit: ActorKit,
) -> None:
    from actorsource import event, upcaster

    v1_added = event("carts.ItemAdded")(ItemAddedV1)

    @entity("versioned-carts", subjects=["vcart.*"], snapshot_every=2, version=1)
    class CartV1:
        items: dict[str, int]

        def __init__(self) -> None:
            self.items = {}

        @handles(v1_added)
        def added(self, e: ItemAddedV1) -> None:
            self.items[e.sku] = self.items.get(e.sku, 0) + e.qty

    @event("carts.ItemAdded", version=2)
    @dataclass
    class ItemAddedV2:
        sku: str
        quantity: int
        unit: str

    @upcaster(ItemAddedV2, from_version=1)
    def _units(data: dict[str, Any]) -> dict[str, Any]:
        return {"sku": data["sku"], "quantity": data["qty"], "unit": "piece"}

    @entity("versioned-carts", subjects=["vcart.*"], snapshot_every=2, version=2)
    class CartV2:
        lines: dict[str, str]

        def __init__(self) -> None:
            self.lines = {}

        @handles(ItemAddedV2)
        def added(self, e: ItemAddedV2) -> None:
            self.lines[e.sku] = f"{e.quantity} {e.unit}"

    async with actor_kit.start(CartV1) as v1:
        for key, sku, qty in [("a", "x", 1), ("a", "y", 2), ("b", "x", 3), ("a", "x", 4)]:
            await actor_kit.publish(f"vcart.{key}", ItemAddedV1(sku, qty))
            await v1.settled()  # one batch each: a's snapshot is due at its 2nd event
        assert (await v1.entity("a")).items == {"x": 5, "y": 2}
        assert await v1.entity_snapshots("a") == [2]  # its 2nd event; the 3rd is not due
    async with actor_kit.start(CartV2) as v2:
        await actor_kit.publish("vcart.b", ItemAddedV2("z", 1, "box"))
        await v2.settled()
        assert (await v2.entity("a")).lines == {"x": "4 piece", "y": "2 piece"}
        assert (await v2.entity("b")).lines == {"x": "3 piece", "z": "1 box"}
        await v2.tick(now=time.time() + 1_000)  # passivated: snapshots of version 2
    with sqlite3.connect(v2.journal_path) as db:
        rows = db.execute("SELECT entity, pos, version FROM entity_snapshots WHERE version = 2")
        assert sorted(rows) == [("b", 5, 2)]  # a was only read, never resident


# -- definitions ---------------------------------------------------------------------------------


def _define(**options: Any) -> None:
    subjects = options.pop("subjects", ["cart.*"])

    @entity("bad", subjects=subjects, **options)
    class Bad(CartModel):
        pass


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"subjects": ["cart.>"]}, "subject 'cart.>' has no '*' token to take the key from"),
        ({"subjects": ["a.*", "b.c.*"]}, "first '*' of its subjects is at different tokens"),
        ({"key_token": 0}, "token 0 of subject 'cart.*' is the literal 'cart'"),
        ({"key_token": 2}, "subject 'cart.*' has no token 2"),
        ({"key_token": 1, "key_field": "sku"}, "pass key_token or key_field, not both"),
        ({"key_field": "cart_id"}, "key_field 'cart_id' is a field of none of its events"),
        ({"key_field": "sku", "partitions": 4}, "key_field cannot be combined with partitions="),
        ({"subjects": ["cart.*.>"], "key_token": 2, "partitions": 4}, "token 2 of subject"),
        ({"partitions": 1}, "partitions=1 is an unpartitioned actor"),
        ({"max_resident": 0}, "max_resident must be an int >= 1"),
        ({"snapshot_every": 0}, "snapshot_every must be an int >= 1"),
        ({"keep": 0}, "keep must be an int >= 1"),
        ({"passivate_after": 0}, "passivate_after must be a number of seconds > 0"),
    ],
)
def test_a_wrong_entity_definition_is_refused_in_one_line(
    options: dict[str, Any], error: str
) -> None:
    with pytest.raises(ActorDefinitionError, match=re.escape(error)) as raised:
        _define(**options)
    assert "\n" not in str(raised.value)


def test_timers_are_refused_on_an_entity() -> None:
    with pytest.raises(ActorDefinitionError, match=r"Timed.tick: @every timers are per actor"):

        @entity("timed", subjects=["t.*"])
        class Timed(CartModel):
            @every(1)
            def tick(self, now: float) -> None:
                return None


# -- tools -----------------------------------------------------------------------------------------


async def test_rebuild_of_an_entity_actor_writes_one_fresh_snapshot_per_entity(
    actor_kit: ActorKit,
) -> None:
    events = [("a", ItemAdded("x", 1))] * 7 + [("b", ItemAdded("y", 2))] * 2
    async with actor_kit.start(Cart) as carts:
        await _publish(actor_kit, "cart", events)
        await carts.settled()
        path = carts.journal_path
    command = ["rebuild", "test_entities:Cart", "--data-dir", str(actor_kit.data_dir)]
    out = subprocess.run(
        [sys.executable, "-m", "actorsource", *command],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent,
    )
    assert out.returncode == 0, out.stderr
    assert "rebuilt carts: 2 entity snapshots written from 9 events" in out.stdout
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT entity, pos FROM entity_snapshots ORDER BY entity").fetchall()
    assert rows == [("a", 7), ("b", 9)]
    exported = subprocess.run(
        [sys.executable, "-m", "actorsource", "journal", "export", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert [json.loads(line)["entity"] for line in exported.stdout.splitlines()] == [
        key for key, _ in events
    ]
    async with actor_kit.start(Cart) as carts:
        assert (await carts.entity("a")).items == {"x": 7}
        assert (await carts.entity("b")).items == {"y": 4}

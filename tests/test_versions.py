"""Schema evolution: versioned event types, upcasters, and a journal recorded by version 1.

``data/orders-v1.journal.sqlite`` was written by version 1 of an order book (see
``data/record_v1_journal.py``): one line per order, a ``price_cents`` field, no versions.
Version 3 of the model below reads it through two upcasters, live and on replay, and must
reach the state an independent fold of the raw payloads gives.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from actorsource import ActorDefinitionError, Context, actor, event, handles, upcaster
from actorsource._journal.schema import SCHEMA_VERSION
from actorsource.cli import main
from actorsource.journal import SQLiteJournal, restore_state
from actorsource.testing import ActorKit

RECORDED = Path(__file__).parent / "data" / "orders-v1.journal.sqlite"


def _recorded_copy(tmp_path: Path, name: str = "orders-v1.journal.sqlite") -> Path:
    """A copy of the recorded journal to open: the file in the repository is never opened,
    so no test writes it (SQLite writes even to open a WAL file read-only)."""
    path = tmp_path / name
    shutil.copyfile(RECORDED, path)
    return path


@dataclass
class Line:
    sku: str
    quantity: int
    unit_price: int


@event("shop.OrderPlaced", version=3)
@dataclass
class OrderPlaced:
    """Version 3: several lines per order, a currency. (v1: sku/quantity/price_cents; v2:
    sku/quantity/unit_price/currency.)"""

    order_id: str
    lines: list[Line]
    currency: str


@upcaster(OrderPlaced, from_version=1)
def _price_in_a_currency(data: dict[str, Any]) -> dict[str, Any]:
    data = dict(data)
    data["unit_price"] = data.pop("price_cents")
    data["currency"] = "EUR"
    return data


@upcaster(OrderPlaced, from_version=2)
def _one_line(data: dict[str, Any]) -> dict[str, Any]:
    line = {k: data[k] for k in ("sku", "quantity", "unit_price")}
    return {"order_id": data["order_id"], "lines": [line], "currency": data["currency"]}


@event("shop.OrderCancelled")
@dataclass
class OrderCancelled:
    order_id: str


@dataclass
class OrderBookModel:
    """Version 3 of the model: open order totals per currency, units per SKU."""

    open: dict[str, int] = field(default_factory=dict)
    currency: dict[str, str] = field(default_factory=dict)
    units: dict[str, int] = field(default_factory=dict)
    versions_seen: list[int] = field(default_factory=list)
    cancelled: int = 0

    @handles(OrderPlaced)
    def placed(self, e: OrderPlaced, ctx: Context) -> None:
        self.open[e.order_id] = sum(line.quantity * line.unit_price for line in e.lines)
        self.currency[e.order_id] = e.currency
        for line in e.lines:
            self.units[line.sku] = self.units.get(line.sku, 0) + line.quantity
        self.versions_seen.append(ctx.entry.version)

    @handles(OrderCancelled)
    def cancel(self, e: OrderCancelled) -> None:
        if self.open.pop(e.order_id, None) is not None:
            self.cancelled += 1


@actor("orders-v1", subjects=["legacy.orders.>"], version=3)
class RecordedOrderBook(OrderBookModel):
    """The actor that owns the recorded journal, deployed at model version 3."""


@actor("orders", subjects=["orders.>"], version=3)
class OrderBook(OrderBookModel):
    """The same model, live."""


def _independent_fold(path: Path) -> dict[str, Any]:
    """The expected state, from the raw v1 rows with nothing but sqlite3 and json."""
    open_: dict[str, int] = {}
    units: dict[str, int] = {}
    cancelled = 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        for type_, payload in db.execute("SELECT type, payload FROM events ORDER BY pos"):
            data = json.loads(payload)
            if type_ == "shop.OrderPlaced":
                open_[data["order_id"]] = data["quantity"] * data["price_cents"]
                units[data["sku"]] = units.get(data["sku"], 0) + data["quantity"]
            elif open_.pop(data["order_id"], None) is not None:
                cancelled += 1
    return {"open": open_, "units": units, "cancelled": cancelled}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_recorded_journal_is_one_self_contained_file() -> None:
    header = RECORDED.read_bytes()[:100]
    assert header[18:20] == b"\x01\x01"  # a rollback journal: nothing lives in a -wal file
    assert not RECORDED.with_name(RECORDED.name + "-wal").exists()
    assert not RECORDED.with_name(RECORDED.name + "-shm").exists()


async def test_a_journal_recorded_by_version_1_replays_through_the_version_3_model(
    tmp_path: Path,
) -> None:
    path = _recorded_copy(tmp_path)
    as_recorded = _recorded_copy(tmp_path, "as-recorded.sqlite")
    expected = _independent_fold(as_recorded)
    assert expected["cancelled"] > 0
    assert len(expected["open"]) > 40
    async with SQLiteJournal(path, actor="orders-v1") as journal:
        state, report = await restore_state(RecordedOrderBook, journal)
    # Its snapshots are of model version 1: skipped, and the whole journal replayed.
    assert report.snapshot_pos is None
    assert report.skipped
    assert all("model version 1" in why for _, why in report.skipped)
    assert report.replayed == 68
    assert state.open == expected["open"]
    assert state.units == expected["units"]
    assert state.cancelled == expected["cancelled"]
    assert set(state.currency.values()) == {"EUR"}
    assert set(state.versions_seen) == {1}
    with sqlite3.connect(path) as db:  # upgraded in place; payloads kept as received
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        # No event of a singleton belongs to an entity (NULL: what the column upgrade gave).
        assert db.execute("SELECT count(*) FROM events WHERE entity IS NOT NULL").fetchone() == (0,)
        old = sqlite3.connect(f"file:{as_recorded}?mode=ro", uri=True)
        query = "SELECT pos, payload FROM events ORDER BY pos"
        assert db.execute(query).fetchall() == old.execute(query).fetchall()
        old.close()


def test_the_journal_tools_read_a_version_1_journal_without_changing_it(tmp_path: Path) -> None:
    path = _recorded_copy(tmp_path)
    before = _digest(path)
    result = CliRunner().invoke(main, ["journal", "show", str(path), "1"])
    assert result.exit_code == 0, result.output
    entry = json.loads(result.stdout)
    assert entry["version"] == 1
    assert entry["type"] == "shop.OrderPlaced"
    result = CliRunner().invoke(main, ["journal", "info", str(path)])
    assert result.exit_code == 0
    assert "orders-v1" in result.stdout
    assert _digest(path) == before


async def test_upcasters_apply_to_live_events_of_every_version_and_again_on_replay(
    actor_kit: ActorKit,
) -> None:
    v1 = {"order_id": "a", "sku": "fig", "quantity": 2, "price_cents": 300}
    v2 = {"order_id": "b", "sku": "fig", "quantity": 1, "unit_price": 50, "currency": "USD"}
    v3 = OrderPlaced("c", [Line("fig", 1, 10), Line("plum", 4, 5)], "EUR")
    placed = {"Event-Type": "shop.OrderPlaced"}
    async with actor_kit.start(OrderBook) as book:
        await actor_kit.publish_raw("orders.a", json.dumps(v1).encode(), headers=placed)
        await actor_kit.publish_raw(
            "orders.b", json.dumps(v2).encode(), headers={**placed, "Event-Version": "2"}
        )
        await actor_kit.publish("orders.c", v3)
        await book.settled()
        live = book.state
        assert live.open == {"a": 600, "b": 50, "c": 30}
        assert live.currency == {"a": "EUR", "b": "USD", "c": "EUR"}
        assert live.units == {"fig": 4, "plum": 4}
        assert live.versions_seen == [1, 2, 3]
        entries = await book.entries()
        assert [e.version for e in entries] == [1, 2, 3]
        assert json.loads(entries[0].payload) == v1  # journaled as received
        await book.stop()
        async with SQLiteJournal(book.journal_path, actor="orders") as journal:
            await journal.delete_snapshots()
        await book.start()
        assert book.recovery.replayed == 3
        assert book.state == live


@event("shop.Refund", version=2)
@dataclass
class Refund:
    order_id: str
    amount: int


@actor("refunds", subjects=["refunds.>"])
@dataclass
class Refunds:
    total: int = 0

    @handles(Refund)
    def refund(self, e: Refund) -> None:
        self.total += e.amount


@pytest.mark.parametrize(
    ("version", "error"),
    [
        ("3", "version 3 is newer than this service knows (2)"),
        ("two", "invalid Event-Version header 'two'"),
        ("0", "invalid Event-Version header '0'"),
        (None, "no upcaster from version 1 of 'shop.Refund' to 2"),
    ],
)
async def test_an_event_of_a_version_the_service_cannot_read_is_dead_lettered_clearly(
    actor_kit: ActorKit, version: str | None, error: str
) -> None:
    headers = {"Event-Type": "shop.Refund"}
    if version is not None:
        headers["Event-Version"] = version
    async with actor_kit.start(Refunds) as refunds:
        await actor_kit.publish_raw("refunds.x", b'{"order_id":"x","amount":5}', headers=headers)
        await actor_kit.publish("refunds.y", Refund("y", 7))
        await refunds.settled()
        [letter] = await refunds.dead_letters()
        assert letter.reason == "undecodable"
        assert error in letter.error
        assert refunds.state.total == 7


def test_an_upcaster_must_start_from_an_older_version_than_the_class() -> None:
    with pytest.raises(ActorDefinitionError, match=r"from_version must be an int in 1\.\.2"):
        upcaster(OrderPlaced, from_version=3)
    with pytest.raises(ActorDefinitionError, match="already has an upcaster from version 1"):
        upcaster(OrderPlaced, from_version=1)(lambda d: d)
    with pytest.raises(ActorDefinitionError, match="version must be an int >= 1"):
        event("x.Y", version=0)

"""pydantic v2 models as event types and in snapshot states (the ``pydantic`` extra)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pydantic = pytest.importorskip("pydantic")

from pydantic import BaseModel, Field, field_validator  # noqa: E402

from actorsource import EVENT_TYPE_HEADER, actor, event, handles, upcaster  # noqa: E402
from actorsource._model.events import EventCodec, encode_event  # noqa: E402
from actorsource.testing import ActorKit  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@event("orders.Placed", version=2)
class Placed(BaseModel):
    order: str = Field(min_length=1)
    amount: int
    currency: str

    @field_validator("amount")
    @classmethod
    def positive(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("an order amount must be positive")
        return value


@upcaster(Placed, from_version=1)
def add_currency(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "currency": "EUR"}


class Line(BaseModel):
    amount: int
    currency: str


@actor("pyd-orders", subjects=["pyd.>"], snapshot_every=2)
class Orders:
    lines: dict[str, Line]  # annotated: snapshots restore the models

    def __init__(self) -> None:
        self.lines = {}

    @handles(Placed)
    def placed(self, event: Placed) -> None:
        self.lines[event.order] = Line(amount=event.amount, currency=event.currency)


def test_a_model_event_round_trips_through_its_own_serializer_and_validation() -> None:
    codec = EventCodec([Placed])
    name, payload = encode_event(Placed(order="o-1", amount=5, currency="USD"))
    assert name == "orders.Placed"
    assert payload == Placed(order="o-1", amount=5, currency="USD").model_dump_json().encode()
    assert codec.decode(name, payload, 2) == Placed(order="o-1", amount=5, currency="USD")


def test_upcasters_run_on_the_json_object_before_pydantic_validates_it() -> None:
    codec = EventCodec([Placed])
    decoded = codec.decode("orders.Placed", b'{"order": "o-1", "amount": 5}', 1)
    assert decoded == Placed(order="o-1", amount=5, currency="EUR")


async def test_an_actor_applies_model_events_and_dead_letters_what_pydantic_refuses(
    actor_kit: ActorKit,
) -> None:
    async with actor_kit.start(Orders) as orders:
        await actor_kit.publish("pyd.o-1", Placed(order="o-1", amount=5, currency="USD"))
        headers = {EVENT_TYPE_HEADER: "orders.Placed", "Event-Version": "2"}
        await actor_kit.publish_raw(
            "pyd.o-2", b'{"order": "o-2", "amount": -3, "currency": "USD"}', headers=headers
        )
        await actor_kit.publish_raw("pyd.o-3", b'{"order": "o-3", "amount": 7}', headers=headers)
        await actor_kit.publish("pyd.o-4", Placed(order="o-4", amount=9, currency="EUR"))
        await orders.settled()
        assert orders.state.lines == {
            "o-1": Line(amount=5, currency="USD"),
            "o-4": Line(amount=9, currency="EUR"),
        }
        negative, missing = await orders.dead_letters()
        assert negative.reason == missing.reason == "undecodable"
        # pydantic's own message, in one line
        assert (
            "1 validation error for Placed: amount: Value error, an order amount must be positive"
            in negative.error
        )
        assert "currency: Field required" in missing.error
        assert "\n" not in negative.error


async def test_a_snapshot_of_a_state_holding_models_restores_them(actor_kit: ActorKit) -> None:
    async with actor_kit.start(Orders) as orders:
        for i in range(4):
            await actor_kit.publish(
                f"pyd.o-{i}", Placed(order=f"o-{i}", amount=i + 1, currency="EUR")
            )
        await orders.settled()
        before = dict(orders.state.lines)
        await orders.restart()
        assert orders.recovery.snapshot_pos == 4  # restored from the snapshot, not replayed
        assert orders.recovery.replayed == 0
        assert orders.state.lines == before
        assert all(isinstance(line, Line) for line in orders.state.lines.values())
        assert (await orders.fold()).lines == before


def test_the_core_never_imports_pydantic_when_no_model_is_declared() -> None:
    code = (
        "import sys\n"
        "import actorsource, actorsource.cli, actorsource.testing, actorsource.journal\n"
        "import examples.bank\n"
        "from actorsource._model.actor import definition_of\n"
        "from actorsource._model.events import encode_event\n"
        "d = definition_of(examples.bank.Accounts)\n"
        "name, payload = encode_event(examples.bank.Deposited('a', 1))\n"
        "d.codec.decode(name, payload)\n"
        "d.state_codec.encode(examples.bank.Accounts())\n"
        "assert 'pydantic' not in sys.modules, 'pydantic was imported'\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"

"""``actorsource asyncapi``: the AsyncAPI 3.0 document of actors, valid against the
specification's own JSON Schema (tests/data/asyncapi-3.0.0.schema.json, see its NOTICE),
naming every event the shop publishes, with payload schemas its real messages satisfy."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner

jsonschema = pytest.importorskip("jsonschema")

from actorsource._model.actor import definition_of  # noqa: E402
from actorsource._model.asyncapi import asyncapi_document  # noqa: E402
from actorsource._model.subjects import subject_matches  # noqa: E402
from actorsource.cli import main  # noqa: E402
from actorsource.testing import ActorKit  # noqa: E402
from examples.shop import Order, Payments, Shipping  # noqa: E402
from examples.shop.frontend import place, random_requests  # noqa: E402
from examples.shop.orders import CANCELLED, SHIPPED  # noqa: E402

SCHEMA = Path(__file__).resolve().parent / "data" / "asyncapi-3.0.0.schema.json"


@pytest.fixture(scope="module")
def validator() -> Any:
    return jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))


@pytest.fixture(scope="module")
def shop_document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("asyncapi") / "shop.json"
    result = CliRunner().invoke(main, ["asyncapi", "examples.shop", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output == f"{out}: AsyncAPI 3.0.0, 12 channels, 14 operations, 17 messages\n"
    document: dict[str, Any] = json.loads(out.read_text())
    return document


def _errors(validator: Any, document: dict[str, Any]) -> list[str]:
    return [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(document)]


def test_the_shops_document_is_valid_asyncapi_3(
    validator: Any, shop_document: dict[str, Any]
) -> None:
    assert _errors(validator, shop_document) == []
    # The schema does check: a document that breaks the specification is refused.
    broken = copy.deepcopy(shop_document)
    next(iter(broken["operations"].values()))["action"] = "publish"  # AsyncAPI 2's word
    assert _errors(validator, broken)


def test_the_document_says_what_each_service_consumes_and_publishes(
    shop_document: dict[str, Any],
) -> None:
    operations = shop_document["operations"]
    placed = shop_document["channels"]["shop.orders.placed._"]
    assert placed["address"] == "shop.orders.placed.{token3}"
    assert operations["orders.send.shop.orders.placed._"]["summary"] == (
        "orders publishes shop.orders.placed.*"
    )
    message = shop_document["components"]["messages"]["orders.shop.OrderPlaced"]
    assert message["name"] == "shop.OrderPlaced"
    assert message["headers"]["properties"]["Event-Type"] == {
        "type": "string",
        "const": "shop.OrderPlaced",
    }
    assert message["payload"] == {"$ref": "#/components/schemas/orders.OrderPlaced"}
    schema = shop_document["components"]["schemas"]["orders.OrderPlaced"]
    assert schema["required"] == ["order_id", "customer", "items", "total"]
    receives = {k for k, op in operations.items() if op["action"] == "receive"}
    assert receives == {
        "orders.receive.shop.requests.order._",
        "orders.receive.shop.payments._._",
        "orders.receive.shop.shipping.scheduled._",
        "payments.receive.shop.orders.placed.__",
        "payments.receive.shop.shipping.failed.__",
        "shipping.receive.shop.orders.placed.__",
        "shipping.receive.shop.payments.captured.__",
    }


def _sent(document: dict[str, Any], actor: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(subject pattern, event type, message) of each message ``actor`` declares it sends."""
    out = []
    for key, op in document["operations"].items():
        if op["action"] != "send" or not key.startswith(f"{actor}."):
            continue
        channel = document["channels"][op["channel"]["$ref"].rsplit("/", 1)[1]]
        pattern = channel["description"].removeprefix("NATS subject ")
        for ref in op["messages"]:
            message_id = ref["$ref"].rsplit("/", 1)[1]
            message = document["components"]["messages"][message_id]
            out.append((pattern, message["name"], message))
    return out


async def test_it_names_every_event_the_shop_publishes_and_their_payloads_fit(
    actor_kit: ActorKit, shop_document: dict[str, Any]
) -> None:
    requests = random_requests(80, seed=11)  # declines, refunds and cancels among them
    async with (
        actor_kit.start(Order) as orders,
        actor_kit.start(Payments) as payments,
        actor_kit.start(Shipping) as shipping,
    ):
        await place(actor_kit.js, requests)
        with anyio.fail_after(60):
            for request in requests:
                while (await orders.entity(request.order_id)).stage not in (SHIPPED, CANCELLED):
                    await anyio.sleep(0.02)
        for service in (orders, payments, shipping):
            await service.settled()
        info = await actor_kit.js.stream_info("SHOP")
        seen: set[tuple[str, str]] = set()
        components = shop_document["components"]
        for seq in range(1, info.state.last_seq + 1):
            msg = await actor_kit.js.get_msg("SHOP", seq)
            headers = msg.headers or {}
            actor = headers["Nats-Msg-Id"].split(":")[0]
            if actor not in ("orders", "payments", "shipping"):
                continue  # a request from the front end
            kind = headers["Event-Type"]
            [message] = [
                m
                for pattern, name, m in _sent(shop_document, actor)
                if name == kind and subject_matches(pattern, msg.subject)
            ]
            payload = json.loads(msg.data)
            jsonschema.validate(payload, {**message["payload"], "components": components})
            seen.add((actor, kind))
    # Every kind of event the shop publishes appeared in the run (the flow took every path).
    declared = {
        (actor, name)
        for actor in ("orders", "payments", "shipping")
        for _, name, _ in _sent(shop_document, actor)
    }
    assert seen == declared, declared - seen


def test_pydantic_models_get_their_own_schemas(validator: Any) -> None:
    pytest.importorskip("pydantic")
    from test_pydantic_events import Orders

    document = asyncapi_document([definition_of(Orders)], title="pydantic", version="2")
    assert _errors(validator, document) == []
    message = document["components"]["messages"]["pyd-orders.orders.Placed"]
    assert message["headers"]["required"] == ["Event-Type", "Event-Version"]
    assert message["headers"]["properties"]["Event-Version"] == {"type": "string", "const": "2"}
    schema = document["components"]["schemas"]["pyd-orders.Placed"]
    assert schema["properties"]["order"]["minLength"] == 1


def test_a_target_that_is_not_an_actor_fails_in_one_line() -> None:
    result = CliRunner().invoke(main, ["asyncapi", "examples.shop.frontend:place"])
    assert result.exit_code != 0
    assert len(result.output.strip().splitlines()) == 1, result.output

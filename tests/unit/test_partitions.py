"""Partitioned actors without a broker: the declaration, the transform, subjects and back."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

import pytest

from actorsource import ActorDefinitionError, actor, entity, handles
from actorsource._errors import InvalidNameError
from actorsource._model.actor import definition_of
from actorsource._model.partitions import Partitioning, fnv1a_32, partition_name


@dataclass
class Placed:
    order: str


def _define(**options: Any) -> type:
    @actor("orders", **{"subjects": ["orders.*"], **options})
    class Orders:
        @handles(Placed)
        def placed(self, event: Placed) -> None:
            pass

    return Orders


def test_fnv1a_32_gives_the_published_test_vectors() -> None:
    assert fnv1a_32(b"") == 0x811C9DC5
    assert fnv1a_32(b"a") == 0xE40C292C
    assert fnv1a_32(b"foobar") == 0xBF9CF968


@pytest.mark.parametrize(
    ("source", "token", "destination"),
    [
        ("orders.*", 1, "orders.{{partition(8,1)}}.{{wildcard(1)}}"),
        ("shop.*.placed", 1, "shop.{{partition(8,1)}}.{{wildcard(1)}}.placed"),
        ("shop.*.*.>", 2, "shop.{{partition(8,2)}}.{{wildcard(1)}}.{{wildcard(2)}}.>"),
        ("*.x", 0, "{{partition(8,1)}}.{{wildcard(1)}}.x"),
    ],
)
def test_the_transform_inserts_the_partition_after_the_literal_prefix(
    source: str, token: int, destination: str
) -> None:
    assert Partitioning(8, source, token).destination() == destination


def test_a_stored_subject_turns_back_into_the_published_one() -> None:
    p = Partitioning(8, "shop.*.*.>", 2)
    for key in (f"k{i}" for i in range(200)):
        published = f"shop.eu.{key}.placed.now"
        stored = p.stored(published)
        k = p.partition_of_key(key)
        assert stored == f"shop.{k}.eu.{key}.placed.now"
        assert p.published(stored) == published
        assert p.partition_of_stored(stored) == k == p.partition_of(published)


def test_the_filter_of_a_partition_matches_only_its_stored_subjects() -> None:
    p = Partitioning(4, "orders.*", 1)
    assert [p.filter_subject(k) for k in range(4)] == [f"orders.{k}.*" for k in range(4)]
    with pytest.raises(InvalidNameError, match=r"partition 4 is not in 0\.\.3"):
        p.filter_subject(4)


def test_a_subject_without_a_partition_token_is_refused() -> None:
    p = Partitioning(4, "orders.*", 1)
    with pytest.raises(InvalidNameError, match="has no partition token"):
        p.published("orders.abc")
    with pytest.raises(InvalidNameError, match="has no partition token"):
        p.published("orders")


def test_keys_spread_over_every_partition() -> None:
    p = Partitioning(16, "orders.*", 1)
    rng = random.Random(7)
    counts = [0] * 16
    for _ in range(16_000):
        counts[p.partition_of_key(f"order-{rng.getrandbits(48)}")] += 1
    assert min(counts) > 800
    assert max(counts) < 1200


def test_a_partition_is_named_with_a_dash_not_a_dot() -> None:
    assert partition_name("orders", 3) == "orders-p3"


def test_a_partitioned_actor_gets_its_partitioning_from_the_first_star() -> None:
    definition = definition_of(_define(partitions=8))
    assert definition.partitions == Partitioning(8, "orders.*", 1)
    assert definition_of(_define(subjects=["a.*.*"], partitions=4, partition_token=2)).partitions
    assert definition_of(_define()).partitions is None


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"partitions": 0}, "partitions must be an int >= 2, got 0"),
        ({"partitions": "8"}, "partitions must be an int >= 2, got '8'"),
        ({"partitions": True}, "partitions must be an int >= 2, got True"),
        ({"partitions": 1}, "partitions=1 is an unpartitioned actor: leave partitions out"),
        ({"partitions": 5000}, "partitions=5000 is over the limit of 1024"),
        ({"subjects": ["a.*", "b.*"], "partitions": 4}, "reads one subject filter"),
        ({"subjects": ["orders.>"], "partitions": 4}, "has no '*' token to partition by"),
        ({"partitions": 4, "partition_token": 0}, "token 0 of subject 'orders.*' is 'orders'"),
        ({"partitions": 4, "partition_token": 3}, "token 3 of subject 'orders.*' is missing"),
        ({"partitions": 4, "partition_token": -1}, "partition_token must be an int >= 0"),
        ({"partition_token": 1}, "partition_token= only goes with partitions=P"),
        (
            {"partitions": 4, "stream": "ORD", "stream_subjects": ["orders.>"]},
            "leave stream_subjects out",
        ),
    ],
)
def test_a_declaration_that_cannot_be_partitioned_is_refused_in_one_line(
    options: dict[str, Any], error: str
) -> None:
    with pytest.raises(ActorDefinitionError, match=re.escape(error)) as raised:
        _define(**options)
    assert "\n" not in str(raised.value)


def test_an_entity_is_partitioned_by_its_key_token() -> None:
    @entity("carts", subjects=["shop.*.cart.*"], key_token=3, partitions=8)
    class Carts:
        @handles(Placed)
        def placed(self, event: Placed) -> None:
            pass

    definition = definition_of(Carts)
    assert definition.partitions == Partitioning(8, "shop.*.cart.*", 3)
    assert definition.entity is not None
    assert definition.entity.key_token == 3
    assert definition.partitions.destination() == (
        "shop.{{partition(8,2)}}.{{wildcard(1)}}.cart.{{wildcard(2)}}"
    )

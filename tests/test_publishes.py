"""``publishes=``: what an actor declares it publishes, by subject, holds at run time once
declared; a handler that publishes elsewhere, or another type, fails with EffectError."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from actorsource import ActorDefinitionError, Context, ErrorPolicy, actor, entity, handles
from actorsource.testing import ActorKit


@dataclass
class Sale:
    sale_id: str


@dataclass
class SaleRecorded:
    sale_id: str


@dataclass
class Refunded:
    sale_id: str


@actor(
    "declared",
    subjects=["declared.in.>"],
    stream="DECLARED",
    stream_subjects=["declared.>"],  # what it publishes is stored too
    errors=ErrorPolicy(retries=0),
    publishes={"declared.out.*": [SaleRecorded], "declared.any.>": [SaleRecorded, Refunded]},
)
@dataclass
class Declared:
    ok: int = 0

    @handles(Sale)
    def sale(self, e: Sale, ctx: Context) -> None:
        self.ok += 1
        if e.sale_id == "elsewhere":
            ctx.publish("declared.other.x", SaleRecorded(e.sale_id))
        elif e.sale_id == "too-deep":
            ctx.publish("declared.out.x.y", SaleRecorded(e.sale_id))  # '*' is one token
        elif e.sale_id == "other-type":
            ctx.publish("declared.out.x", Refunded(e.sale_id))
        else:
            ctx.publish(f"declared.out.{e.sale_id}", SaleRecorded(e.sale_id))
            ctx.publish(f"declared.any.x.{e.sale_id}", Refunded(e.sale_id))


@pytest.mark.parametrize(
    ("case", "error"),
    [
        (
            "elsewhere",
            "actor 'declared' cannot publish to 'declared.other.x': it declares publishes= "
            "for 'declared.out.*', 'declared.any.>' only",
        ),
        ("too-deep", "cannot publish to 'declared.out.x.y'"),
        (
            "other-type",
            "actor 'declared' cannot publish Refunded to 'declared.out.x': publishes= "
            "declares only SaleRecorded there",
        ),
    ],
)
async def test_publishing_what_is_not_declared_fails_the_handler(
    actor_kit: ActorKit, case: str, error: str
) -> None:
    async with actor_kit.start(Declared) as probe:
        await actor_kit.publish("declared.in.1", Sale(case))
        await actor_kit.publish("declared.in.2", Sale("fine"))
        await probe.settled()
        [letter] = await probe.dead_letters()
        assert letter.reason == "handler-failed"
        assert error in letter.error
        assert probe.state.ok == 1  # the failed attempt's change was rolled back
        assert probe._live_runner.outbox is not None
        assert probe._live_runner.outbox.published == 3  # fine's two and the dead letter


@pytest.mark.parametrize(
    ("publishes", "error"),
    [
        ({}, "publishes must map subjects to event types"),
        ({"a.b": SaleRecorded}, "publishes['a.b'] must be a non-empty list of event types"),
        ({"a.b": []}, "must be a non-empty list"),
        ({"a..b": [SaleRecorded]}, "publishes: invalid subject 'a..b'"),
        ({"a.b": [dict]}, "publishes['a.b']: <class 'dict'> is not an event type"),
    ],
)
def test_a_bad_publishes_declaration_is_refused_when_the_class_is_defined(
    publishes: object, error: str
) -> None:
    with pytest.raises(ActorDefinitionError) as caught:
        actor("bad", subjects=["bad.>"], publishes=publishes)  # type: ignore[arg-type]
    assert str(caught.value).startswith("actor 'bad': ")
    assert error in str(caught.value)
    with pytest.raises(ActorDefinitionError) as caught:
        entity("bad", subjects=["bad.*"], publishes=publishes)  # type: ignore[arg-type]
    assert error in str(caught.value)

"""Mistakes in actor definitions are caught when the class is defined, with a clear message."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from actorsource import ActorDefinitionError, Context, InvalidNameError, actor, event, handles
from actorsource._model.actor import definition_of


@dataclass
class Ping:
    n: int


@dataclass
class Pong:
    n: int


def test_a_valid_actor_exposes_its_definition() -> None:
    @actor("pinger", subjects=["ping.>", "pong.*"], version=3, snapshot_every=5)
    class Pinger:
        @handles(Ping)
        def ping(self, event: Ping, ctx: Context) -> None: ...

        @handles(Pong)
        async def pong(self, event: Pong) -> None: ...

    d = definition_of(Pinger)
    assert d.name == "pinger"
    assert d.subjects == ("ping.>", "pong.*")
    assert d.version == 3
    assert d.snapshots.every == 5
    assert d.handlers["Ping"].takes_context
    assert d.handlers["Pong"].is_async
    assert not d.handlers["Pong"].takes_context


def test_an_actor_without_subjects_is_refused() -> None:
    with pytest.raises(ActorDefinitionError, match="has no subjects"):
        actor("a", subjects=[])


def test_a_single_string_for_subjects_is_refused_with_the_fix() -> None:
    with pytest.raises(ActorDefinitionError, match=r"subjects=\['a.>'\]"):
        actor("a", subjects="a.>")


@pytest.mark.parametrize("subject", ["a..b", "a.>.b", "a*.b", "", "a b"])
def test_a_bad_subject_is_refused(subject: str) -> None:
    with pytest.raises(InvalidNameError):
        actor("a", subjects=[subject])


@pytest.mark.parametrize("name", ["a.b", "a*", "", "a b", "x" * 65])
def test_a_bad_actor_name_is_refused(name: str) -> None:
    with pytest.raises(InvalidNameError):
        actor(name, subjects=["a.>"])


def test_two_handlers_for_one_event_type_are_refused_naming_both() -> None:
    with pytest.raises(ActorDefinitionError, match=r"first\(\) and second\(\)"):

        @actor("a", subjects=["a.>"])
        class A:
            @handles(Ping)
            def first(self, event: Ping) -> None: ...

            @handles(Ping)
            def second(self, event: Ping) -> None: ...


def test_a_handler_with_the_wrong_signature_is_refused_naming_the_method() -> None:
    with pytest.raises(ActorDefinitionError, match=r"A\.wrong has the wrong signature"):

        @actor("a", subjects=["a.>"])
        class A:
            @handles(Ping)
            def wrong(self, event: Ping, ctx: Context, extra: int) -> None: ...


def test_a_handler_for_a_non_dataclass_is_refused() -> None:
    class NotAnEvent:
        pass

    with pytest.raises(ActorDefinitionError, match="declare events as @dataclass"):

        @actor("a", subjects=["a.>"])
        class A:
            @handles(NotAnEvent)
            def on(self, event: NotAnEvent) -> None: ...


def test_an_actor_without_handlers_is_refused() -> None:
    with pytest.raises(ActorDefinitionError, match="has no handlers"):

        @actor("a", subjects=["a.>"])
        class A:
            pass


def test_an_actor_that_needs_constructor_arguments_is_refused() -> None:
    with pytest.raises(ActorDefinitionError, match=r"requires \['db'\]"):

        @actor("a", subjects=["a.>"])
        class A:
            def __init__(self, db: object) -> None: ...

            @handles(Ping)
            def on(self, event: Ping) -> None: ...


def test_two_event_classes_with_one_wire_name_are_refused() -> None:
    @event("Ping")
    @dataclass
    class OtherPing:
        n: int

    with pytest.raises(ActorDefinitionError, match="is used by both"):

        @actor("a", subjects=["a.>"])
        class A:
            @handles(Ping)
            def on(self, event: Ping) -> None: ...

            @handles(OtherPing)
            def other(self, event: OtherPing) -> None: ...


def test_a_decorator_errors_are_type_errors_too() -> None:
    with pytest.raises(TypeError):
        actor("a", subjects=[])


def test_an_undecorated_class_has_no_definition() -> None:
    with pytest.raises(ActorDefinitionError, match="decorate it with @actor"):
        definition_of(Ping)

"""The mailbox's fast lane: header parsing, and the fallback when nats-py lacks the hook."""

from __future__ import annotations

import pytest
from actors import Added, Counter, assert_exactly_once

import actorsource._mailbox.mailbox
from actorsource._mailbox.fastpath import parse_headers, route_raw
from actorsource.testing import ActorKit


def test_headers_are_parsed_like_nats_py_does() -> None:
    raw = b"NATS/1.0\r\nEvent-Type: Added\r\nNats-Msg-Id:m-1\r\nX: a: b\r\n\r\n"
    assert parse_headers(raw) == {"Event-Type": "Added", "Nats-Msg-Id": "m-1", "X": "a: b"}


def test_an_inline_status_becomes_status_and_description() -> None:
    raw = b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 12\r\n\r\n"
    assert parse_headers(raw) == {
        "Status": "408",
        "Description": "Request Timeout",
        "Nats-Pending-Messages": "12",
    }
    assert parse_headers(b"NATS/1.0 100\r\n\r\n") == {"Status": "100"}


def test_routing_is_refused_on_a_client_without_the_hook() -> None:
    class Bare:
        pass

    assert route_raw(Bare(), 1, lambda *a: None) is False  # type: ignore[arg-type]


async def test_the_mailbox_still_works_through_plain_callbacks(
    actor_kit: ActorKit, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(actorsource._mailbox.mailbox, "route_raw", lambda *a: False)
    events = [Added(f"k{i % 3}", i) for i in range(1, 101)]
    async with actor_kit.start(Counter) as counter:
        for e in events:
            await actor_kit.publish(f"count.{e.key}", e)
        await counter.settled()
        assert counter._live_runner.mailbox is not None
        assert counter._live_runner.mailbox._raw is False
        await assert_exactly_once(counter, events)

"""The mailbox's fast lane (``actorsource._mailbox.fastpath``): its contract with nats-py's
private API, the switch that turns it off, and header parsing.

If a nats-py upgrade breaks the adapter, the contract tests here fail: they check the exact
private names it uses, then send real messages through a real server and subscription.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import anyio
import nats
import pytest
from actors import Added, Counter, assert_exactly_once
from nats.aio.client import Client
from nats.aio.subscription import Subscription

import actorsource
from actorsource._mailbox.fastpath import (
    ENV_SWITCH,
    PROCESS_MSG_PARAMETERS,
    parse_headers,
    route_raw,
    subscribe_inbox,
)
from actorsource.testing import ActorKit, NatsServer

# -- the contract with nats-py -----------------------------------------------------------------


def test_the_private_method_the_fast_lane_replaces_has_the_signature_it_is_written_for() -> None:
    method = Client._process_msg
    assert inspect.iscoroutinefunction(method)
    assert tuple(inspect.signature(method).parameters) == ("self", *PROCESS_MSG_PARAMETERS)


async def test_a_subscription_id_is_the_sid_nats_py_files_it_under(
    nats_server: NatsServer,
) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        sub: Subscription = await nc.subscribe("contract.sid")
        assert isinstance(sub._id, int)
        assert nc._subs[sub._id] is sub
    finally:
        await nc.close()


# What arrives on an inbox: a message with headers and a reply subject, and one without either.
SENT = [
    ("contract.inbox", b"one", "reply.1", {"Event-Type": "Added", "Nats-Msg-Id": "m-1"}),
    ("contract.inbox", b"two", "", None),
]
EXPECTED = [
    ("contract.inbox", "reply.1", b"one", {"Event-Type": "Added", "Nats-Msg-Id": "m-1"}),
    ("contract.inbox", "", b"two", None),
]


@pytest.mark.parametrize("switch", ["unset", "1", "0"])
async def test_messages_reach_the_inbox_intact_through_the_fast_lane_or_nats_py_as_switched(
    nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch, switch: str
) -> None:
    if switch == "unset":
        monkeypatch.delenv(ENV_SWITCH, raising=False)
    else:
        monkeypatch.setenv(ENV_SWITCH, switch)
    received: list[tuple[str, str, bytes, dict[str, str] | None]] = []
    arrived = anyio.Event()

    def receive(subject: str, reply: str, data: bytes, headers: dict[str, str] | None) -> None:
        received.append((subject, reply, data, headers))
        if len(received) == len(EXPECTED) + 1:
            arrived.set()

    nc = await nats.connect(nats_server.url)
    try:
        inbox = await subscribe_inbox(nc, "contract.inbox", receive)
        for subject, data, reply, headers in SENT:
            await nc.publish(subject, data, reply=reply, headers=headers)
        # A request nobody answers: the server's inline status comes back on the inbox.
        await nc.publish("contract.nobody", b"", reply="contract.inbox")
        with anyio.fail_after(10):
            await arrived.wait()
        fast = switch != "0"
        assert inbox.fast is fast
        *messages, (subject, reply, data, status) = received
        assert messages == EXPECTED
        # (nats-py also makes a Description of the next header line when the status has no
        # text: the mailbox reads it only for statuses that have one, 409.)
        assert (subject, reply, data) == ("contract.inbox", "", b"")
        assert status is not None
        assert (status["Status"], status["Nats-Subject"]) == ("503", "contract.nobody")
        # nats-py counts only what went through it: nothing when the fast lane took it all.
        assert nc.stats["in_msgs"] == (0 if fast else len(received))
        await inbox.unsubscribe()
    finally:
        await nc.close()


def test_routing_is_refused_on_a_client_without_the_method_or_with_another_signature() -> None:
    class Bare:
        pass

    class Changed:
        async def _process_msg(self, sid: int, subject: bytes, reply: bytes, data: bytes) -> None:
            pass

    assert route_raw(Bare(), 1, lambda *a: None) is False  # type: ignore[arg-type]
    assert route_raw(Changed(), 1, lambda *a: None) is False  # type: ignore[arg-type]


def test_no_module_but_the_adapter_touches_nats_py_private_api() -> None:
    package = Path(actorsource.__file__).parent
    private = re.compile(r"_process_msg|\._id\b|(?:sub|nc|client)\._[a-z]|\.options\[")
    offenders = [
        f"{path.relative_to(package)}:{n}"
        for path in sorted(package.rglob("*.py"))
        if path.name != "fastpath.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if private.search(line)
    ]
    assert offenders == []


# -- the whole data path with the switch off ---------------------------------------------------


async def test_an_actor_applies_every_message_once_with_the_fast_lane_switched_off(
    actor_kit: ActorKit, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_SWITCH, "0")
    events = [Added(f"k{i % 3}", i) for i in range(1, 101)]
    async with actor_kit.start(Counter) as counter:
        for e in events:
            await actor_kit.publish(f"count.{e.key}", e)
        await counter.settled()
        assert counter._live_runner.mailbox is not None
        assert counter._live_runner.mailbox.fast_path is False
        await assert_exactly_once(counter, events)


# -- header parsing ----------------------------------------------------------------------------


def test_headers_are_parsed_like_nats_py_does() -> None:
    raw = b"NATS/1.0\r\nEvent-Type: Added\r\nNats-Msg-Id:m-1\r\nX: a: b\r\n\r\n"
    assert parse_headers(raw) == {"Event-Type": "Added", "Nats-Msg-Id": "m-1", "X": "a: b"}


@pytest.mark.parametrize(
    "raw",
    [
        b"NATS/1.0\r\nEvent-Type: Added\r\nNats-Msg-Id: m-1\r\n\r\n",
        b"NATS/1.0\r\nEvent-Type:  Added \r\n\r\n",
        b"NATS/1.0\r\n Event-Type : Added\r\n\r\n",
        b"NATS/1.0\r\nA:b: c\r\nD:\r\nE: \r\n: f\r\n\r\n",
        b"NATS/1.0\r\nEvent-Type: Added\xc2\xa0\r\nX: \xff\r\n\r\n",
        b"NATS/1.0\r\nX: 1\r\nX: 2\r\n  \r\n\r\n",
        b"NATS/1.1\r\nX: 1\r\n\r\n",
    ],
)
def test_the_usual_header_block_and_odd_ones_parse_alike(raw: bytes) -> None:
    # The fast path reads "Name: value" lines as they are; anything it would read
    # differently (spacing to strip, a colon in a name, bad UTF-8) takes the general one.
    text = raw.decode(errors="replace")
    expected: dict[str, str] = {}
    for line in text.split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep:
            expected[name.strip()] = value.strip()
    assert parse_headers(raw) == expected


def test_an_inline_status_becomes_status_and_description() -> None:
    raw = b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 12\r\n\r\n"
    assert parse_headers(raw) == {
        "Status": "408",
        "Description": "Request Timeout",
        "Nats-Pending-Messages": "12",
    }
    assert parse_headers(b"NATS/1.0 100\r\n\r\n") == {"Status": "100"}

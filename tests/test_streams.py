"""Streams: which ones the outbox may pipeline to, and setting up an actor's before it runs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
import pytest
from actors import Added, Counter
from click.testing import CliRunner
from nats.js.api import DiscardPolicy, StreamConfig

from actorsource import ensure_streams
from actorsource._mailbox.streams import StreamMap
from actorsource._model.subjects import subject_matches
from actorsource.cli import main
from actorsource.testing import ActorKit

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


@pytest.mark.parametrize(
    ("pattern", "subject", "matches"),
    [
        ("a.b", "a.b", True),
        ("a.*", "a.b", True),
        ("a.*", "a.b.c", False),
        ("a.>", "a.b.c", True),
        ("a.>", "a", False),
        ("*.b", "a.b", True),
        ("a.b", "a.c", False),
        (">", "x", True),
    ],
)
def test_subjects_match_nats_wildcards(pattern: str, subject: str, matches: bool) -> None:
    assert subject_matches(pattern, subject) is matches


async def test_only_streams_that_cannot_refuse_one_message_are_pipelined(
    actor_kit: ActorKit,
) -> None:
    js = actor_kit.js
    await js.add_stream(StreamConfig(name="PLAIN", subjects=["plain.>"]))
    await js.add_stream(StreamConfig(name="CAPPED", subjects=["capped.>"], max_msg_size=100))
    await js.add_stream(
        StreamConfig(name="FULLNEW", subjects=["full.*"], discard=DiscardPolicy.NEW, max_msgs=10)
    )
    await js.add_stream(StreamConfig(name="FULLOLD", subjects=["old.*"], max_msgs=10))
    streams = StreamMap(js, refresh=0.0)
    assert await streams.pipelinable("plain.a.b")
    assert await streams.pipelinable("old.x")  # discarding old messages refuses none
    assert not await streams.pipelinable("capped.a")
    assert not await streams.pipelinable("full.x")
    assert not await streams.pipelinable("nowhere.x")  # no stream: sent alone, for its error
    await js.add_stream(StreamConfig(name="LATER", subjects=["nowhere.>"]))
    assert await streams.pipelinable("nowhere.x")  # found once the list is read again


async def test_ensure_streams_lets_a_publisher_publish_before_any_worker_has_run(
    actor_kit: ActorKit,
) -> None:
    assert await ensure_streams(actor_kit.nc, Counter) == {"counter": "COUNTER"}
    await actor_kit.publish("count.a", Added("a", 5))  # else: "no response from stream"
    async with actor_kit.start(Counter) as counter:
        await counter.settled()
        assert counter.state.totals == {"a": 5}


async def test_streams_ensure_creates_the_streams_of_the_actors_named(
    actor_kit: ActorKit,
) -> None:
    assert actor_kit.server is not None
    out = await anyio.run_process(
        [sys.executable, "-m", "actorsource", "streams", "ensure", "actors:Counter",
         "--nats", actor_kit.server.url],
        check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)])},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode() == (
        "counter: stream COUNTER stores count.>; dead letters go to actorsource.dlq.counter\n"
    )
    await actor_kit.publish("count.a", Added("a", 1))
    assert (await actor_kit.js.stream_info("COUNTER")).state.messages == 1
    assert await actor_kit.js.find_stream_name_by_subject("actorsource.dlq.counter")


def test_streams_ensure_of_a_module_without_actors_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["streams", "ensure", "json"])
    assert result.exit_code == 2
    assert "'json' defines no @actor classes" in result.stderr

"""Which streams the outbox may pipeline to: asked of a real nats-server."""

from __future__ import annotations

import pytest
from nats.js.api import DiscardPolicy, StreamConfig

from actorsource._streams import StreamMap
from actorsource._subjects import subject_matches
from actorsource.testing import ActorKit


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

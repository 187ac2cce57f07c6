"""Queries that cannot be answered get an error reply with a code, at once or within the
caller's timeout, never a hang: malformed requests, a loop too busy to answer in time, an
actor that dies with a query waiting."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import msgspec
import pytest
from test_queries import APPLYING, SLOW, Added, Counts

import actorsource
from actorsource import (
    QueryArgumentsError,
    QueryError,
    QueryNotRunningError,
    QueryTimeoutError,
)
from actorsource.testing import ActorKit, ActorProbe, ActorStatus


@pytest.fixture(autouse=True)
def _fast() -> None:
    SLOW["live"] = SLOW["replay"] = 0.0
    APPLYING.clear()


async def _busy(counts: ActorProbe[Counts], kit: ActorKit) -> None:
    """Publish one slow event and return once the actor's loop is applying it."""
    await kit.publish("qc.a", Added("a", 1))
    with anyio.fail_after(10):
        while not APPLYING:
            await anyio.sleep(0.01)


@pytest.mark.parametrize(
    ("actor", "name", "options", "message"),
    [
        ("bad.name", "total", {}, "bad.name"),
        ("q-counts", "not a name", {}, "invalid query name 'not a name'"),
        ("q-counts", "total", {"key": ""}, "key must be a non-empty str"),
        ("q-counts", "total", {"after_seq": 0}, "after_seq must be an int >= 1, got 0"),
        ("q-counts", "total", {"after_seq": True}, "after_seq must be an int >= 1, got True"),
        ("q-counts", "total", {"timeout": 0}, "timeout must be > 0 seconds"),
        ("q-counts", "total", {"name": object()}, "do not encode to JSON"),
    ],
)
async def test_ask_refuses_bad_input_before_sending_anything(
    actor_kit: ActorKit, actor: str, name: str, options: dict[str, Any], message: str
) -> None:
    # No worker hosts anything here: had the query been sent it would be unknown-actor.
    with pytest.raises(QueryArgumentsError, match=message) as caught:
        await actorsource.ask(actor_kit.nc, actor, name, **options)
    assert caught.value.code == "bad-arguments"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "the request is not a query"),
        (b'{"colour": "red"}', "the request is not a query"),
        (b'{"args": {"name": "a"}, "after_seq": 0}', "after_seq must be a stream sequence >= 1"),
        (b'{"args": {"name": "a"}, "timeout": "soon"}', "the request is not a query"),
    ],
)
async def test_a_malformed_request_gets_a_bad_arguments_reply(
    actor_kit: ActorKit, body: bytes, message: str
) -> None:
    async with actor_kit.start(Counts):
        reply = await actor_kit.nc.request("actorsource.query.q-counts.total", body, timeout=5)
        assert reply.headers is not None
        assert reply.headers["Nats-Service-Error-Code"] == "400"
        fault = msgspec.json.decode(reply.data)
        assert fault["code"] == "bad-arguments"
        assert message in fault["message"]
        assert (fault["actor"], fault["query"]) == ("q-counts", "total")


async def test_a_query_the_busy_loop_cannot_answer_in_time_gets_a_timeout_reply(
    actor_kit: ActorKit,
) -> None:
    SLOW["live"] = 1.5
    async with actor_kit.start(Counts, ack_wait=10.0) as counts:
        await _busy(counts, actor_kit)
        # The worker answers a little before the caller gives up: the reply is its own
        # (saying why), not the caller's "no answer".
        with pytest.raises(
            QueryTimeoutError, match=r"did not answer query 'total' within 0\.45 s \(its loop"
        ) as caught:
            await counts.query("total", name="a", timeout=0.5)
        assert (caught.value.code, caught.value.actor) == ("timeout", "q-counts")
        await counts.settled()
        # The abandoned query left nothing behind: the next one is answered, the state
        # is the journal's fold.
        assert await counts.query("total", name="a") == 1
        assert counts.status is ActorStatus.RUNNING
        assert counts.state.totals == (await counts.fold()).totals == {"a": 1}


async def test_a_query_waiting_when_the_actor_crashes_gets_a_not_running_reply(
    actor_kit: ActorKit,
) -> None:
    SLOW["live"] = 0.5
    async with actor_kit.start(Counts, ack_wait=10.0) as counts:
        counts.arm_crash("before_commit")
        await _busy(counts, actor_kit)
        with pytest.raises(QueryNotRunningError, match="stopped before answering") as caught:
            await counts.query("total", name="a", timeout=10)
        assert caught.value.code == "not-running"
        await counts.crashed()  # restarted from the journal; the event is delivered again
        await counts.settled()
        assert await counts.query("total", name="a") == 1


async def test_a_query_waiting_for_a_commit_when_the_actor_is_killed_gets_a_not_running_reply(
    actor_kit: ActorKit,
) -> None:
    async with actor_kit.start(Counts, ack_wait=10.0) as counts:
        await actor_kit.publish("qc.a", Added("a", 1))
        await counts.settled()
        errors: list[QueryError] = []

        async def ask() -> None:
            try:
                await counts.query("total", name="a", timeout=10)
            except QueryError as exc:
                errors.append(exc)

        await _killed_while_it_waits_for_a_commit(counts, actor_kit, ask, errors)
        [error] = errors
        assert error.code == "not-running"
        assert "stopped before answering: it was killed or failed meanwhile" in str(error)
        await counts.settled()
        assert await counts.query("total", name="a") == 11


async def test_a_snapshot_asked_while_the_actor_is_killed_fails_instead_of_answering_a_position(
    actor_kit: ActorKit,
) -> None:
    # Not only queries: any request the loop had in hand when the actor died fails, so that
    # whoever asked does not take a snapshot for written.
    async with actor_kit.start(Counts, ack_wait=10.0) as counts:
        await actor_kit.publish("qc.a", Added("a", 1))
        await counts.settled()
        outcome: list[object] = []

        async def snapshot() -> None:
            try:
                outcome.append(await counts._live_runner.snapshot())
            except actorsource.ActorNotRunning as exc:
                outcome.append(exc)

        await _killed_while_it_waits_for_a_commit(counts, actor_kit, snapshot, outcome)
        [error] = outcome
        assert isinstance(error, actorsource.ActorNotRunning), error
        assert "stopped before finishing it" in str(error)
        await counts.settled()
        assert counts.state.totals == (await counts.fold()).totals == {"a": 11}


async def _killed_while_it_waits_for_a_commit(
    counts: ActorProbe[Counts],
    kit: ActorKit,
    request: Callable[[], Coroutine[Any, Any, None]],
    outcome: list[Any],
) -> None:
    """Stall commits, publish a second ``Added("a", 10)`` (applied, not committed), run
    ``request`` (which the loop holds until that commit), then kill the actor: ``outcome``
    is still empty when it dies. A new runner recovers."""
    runner = counts._live_runner
    # The lock is released before the task group ends (and the request with it).
    async with anyio.create_task_group() as tg, runner._write_lock:  # commits stall
        await kit.publish("qc.a", Added("a", 10))
        with anyio.fail_after(5):
            while counts.state.totals["a"] != 11:  # applied, not committed
                await anyio.sleep(0.01)
        tg.start_soon(request)
        await anyio.sleep(0.3)  # the loop waits for the commit before doing it
        assert outcome == []
        await counts.crash()  # kill -9 while it waits

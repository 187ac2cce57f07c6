"""The control channel of an actor's loop, and the pump that feeds it batches."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from actorsource import ActorNotRunning
from actorsource._mailbox.mailbox import ConsumerGone
from actorsource._runtime.control import (
    Batch,
    ConsumerLost,
    Control,
    MailboxPump,
    Request,
    Stop,
    TakeSnapshot,
)


@pytest.fixture
def control() -> Iterator[Control]:
    control = Control("ledger")
    yield control
    control.close()


async def take(control: Control, n: int) -> list[Request]:
    """The next ``n`` requests the loop would see."""
    taken: list[Request] = []
    async for request in control.requests():
        taken.append(request)
        if len(taken) == n:
            break
    return taken


async def test_requests_reach_the_loop_in_the_order_they_were_asked(control: Control) -> None:
    asked = [control.ask(TakeSnapshot()), control.ask(Batch()), control.ask(Stop())]
    assert await take(control, 3) == asked


async def test_whoever_waits_on_a_request_wakes_once_the_loop_finished_it(control: Control) -> None:
    request = control.ask(TakeSnapshot())
    async with anyio.create_task_group() as tg:
        tg.start_soon(request.wait)
        [taken] = await take(control, 1)
        taken.finish()
    assert request.done.is_set()


async def test_a_request_the_loop_could_not_do_raises_why_to_whoever_waits(
    control: Control,
) -> None:
    request = control.ask(TakeSnapshot())
    request.finish(RuntimeError("disk full"))
    with pytest.raises(RuntimeError, match="disk full"):
        await request.wait()


async def test_close_fails_every_request_not_yet_taken_with_actor_not_running(
    control: Control,
) -> None:
    first, second = control.ask(TakeSnapshot()), control.ask(Stop())
    control.close()
    for request in (first, second):
        with anyio.fail_after(5), pytest.raises(ActorNotRunning, match="'ledger' stopped"):
            await request.wait()


async def test_close_leaves_a_request_the_loop_already_finished_as_it_was(control: Control) -> None:
    request = control.ask(TakeSnapshot())
    [taken] = await take(control, 1)
    taken.finish()
    control.close()
    await request.wait()
    assert request.failed is None


async def test_asking_a_closed_channel_fails_the_request_at_once(control: Control) -> None:
    control.close()
    request = control.ask(TakeSnapshot())
    with pytest.raises(ActorNotRunning):
        await request.wait()


# -- the pump ------------------------------------------------------------------------------


class ReadyMailbox:
    """Hands out the batches put into it, one per ``next_batch`` call, counting the calls."""

    def __init__(self) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[Any](100)
        self.calls = 0

    def put(self, item: list[str] | BaseException) -> None:
        self._send.send_nowait(item)

    def close(self) -> None:
        self._send.close()
        self._receive.close()

    async def next_batch(self) -> list[str]:
        self.calls += 1
        item = await self._receive.receive()
        if isinstance(item, BaseException):
            raise item
        return list(item)


@pytest.fixture
def mailbox() -> Iterator[ReadyMailbox]:
    mailbox = ReadyMailbox()
    yield mailbox
    mailbox.close()


@asynccontextmanager
async def pumping(mailbox: ReadyMailbox, control: Control) -> AsyncIterator[MailboxPump]:
    pump = MailboxPump(mailbox, control)  # type: ignore[arg-type]
    async with anyio.create_task_group() as tg:
        tg.start_soon(pump.run)
        yield pump
        tg.cancel_scope.cancel()


async def test_the_pump_holds_at_most_one_batch_the_loop_has_not_taken(
    control: Control, mailbox: ReadyMailbox
) -> None:
    for batch in (["a"], ["b"], ["c"]):
        mailbox.put(batch)
    async with pumping(mailbox, control) as pump:
        await anyio.wait_all_tasks_blocked()
        assert mailbox.calls == 1
        assert pump.holding == ["a"]
        [request] = await take(control, 1)
        assert isinstance(request, Batch)
        assert request.deliveries == ["a"]
        await anyio.wait_all_tasks_blocked()
        assert mailbox.calls == 1  # asked for nothing more until the loop took it
        pump.taken(request)
        [request] = await take(control, 1)
        assert request.deliveries == ["b"]  # type: ignore[attr-defined]
        assert pump.holding == ["b"]


async def test_a_batch_the_pump_does_not_hold_frees_no_room_for_another(
    control: Control, mailbox: ReadyMailbox
) -> None:
    mailbox.put(["a"])
    mailbox.put(["b"])
    async with pumping(mailbox, control) as pump:
        [held] = await take(control, 1)
        pump.taken(Batch(deliveries=["a"]))  # an equal list, not the one handed over
        await anyio.wait_all_tasks_blocked()
        assert mailbox.calls == 1
        pump.taken(held)  # type: ignore[arg-type]
        await take(control, 1)
        assert mailbox.calls == 2


async def test_a_lost_consumer_goes_to_the_loop_and_the_pump_waits_until_it_is_handled(
    control: Control, mailbox: ReadyMailbox
) -> None:
    mailbox.put(ConsumerGone("consumer 'ledger' was deleted"))
    mailbox.put(["a"])
    async with pumping(mailbox, control) as pump:
        [lost] = await take(control, 1)
        assert isinstance(lost, ConsumerLost)
        assert isinstance(lost.error, ConsumerGone)
        await anyio.wait_all_tasks_blocked()
        assert mailbox.calls == 1
        assert pump.holding == []
        lost.finish()
        [request] = await take(control, 1)
        assert isinstance(request, Batch)
        assert request.deliveries == ["a"]

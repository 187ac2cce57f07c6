"""The control channel of an actor's loop, and the doorbell the mailbox rings."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from actorsource import ActorNotRunning
from actorsource._runtime.control import (
    Control,
    MailboxDoorbell,
    MailReady,
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
    asked = [control.ask(TakeSnapshot()), control.ask(MailReady()), control.ask(Stop())]
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


# -- the doorbell --------------------------------------------------------------------------


class SilentMailbox:
    """Rings whoever listens when told to; falls silent (lost requests) when told to."""

    quiet_period = 0.01

    def __init__(self) -> None:
        self.doorbell: Any = None
        self.lost = False
        self.forgotten = 0

    def on_arrival(self, doorbell: Any) -> None:
        self.doorbell = doorbell

    def forget_lost_requests(self) -> bool:
        if self.lost:
            self.lost = False
            self.forgotten += 1
            return True
        return False


async def test_arrivals_ring_one_mail_ready_until_the_loop_answers(control: Control) -> None:
    mailbox = SilentMailbox()
    doorbell = MailboxDoorbell(mailbox, control)  # type: ignore[arg-type]
    for _ in range(3):
        mailbox.doorbell()  # three messages arrive
    [first] = await take(control, 1)
    assert isinstance(first, MailReady)
    doorbell.answered()
    mailbox.doorbell()
    control.ask(Stop())
    rest = await take(control, 2)
    assert [type(r) for r in rest] == [MailReady, Stop]  # one more, not three


async def test_the_doorbell_rings_at_start_and_when_the_consumer_falls_silent(
    control: Control,
) -> None:
    mailbox = SilentMailbox()
    doorbell = MailboxDoorbell(mailbox, control)  # type: ignore[arg-type]
    async with anyio.create_task_group() as tg:
        tg.start_soon(doorbell.watch)
        [start] = await take(control, 1)
        assert isinstance(start, MailReady)  # the first requests for messages
        doorbell.answered()
        mailbox.lost = True
        [again] = await take(control, 1)
        assert isinstance(again, MailReady)
        assert mailbox.forgotten == 1
        tg.cancel_scope.cancel()

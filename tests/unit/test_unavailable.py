"""Which JetStream errors say "not yet", and a set-up step asked again while they last."""

from __future__ import annotations

import nats.errors
import nats.js.errors
import pytest

from actorsource._cluster.unavailable import patiently, unavailable
from actorsource._errors import MailboxError


def _mailbox_error(cause: BaseException) -> MailboxError:
    try:
        raise MailboxError("cannot set up a stream") from cause
    except MailboxError as exc:
        return exc


def test_what_says_jetstream_cannot_answer_yet() -> None:
    assert unavailable(nats.errors.TimeoutError())
    assert unavailable(nats.js.errors.NoStreamResponseError())
    assert unavailable(nats.js.errors.ServiceUnavailableError(code=503))
    assert unavailable(nats.js.errors.NotFoundError(code=404, err_code=10059))
    assert unavailable(_mailbox_error(nats.js.errors.NotFoundError(code=404, err_code=10059)))
    assert not unavailable(nats.js.errors.BadRequestError(code=400, err_code=10058))
    assert not unavailable(_mailbox_error(nats.js.errors.BadRequestError(code=400)))
    assert not unavailable(MailboxError("several streams"))
    assert not unavailable(ValueError())


async def test_a_step_is_asked_again_until_it_answers() -> None:
    errors = [nats.errors.TimeoutError(), nats.js.errors.NoStreamResponseError()]

    async def step() -> int:
        if errors:
            raise errors.pop(0)
        return 7

    assert await patiently(step, patience=10.0) == 7


async def test_a_refusal_is_raised_at_once() -> None:
    calls = 0

    async def step() -> None:
        nonlocal calls
        calls += 1
        raise nats.js.errors.BadRequestError(code=400, err_code=10058)

    with pytest.raises(nats.js.errors.BadRequestError):
        await patiently(step, patience=10.0)
    assert calls == 1


async def test_it_gives_up_when_its_patience_is_out_or_the_worker_stops() -> None:
    calls = 0

    async def step() -> None:
        nonlocal calls
        calls += 1
        raise nats.errors.TimeoutError

    with pytest.raises(nats.errors.TimeoutError):
        await patiently(step, patience=0.2)
    assert 2 <= calls <= 4
    calls = 0
    with pytest.raises(nats.errors.TimeoutError):
        await patiently(step, patience=10.0, stopping=lambda: calls >= 2)
    assert calls == 2

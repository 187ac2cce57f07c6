"""Read-your-writes: wait until an actor has committed every message of its up to a sequence.

A caller that published an event gets its stream sequence in the ``PubAck``; a query with
``after_seq`` is answered only once every message **of the actor's filter subjects** up to
that sequence is applied (or dead-lettered) and committed. The journal records the highest
stream sequence it handled, but the stream may hold other subjects the actor never sees,
so "journal position ≥ after_seq" is not the only way to be there:

1. the journal's stream position is at or past ``after_seq``: done;
2. else the stream is asked for the next message of the actor's subjects after that
   position (``STREAM.MSG.GET`` with ``next_by_subj``, once per filter subject): if there is
   none up to ``after_seq``, every one of them is committed: done;
3. else wait for commits until the journal is past that message, and look again.

A sequence beyond the stream's last message is refused at once
(:class:`SeqBeyondStreamError`); the deadline passing is :class:`QueryTimeoutError`, saying
how far the actor is.
"""

from __future__ import annotations

from typing import NoReturn

import anyio
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext

from .._errors import (
    ActorsourceError,
    QueryNotRunningError,
    QueryTimeoutError,
    SeqBeyondStreamError,
)
from .progress import describe, read_progress
from .runner import ActorRunner

__all__ = ["reach"]


async def reach(
    runner: ActorRunner, js: JetStreamContext, after_seq: int, *, deadline: float
) -> None:
    """Return once ``runner``'s journal holds every message of its subjects up to
    ``after_seq`` (see the module's docstring); ``deadline`` is on anyio's clock."""
    actor = runner.name
    stream = runner.stream
    if stream is None:
        raise QueryNotRunningError(f"actor {actor!r} has no stream bound yet", actor=actor)

    def committed() -> int:
        try:
            return runner.journal.stream_positions.get(stream, 0)
        except ActorsourceError as exc:  # the journal closed: the actor stopped
            raise QueryNotRunningError(
                f"actor {actor!r} stopped while waiting: {exc}", actor=actor
            ) from None

    if committed() >= after_seq:
        return
    try:
        info = await js.stream_info(stream)
    except (nats.errors.Error, OSError) as exc:
        raise QueryTimeoutError(
            f"cannot read stream {stream} to wait for sequence {after_seq}: {exc!r}", actor=actor
        ) from None
    last = int(info.state.last_seq or 0)
    if after_seq > last:
        raise SeqBeyondStreamError(
            f"after_seq {after_seq:,} is beyond the last message of stream {stream} "
            f"({last:,}): take it from the PubAck of a publish to that stream",
            actor=actor,
            details={"after_seq": after_seq, "stream": stream, "last_seq": last},
        )
    subjects = runner.definition.subjects
    while True:
        bell = runner.queries.next_commit()
        at = committed()
        if at >= after_seq:
            return
        needed = await _next_of(js, stream, subjects, at + 1)
        if needed is None or needed > after_seq:
            return
        while committed() < needed:
            with anyio.move_on_after(deadline - anyio.current_time()):
                await bell.wait()
                bell = runner.queries.next_commit()
                continue
            await _timed_out(runner, stream, after_seq, committed(), needed)


async def _next_of(
    js: JetStreamContext, stream: str, subjects: tuple[str, ...], start: int
) -> int | None:
    """The sequence of the first message at or after ``start`` on any of ``subjects``."""
    found: int | None = None
    for subject in subjects:
        try:
            msg = await js.get_msg(stream, seq=start, subject=subject, next=True)
        except nats.js.errors.NotFoundError:
            continue
        except (nats.errors.Error, OSError):
            return start  # cannot tell: assume one is there, and wait for the journal
        seq = int(msg.seq or 0)
        found = seq if found is None else min(found, seq)
    return found


async def _timed_out(
    runner: ActorRunner, stream: str, after_seq: int, at: int, needed: int
) -> NoReturn:
    progress = None
    with anyio.move_on_after(0.1):
        progress = await read_progress(runner, timeout=0.1)
    how_far = describe(progress)
    raise QueryTimeoutError(
        f"actor {runner.name!r} has not reached stream sequence {after_seq:,} of {stream} in "
        f"time: its journal holds up to {at:,} and is waiting for message {needed:,}; "
        f"{how_far}",
        actor=runner.name,
        details={
            "after_seq": after_seq,
            "stream": stream,
            "journal_seq": at,
            "waiting_for": needed,
        },
    )

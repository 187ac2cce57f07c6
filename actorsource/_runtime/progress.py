"""Whether an actor has caught up: what its consumer and its worker hold, at one instant.

An actor is **caught up** when everything its consumer has to deliver is delivered, and
everything delivered is in its journal:

- the consumer has nothing pending (``num_pending == 0``) and nothing delivered but not
  acknowledged (``num_ack_pending == 0``);
- the worker holds nothing: no delivery buffered or in the batch being handled, no commit
  in flight, nothing set aside to redo;
- the journal holds the last delivered message: its stream position equals the
  consumer's delivered stream sequence.

The worker reads the consumer's info, then, without yielding to any other task, its own
side: one view, never assembled from several requests. What the actor has to publish (its
outbox) is reported apart and is not part of it.

:class:`Progress` is the view of one consumer. An actor split into partitions reports one
per partition (each partition is a runner of its own), and is caught up when all of them are.
"""

from __future__ import annotations

import anyio
import msgspec
import nats.errors

from .._errors import ActorsourceError
from .runner import ActorRunner
from .status import ActorStatus

__all__ = ["Progress", "describe", "read_progress"]


class Progress(msgspec.Struct, frozen=True, kw_only=True):
    """How far one consumer of an actor is, read by its worker at one instant.

    ``journal_seq`` is the stream sequence the journal holds up to; ``delivered_seq`` the
    last one the consumer delivered; ``pending`` what it has not delivered yet;
    ``ack_pending`` what it delivered and has not had acknowledged; ``buffered`` what the
    worker received and has not started on; ``in_hand`` the deliveries of the batch being
    handled; ``committing`` the commits in flight plus the deliveries set aside to redo.
    """

    caught_up: bool
    stream: str
    journal_seq: int
    delivered_seq: int
    pending: int
    ack_pending: int
    buffered: int
    in_hand: int
    committing: int


async def read_progress(runner: ActorRunner, *, timeout: float = 1.0) -> Progress | None:
    """The progress of a running actor's consumer (None if it cannot be read now)."""
    mailbox = runner.mailbox
    stream = mailbox.stream if mailbox is not None else None
    if mailbox is None or stream is None:
        return None
    info = None
    with anyio.move_on_after(timeout):
        try:
            info = await mailbox.consumer_info()
        except (nats.errors.Error, OSError):
            pass  # being re-created, or the server is away
    if info is None or runner.mailbox is not mailbox:
        return None
    # From here on nothing awaits: the worker's side is read at one instant, right after
    # the consumer's.
    try:
        journal_seq = runner.journal.stream_positions.get(stream, 0)
    except ActorsourceError:
        return None  # the journal closed meanwhile
    committer = runner.committer
    committing = 0 if committer is None else committer.in_flight + len(committer.redo or ())
    buffered = len(runner.taken())
    delivered = int(info.delivered.stream_seq or 0) if info.delivered else 0
    pending = int(info.num_pending or 0)
    ack_pending = int(info.num_ack_pending or 0)
    caught_up = (
        runner.status is ActorStatus.RUNNING
        and committer is not None
        and pending == 0
        and ack_pending == 0
        and buffered == 0
        and runner.in_hand == 0
        and committing == 0
        and journal_seq == delivered
    )
    return Progress(
        caught_up=caught_up,
        stream=stream,
        journal_seq=journal_seq,
        delivered_seq=delivered,
        pending=pending,
        ack_pending=ack_pending,
        buffered=buffered,
        in_hand=runner.in_hand,
        committing=committing,
    )


def describe(progress: Progress | None) -> str:
    """How far a consumer is, in words (for a line that says why it is not caught up)."""
    if progress is None:
        return "its consumer cannot be read"
    p = progress
    return (
        f"{p.pending:,} pending in the consumer, {p.ack_pending:,} delivered and not "
        f"acknowledged, {p.buffered + p.in_hand:,} in hand, {p.committing:,} being committed; "
        f"journal at stream sequence {p.journal_seq:,} of {p.stream}, "
        f"last delivered {p.delivered_seq:,}"
    )

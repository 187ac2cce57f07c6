"""The publishing side of ``bench/chaos.py``: every event published once, with retries until
the broker acknowledges it, spread over the kill cycles; and, with ``--stored-duplicates``,
acknowledged events published again once the stream's duplicate window has passed."""

from __future__ import annotations

import random
import time

import anyio
import nats.errors
from _chaos_workers import STREAM, ChaosError, Progress
from nats.js import JetStreamContext

from actorsource import EVENT_TYPE_HEADER, MSG_ID_HEADER, encode_event
from examples import bank

__all__ = ["publisher", "republisher", "shorten_duplicate_window"]

PUBLISH_PIECES = 8  # each kill cycle's share of events goes out in this many pieces


async def publish_one(
    js: JetStreamContext, event: bank.BankEvent, msg_id: str, progress: Progress
) -> int:
    """Publish until the broker acknowledges (same msg id: the broker dedups); the seq."""
    type_name, payload = encode_event(event)
    headers = {EVENT_TYPE_HEADER: type_name, MSG_ID_HEADER: msg_id}
    with anyio.move_on_after(60):
        while True:
            try:
                ack = await js.publish(bank.subject_for(event), payload, headers=headers)
            except (nats.errors.Error, OSError):
                progress.retries += 1
                await anyio.sleep(0.1)
                continue
            return int(ack.seq)
    raise ChaosError(f"the broker did not acknowledge {msg_id} in 60 s of retries")


async def publish_piece(
    js: JetStreamContext,
    events: list[bank.BankEvent],
    indexes: range,
    prefix: str,
    acked: list[tuple[int, int]],
    progress: Progress,
) -> None:
    """Publish events[indexes] pipelined; record (stream seq, index) for every PubAck."""
    futures = []
    for i in indexes:
        event = events[i]
        type_name, payload = encode_event(event)
        headers = {EVENT_TYPE_HEADER: type_name, MSG_ID_HEADER: f"{prefix}-{i}"}
        futures.append(
            (i, await js.publish_async(bank.subject_for(event), payload, headers=headers))
        )
    for i, future in futures:
        seq: int | None = None
        with anyio.move_on_after(10):
            try:
                seq = int((await future).seq)
            except (nats.errors.Error, OSError):
                pass
        if seq is None:
            progress.retries += 1
            seq = await publish_one(js, events[i], f"{prefix}-{i}", progress)
        acked.append((seq, i))
        progress.published_at[i] = time.monotonic()
        progress.published += 1


async def publisher(
    js: JetStreamContext,
    events: list[bank.BankEvent],
    prefix: str,
    kills: int,
    acked: list[tuple[int, int]],
    progress: Progress,
) -> None:
    """Publish every event, one share per kill cycle, spread over the cycle.

    Share j goes out once kill j has been made (share 0 at once), so the kills are spread
    over the publishing and every worker starts with some backlog and sees more arrive.
    """
    shares = max(kills, 1)
    bounds = [len(events) * j // shares for j in range(shares + 1)]
    for j in range(shares):
        if j > 0:
            await progress.kill_made[j - 1].wait()
        share = range(bounds[j], bounds[j + 1])
        gap = 0.8 * progress.cycle_s / PUBLISH_PIECES
        for p in range(PUBLISH_PIECES):
            lo = share.start + len(share) * p // PUBLISH_PIECES
            hi = share.start + len(share) * (p + 1) // PUBLISH_PIECES
            if hi > lo:
                await publish_piece(js, events, range(lo, hi), prefix, acked, progress)
            if p + 1 < PUBLISH_PIECES:
                await anyio.sleep(gap)


async def republisher(
    js: JetStreamContext,
    events: list[bank.BankEvent],
    prefix: str,
    kills: int,
    total: int,
    window: float,
    rng: random.Random,
    progress: Progress,
) -> None:
    """Publish ``total`` acknowledged events again, same id and bytes, after their window.

    A share goes out after each kill, when the next worker starts with a backlog; each is
    chosen among the events acknowledged more than ``window`` (plus a margin) ago, so the
    stream stores it a second time. What a share could not send yet (too few events old
    enough) goes out with the next one, the rest after the last kill, before the final
    worker starts.
    """
    shares = max(kills, 1)
    owed = 0
    for j in range(shares + 1):
        if j < shares:
            if kills:
                await progress.kill_made[j].wait()
            owed += total * (j + 1) // shares - total * j // shares
        elif owed:
            await anyio.sleep(window + 0.3)
        old_enough = time.monotonic() - window - 0.3
        eligible = [i for i, at in list(progress.published_at.items()) if at < old_enough]
        for i in rng.sample(eligible, min(owed, len(eligible))):
            type_name, payload = encode_event(events[i])
            headers = {EVENT_TYPE_HEADER: type_name, MSG_ID_HEADER: f"{prefix}-{i}"}
            ack = await js.publish(bank.subject_for(events[i]), payload, headers=headers)
            owed -= 1
            if ack.duplicate:
                progress.refused_duplicates += 1
            else:
                progress.stored_duplicates.append(int(ack.seq))


async def shorten_duplicate_window(js: JetStreamContext, seconds: float) -> None:
    """Make the stream forget message ids after ``seconds`` (JetStream's default is 2 min)."""
    info = await js.stream_info(STREAM)
    info.config.duplicate_window = seconds
    await js.update_stream(info.config)

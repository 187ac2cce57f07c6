"""Keeping taken messages alive: ``+WPI`` while handling or committing them takes long.

JetStream redelivers a message not acknowledged within ``ack_wait``. A slow handler, a
retry's backoff or a full disk must not cause that: every message taken and not yet
acknowledged (waiting in the mailbox, in hand, waiting for its commit, set aside to redo)
gets an in-progress signal once the oldest of them has waited a third of ``ack_wait``.
"""

from __future__ import annotations

import time

import anyio
import nats.errors

from .._mailbox.mailbox import JetStreamMailbox
from .pipeline import Pipeline

__all__ = ["keep_alive"]


async def keep_alive(mailbox: JetStreamMailbox, pipeline: Pipeline, *, ack_wait: float) -> None:
    """Send ``+WPI`` for what is taken and not yet acknowledged, while it takes long."""
    interval = max(ack_wait / 3, 0.05)
    committer = pipeline.committer
    while True:
        await anyio.sleep(interval)
        since = [pipeline.in_hand_since] if pipeline.in_hand else []
        if (oldest := committer.oldest()) is not None:
            since.append(oldest)
        if mailbox.buffered_count:
            since.append(mailbox.buffered_since)
        if not since or time.monotonic() - min(since) < interval:
            continue
        taken = [*committer.unacked(), *pipeline.in_hand, *mailbox.buffered()]
        try:
            for d in taken:
                await mailbox.in_progress(d)
        except (nats.errors.Error, OSError):
            pass

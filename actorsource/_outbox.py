"""The outbox publisher: sends what the journal committed for publishing, at least once.

Messages to publish (dead letters today, events published by handlers) are written to the
journal's ``outbox`` table in the same transaction as the events that caused them. This task
publishes them in order with their deterministic ``Nats-Msg-Id`` and marks them sent once
JetStream acknowledged them. A crash between publish and mark re-sends on recovery, and
JetStream's deduplication (plus the receiver's msg-id check) absorbs the repeat. While NATS
is unreachable, or a message is refused (too large, no stream for its subject), it stays
pending, is retried with capped backoff, and is reported in the logs: never dropped.
"""

from __future__ import annotations

import anyio
import nats.errors
import nats.js.errors
import structlog
from nats.js import JetStreamContext

from ._errors import JournalError
from ._events import MSG_ID_HEADER
from ._journal import SQLiteJournal

__all__ = ["OutboxPublisher"]


class OutboxPublisher:
    """Publishes a journal's unsent outbox rows; run :meth:`run` in the actor's task group."""

    def __init__(
        self,
        js: JetStreamContext,
        journal: SQLiteJournal,
        write_lock: anyio.Lock,
        *,
        log: structlog.stdlib.BoundLogger,
        max_backoff: float = 30.0,
    ) -> None:
        self._js = js
        self._journal = journal
        self._lock = write_lock
        self._log = log
        self._max_backoff = max_backoff
        self._wake = anyio.Event()
        self.published = 0
        self.failures = 0
        self.last_error: str | None = None

    def notify(self) -> None:
        """Tell the publisher that new rows were committed."""
        self._wake.set()

    @property
    def pending(self) -> int:
        """How many committed messages are not yet confirmed as published."""
        return self._journal.unsent

    async def run(self) -> None:
        """Publish forever: whenever woken, and on a backoff timer while anything is pending."""
        backoff = 0.1
        while True:
            if self._journal.unsent == 0:
                await self._wake.wait()
            self._wake = anyio.Event()
            try:
                await self.flush()
                backoff = 0.1
            except (
                nats.errors.Error,
                nats.js.errors.Error,
                OSError,
                TimeoutError,
                JournalError,
            ) as exc:
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._log.warning(
                    "outbox publish failed; will retry",
                    error=self.last_error,
                    pending=self._journal.unsent,
                    retry_in=round(backoff, 2),
                )
                with anyio.move_on_after(backoff):
                    await anyio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)

    async def flush(self) -> int:
        """Publish every pending row once, in order; returns how many were confirmed."""
        done = 0
        while self._journal.unsent:
            # Read under the write lock: the shared connection must never show rows of a
            # transaction that is still open (they might be rolled back).
            async with self._lock:
                rows = await self._journal.unsent_outbox(limit=500)
            if not rows:
                self._journal.unsent = 0
                break
            sent: list[int] = []
            try:
                for row in rows:
                    headers = dict(row.headers or {})
                    headers[MSG_ID_HEADER] = row.msg_id
                    await self._js.publish(row.subject, row.payload, headers=headers, timeout=5.0)
                    sent.append(row.id)
            finally:
                if sent:
                    with anyio.CancelScope(shield=True):
                        async with self._lock:
                            await self._journal.mark_sent(sent)
                    self.published += len(sent)
                    done += len(sent)
        return done

"""The outbox publisher: sends what the journal committed for publishing, at least once.

Messages to publish (the domain events handlers publish, dead letters) are written to the
journal's ``outbox`` table in the same transaction as the events that caused them. This task
publishes them in order with their deterministic ``Nats-Msg-Id`` (pipelined where that
cannot change the order JetStream stores them in) and marks them sent once JetStream
acknowledged them. A crash between publish and mark re-sends on recovery, and
JetStream's deduplication (plus the receiver's msg-id check) absorbs the repeat. While NATS
is unreachable, or a message is refused (too large, no stream for its subject), it stays
pending, is retried with capped backoff, and is reported in the logs: never dropped.
"""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import nats.errors
import nats.js.errors
import structlog
from nats.js import JetStreamContext

from .._errors import JournalError
from .._journal.journal import OutboxMessage, SQLiteJournal
from .._mailbox.streams import StreamMap
from .._model.events import MSG_ID_HEADER
from .status import CrashSwitch

__all__ = ["OutboxPublisher"]

#: How many rows are read from the outbox at a time.
_WINDOW = 512

#: How many messages are sent ahead of their acks, to streams that cannot refuse one.
_PIPELINE = 256

_PUBLISH_ERRORS = (nats.errors.Error, nats.js.errors.Error, OSError, TimeoutError)


class OutboxPublisher:
    """Publishes a journal's unsent outbox rows; run :meth:`run` in the actor's task group."""

    def __init__(
        self,
        js: JetStreamContext,
        journal: SQLiteJournal,
        write_lock: anyio.Lock,
        *,
        log: structlog.stdlib.BoundLogger,
        crash: CrashSwitch | None = None,
        max_backoff: float = 30.0,
        ack_timeout: float = 5.0,
    ) -> None:
        self._js = js
        self._journal = journal
        self._lock = write_lock
        self._log = log
        self._max_backoff = max_backoff
        self._ack_timeout = ack_timeout
        self._crash = crash or CrashSwitch()
        self._streams = StreamMap(js)
        self._wake = anyio.Event()
        self.published = 0
        self.failures = 0
        self.last_error: str | None = None
        #: The (msg_id, subject) that the last attempt could not publish, if any.
        self.refused: tuple[str, str] | None = None

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
            except (*_PUBLISH_ERRORS, JournalError) as exc:
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                msg_id, subject = self.refused or (None, None)
                self._log.warning(
                    "outbox publish failed; will retry",
                    error=self.last_error,
                    msg_id=msg_id,
                    subject=subject,
                    pending=self._journal.unsent,
                    retry_in=round(backoff, 2),
                )
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)

    async def flush(self) -> int:
        """Publish every pending row once, in order; returns how many were confirmed."""
        done = 0
        while self._journal.unsent:
            # Read under the write lock: the shared connection must never show rows of a
            # transaction that is still open (they might be rolled back).
            async with self._lock:
                rows = await self._journal.unsent_outbox(limit=_WINDOW)
            if not rows:
                self._journal.unsent = 0
                break
            self._crash.check("before_publish")
            sent, error = await self._publish(rows)
            if sent:
                self._crash.check("after_publish")
                with anyio.CancelScope(shield=True):
                    async with self._lock:
                        await self._journal.mark_sent(sent)
                self.published += len(sent)
                done += len(sent)
            if error is not None:
                refused = rows[len(sent)]
                self.refused = (refused.msg_id, refused.subject)
                raise error
        self.refused = None
        return done

    async def _publish(self, rows: list[OutboxMessage]) -> tuple[list[int], Exception | None]:
        """Send ``rows`` in order; returns the ids of the confirmed prefix and, if a row was
        not confirmed, why (it and every row after it are sent again next time).

        Runs of rows to streams that cannot refuse a single message (see
        :mod:`actorsource._mailbox.streams`) are pipelined: sent ahead of their acks, which come
        back in order. Any other row is sent alone, after the previous one's ack, so that
        JetStream never stores a later message after refusing an earlier one.
        """
        sent: list[int] = []
        i = 0
        while i < len(rows):
            run: list[OutboxMessage] = []
            while (
                i + len(run) < len(rows)
                and len(run) < _PIPELINE
                and await self._streams.pipelinable(rows[i + len(run)].subject)
            ):
                run.append(rows[i + len(run)])
            if len(run) > 1:
                confirmed = await self._pipeline(run)
                sent.extend(confirmed)
                i += len(confirmed)
                if len(confirmed) == len(run):
                    continue
                self._streams.forget()  # a refusal in a run: the streams may have changed
            # One row alone: a run's first unconfirmed one (nats-py's asynchronous acks
            # lose the reason of some refusals), or a row to a stream that may refuse it.
            row = rows[i]
            try:
                await self._js.publish(
                    row.subject, row.payload, headers=_headers(row), timeout=self._ack_timeout
                )
            except _PUBLISH_ERRORS as exc:
                return sent, exc
            sent.append(row.id)
            i += 1
        return sent, None

    async def _pipeline(self, run: list[OutboxMessage]) -> list[int]:
        """Send ``run`` ahead of the acks; the ids of its confirmed prefix."""
        futures: list[asyncio.Future[Any]] = []
        try:
            for row in run:
                futures.append(
                    await self._js.publish_async(row.subject, row.payload, headers=_headers(row))
                )
        except _PUBLISH_ERRORS:
            pass  # the rows without a future count as unconfirmed
        if futures:
            await asyncio.wait(futures, timeout=self._ack_timeout)
        confirmed: list[int] = []
        for row, future in zip(run, futures, strict=False):
            if not future.done() or future.cancelled() or future.exception() is not None:
                break
            confirmed.append(row.id)
        for future in futures:
            if not future.done():
                future.cancel()
        return confirmed


def _headers(row: OutboxMessage) -> dict[str, str]:
    headers = dict(row.headers or {})
    headers[MSG_ID_HEADER] = row.msg_id
    return headers

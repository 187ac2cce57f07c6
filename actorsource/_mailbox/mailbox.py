"""The mailbox: a durable JetStream pull consumer feeding a bounded in-process buffer.

Why not ``PullSubscription.fetch()``: it makes a task and a uuid per message and, once the
first message of a lingering pull has arrived, waits for the rest of the batch until its
timeout, which adds the whole timeout to the latency at low rates. Instead the mailbox
subscribes to its own inbox and sends ``$JS.API.CONSUMER.MSG.NEXT`` pull requests itself,
keeping a bounded credit of requested messages outstanding. :meth:`JetStreamMailbox.next_batch`
returns as soon as one message is buffered, with whatever else has already arrived (never
waiting to fill a batch), in stream order.

Status messages on the inbox: ``100`` idle heartbeat (the server is alive), ``408`` a pull
request expired (its unfilled count is returned as credit), ``409`` the request was
cancelled (consumer deleted, leadership change, too many waiting) and ``503`` no responders
(the consumer does not exist): the last two raise :class:`ConsumerGone`, and the runtime
re-creates the consumer rather than spin.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from .._errors import InvalidNameError, MailboxError
from .._model.partitions import Partitioning
from .delivery import ConsumerGone, Delivery, parse_ack_subject
from .fastpath import InboxSubscription, subscribe_inbox
from .partitioned import ensure_partitioned_stream
from .provision import find_or_create_stream, recreate_consumer, setup_error

__all__ = ["ConsumerGone", "Delivery", "JetStreamMailbox", "parse_ack_subject"]

_json = msgspec.json.Encoder()


class JetStreamMailbox:
    """A durable pull consumer for one actor, read with :meth:`next_batch`.

    Set up with :meth:`ensure` (creates or updates the stream binding and the consumer), then
    used as an async context manager. ``max_batch`` bounds one batch; at most about
    ``2 * max_batch`` messages are requested from the server and buffered at any time.
    ``fastpath`` chooses how the inbox receives (:mod:`~actorsource._mailbox.fastpath`;
    default: on unless ``ACTORSOURCE_NATS_FASTPATH=0``).
    """

    def __init__(
        self,
        nc: NATS,
        *,
        durable: str,
        subjects: Sequence[str],
        stream: str | None,
        default_stream: str,
        stream_subjects: Sequence[str] | None = None,
        ack_wait: float,
        max_batch: int,
        max_ack_pending: int,
        pull_expires: float = 5.0,
        fastpath: bool | None = None,
        partitioning: Partitioning | None = None,
        replicas: int = 1,
    ) -> None:
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream()
        self.durable = durable
        self.subjects = tuple(subjects)
        self.stream: str | None = stream
        self._default_stream = default_stream
        self._stream_subjects = list(stream_subjects or subjects)
        self._ack_wait = ack_wait
        self._max_batch = max_batch
        self._max_ack_pending = max_ack_pending
        self._expires = pull_expires
        self._heartbeat = min(1.0, pull_expires / 4)
        self._buffer: collections.deque[Delivery] = collections.deque()
        self._arrived = anyio.Event()
        self._doorbell: Callable[[], None] | None = None
        self._credit = 0
        self._last_seen = 0.0
        #: Since when the oldest delivery not yet taken has waited (if any wait).
        self.buffered_since = 0.0
        self._failure: MailboxError | None = None
        self._last_cseq = 0
        self._gap = False
        self._sub: InboxSubscription | None = None
        self._fastpath = fastpath
        #: A partition's mailbox: its stream is the actor's partitioned one, and each
        #: delivery's subject is given as published (the partition token taken out).
        self.partitioning = partitioning
        self._published = partitioning.published if partitioning is not None else None
        self._replicas = replicas
        self._inbox = ""
        self._next_subject = ""

    # -- set-up ------------------------------------------------------------------------------

    async def ensure(self, start_seq: int = 1) -> str:
        """Find or create the stream, then (re-)create the durable consumer at ``start_seq``.

        The journal, not the consumer, knows what the actor has consumed: the consumer is
        re-created on every start to deliver from the journal's position onwards. This keeps
        delivery in stream order after a crash (messages left unacknowledged would otherwise
        come back only after ``ack_wait``, behind newer ones) and makes a consumer that was
        deleted, or that acknowledged more than the journal holds, harmless.
        """
        stream = await self.resolve_stream()
        try:
            await recreate_consumer(
                self._js,
                stream,
                durable=self.durable,
                subjects=self.subjects,
                ack_wait=self._ack_wait,
                max_ack_pending=self._max_ack_pending,
                start_seq=start_seq,
            )
        except (nats.errors.Error, OSError) as exc:
            raise self._setup_error(
                f"the consumer {self.durable!r} on stream {stream!r}", exc
            ) from exc
        self.stream = stream
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{self.durable}"
        self._buffer.clear()
        self._credit = 0
        # A new consumer numbers its deliveries from 1: a number skipped is one lost.
        self._last_cseq = 0
        self._gap = False
        self._failure = None
        return stream

    async def resolve_stream(self) -> str:
        """Find the stream that stores the actor's subjects, creating it if there is none
        (a partitioned actor's: its own stream with the partition transform, see
        :func:`~actorsource._mailbox.partitioned.ensure_partitioned_stream`)."""
        if self.partitioning is not None:
            assert self.stream is not None  # a partition's definition names its stream
            await ensure_partitioned_stream(
                self._js,
                self.stream,
                self.partitioning,
                actor=self.durable,
                replicas=self._replicas,
            )
            return self.stream
        try:
            self.stream = await find_or_create_stream(
                self._js,
                durable=self.durable,
                subjects=self.subjects,
                stream=self.stream,
                stream_subjects=self._stream_subjects,
                default_stream=self._default_stream,
                replicas=self._replicas,
            )
        except (nats.errors.Error, OSError) as exc:
            raise self._setup_error(f"a stream for {self.durable!r}", exc) from exc
        return self.stream

    def _setup_error(self, what: str, exc: BaseException) -> MailboxError:
        return setup_error(what, exc, durable=self.durable, subjects=self.subjects)

    @property
    def resolved_stream(self) -> str:
        """The stream name, once :meth:`resolve_stream` has found it."""
        if self.stream is None:
            raise MailboxError(
                f"the stream of {self.durable!r} is not resolved yet", actor=self.durable
            )
        return self.stream

    async def __aenter__(self) -> JetStreamMailbox:
        if not self._next_subject:
            await self.ensure()
        self._inbox = self._nc.new_inbox()
        self._sub = await subscribe_inbox(
            self._nc, self._inbox, self._receive, fastpath=self._fastpath
        )
        self._credit = 0
        self._last_seen = time.monotonic()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop receiving; unacknowledged messages are redelivered by JetStream after ack_wait."""
        sub, self._sub = self._sub, None
        self._buffer.clear()
        if sub is not None:
            with anyio.CancelScope(shield=True):
                try:
                    await sub.unsubscribe()
                except (nats.errors.Error, OSError):
                    pass

    # -- receiving ---------------------------------------------------------------------------

    @property
    def fast_path(self) -> bool:
        """True while the inbox receives through the fast lane."""
        return self._sub is not None and self._sub.fast

    def _receive(
        self, subject: str, reply: str, data: bytes, headers: dict[str, str] | None
    ) -> None:
        self._last_seen = now = time.monotonic()
        if headers and not data and "Status" in headers:
            self._on_status(headers)
            return
        try:
            stream, seq, delivered, ts, cseq = parse_ack_subject(reply)
        except (MailboxError, ValueError):
            return
        self._credit -= 1
        if self._gap:
            return  # a delivery before it was lost: nothing is taken until re-created
        if cseq != self._last_cseq + 1:
            # A delivery the consumer made never arrived (the connection dropped with it in
            # flight). Acknowledging a later one would acknowledge it too (ack policy
            # ``all``): stop here, and let the runner re-create the consumer at the
            # journal's position.
            self._gap = True
            self._fail(
                ConsumerGone(
                    f"consumer {self.durable!r} delivered #{cseq} after #{self._last_cseq}: "
                    "a delivery was lost in transit",
                    actor=self.durable,
                )
            )
            return
        self._last_cseq = cseq
        if self._published is not None:
            try:
                subject = self._published(subject)
            except InvalidNameError:
                pass  # not from the partition transform: the handler sees it as stored
        buffer = self._buffer
        buffer.append(Delivery(subject, data, headers, reply, stream, seq, delivered, ts))
        if len(buffer) == 1:
            # Only the first delivery into an empty buffer signals: whoever takes from it
            # takes what is buffered, and looks again if it leaves some (next_batch, and
            # the actor's loop, which rings its own doorbell then).
            self.buffered_since = now
            self._signal()

    def _on_status(self, headers: dict[str, str]) -> None:
        status = headers.get("Status")
        if status == "100":
            return
        if status in ("408", "409", "404"):
            pending = headers.get("Nats-Pending-Messages")
            self._credit = max(0, self._credit - int(pending)) if pending else 0
            description = headers.get("Description", "")
            if status == "409" and "Consumer Deleted" in description:
                self._fail(
                    ConsumerGone(f"consumer {self.durable!r} was deleted", actor=self.durable)
                )
            elif status == "409" and "Consumer is push based" in description:
                self._fail(
                    MailboxError(f"consumer {self.durable!r} is push based", actor=self.durable)
                )
        elif status == "503":
            self._credit = 0
            self._fail(
                ConsumerGone(f"consumer {self.durable!r} does not answer (503)", actor=self.durable)
            )
        self._signal()

    def _fail(self, error: MailboxError) -> None:
        self._failure = error
        self._signal()

    def _signal(self) -> None:
        self._arrived.set()
        if self._doorbell is not None:
            self._doorbell()

    def on_arrival(self, doorbell: Callable[[], None] | None) -> None:
        """Call ``doorbell`` (synchronously, on the connection's task) whenever something
        arrives for :meth:`take`: messages, an expired request, a failure of the consumer."""
        self._doorbell = doorbell

    async def _pull(self, n: int) -> None:
        request = {
            "batch": n,
            "expires": int(self._expires * 1e9),
            "idle_heartbeat": int(self._heartbeat * 1e9),
        }
        self._credit += n
        try:
            await self._nc.publish(self._next_subject, _json.encode(request), reply=self._inbox)
        except (nats.errors.Error, OSError) as exc:
            self._credit -= n
            raise MailboxError(f"cannot request messages for {self.durable!r}: {exc!r}") from exc

    async def take(self, max_n: int | None = None) -> list[Delivery]:
        """What has arrived, in order (up to ``max_n``, by default ``max_batch``), without
        waiting; first asks for more when the outstanding requests run low. Raises the
        consumer's failure (:class:`ConsumerGone` when it is gone)."""
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
        if self._sub is None:
            raise MailboxError(f"mailbox {self.durable!r} is closed", actor=self.durable)
        buffered = len(self._buffer)
        if self._credit + buffered <= self._max_batch:
            await self._pull(self._max_batch)
        if not buffered:
            return []
        pop = self._buffer.popleft
        return [pop() for _ in range(min(max_n or self._max_batch, buffered))]

    async def next_batch(self, max_n: int | None = None) -> list[Delivery]:
        """Wait for at least one message; return it with those already buffered, in order."""
        while True:
            batch = await self.take(max_n)
            if batch:
                return batch
            if self._buffer or self._failure is not None:
                continue  # arrived while take() asked for more: signalled the event before
            self._arrived = anyio.Event()
            with anyio.move_on_after(self._expires + 2 * self._heartbeat):
                await self._arrived.wait()
            self.forget_lost_requests()

    @property
    def quiet_period(self) -> float:
        """How long a healthy consumer never stays silent (it sends heartbeats)."""
        return 3 * self._heartbeat

    def forget_lost_requests(self) -> bool:
        """Neither messages nor heartbeats for :attr:`quiet_period`: the pull requests were
        lost (e.g. a reconnect dropped them server-side). Forget their credit, so that the
        next :meth:`take` asks again; True if so."""
        if self._buffer or time.monotonic() - self._last_seen <= self.quiet_period:
            return False
        self._credit = 0
        return True

    @property
    def buffered_count(self) -> int:
        """How many deliveries have arrived and are not taken yet."""
        return len(self._buffer)

    def buffered(self) -> list[Delivery]:
        """The deliveries received but not yet handed out by :meth:`next_batch`."""
        return list(self._buffer)

    def reset_credit(self) -> None:
        """Forget outstanding pull requests (after a reconnect the server dropped them)."""
        self._credit = 0
        self._arrived.set()

    # -- acknowledging -----------------------------------------------------------------------

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Acknowledge these deliveries and every earlier one (the consumer acks ``all``).

        Only the last one is sent: the caller must have handled every delivery before it.
        Fire-and-forget: a lost ack means a redelivery, which the journal deduplicates.
        """
        if not deliveries:
            return
        try:
            await self._nc.publish(deliveries[-1].reply, b"+ACK")
        except (nats.errors.Error, OSError) as exc:
            raise MailboxError(f"cannot acknowledge for {self.durable!r}: {exc!r}") from exc

    async def term(self, delivery: Delivery, reason: str = "") -> None:
        """Stop redelivery of a message for good (after it was dead-lettered)."""
        payload = b"+TERM " + reason.encode()[:256] if reason else b"+TERM"
        await self._nc.publish(delivery.reply, payload)

    async def in_progress(self, delivery: Delivery) -> None:
        """Reset the ack timer of a message that is still being worked on."""
        await self._nc.publish(delivery.reply, b"+WPI")

    async def stream_info(self) -> Any:
        """The stream's info (config, state, creation time)."""
        try:
            return await self._js.stream_info(self.resolved_stream)
        except (nats.errors.Error, OSError) as exc:
            raise MailboxError(
                f"cannot read stream {self.stream!r}: {exc!r}", actor=self.durable
            ) from exc

    async def acked_floor(self) -> int | None:
        """The stream sequence the existing durable consumer has acknowledged up to, if any."""
        try:
            info = await self._js.consumer_info(self.resolved_stream, self.durable)
        except nats.js.errors.NotFoundError:
            return None
        except (nats.errors.Error, OSError) as exc:
            raise MailboxError(
                f"cannot read consumer {self.durable!r}: {exc!r}", actor=self.durable
            ) from exc
        return int(info.ack_floor.stream_seq) if info.ack_floor else 0

    async def consumer_info(self) -> Any:
        """The consumer's info from the server (pending, ack pending, delivered ...)."""
        assert self.stream is not None
        return await self._js.consumer_info(self.stream, self.durable)

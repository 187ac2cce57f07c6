"""The fence at the commit point: conditional appends to a partition's journal subject.

Every partition has a subject ``asj.<actor>.<k>`` in the replicated stream
``ACTORSOURCE_JOURNAL``. Its owner appends each batch with
``Nats-Expected-Last-Subject-Sequence`` set to the last sequence it knows of that subject,
*before* it commits the batch to SQLite and acknowledges it. A new owner first appends an
epoch marker (:meth:`JournalFence.open`); from then on every append of an older owner
names a sequence that is no longer the last, and JetStream refuses it ("wrong last
sequence", 10071): :class:`Fenced`. The stale owner then commits, acknowledges and
publishes nothing more for the partition and drops its state. Nothing here trusts a clock
or a lease: the stream's Raft log orders the appends.

Every message carries the writer's epoch (``Actorsource-Epoch``): an owner that finds a
higher epoch on the subject knows it is stale even before it appends. The message id of an
append is ``<subject>:<epoch>:<expected>``, so an append whose reply was lost can be sent
again as it was: if the first attempt was stored (JetStream then refuses the retry's
expected sequence), the subject's last message carries that id, and the append is taken
as done.

The subject is authoritative: a crash between the append and the SQLite commit leaves it
ahead of the journal file, and recovery imports :meth:`JournalFence.tail` first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

import anyio
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import PubAck, RawStreamMsg, StreamConfig

from .._errors import ClusterError, Fenced
from .._model.subjects import validate_name

__all__ = [
    "EPOCH_HEADER",
    "JOURNAL_STREAM",
    "JournalFence",
    "JournalRecord",
    "ensure_journal_stream",
    "journal_subject",
]

JOURNAL_STREAM = "ACTORSOURCE_JOURNAL"
JOURNAL_PREFIX = "asj"
EPOCH_HEADER = "Actorsource-Epoch"
KIND_HEADER = "Actorsource-Journal"
_EXPECTED = "Nats-Expected-Last-Subject-Sequence"
_MSG_ID = "Nats-Msg-Id"
_WRONG_LAST_SEQUENCE = 10071
#: Attempts of one append while the stream is unavailable (about 10 s with the backoff).
_UNAVAILABLE_TRIES = 14


def journal_subject(actor: str, partition: int) -> str:
    """The journal subject of partition ``partition`` of ``actor``: ``asj.orders.3``."""
    validate_name(actor)
    return f"{JOURNAL_PREFIX}.{actor}.{int(partition)}"


async def ensure_journal_stream(
    js: JetStreamContext, *, replicas: int = 1, stream: str = JOURNAL_STREAM
) -> None:
    """Create the journal stream if it is missing (R``replicas``; 3 in a cluster)."""
    try:
        await js.stream_info(stream)
        return
    except nats.js.errors.NotFoundError:
        pass
    try:
        await js.add_stream(
            StreamConfig(
                name=stream,
                subjects=[f"{JOURNAL_PREFIX}.>"],
                num_replicas=replicas,
                # The message ids make retried appends idempotent while they may happen.
                duplicate_window=120.0,
            )
        )
    except nats.js.errors.BadRequestError:
        await js.stream_info(stream)  # created meanwhile by another worker


@dataclass(frozen=True, slots=True)
class JournalRecord:
    """One message of a journal subject: an owner's epoch marker, or a batch's bytes."""

    seq: int
    epoch: int
    kind: Literal["epoch", "batch"]
    data: bytes
    #: The subject sequence its writer expected to be last (0: the subject's first message
    #: ever). On the first message left after a purge, everything up to it is gone.
    expected: int = 0


def _record(msg: RawStreamMsg) -> JournalRecord:
    headers = msg.headers or {}
    kind: Literal["epoch", "batch"] = "epoch" if headers.get(KIND_HEADER) == "epoch" else "batch"
    return JournalRecord(
        seq=int(msg.seq or 0),
        epoch=int(headers.get(EPOCH_HEADER, 0)),
        kind=kind,
        data=msg.data or b"",
        expected=int(headers.get(_EXPECTED, 0)),
    )


class JournalFence:
    """One owner's handle on a partition's journal subject.

    Use: :meth:`open` with the epoch of the lease just acquired, :meth:`tail` to import
    what the journal file lacks, then :meth:`append` each batch before committing it.
    Not meant to be used from several tasks at once.
    """

    def __init__(
        self,
        js: JetStreamContext,
        actor: str,
        partition: int,
        *,
        stream: str = JOURNAL_STREAM,
    ) -> None:
        self.subject = journal_subject(actor, partition)
        self.stream = stream
        self._js = js
        self.epoch = 0
        #: The subject's last sequence as far as this owner knows (its own last append).
        self.last_seq = 0
        #: The epoch of the subject's last message when this owner opened it (0: none).
        self.previous_epoch = 0
        self._fenced = False

    @property
    def js(self) -> JetStreamContext:
        """The JetStream context the fence appends through."""
        return self._js

    @property
    def fenced(self) -> bool:
        """Whether an append or open was refused: this owner must stop."""
        return self._fenced

    async def last(self) -> JournalRecord | None:
        """The subject's last message (read from the stream leader), or None."""
        try:
            msg = await self._js.get_msg(self.stream, subject=self.subject)
        except nats.js.errors.NotFoundError:
            return None
        return _record(msg)

    async def first(self) -> JournalRecord | None:
        """The subject's first message left (after compaction), or None."""
        try:
            msg = await self._js.get_msg(self.stream, seq=1, subject=self.subject, next=True)
        except nats.js.errors.NotFoundError:
            return None
        return _record(msg)

    async def compacted_to(self) -> int:
        """Up to which sequence the subject's messages were purged (0: it holds them all):
        an import must start after it to miss nothing."""
        first = await self.first()
        return first.expected if first is not None else 0

    async def purge_before(self, seq: int) -> None:
        """Purge the subject's messages before sequence ``seq`` (the one at ``seq`` stays,
        and so does the last: the fence's expected sequence keeps working)."""
        await self._js.purge_stream(self.stream, subject=self.subject, seq=seq)

    async def open(self, epoch: int) -> int:
        """Append the marker of ``epoch`` after whatever the subject holds; its sequence.

        From then on, an older owner's append is refused. Raises :class:`Fenced` if the
        subject already carries a higher epoch (a newer owner opened it)."""
        self.epoch = epoch
        for _ in range(10):
            last = await self.last()
            if last is not None and last.epoch > epoch:
                self._fenced = True
                raise Fenced(
                    f"{self.subject}: epoch {epoch} is stale, the journal subject already "
                    f"carries epoch {last.epoch}",
                    key=self.subject,
                    epoch=epoch,
                )
            self.last_seq = last.seq if last is not None else 0
            self.previous_epoch = last.epoch if last is not None else 0
            try:
                return await self._append(b"", "epoch")
            except Fenced:
                self._fenced = False  # an older owner appended meanwhile: look again
        raise ClusterError(
            f"{self.subject}: could not append the marker of epoch {epoch}: the subject "
            "kept changing under it (is an older owner still appending?)",
            key=self.subject,
        )

    async def append(self, batch: bytes) -> int:
        """Append ``batch`` if nothing else was appended since this owner's last append;
        the new subject sequence. Raises :class:`Fenced` when refused (for good: every
        later append is refused too). A call that failed otherwise (a timeout) may be
        repeated with the same bytes: the retry is deduplicated."""
        if not self.epoch:
            raise ClusterError(f"{self.subject}: append before open()", key=self.subject)
        return await self._append(batch, "batch")

    async def _append(self, data: bytes, kind: str) -> int:
        if self._fenced:
            raise Fenced(
                f"{self.subject}: this owner (epoch {self.epoch}) was fenced",
                key=self.subject,
                epoch=self.epoch,
            )
        expected = self.last_seq
        msg_id = f"{self.subject}:{self.epoch}:{expected}"
        headers = {
            _EXPECTED: str(expected),
            EPOCH_HEADER: str(self.epoch),
            KIND_HEADER: kind,
            _MSG_ID: msg_id,
        }
        try:
            ack = await self._publish(data, headers)
        except nats.js.errors.APIError as exc:
            if exc.err_code != _WRONG_LAST_SEQUENCE:
                raise
            # The server checks the expected sequence before it deduplicates: a repeated
            # append whose first attempt was stored is refused. It is ours if it is last.
            try:
                last = await self._js.get_msg(self.stream, subject=self.subject)
            except nats.js.errors.NotFoundError:
                last = None
            if last is not None and (last.headers or {}).get(_MSG_ID) == msg_id:
                self.last_seq = int(last.seq or 0)
                return self.last_seq
            self._fenced = True
            raise Fenced(
                f"{self.subject}: append of epoch {self.epoch} refused, the subject moved "
                f"past sequence {expected} (a newer owner appended)",
                key=self.subject,
                epoch=self.epoch,
            ) from None
        self.last_seq = int(ack.seq)
        return self.last_seq

    async def _publish(self, data: bytes, headers: dict[str, str]) -> PubAck:
        """Publish one append, sent again as it was while the stream has no leader or
        this server has not learnt of it yet (no responders, a timeout: an election, a
        stream just created). The message id makes a repeat that was stored harmless."""
        delay = 0.05
        for _ in range(_UNAVAILABLE_TRIES - 1):
            try:
                return await self._js.publish(
                    self.subject, data, stream=self.stream, headers=dict(headers)
                )
            except (nats.js.errors.NoStreamResponseError, nats.errors.TimeoutError):
                await anyio.sleep(delay)
                delay = min(delay * 2, 1.0)
        return await self._js.publish(self.subject, data, stream=self.stream, headers=headers)

    async def tail(self, after: int = 0) -> AsyncIterator[JournalRecord]:
        """The subject's messages after sequence ``after``, in order, up to its end."""
        seq = after + 1
        while True:
            try:
                msg = await self._js.get_msg(self.stream, seq=seq, subject=self.subject, next=True)
            except nats.js.errors.NotFoundError:
                return
            except nats.errors.Error as exc:
                raise ClusterError(
                    f"{self.subject}: cannot read the journal subject after {seq - 1}: {exc!r}",
                    key=self.subject,
                ) from exc
            record = _record(msg)
            yield record
            seq = record.seq + 1

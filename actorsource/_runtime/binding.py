"""Binding an actor's journal to its JetStream stream, and making sure its DLQ stream exists.

The journal records which incarnation of the stream it consumed (the stream's creation
time) and up to which sequence. Before the consumer is (re-)created at the journal's
position, the stream is checked against that record:

- a stream that was deleted and re-created (another creation time, or sequences that end
  before the journal's position) would mix two histories: the actor halts;
- a journal behind what the consumer had already acknowledged (restored from a backup) is
  reported and re-reads the missing events from the stream, unless the stream no longer
  holds them: then the actor halts, naming the lost sequence range.

:func:`ensure_streams` does the stream part of a first start alone, for publishers that
run before any worker has.
"""

from __future__ import annotations

import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from .._errors import MailboxError, StreamMismatchError
from .._journal.journal import SQLiteJournal
from .._mailbox.mailbox import JetStreamMailbox
from .._model.actor import ActorDefinition, definition_of
from .._model.policy import ErrorPolicy

__all__ = ["bind_mailbox", "ensure_dlq_stream", "ensure_streams", "mailbox_for"]


def mailbox_for(
    definition: ActorDefinition,
    nc: NATS,
    *,
    ack_wait: float,
    durable: str | None = None,
    replicas: int = 1,
) -> JetStreamMailbox:
    """The (not yet set up) mailbox of an actor: its durable consumer (``durable``, by
    default the actor's name) on its stream (created with ``replicas`` if missing)."""
    return JetStreamMailbox(
        nc,
        durable=durable or definition.name,
        subjects=definition.subjects,
        stream=definition.stream,
        stream_subjects=definition.stream_subjects,
        default_stream=definition.stream_name,
        ack_wait=ack_wait,
        max_batch=definition.max_batch,
        max_ack_pending=definition.max_ack_pending,
        partitioning=definition.partitions if definition.partition is not None else None,
        replicas=replicas,
    )


async def bind_mailbox(
    mailbox: JetStreamMailbox, journal: SQLiteJournal, *, log: structlog.stdlib.BoundLogger
) -> str:
    """Check the stream against the journal, then (re-)create the consumer after its position."""
    actor = mailbox.durable
    stream = await mailbox.resolve_stream()
    info = await mailbox.stream_info()
    created = info.created.isoformat() if info.created else ""
    known = await journal.bind_stream(stream, created)
    high = journal.stream_positions.get(stream, 0)
    if known and created and known != created:
        raise StreamMismatchError(
            f"stream {stream!r} was re-created (now created {created}, the journal "
            f"{journal.path} holds events up to sequence {high} of the stream created "
            f"{known}): refusing to mix two histories. Move the journal away to rebuild "
            "from the new stream, or restore the old stream",
            actor=actor,
        )
    if high > info.state.last_seq:
        raise StreamMismatchError(
            f"the journal {journal.path} has consumed stream {stream!r} up to sequence "
            f"{high}, but the stream ends at {info.state.last_seq}: it was re-created or "
            "reset; refusing to mix two histories",
            actor=actor,
        )
    acked = await mailbox.acked_floor()
    if acked is not None and acked > high:
        if info.state.first_seq > high + 1:
            raise StreamMismatchError(
                f"the journal {journal.path} is behind what the consumer acknowledged "
                f"(journal at stream sequence {high}, acknowledged up to {acked}) and the "
                f"stream no longer holds sequences {high + 1}..{info.state.first_seq - 1}: "
                "those events are lost to this journal; restore the journal from a backup",
                actor=actor,
            )
        log.warning(
            "journal behind the consumer's acknowledgements; re-reading from the stream",
            journal_seq=high,
            acked_seq=acked,
        )
    return await mailbox.ensure(high + 1)


async def ensure_dlq_stream(
    js: JetStreamContext, policy: ErrorPolicy, actor: str, *, replicas: int = 1
) -> None:
    """Make sure a stream stores the actor's dead-letter subject (create one if none does,
    with ``replicas``)."""
    subject = policy.dlq_subject(actor)
    try:
        await js.find_stream_name_by_subject(subject)
    except nats.js.errors.NotFoundError:
        name = policy.dlq_prefix.upper().replace(".", "_").replace("-", "_")
        try:
            await js.add_stream(
                name=name, subjects=[f"{policy.dlq_prefix}.>"], num_replicas=replicas
            )
        except nats.js.errors.APIError as exc:
            raise MailboxError(
                f"cannot create the dead-letter stream {name!r} for {subject!r}: {exc}",
                actor=actor,
            ) from exc
    except (nats.errors.Error, OSError) as exc:
        raise MailboxError(f"cannot reach JetStream: {exc!r}", actor=actor) from exc


async def ensure_streams(nc: NATS, *actors: type) -> dict[str, str]:
    """Create or update the JetStream streams these actor classes need, as a worker does on
    its first start: the stream that stores each actor's subjects (found, extended with
    subjects it lacks, or created) and its dead-letter stream. No consumer is created.

    Until a stream stores a subject, JetStream answers a publish to it with "no response
    from stream": publishers that may run before any worker call this first. Returns each
    actor's stream name; raises :class:`MailboxError` if JetStream refuses or is unreachable.
    """
    streams: dict[str, str] = {}
    for cls in actors:
        # A partitioned actor's partitions share its stream: the first one creates it.
        definition = definition_of(cls).units()[0]
        mailbox = mailbox_for(definition, nc, ack_wait=definition.ack_wait)
        await ensure_dlq_stream(nc.jetstream(), definition.errors, definition.name)
        streams[definition.actor] = await mailbox.resolve_stream()
    return streams

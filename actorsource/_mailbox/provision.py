"""Setting up a mailbox on the server: find or create its stream, (re-)create its consumer."""

from __future__ import annotations

from collections.abc import Sequence

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig, StreamInfo

from .._errors import MailboxError
from .streams import filter_on, streams_storing

__all__ = ["find_or_create_stream", "recreate_consumer", "setup_error"]


async def recreate_consumer(
    js: JetStreamContext,
    stream: str,
    *,
    durable: str,
    subjects: Sequence[str],
    ack_wait: float,
    max_ack_pending: int,
    start_seq: int,
) -> None:
    """Delete the durable consumer if it exists, and create it to deliver from ``start_seq``."""
    config = ConsumerConfig(
        durable_name=durable,
        # One ack per batch: acknowledging the last delivery of a batch acknowledges every
        # earlier one, and the runner handles deliveries strictly in order.
        ack_policy=AckPolicy.ALL,
        ack_wait=ack_wait,
        max_ack_pending=max_ack_pending,
        max_deliver=-1,
        max_waiting=64,
    )
    if start_seq > 1:
        config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
        config.opt_start_seq = start_seq
    else:
        config.deliver_policy = DeliverPolicy.ALL
    filter_on(config, subjects)
    try:
        await js.delete_consumer(stream, durable)
    except nats.js.errors.NotFoundError:
        pass
    await js.add_consumer(stream, config=config)


async def find_or_create_stream(
    js: JetStreamContext,
    *,
    durable: str,
    subjects: Sequence[str],
    stream: str | None,
    stream_subjects: Sequence[str],
    default_stream: str,
    replicas: int = 1,
) -> str:
    """The stream that stores ``subjects``: the named ``stream`` (created with
    ``stream_subjects`` if missing), else the one stream storing some of them (extended to
    the others), else a new ``default_stream``."""
    if stream is not None:
        try:
            _refuse_partitioned(await js.stream_info(stream), durable)
        except nats.js.errors.NotFoundError:
            await js.add_stream(
                StreamConfig(name=stream, subjects=list(stream_subjects), num_replicas=replicas)
            )
        return stream
    found, missing = await streams_storing(js, subjects)
    if len(found) > 1:
        raise MailboxError(
            f"the subjects of {durable!r} are stored in several streams {sorted(found)}: "
            "a consumer reads one stream; pass stream=... or split the actor",
            actor=durable,
        )
    if found:
        name = found.pop()
        info = await js.stream_info(name)
        _refuse_partitioned(info, durable)
        if missing:
            info.config.subjects = list(info.config.subjects or []) + missing
            await js.update_stream(info.config)
        return name
    await js.add_stream(
        StreamConfig(name=default_stream, subjects=list(subjects), num_replicas=replicas)
    )
    return default_stream


def _refuse_partitioned(info: StreamInfo, durable: str) -> None:
    # A partitioned actor's stream stores rewritten subjects (the partition token inserted),
    # which no other actor's filter would match: reading it would silently get nothing.
    transform = info.config.subject_transform
    if transform is not None and transform.dest:
        raise MailboxError(
            f"stream {info.config.name!r} is the partitioned stream of another actor (it "
            f"stores {transform.src!r} as {transform.dest!r}); {durable!r} cannot read it: "
            "give it a stream of its own with stream=...",
            actor=durable,
        )


def setup_error(
    what: str, exc: BaseException, *, durable: str, subjects: Sequence[str]
) -> MailboxError:
    """JetStream's refusal (with its description) or an unreachable server, as one error."""
    if isinstance(exc, nats.js.errors.APIError):
        return MailboxError(
            f"cannot set up {what} for subjects {list(subjects)}: {exc.description or exc}",
            actor=durable,
        )
    return MailboxError(f"cannot reach JetStream to set up {what}: {exc!r}", actor=durable)

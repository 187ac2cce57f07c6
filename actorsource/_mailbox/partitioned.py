"""The stream of a partitioned actor: its own, created with the partition transform.

A stream has one ``subject_transform`` and it rewrites the subjects it stores, so the
stream of a partitioned actor stores that actor's subject filter and nothing else: another
actor's filter would no longer match what is stored. The partition count is part of the
transform and fixed for the stream's life (changing it would move keys between partitions
under the feet of their journals): a stream found with another transform is refused, with
its name, and left as it is.
"""

from __future__ import annotations

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import StreamConfig, StreamInfo, SubjectTransform

from .._errors import MailboxError
from .._model.partitions import Partitioning

__all__ = ["check_partitioned_stream", "ensure_partitioned_stream", "partitioned_stream_config"]


def partitioned_stream_config(
    name: str, partitioning: Partitioning, *, replicas: int = 1
) -> StreamConfig:
    """The configuration a partitioned actor's stream is created with."""
    return StreamConfig(
        name=name,
        subjects=[partitioning.source],
        subject_transform=SubjectTransform(
            src=partitioning.source, dest=partitioning.destination()
        ),
        num_replicas=replicas,
    )


def check_partitioned_stream(info: StreamInfo, partitioning: Partitioning, *, actor: str) -> None:
    """Refuse (with :class:`MailboxError` naming the stream) a stream that is not exactly
    ``partitioning``'s: other subjects, no transform, another one, another count."""
    config = info.config
    name = config.name
    subjects = list(config.subjects or [])
    transform = config.subject_transform
    if subjects != [partitioning.source]:
        raise MailboxError(
            f"stream {name!r} stores {subjects}, but the stream of partitioned actor "
            f"{actor!r} must store its subject filter {partitioning.source!r} only (its "
            "subject transform rewrites every stored subject, so no other filter could "
            "read it): give the actor a stream of its own with stream=...",
            actor=actor,
        )
    if transform is None or not transform.dest:
        raise MailboxError(
            f"stream {name!r} exists without a partition transform; partitioned actor "
            f"{actor!r} needs a stream of its own: pass stream=... with a new name, or "
            f"move the stream away",
            actor=actor,
        )
    expected = partitioning.destination()
    if transform.src != partitioning.source or transform.dest != expected:
        raise MailboxError(
            f"stream {name!r} is partitioned as {transform.src!r} -> {transform.dest!r}, "
            f"but actor {actor!r} declares {partitioning.source!r} -> {expected!r}: the "
            "partitions of a stream are fixed for its life (a new count or key token "
            "needs a new stream)",
            actor=actor,
        )


async def ensure_partitioned_stream(
    js: JetStreamContext,
    stream: str,
    partitioning: Partitioning,
    *,
    actor: str,
    replicas: int = 1,
) -> StreamInfo:
    """Find or create ``stream`` as the partitioned stream of ``actor``.

    Refused with :class:`MailboxError` (nothing changed): the stream exists with another
    configuration (see :func:`check_partitioned_stream`), or another stream already stores
    the actor's subjects. Two workers creating it at once both end with the same stream.
    """
    try:
        try:
            info = await js.stream_info(stream)
        except nats.js.errors.NotFoundError:
            pass
        else:
            check_partitioned_stream(info, partitioning, actor=actor)
            return info
        try:
            other = await js.find_stream_name_by_subject(partitioning.source)
        except nats.js.errors.NotFoundError:
            other = None
        if other is not None and other != stream:
            raise MailboxError(
                f"the subjects {partitioning.source!r} of partitioned actor {actor!r} are "
                f"already stored in stream {other!r}; a partitioned actor needs a stream of "
                "its own: remove them from that stream first",
                actor=actor,
            )
        config = partitioned_stream_config(stream, partitioning, replicas=replicas)
        try:
            return await js.add_stream(config)
        except nats.js.errors.BadRequestError:
            # Created meanwhile by another worker: accepted if it is the same stream.
            info = await js.stream_info(stream)
            check_partitioned_stream(info, partitioning, actor=actor)
            return info
    except nats.js.errors.APIError as exc:
        raise MailboxError(
            f"cannot set up the partitioned stream {stream!r} of {actor!r}: "
            f"{exc.description or exc}",
            actor=actor,
        ) from exc
    except (nats.errors.Error, OSError) as exc:
        raise MailboxError(
            f"cannot reach JetStream to set up stream {stream!r}: {exc!r}", actor=actor
        ) from exc

"""Which JetStream stream stores a subject, and whether messages to it may be pipelined.

The outbox sends in order. Sending ahead of the acknowledgements (pipelining) keeps that
order only if JetStream cannot refuse one message while storing the next. A stream with the
default limits refuses nothing for what one message is (its size is checked against the
server's ``max_payload`` before it is ever journaled), but a stream with a ``max_msg_size``,
or with ``discard: new`` and any limit, may: messages to such a stream (and to a subject no
stream is known to store) are sent one at a time, each after the previous one's ack.

The stream list is read once and again, at most every ``refresh`` seconds, when a subject
matches no known stream (one may have been created meanwhile).

:func:`streams_storing` asks JetStream which streams store an actor's subjects, and
:func:`filter_on` points a consumer at them: the mailbox and the rebuild from a stream share both.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import anyio
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DiscardPolicy, StreamConfig

from .._model.subjects import subject_matches

__all__ = ["StreamMap", "filter_on", "streams_storing"]

_RETRY_AFTER_FAILURE = 60.0


async def streams_storing(
    js: JetStreamContext, subjects: Sequence[str]
) -> tuple[set[str], list[str]]:
    """The names of the streams that store ``subjects``, and the subjects no stream stores.

    Raises what JetStream raises (``nats.errors.Error``, ``OSError``) when it cannot answer.
    """
    found: set[str] = set()
    missing: list[str] = []
    for subject in subjects:
        try:
            found.add(await js.find_stream_name_by_subject(subject))
        except nats.js.errors.NotFoundError:
            missing.append(subject)
    return found, missing


def filter_on(config: ConsumerConfig, subjects: Sequence[str]) -> None:
    """Make the consumer of ``config`` deliver the messages of ``subjects`` only."""
    if len(subjects) == 1:
        config.filter_subject = subjects[0]
    else:
        config.filter_subjects = list(subjects)


@dataclass(frozen=True, slots=True)
class _Stream:
    name: str
    subjects: tuple[str, ...]
    pipelinable: bool


class StreamMap:
    """A cached map from subject to stream, for the outbox publisher."""

    def __init__(self, js: JetStreamContext, *, refresh: float = 1.0) -> None:
        self._js = js
        self._refresh = refresh
        self._streams: list[_Stream] = []
        self._loaded_at = -refresh
        self._cache: dict[str, _Stream | None] = {}

    async def pipelinable(self, subject: str) -> bool:
        """True if the stream storing ``subject`` never refuses a single message for itself."""
        stream = await self._find(subject)
        return stream is not None and stream.pipelinable

    def forget(self) -> None:
        """Read the stream list again at the next lookup (after a refusal, say)."""
        self._cache.clear()
        self._loaded_at = -self._refresh

    async def _find(self, subject: str) -> _Stream | None:
        if subject in self._cache:
            found = self._cache[subject]
            if found is not None or time.monotonic() - self._loaded_at < self._refresh:
                return found
        if time.monotonic() - self._loaded_at >= self._refresh:
            await self._load()
        found = next(
            (s for s in self._streams if any(subject_matches(p, subject) for p in s.subjects)),
            None,
        )
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[subject] = found
        return found

    async def _load(self) -> None:
        self._loaded_at = time.monotonic()
        streams: list[_Stream] = []
        try:
            with anyio.fail_after(2.0):
                offset = 0
                while True:
                    page = await self._js.streams_info(offset)
                    if not page:
                        break
                    streams.extend(_describe(info.config) for info in page)
                    offset += len(page)
        except (nats.errors.Error, OSError, TimeoutError):
            # Keep what was known (unknown subjects are sent one at a time) and do not ask
            # again for a while: without the permission to list streams, every attempt
            # would cost a timeout.
            self._loaded_at = time.monotonic() + _RETRY_AFTER_FAILURE
            return
        self._streams = streams
        self._cache.clear()


def _describe(config: StreamConfig) -> _Stream:
    limited = any(
        (limit or -1) > 0
        for limit in (
            config.max_msgs,
            config.max_bytes,
            config.max_msgs_per_subject,
        )
    )
    refuses_one = (config.max_msg_size or -1) > 0 or (
        config.discard == DiscardPolicy.NEW and limited
    )
    return _Stream(
        name=config.name or "",
        subjects=tuple(config.subjects or ()),
        pipelinable=not refuses_one,
    )

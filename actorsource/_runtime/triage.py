"""Triage of a batch: which deliveries are duplicates, dead letters, ignored or events.

Each delivery, in order, is recognised as a duplicate (a known stream sequence or message
id), refused (too large, no or unknown ``Event-Type``, undecodable: a dead letter, or
acknowledged silently when the policy ignores unknown types) or decoded and applied through
``apply``, which returns the events its handlers recorded (journaled right after it) and
the messages they published (outbox rows). In an entity actor each event is given its
entity key first (``key``); a message without one is a dead letter (``no-entity-key``).
The first handler that raises stops the triage
there: that delivery and the ones after it are neither journaled nor acknowledged by this
batch.

With ``tracing`` (:mod:`.tracing`, only when tracing is on), each delivery with a sampled
trace context is noted with its outcome and collected in :attr:`Triage.traced`, and the
context a delivery passes on is set for what its handlers publish (``OUTBOUND_TRACE``);
without, one ``is None`` per delivery is all it costs.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from .._errors import EntityKeyError, EventCodecError, UnknownEventTypeError
from .._journal.entity_store import NewEntitySnapshot
from .._journal.journal import DeadLetter, JournalBatch, NewSnapshot, OutboxMessage
from .._mailbox.mailbox import Delivery
from .._model.effects import OUTBOUND_TRACE, Effects
from .._model.events import EventCodec, JournalEntry
from .._model.headers import EVENT_TYPE_HEADER, MSG_ID_HEADER, missing_header, version_header
from .._model.keys import KeyOf
from .._model.policy import ErrorPolicy
from .committer import CommitJob
from .deadletters import dead_letter

if TYPE_CHECKING:
    from .tracing import Traced, Tracing

__all__ = ["Failure", "PlainStep", "Triage", "triage"]

#: Applies a plain step's handler to the entry's entity if resident (entity actors).
ResidentStep = Callable[[JournalEntry, Callable[..., Any], object], bool]

#: A synchronous handler without a context: (decode, bound handler, current version).
PlainStep = tuple[Callable[[bytes], Any], Callable[[Any], object], int]


@dataclass
class Failure:
    """A handler that failed on one delivery: what to retry."""

    index: int
    delivery: Delivery
    event: object
    entry: JournalEntry
    error: BaseException
    traced: Traced | None = None
    #: The trace context its handlers pass on (tracing on only), for the retries.
    outbound: Mapping[str, str] | None = None


@dataclass
class Triage:
    """The outcome for ``deliveries[start:end]``, and the cursor after them."""

    pos: int
    top: int
    end: int
    entries: list[JournalEntry] = field(default_factory=list)
    outbox: list[OutboxMessage] = field(default_factory=list)
    to_ack: list[Delivery] = field(default_factory=list)
    dead: list[tuple[Delivery, DeadLetter]] = field(default_factory=list)
    duplicates: int = 0
    ignored: int = 0
    failure: Failure | None = None
    traced: list[Traced] = field(default_factory=list)

    def to_job(
        self,
        deliveries: list[Delivery],
        *,
        stream: str,
        high: int,
        dlq: Callable[[DeadLetter], OutboxMessage],
        snapshot: NewSnapshot | None = None,
        entity_snapshots: list[NewEntitySnapshot] | None = None,
    ) -> CommitJob:
        """What to commit and acknowledge for ``deliveries`` (those this outcome covers):
        the entries, the stream position if it moved past ``high``, the dead letters with
        their messages to the DLQ subject (``dlq``), the outbox, and maybe a snapshot (or
        entity snapshots)."""
        batch = JournalBatch(
            entries=self.entries,
            positions={stream: self.top} if self.top > high else {},
            dead_letters=[dl for _, dl in self.dead],
            outbox=[*self.outbox, *(dlq(dl) for _, dl in self.dead)],
            snapshot=snapshot,
            entity_snapshots=entity_snapshots or [],
        )
        return CommitJob(
            batch=batch,
            deliveries=deliveries,
            to_ack=self.to_ack,
            dead=self.dead,
            traced=self.traced,
        )


async def triage(
    deliveries: list[Delivery],
    start: int,
    *,
    high: int,
    pos: int,
    known_seqs: set[int],
    known_ids: set[str],
    policy: ErrorPolicy,
    codec: EventCodec,
    apply: Callable[[object, JournalEntry], Awaitable[Effects | None]],
    plain: Mapping[str, PlainStep] | None = None,
    key: KeyOf | None = None,
    tracing: Tracing | None = None,
    resident: ResidentStep | None = None,
) -> Triage:
    """Sort ``deliveries[start:]`` in order, applying events through ``apply``.

    ``high`` is the highest stream sequence handled before, ``pos`` the last journal
    position assigned; ``known_seqs``/``known_ids`` are what the journal already holds.
    ``plain`` (by type name: decoder, bound handler, current version) is the short way for
    synchronous handlers without a context: decoded and called here, with nothing to
    collect, instead of through ``apply``. ``key`` (entity actors only) gives each event
    its entity key; there, ``plain`` holds the handlers unbound and ``resident(entry,
    handler, event)`` applies one to its entity when that is in memory (False when not:
    ``apply`` loads it). ``tracing``: see the module's docstring.
    """
    out = Triage(pos=pos, top=high, end=len(deliveries))
    seen_seqs: set[int] = set()
    now = time.time()
    plain_get = (plain or {}).get
    # Spans only where something records them (an SDK): the API alone passes contexts on.
    spans = tracing if tracing is not None and tracing.recording() else None
    entries, to_ack = out.entries, out.to_ack
    top = high
    max_payload = policy.max_payload
    for index in range(start, len(deliveries)):
        d = deliveries[index]
        seq = d.stream_seq
        headers = d.headers or {}
        traced = None
        if spans is not None:
            traced = spans.begin(d, headers)
            if traced is not None:
                out.traced.append(traced)
        msg_id = headers.get(MSG_ID_HEADER)
        # Every sequence seen in this batch is at most ``top``: a greater one is not.
        if (
            seq in known_seqs
            or (seq <= top and seq in seen_seqs)
            or (msg_id is not None and msg_id in known_ids)
        ):
            out.duplicates += 1
            if traced is not None:
                traced.note("duplicate")
            to_ack.append(d)
            top = max(top, seq)
            continue
        seen_seqs.add(seq)
        type_name = headers.get(EVENT_TYPE_HEADER)
        usual = 1 if msg_id is None else 2
        data = d.data
        if len(data) > max_payload:
            error: BaseException = EventCodecError(
                f"payload of {len(data)} bytes exceeds max_payload {max_payload}"
            )
            out.dead.append((d, dead_letter(d, type_name, "too-large", error, now)))
            top = max(top, seq)
            if traced is not None:
                traced.note("dead-letter")
            continue
        step = plain_get(type_name) if type_name is not None else None
        try:
            if type_name is None:
                raise EventCodecError(missing_header(headers, EVENT_TYPE_HEADER))
            # Only the type and the id (the usual headers): version 1, nothing to look for.
            version = 1 if len(headers) == usual else version_header(headers)
            if step is not None and version == step[2]:
                try:
                    event = step[0](data)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    event = codec.decode(type_name, data, version)  # raises, with the reason
            else:
                step = None
                event = codec.decode(type_name, data, version)
        except EventCodecError as exc:
            top = max(top, seq)
            if isinstance(exc, UnknownEventTypeError) and policy.on_unknown == "ignore":
                out.ignored += 1
                to_ack.append(d)
                if traced is not None:
                    traced.note("ignored")
                continue
            reason = "unknown-type" if isinstance(exc, UnknownEventTypeError) else "undecodable"
            out.dead.append((d, dead_letter(d, type_name, reason, exc, now)))
            if traced is not None:
                traced.note("dead-letter")
            continue
        entity = None
        if key is not None:
            try:
                entity = key(d.subject, event)
            except EntityKeyError as exc:
                top = max(top, seq)
                out.dead.append((d, dead_letter(d, type_name, "no-entity-key", exc, now)))
                if traced is not None:
                    traced.note("dead-letter")
                continue
        entry = JournalEntry(
            out.pos + 1, d.subject, type_name, data, now, d.stream, seq, msg_id, headers,
            version=version, entity=entity,
        )  # fmt: skip
        outbound = None
        try:
            if step is not None:
                effects = None
                if resident is None:
                    step[1](event)
                elif not resident(entry, step[1], event):
                    effects = await apply(event, entry)  # loads the entity first
            elif tracing is None or (outbound := tracing.outbound(traced, headers)) is None:
                effects = await apply(event, entry)
            else:
                token = OUTBOUND_TRACE.set(outbound)
                try:
                    effects = await apply(event, entry)
                finally:
                    OUTBOUND_TRACE.reset(token)
        except Exception as exc:
            # Not journaled, not acknowledged, not part of ``top``: if the process dies
            # from here on, the next start delivers this message again.
            seen_seqs.discard(seq)
            if traced is not None:
                out.traced.pop()  # the retry's outcome goes with the delivery
                traced.failed(exc)
            out.failure = Failure(index, d, event, entry, exc, traced, outbound)
            out.end = index
            break
        if seq > top:
            top = seq
        out.pos += 1
        entries.append(entry)
        if traced is not None:
            traced.note("applied", entry.pos)
        if effects is not None:
            out.pos += len(effects.entries)
            entries.extend(effects.entries)
            out.outbox.extend(effects.outbox)
        to_ack.append(d)
        if msg_id is not None:
            known_ids.add(msg_id)
    out.top = top
    return out

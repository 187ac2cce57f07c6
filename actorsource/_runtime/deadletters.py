"""Dead letters: the record of a refused message, and the message that announces it."""

from __future__ import annotations

from .._journal.journal import DeadLetter, OutboxMessage
from .._mailbox.mailbox import Delivery
from .._model.headers import EVENT_TYPE_HEADER, MSG_ID_HEADER
from .._model.policy import ErrorPolicy

__all__ = ["dead_letter", "dlq_message"]

DLQ_PAYLOAD_LIMIT = 64 * 1024


def dead_letter(
    d: Delivery, type_name: str | None, reason: str, exc: BaseException, now: float
) -> DeadLetter:
    """The journal record of a refused delivery: raw bytes, headers, reason and error."""
    return DeadLetter(
        subject=d.subject,
        payload=d.data,
        reason=reason,
        error=f"{type(exc).__name__}: {exc}",
        type=type_name,
        stream=d.stream,
        stream_seq=d.stream_seq,
        msg_id=(d.headers or {}).get(MSG_ID_HEADER),
        headers=d.headers,
        at=now,
    )


def _header_value(text: str, limit: int = 1_000) -> str:
    # Header values cannot hold line breaks; keep them short enough for any server limit.
    return " ".join(text.split())[:limit]


def dlq_message(actor: str, policy: ErrorPolicy, dl: DeadLetter) -> OutboxMessage:
    """The outbox message that publishes ``dl`` on the actor's dead-letter subject.

    Its ``Nats-Msg-Id`` is derived from the actor and the stream position, so publishing it
    again after a crash is deduplicated. Payloads over 64 KiB are truncated on the wire
    (``Actorsource-Dlq-Truncated`` gives the full size); the journal keeps every byte.
    """
    headers = {k: v for k, v in (dl.headers or {}).items() if k != MSG_ID_HEADER}
    if dl.type is not None:
        headers.setdefault(EVENT_TYPE_HEADER, dl.type)
    headers.update(
        {
            "Actorsource-Dlq-Actor": actor,
            "Actorsource-Dlq-Reason": dl.reason,
            "Actorsource-Dlq-Error": _header_value(dl.error),
            "Actorsource-Dlq-Subject": dl.subject,
            "Actorsource-Dlq-Stream": dl.stream or "",
            "Actorsource-Dlq-Seq": str(dl.stream_seq or 0),
        }
    )
    if dl.msg_id:
        headers["Actorsource-Dlq-Msg-Id"] = dl.msg_id
    payload = dl.payload
    if len(payload) > DLQ_PAYLOAD_LIMIT:
        headers["Actorsource-Dlq-Truncated"] = str(len(payload))
        payload = payload[:DLQ_PAYLOAD_LIMIT]
    return OutboxMessage(
        subject=policy.dlq_subject(actor),
        msg_id=f"dlq.{actor}.{dl.stream}.{dl.stream_seq}",
        payload=payload,
        headers=headers,
    )

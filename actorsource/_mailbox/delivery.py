"""What a consumer delivers: one message with its position, read from its ack subject."""

from __future__ import annotations

from dataclasses import dataclass

from .._errors import MailboxError

__all__ = ["ConsumerGone", "Delivery", "parse_ack_subject"]


class ConsumerGone(MailboxError):
    """The durable consumer vanished under a running mailbox (deleted, or no responders)."""


@dataclass(slots=True)
class Delivery:
    """One message as delivered by the consumer, with its stream position parsed out."""

    subject: str
    data: bytes
    headers: dict[str, str] | None
    reply: str
    stream: str
    stream_seq: int
    delivered: int
    timestamp_ns: int


def parse_ack_subject(reply: str) -> tuple[str, int, int, int, int]:
    """Parse ``(stream, stream_seq, delivered, timestamp_ns, consumer_seq)`` from a
    JetStream ack subject (the consumer sequence counts deliveries, redeliveries too).

    Handles both the v1 form ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>``
    and the v2 form with domain and account hash tokens after ``$JS.ACK``.
    """
    tokens = reply.split(".")
    n = len(tokens)
    if n == 9 and tokens[1] == "ACK" and tokens[0] == "$JS":  # the usual form, first
        return tokens[2], int(tokens[5]), int(tokens[4]), int(tokens[7]), int(tokens[6])
    if n == 9:
        base = 2
    elif n >= 11:
        base = 4
    else:
        raise MailboxError(f"not a JetStream ack subject: {reply!r}")
    if tokens[0] != "$JS" or tokens[1] != "ACK":
        raise MailboxError(f"not a JetStream ack subject: {reply!r}")
    return (
        tokens[base],
        int(tokens[base + 3]),
        int(tokens[base + 2]),
        int(tokens[base + 5]),
        int(tokens[base + 4]),
    )

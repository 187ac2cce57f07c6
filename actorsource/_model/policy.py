"""What an actor does with input it cannot apply: the error policy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .._errors import ActorDefinitionError
from .subjects import validate_subject

__all__ = ["DEFAULT_DLQ_PREFIX", "ErrorPolicy"]

DEFAULT_DLQ_PREFIX = "actorsource.dlq"


@dataclass(frozen=True, slots=True)
class ErrorPolicy:
    """How an actor treats bad input and failing handlers.

    - An undecodable payload, a payload over ``max_payload`` bytes, or a message without a
      known ``Event-Type`` is dead-lettered at once (``on_unknown="ignore"`` acknowledges
      unknown types silently instead; they are counted, not journaled).
    - A handler that raises (or, if it is ``async``, runs past ``handler_timeout`` seconds)
      is retried in place up to ``retries`` times, ``backoff`` seconds apart, doubling up to
      ``max_backoff``; the state is rebuilt from the journal before each attempt, so a failed
      attempt leaves nothing behind. Then the message is dead-lettered. Retrying in place
      rather than NAK-ing keeps the fold in stream order: later events never overtake it.
    - A dead letter is recorded in the journal with the raw bytes and the reason, published
      to ``<dlq_prefix>.<actor>`` (JetStream, deduplicated by message id) with the reason
      in headers, and the original message is terminated.
    """

    retries: int = 3
    backoff: float = 0.2
    max_backoff: float = 5.0
    handler_timeout: float | None = 30.0
    max_payload: int = 1024 * 1024
    on_unknown: Literal["dead-letter", "ignore"] = "dead-letter"
    dlq_prefix: str = DEFAULT_DLQ_PREFIX

    def __post_init__(self) -> None:
        if not isinstance(self.retries, int) or self.retries < 0:
            raise ActorDefinitionError(
                f"ErrorPolicy.retries must be an int >= 0, got {self.retries!r}"
            )
        if not self.backoff >= 0 or not self.max_backoff >= self.backoff:
            raise ActorDefinitionError("ErrorPolicy needs 0 <= backoff <= max_backoff")
        if self.handler_timeout is not None and not self.handler_timeout > 0:
            raise ActorDefinitionError("ErrorPolicy.handler_timeout must be > 0 seconds or None")
        if not isinstance(self.max_payload, int) or self.max_payload < 1:
            raise ActorDefinitionError("ErrorPolicy.max_payload must be a positive int (bytes)")
        if self.on_unknown not in ("dead-letter", "ignore"):
            raise ActorDefinitionError("ErrorPolicy.on_unknown must be 'dead-letter' or 'ignore'")
        validate_subject(self.dlq_prefix, wildcards=False)

    def delay(self, attempt: int) -> float:
        """The pause before retry number ``attempt`` (1-based)."""
        return float(min(self.backoff * 2 ** (attempt - 1), self.max_backoff))

    def dlq_subject(self, actor: str) -> str:
        """The subject dead letters of ``actor`` are published on."""
        return f"{self.dlq_prefix}.{actor}"

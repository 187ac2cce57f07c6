"""What a query and its reply look like on NATS: subjects, request, answer, error.

**Subjects.** A query to actor ``A`` named ``q`` goes to ``actorsource.query.A.q``; a query to
an entity adds its key as the last token, ``actorsource.query.A.q.<key>``, when the key can
stand as a subject token (always so for an entity keyed by a subject token). The worker
hosting ``A`` serves ``actorsource.query.A.>``. The request body holds the key as well, and it
is the body's key that is answered: the token is there for routing.

**Partitioned actors.** Partition *k* of ``A`` answers as ``A-p<k>``, on
``actorsource.query.A-p<k>.>``. ``actorsource.query.A.>`` answers every query with the
fault ``partitioned`` (details: ``partitions``, the count P): the client then computes the
key's partition as the stream's transform does (:func:`partition_of_key`, FNV-1a-32 mod P),
remembers P, and asks ``A-p<k>`` directly from then on.

**Request** (:class:`QueryRequest`): the key, the arguments, ``after_seq`` and the timeout
the caller waits (the worker answers a little before it). **Answer**
(:class:`QueryAnswer`): the result and the journal position and stream sequence the state
reflected. **Error**: the micro service error headers (``Nats-Service-Error-Code``: an HTTP-like
status) and a :class:`QueryFault` body whose ``code`` names the :class:`QueryError` subclass.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .._errors import QUERY_ERRORS, QueryError
from .partitions import fnv1a_32
from .subjects import _BAD_TOKEN_CHARS

__all__ = [
    "PARTITIONED",
    "QUERY_PREFIX",
    "STATUS_OF",
    "QueryAnswer",
    "QueryFault",
    "QueryRequest",
    "endpoint_subject",
    "error_from",
    "fault_of",
    "partition_of_key",
    "query_subject",
]

#: The first two tokens of every query subject.
QUERY_PREFIX = "actorsource.query"

#: The ``Nats-Service-Error-Code`` of each error code (HTTP-like, as micro tools show them).
STATUS_OF = {
    "unknown-actor": "404",
    "unknown-query": "404",
    "no-such-entity": "404",
    "bad-arguments": "400",
    "seq-beyond-stream": "400",
    "query-failed": "500",
    "mutated-state": "500",
    "not-running": "503",
    "timeout": "504",
    "partitioned": "421",
}

#: The fault code of an actor's own query subject when it is partitioned (see above).
PARTITIONED = "partitioned"


def partition_of_key(key: str, partitions: int) -> int:
    """The partition whose worker answers for ``key``: the one its messages are stored in."""
    return fnv1a_32(key.encode()) % partitions


def _is_token(key: str) -> bool:
    return bool(key) and not any(c in _BAD_TOKEN_CHARS for c in key)


def query_subject(actor: str, name: str, key: str | None = None) -> str:
    """The subject a query is sent on (the key as last token when it can be one)."""
    subject = f"{QUERY_PREFIX}.{actor}.{name}"
    if key is not None and _is_token(key):
        subject = f"{subject}.{key}"
    return subject


def endpoint_subject(actor: str) -> str:
    """The subject the worker hosting ``actor`` serves its queries on."""
    return f"{QUERY_PREFIX}.{actor}.>"


class QueryRequest(msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """A query's body: which entity, its arguments, the stream sequence to wait for."""

    key: str | None = None
    args: dict[str, Any] = msgspec.field(default_factory=dict)
    after_seq: int | None = None
    timeout: float = 2.0


class QueryAnswer(msgspec.Struct, kw_only=True, frozen=True):
    """The answer to a query, as :func:`actorsource.ask` returns it.

    ``value`` is the query's result decoded from JSON (a dict for a dataclass or Struct).
    The state it was computed on was exactly the fold of the journal up to position ``pos``,
    which holds the actor's stream ``stream`` up to sequence ``stream_seq``: nothing that was
    not committed (and could be lost in a crash) is ever reflected.
    """

    actor: str
    query: str
    value: Any
    pos: int
    stream: str | None = None
    stream_seq: int = 0
    key: str | None = None


class QueryFault(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """The body of an error reply: the machine-readable ``code`` and a one-line message."""

    code: str
    message: str
    actor: str | None = None
    query: str | None = None
    key: str | None = None
    details: dict[str, Any] = msgspec.field(default_factory=dict)


def fault_of(error: QueryError) -> QueryFault:
    """The reply body for ``error``."""
    return QueryFault(
        code=error.code,
        message=str(error),
        actor=error.actor,
        query=error.query,
        key=error.key,
        details={k: v for k, v in error.details.items() if _plain(v)},
    )


def _plain(value: object) -> bool:
    return value is None or isinstance(value, str | int | float | bool | list | dict)


def error_from(fault: QueryFault) -> QueryError:
    """The :class:`QueryError` subclass an error reply stands for."""
    kind = QUERY_ERRORS.get(fault.code, QueryError)
    error = kind(
        fault.message, actor=fault.actor, query=fault.query, key=fault.key, details=fault.details
    )
    if kind is QueryError:
        error.code = fault.code
    return error

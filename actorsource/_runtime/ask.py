"""Asking a running actor a query over NATS: :func:`ask`."""

from __future__ import annotations

from typing import Any

import msgspec
import nats.errors
from nats.aio.client import Client as NATS

from .._errors import (
    InvalidNameError,
    NatsConnectionError,
    QueryArgumentsError,
    QueryError,
    QueryTimeoutError,
    UnknownActorError,
)
from .._model.query_wire import (
    QueryAnswer,
    QueryFault,
    QueryRequest,
    error_from,
    query_subject,
)
from .._model.subjects import validate_name

__all__ = ["ask"]

_ERROR_CODE_HEADER = "Nats-Service-Error-Code"
_ERROR_HEADER = "Nats-Service-Error"
_decode_answer = msgspec.json.Decoder(QueryAnswer).decode
_decode_fault = msgspec.json.Decoder(QueryFault).decode


async def ask(
    nc: NATS,
    actor: str,
    name: str,
    /,
    *,
    key: str | None = None,
    after_seq: int | None = None,
    timeout: float = 2.0,
    **args: Any,
) -> QueryAnswer:
    """Ask the running actor ``actor`` its query ``name``; returns the :class:`QueryAnswer`
    (its ``value``, and the journal position and stream sequence the state reflected).

    ``key`` names the entity of an entity actor. ``after_seq`` (a sequence of the actor's
    stream, e.g. ``PubAck.seq`` of your own publish) makes the answer include every message
    of the actor's subjects up to it (read-your-writes). ``args`` are the query's arguments,
    sent as JSON. Every failure raises a :class:`QueryError` whose ``code`` says why:
    ``unknown-actor`` (no worker hosts it), ``unknown-query``, ``no-such-entity``,
    ``bad-arguments``, ``seq-beyond-stream``, ``query-failed``, ``not-running``, ``timeout``.
    """
    try:
        validate_name(actor)
    except InvalidNameError as exc:
        raise QueryArgumentsError(str(exc), actor=actor, query=name) from None
    if not isinstance(name, str) or not name.isidentifier():
        raise QueryArgumentsError(f"invalid query name {name!r}", actor=actor, query=name)
    if key is not None and (not isinstance(key, str) or not key):
        raise QueryArgumentsError(f"key must be a non-empty str, got {key!r}", actor=actor)
    if after_seq is not None and (
        isinstance(after_seq, bool) or not isinstance(after_seq, int) or after_seq < 1
    ):
        raise QueryArgumentsError(f"after_seq must be an int >= 1, got {after_seq!r}", actor=actor)
    if not timeout > 0:
        raise QueryArgumentsError(f"timeout must be > 0 seconds, got {timeout!r}", actor=actor)
    try:
        body = msgspec.json.encode(
            QueryRequest(key=key, args=args, after_seq=after_seq, timeout=float(timeout))
        )
    except (TypeError, msgspec.EncodeError) as exc:
        raise QueryArgumentsError(
            f"the arguments of query {name!r} do not encode to JSON: {exc}", actor=actor, query=name
        ) from None
    subject = query_subject(actor, name, key)
    try:
        msg = await nc.request(subject, body, timeout=timeout)
    except nats.errors.NoRespondersError:
        raise UnknownActorError(
            f"no running worker hosts actor {actor!r} (nothing answers on {subject})",
            actor=actor,
            query=name,
            key=key,
        ) from None
    except nats.errors.TimeoutError:
        raise QueryTimeoutError(
            f"no answer from actor {actor!r} to query {name!r} within {timeout:.3g} s",
            actor=actor,
            query=name,
            key=key,
        ) from None
    except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError) as exc:
        raise NatsConnectionError(f"cannot ask {actor!r}: {exc}", actor=actor) from exc
    headers = msg.headers or {}
    if _ERROR_CODE_HEADER in headers:
        try:
            fault = _decode_fault(msg.data)
        except msgspec.DecodeError:
            error = QueryError(
                f"actor {actor!r} failed to answer {name!r}: {headers.get(_ERROR_HEADER)}",
                actor=actor,
                query=name,
                key=key,
            )
            error.code = headers[_ERROR_CODE_HEADER]
            raise error from None
        raise error_from(fault)
    return _decode_answer(msg.data)

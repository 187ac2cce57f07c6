"""Asking a running actor a query over NATS: :func:`ask`."""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from typing import Any

import anyio
import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from .._errors import (
    InvalidNameError,
    NatsConnectionError,
    QueryArgumentsError,
    QueryError,
    QueryNotRunningError,
    QueryTimeoutError,
    UnknownActorError,
)
from .._model.partitions import partition_name
from .._model.query_wire import (
    PARTITIONED,
    QueryAnswer,
    QueryFault,
    QueryRequest,
    error_from,
    partition_of_key,
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

    A partitioned actor is asked by ``key`` (its subjects' key token): the query goes to
    the worker that owns the key's partition (the first query of a connection to the actor
    learns the partition count, see :mod:`actorsource._model.query_wire`). While that
    partition has no owner serving it (moving between workers), the query is asked again
    until ``timeout``; a worker whose ownership ended never answers it. In cluster mode an
    actor without partitions is one partition (its count is 1), asked without a key
    (unless it is an entity) and alike: only its owner answers, asked again while it moves.
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
    deadline = time.monotonic() + timeout

    def body(left: float) -> bytes:
        try:
            return msgspec.json.encode(
                QueryRequest(key=key, args=args, after_seq=after_seq, timeout=float(left))
            )
        except (TypeError, msgspec.EncodeError) as exc:
            raise QueryArgumentsError(
                f"the arguments of query {name!r} do not encode to JSON: {exc}",
                actor=actor,
                query=name,
            ) from None

    partitions = _learnt(nc).get(actor)
    if partitions is None:
        subject = query_subject(actor, name, key)
        msg = await _request(nc, subject, body(timeout), timeout, actor, name, key)
        fault = _fault_of(msg, actor, name, key)
        if fault is None:
            return _decode_answer(msg.data)
        if fault.code != PARTITIONED:
            raise error_from(fault)
        partitions = int(fault.details.get("partitions", 0))
        if partitions < 1:
            raise error_from(fault)
        _learnt(nc)[actor] = partitions
    if key is None and partitions > 1:
        raise QueryArgumentsError(
            f"actor {actor!r} has {partitions} partitions: give key= (the key token of its "
            f"subjects, which picks the partition), or ask one partition by name "
            f"('{partition_name(actor, 0)}')",
            actor=actor,
            query=name,
        )
    part = partition_name(actor, 0 if key is None else partition_of_key(key, partitions))
    return await _ask_owner(nc, actor, part, name, key, body, deadline)


#: What each connection learnt: the partition count of each partitioned actor it asked
#: (fixed for the stream's life; 1: an unpartitioned actor run in cluster mode).
_LEARNT: weakref.WeakKeyDictionary[NATS, dict[str, int]] = weakref.WeakKeyDictionary()


def _learnt(nc: NATS) -> dict[str, int]:
    known = _LEARNT.get(nc)
    if known is None:
        known = _LEARNT[nc] = {}
    return known


async def _ask_owner(
    nc: NATS,
    actor: str,
    part: str,
    name: str,
    key: str | None,
    body: Callable[[float], bytes],
    deadline: float,
) -> QueryAnswer:
    """Ask the partition ``part`` (the key's), whose owner alone serves it. While nobody
    does (it is moving, or its owner just stopped serving it: fenced, lease run out,
    stopping), ask again until ``deadline``; then raise the last ``not-running``."""
    subject = query_subject(part, name, key)
    delay = 0.02
    began = time.monotonic()
    while True:
        left = deadline - time.monotonic()
        try:
            # The owner is told the whole time left; the wait for its reply is cut into
            # attempts, so that a request an owner took in just as it stopped (and will
            # never answer) is asked again of whoever serves the partition next.
            wait = min(left, _ATTEMPT)
            msg = await _request(nc, subject, body(left), wait, actor, name, key)
        except QueryTimeoutError:
            if deadline - time.monotonic() <= _RETRY_MIN:
                raise QueryTimeoutError(
                    f"no answer from actor {actor!r} to query {name!r} within "
                    f"{deadline - began:.3g} s",
                    actor=actor,
                    query=name,
                    key=key,
                ) from None
            continue
        except UnknownActorError:
            last: QueryError = QueryNotRunningError(
                f"no worker serves partition {part!r} of actor {actor!r} (it may be moving): "
                f"it cannot answer {name!r} now",
                actor=actor,
                query=name,
                key=key,
            )
        else:
            fault = _fault_of(msg, actor, name, key)
            if fault is None:
                return _decode_answer(msg.data)
            last = error_from(fault)
            if not isinstance(last, QueryNotRunningError):
                raise last
        left = deadline - time.monotonic()
        if left <= _RETRY_MIN:
            raise last
        await anyio.sleep(min(delay, left - _RETRY_MIN))
        delay = min(delay * 2, 0.25)


#: The least time left worth another attempt at a partition.
_RETRY_MIN = 0.01

#: The longest wait for one attempt's reply from a partition's owner (see _ask_owner).
_ATTEMPT = 2.0


async def _request(
    nc: NATS, subject: str, body: bytes, timeout: float, actor: str, name: str, key: str | None
) -> Msg:
    try:
        return await nc.request(subject, body, timeout=timeout)
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


def _fault_of(msg: Msg, actor: str, name: str, key: str | None) -> QueryFault | None:
    """The error reply's fault (None: an answer)."""
    headers = msg.headers or {}
    if _ERROR_CODE_HEADER not in headers:
        return None
    try:
        return _decode_fault(msg.data)
    except msgspec.DecodeError:
        return QueryFault(
            code=headers[_ERROR_CODE_HEADER],
            message=f"actor {actor!r} failed to answer {name!r}: {headers.get(_ERROR_HEADER)}",
            actor=actor,
            query=name,
            key=key,
        )

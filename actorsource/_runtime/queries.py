"""Queries answered on the actor's own loop, on committed state only.

A query (:mod:`actorsource._model.query`) is checked and its arguments converted where it
arrives (:meth:`QueryDesk.prepare`), then handed to the actor's loop: the queries asked
while the loop is busy join one :class:`~.control.AnswerQueries` request (one waits in
the control channel at most), so a burst of queries costs the loop one stop, not one each.

**Committed only.** When the loop answers it first waits for the commit in flight
(``pipeline.settle()``): the state is then exactly the fold of the journal, with nothing
applied that a crash could still undo, and each answer carries the journal position and
the stream sequence it reflects; if that commit fails (or the actor is killed while the
queries wait), they are answered :class:`QueryNotRunningError` at once, never from a state
the journal does not hold. Until that commit returns the loop applies nothing more,
which costs consumption only when mail is waiting: then the loop stops for queries at
most once per :data:`STOP_GAP` seconds and otherwise hands them on behind the next batch
(at most ``STOP_GAP`` plus a batch and a commit later). With no mail waiting, or no
commit in flight, they are answered at once.

**Entities.** A query on an entity that is not resident loads it from its snapshot and
committed rows, and does *not* make it resident: reads must not push out the entities
that events are being applied to (whose passivation would cost a snapshot each), and a
reader that scans many entities would otherwise churn the residency. An entity with no
events is :class:`NoSuchEntityError`: no default state is invented.

**Read-only.** Python cannot stop a method from changing ``self``. With ``check_read_only``
(the test kit sets it) the state's encoding is compared before and after each query, and
one that changed it is answered with :class:`QueryMutatedStateError` and reported to
``on_violation``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import msgspec
import structlog

from .._errors import (
    ActorNotRunning,
    NoSuchEntityError,
    QueryArgumentsError,
    QueryError,
    QueryFailedError,
    QueryMutatedStateError,
    QueryNotRunningError,
    QueryTimeoutError,
    SnapshotError,
    UnknownQueryError,
)
from .._model.actor import ActorDefinition
from .._model.query import Query, encode_result
from .._model.query_wire import QueryAnswer
from .control import AnswerQueries, Control

__all__ = ["STOP_GAP", "PendingQuery", "QueryDesk", "ReflectedPosition"]

#: While mail is waiting, the loop waits for a commit to answer queries at most once per
#: this many seconds (each such wait costs consumption the rest of a commit's time).
STOP_GAP = 0.025


@dataclass(eq=False)
class PendingQuery:
    """One query on its way to the loop: what to call, and then its encoded answer."""

    query: Query
    key: str | None
    args: dict[str, Any]
    answer: bytes | None = None
    error: QueryError | None = None
    abandoned: bool = False
    done: anyio.Event = field(default_factory=anyio.Event, repr=False)

    def fail(self, why: BaseException) -> None:
        """The actor stopped before answering (the request failed with ``why``)."""
        if not self.done.is_set():
            self.error = QueryNotRunningError(
                f"the actor stopped before answering: {why}", query=self.query.name, key=self.key
            )
            self.done.set()


@dataclass(frozen=True, slots=True)
class ReflectedPosition:
    """Where the journal is when queries are answered: what their answers reflect."""

    pos: int
    stream: str | None
    stream_seq: int


class QueryDesk:
    """The queries of one actor: checked on arrival, answered by its loop, read-only checked."""

    def __init__(
        self,
        definition: ActorDefinition,
        control: Control,
        *,
        log: structlog.stdlib.BoundLogger,
        check_read_only: bool = False,
        on_violation: Callable[[str], None] | None = None,
    ) -> None:
        self.definition = definition
        self._control = control
        self._log = log
        self._check = check_read_only
        self._on_violation = on_violation
        self._open: AnswerQueries | None = None
        self._last_stop = 0.0
        self._bell = anyio.Event()
        #: Queries answered (with a result or an error) since start.
        self.answered = 0

    # -- commits -----------------------------------------------------------------------------

    def committed(self) -> None:
        """A commit returned: wake whoever waits for the journal to move (read-your-writes)."""
        self._bell.set()
        self._bell = anyio.Event()

    def next_commit(self) -> anyio.Event:
        """An event set at the next commit (take it before looking at the journal)."""
        return self._bell

    # -- where a query arrives ---------------------------------------------------------------

    def prepare(self, name: str, key: str | None, args: Mapping[str, Any]) -> PendingQuery:
        """Check a query against the actor's declaration and convert its arguments; raises
        :class:`UnknownQueryError` or :class:`QueryArgumentsError` saying what is wrong."""
        definition = self.definition
        actor = definition.name
        spec = definition.queries.get(name)
        if spec is None:
            known = ", ".join(sorted(definition.queries)) or "none"
            raise UnknownQueryError(
                f"actor {actor!r} has no query {name!r} (its queries: {known})",
                actor=actor,
                query=name,
                key=key,
            )
        if definition.entity is not None and not key:
            raise QueryArgumentsError(
                f"actor {actor!r} is an entity actor: say which entity (a key)",
                actor=actor,
                query=name,
            )
        if definition.entity is None and key is not None:
            raise QueryArgumentsError(
                f"actor {actor!r} is a singleton: a query to it takes no key (got {key!r})",
                actor=actor,
                query=name,
                key=key,
            )
        try:
            bound = spec.bind(args)
        except QueryArgumentsError as exc:
            raise QueryArgumentsError(str(exc), actor=actor, query=name, key=key) from None
        return PendingQuery(spec, key, bound)

    async def ask(self, pending: PendingQuery, *, timeout: float) -> bytes:
        """Hand ``pending`` to the loop and wait for its answer (the encoded
        :class:`QueryAnswer`); raises the :class:`QueryError` it got, or
        :class:`QueryTimeoutError` / :class:`QueryNotRunningError`."""
        self._submit(pending)
        with anyio.move_on_after(timeout):
            await pending.done.wait()
        if pending.error is not None:
            pending.error.actor = self.definition.name
            raise pending.error
        if pending.answer is None:
            pending.abandoned = True
            raise QueryTimeoutError(
                f"actor {self.definition.name!r} did not answer query {pending.query.name!r} "
                f"within {timeout:.3g} s (its loop was busy with a long batch, a retry or a "
                "snapshot)",
                actor=self.definition.name,
                query=pending.query.name,
                key=pending.key,
            )
        return pending.answer

    def _submit(self, pending: PendingQuery) -> None:
        request = self._open
        if request is None:
            request = self._open = AnswerQueries(queries=[pending])
            self._control.ask(request)
        else:
            request.queries.append(pending)

    # -- on the loop -------------------------------------------------------------------------

    async def answer(
        self,
        request: AnswerQueries,
        *,
        settle: Callable[[], Awaitable[BaseException | None]],
        state_of: Callable[[str | None], Awaitable[Any]],
        at: Callable[[], ReflectedPosition],
        committing: bool,
        mail_waiting: bool,
    ) -> None:
        """Answer every query of ``request`` (the loop's part): settle, then call each; or,
        when that would hold up waiting mail too often, hand them on behind it. ``settle``
        returns why a commit failed, if one did: then the state holds events the journal
        does not, and each query is answered :class:`QueryNotRunningError` instead."""
        if self._open is request:
            self._open = None  # queries asked from now on join the next request
        queries, request.queries = request.queries, []
        now = time.monotonic()
        if committing and mail_waiting and now - self._last_stop < STOP_GAP:
            for pending in queries:
                if not pending.abandoned:
                    self._submit(pending)  # behind the mail (its MailReady is asked)
            return
        if committing:
            self._last_stop = now
        try:
            await self._answer_all(queries, settle, state_of, at)
        except BaseException:
            # Killed or failed while waiting for the commit or loading an entity: each query
            # not answered yet learns it at once, not at its timeout.
            gone = ActorNotRunning("it was killed or failed meanwhile", actor=self.definition.name)
            for pending in queries:
                pending.fail(gone)
            raise

    async def _answer_all(
        self,
        queries: list[PendingQuery],
        settle: Callable[[], Awaitable[BaseException | None]],
        state_of: Callable[[str | None], Awaitable[Any]],
        at: Callable[[], ReflectedPosition],
    ) -> None:
        failed = await settle()
        if failed is not None:
            gone = ActorNotRunning(
                f"its commit failed ({failed!r}): it is stopping", actor=self.definition.name
            )
            for pending in queries:
                pending.fail(gone)
            return
        position = at()
        for pending in queries:
            if pending.abandoned:
                continue
            try:
                state = await state_of(pending.key)
                if state is None:
                    raise NoSuchEntityError(
                        f"actor {self.definition.name!r} has no entity {pending.key!r} "
                        "(no event of it is journaled)"
                    )
                value = self._call(pending, state)
                pending.answer = msgspec.json.encode(
                    QueryAnswer(
                        actor=self.definition.name,
                        query=pending.query.name,
                        value=msgspec.Raw(value),
                        pos=position.pos,
                        stream=position.stream,
                        stream_seq=position.stream_seq,
                        key=pending.key,
                    )
                )
            except QueryError as exc:
                exc.actor, exc.query, exc.key = (
                    self.definition.name,
                    pending.query.name,
                    pending.key,
                )
                pending.error = exc
            pending.done.set()
            self.answered += 1

    def _call(self, pending: PendingQuery, state: Any) -> bytes:
        """Call the query on ``state`` and encode its result (while the state cannot move)."""
        name = pending.query.name
        before = self._encoded(state) if self._check else None
        try:
            try:
                result = getattr(state, pending.query.method)(**pending.args)
            except Exception as exc:
                self._log.warning("query failed", query=name, key=pending.key, error=repr(exc))
                raise QueryFailedError(f"query {name!r} raised {exc!r}") from exc
            return encode_result(name, result)
        finally:
            if before is not None and self._encoded(state) != before:
                self._violated(name, pending.key)

    def _encoded(self, state: Any) -> bytes | None:
        try:
            return self.definition.state_codec.encode(state)
        except SnapshotError:
            return None  # a state that cannot be encoded cannot be compared

    def _violated(self, name: str, key: str | None) -> None:
        actor = self.definition.name
        which = f" of entity {key!r}" if key is not None else ""
        message = (
            f"query {name!r} of actor {actor!r} changed the state{which} it read: a query "
            "must only read self (copy what it returns, change nothing)"
        )
        if self._on_violation is not None:
            self._on_violation(message)
        raise QueryMutatedStateError(message)

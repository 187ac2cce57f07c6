"""The exception tree of actorsource.

Every error raised by the library derives from :class:`ActorsourceError`; where a stdlib base
says something useful it is added as a second base, so ``except TypeError`` still catches a
decorator mistake. Errors from nats-py and sqlite3 are translated at the boundary with
``raise ... from exc`` and never swallowed. Context travels as attributes (``actor``,
``path``, ``pos``, ``subject``), not only in the message::

    ActorsourceError
    ├── ActorDefinitionError (TypeError)     a decorator or class is used wrongly
    ├── InvalidNameError (ValueError)        a name or subject token is not allowed
    ├── EventCodecError (ValueError)         a payload cannot be encoded or decoded
    │   ├── UnknownEventTypeError            no event class is registered for a type name
    │   └── EntityKeyError                   a message names no entity of an entity actor
    ├── JournalError                         the SQLite journal failed or is unusable
    │   ├── JournalLockedError               another process holds the journal
    │   ├── JournalClosedError               the journal was used after aclose()
    │   ├── JournalAccessError               its file or directory cannot be written (for good)
    │   ├── JournalCorruptError              the file fails its checks
    │   ├── JournalOrderError                a batch would break stream order
    │   └── DuplicateMessageIdError          a batch holds a message id already journaled
    ├── SnapshotError                        a snapshot cannot be written or restored
    ├── HandlerTimeout (TimeoutError)        an async handler ran past its deadline
    ├── EffectError (ValueError)             a handler published or recorded something invalid
    ├── MailboxError                         the JetStream side failed
    │   ├── NatsConnectionError (ConnectionError)  NATS cannot be reached or refuses us
    │   ├── StreamMismatchError              the stream is not the history the journal knows
    │   └── ServerTooOldError                the nats-server lacks a feature in use
    ├── NatsServerError                      an embedded/test nats-server cannot start
    ├── QueryError                           a query was not answered (``code`` says why)
    │   ├── UnknownActorError (LookupError)      unknown-actor: no worker hosts the actor
    │   ├── UnknownQueryError (LookupError)      unknown-query: the actor has no such query
    │   ├── NoSuchEntityError (LookupError)      no-such-entity: the entity has no events
    │   ├── QueryArgumentsError (ValueError)     bad-arguments: bad or missing arguments
    │   │   └── SeqBeyondStreamError             seq-beyond-stream: after_seq past the end
    │   ├── QueryFailedError                     query-failed: the query raised
    │   │   └── QueryMutatedStateError           mutated-state: it changed the state (tests)
    │   ├── QueryNotRunningError                 not-running: recovering, stopping, halted
    │   └── QueryTimeoutError (TimeoutError)     timeout: no answer in time
    ├── ClusterError                         cluster mode: membership, leases, the fence
    │   ├── WorkerIdTaken                    another live worker announced the same id
    │   ├── LeaseHeld                        another worker holds the partition's lease
    │   ├── LeaseLost                        the lease was taken over or expired
    │   └── Fenced                           a journal append was refused: a newer owner
    └── ActorCrashed                         an actor stopped on an unexpected error
        └── ActorNotRunning                  asked of an actor that is not running
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

__all__ = [
    "ActorCrashed",
    "ActorDefinitionError",
    "ActorNotRunning",
    "ActorsourceError",
    "ClusterError",
    "ServerTooOldError",
    "Fenced",
    "LeaseHeld",
    "LeaseLost",
    "WorkerIdTaken",
    "DuplicateMessageIdError",
    "EffectError",
    "EntityKeyError",
    "EventCodecError",
    "HandlerTimeout",
    "JournalAccessError",
    "InvalidNameError",
    "JournalClosedError",
    "JournalCorruptError",
    "JournalError",
    "JournalLockedError",
    "JournalOrderError",
    "MailboxError",
    "NatsConnectionError",
    "NatsServerError",
    "NoSuchEntityError",
    "QUERY_ERRORS",
    "QueryArgumentsError",
    "QueryError",
    "QueryFailedError",
    "QueryMutatedStateError",
    "QueryNotRunningError",
    "QueryTimeoutError",
    "SeqBeyondStreamError",
    "SnapshotError",
    "StreamMismatchError",
    "UnknownActorError",
    "UnknownEventTypeError",
    "UnknownQueryError",
    "find_error",
    "sole_error",
]

E = TypeVar("E", bound=BaseException)


def find_error(exc: BaseException, kind: type[E]) -> E | None:
    """The first ``kind`` error that is ``exc`` or inside it (nested exception groups too)."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = find_error(inner, kind)
            if found is not None:
                return found
    return None


def sole_error(group: BaseExceptionGroup, cancelled: type[BaseException]) -> BaseException:
    """The one real error inside a task group's exception group, ignoring ``cancelled``
    (the backend's cancellation), else the group itself."""
    leaves = [e for e in group.exceptions if not isinstance(e, cancelled)]
    if len(leaves) == 1:
        leaf = leaves[0]
        return sole_error(leaf, cancelled) if isinstance(leaf, BaseExceptionGroup) else leaf
    return group


class ActorsourceError(Exception):
    """The root of every error raised by actorsource."""


class ActorDefinitionError(ActorsourceError, TypeError):
    """An actor class, handler or event type is declared wrongly; raised at definition time."""


class InvalidNameError(ActorsourceError, ValueError):
    """An actor name, stream name or subject is not valid where it is used."""


class EventCodecError(ActorsourceError, ValueError):
    """A payload could not be encoded or decoded into its event type."""

    def __init__(self, message: str, *, type_name: str | None = None) -> None:
        super().__init__(message)
        self.type_name = type_name


class UnknownEventTypeError(EventCodecError):
    """A message names an event type that the actor does not know."""


class EntityKeyError(EventCodecError):
    """A message to an entity actor has no entity key (its subject lacks the key token, or
    its event lacks the key field): it is dead-lettered with reason ``no-entity-key``."""


class JournalError(ActorsourceError):
    """The SQLite journal failed; the batch in hand was not committed and not acknowledged."""

    def __init__(self, message: str, *, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path


class JournalLockedError(JournalError):
    """Another process (or another open journal in this one) already writes this journal."""


class JournalClosedError(JournalError):
    """The journal was used after it was closed."""


class JournalAccessError(JournalError):
    """The journal's file or directory cannot be created or written, and waiting will not
    change that: permission denied, not a directory, a read-only file system.

    Unlike a full disk or a busy file, restarting cannot help: the actor is halted."""


class JournalCorruptError(JournalError):
    """The journal file fails its integrity or schema checks; nothing was acknowledged."""


class JournalOrderError(JournalError):
    """A batch would journal a stream message at or below a stream sequence already handled.

    Nothing of the batch is stored. Journaling out of stream order would be a loss waiting
    to happen: the consumer resumes after the journal's highest stream sequence, so earlier
    messages committed later would be skipped by a restart in between.
    """


class DuplicateMessageIdError(JournalError):
    """A batch holds a ``Nats-Msg-Id`` the journal already has; nothing of it was stored.

    The runtime checks message ids optimistically: the unique index finds a duplicate at
    commit time at no cost to the common case, and the runner then rebuilds its state and
    re-processes the batch with an explicit lookup.
    """


class SnapshotError(ActorsourceError):
    """A snapshot could not be taken or restored."""


class HandlerTimeout(ActorsourceError, TimeoutError):
    """An ``async`` handler ran past the actor's ``ErrorPolicy.handler_timeout``."""


class EffectError(ActorsourceError, ValueError):
    """A handler asked to publish or record something that cannot be (a wildcard subject, a
    reserved header, an event its actor does not handle, a message over the size limit).

    It fails the handler like any exception: retried, then dead-lettered."""


class MailboxError(ActorsourceError):
    """The JetStream stream or consumer could not be set up or read."""

    def __init__(self, message: str, *, actor: str | None = None) -> None:
        super().__init__(message)
        self.actor = actor


class NatsConnectionError(MailboxError, ConnectionError):
    """NATS could not be reached (within the time given) or refused the connection."""


class StreamMismatchError(MailboxError):
    """The stream's history is not the one the journal was built from (e.g. re-created)."""


class NatsServerError(ActorsourceError):
    """A nats-server process could not be found or started."""


class ServerTooOldError(MailboxError):
    """The connected nats-server is older than a feature in use needs (``required``)."""

    def __init__(self, message: str, *, required: str, actor: str | None = None) -> None:
        super().__init__(message, actor=actor)
        self.required = required


class ClusterError(ActorsourceError):
    """A cluster-mode operation (membership, a lease, the journal fence) failed."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class WorkerIdTaken(ClusterError):
    """Another live worker has announced itself with this worker id."""


class LeaseHeld(ClusterError):
    """The partition's lease is held by another worker (``owner``), at ``revision``."""

    def __init__(self, message: str, *, key: str, owner: str, revision: int) -> None:
        super().__init__(message, key=key)
        self.owner = owner
        self.revision = revision


class LeaseLost(ClusterError):
    """A lease could not be renewed: it expired and may be another worker's now. The
    holder stops committing for that partition."""


class Fenced(ClusterError):
    """A conditional append to a partition's journal subject was refused: another owner
    appended since (a newer epoch). The writer commits, acknowledges and publishes nothing
    more for that partition and drops its state."""

    def __init__(self, message: str, *, key: str, epoch: int | None = None) -> None:
        super().__init__(message, key=key)
        self.epoch = epoch


class ActorCrashed(ActorsourceError):
    """An actor stopped because of an unexpected error; ``__cause__`` holds the error."""

    def __init__(self, message: str, *, actor: str) -> None:
        super().__init__(message)
        self.actor = actor


class ActorNotRunning(ActorCrashed):
    """Something was asked of an actor that is not running (or stopped before doing it)."""


class QueryError(ActorsourceError):
    """A query was not answered; ``code`` is the machine-readable reason its reply carried.

    ``actor``, ``query`` and ``key`` say what was asked; ``details`` holds what the reply
    added (for a timeout: how far the actor is).
    """

    code = "query-error"

    def __init__(
        self,
        message: str,
        *,
        actor: str | None = None,
        query: str | None = None,
        key: str | None = None,
        details: dict[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.actor = actor
        self.query = query
        self.key = key
        self.details = dict(details or {})


class UnknownActorError(QueryError, LookupError):
    """No running worker hosts the actor asked (NATS had no responder for it)."""

    code = "unknown-actor"


class UnknownQueryError(QueryError, LookupError):
    """The actor has no query of that name."""

    code = "unknown-query"


class NoSuchEntityError(QueryError, LookupError):
    """The entity asked has no events: it does not exist (no default state is invented)."""

    code = "no-such-entity"


class QueryArgumentsError(QueryError, ValueError):
    """The query's arguments are missing, unknown or of the wrong type (or a key is missing
    for an entity actor, or given to a singleton)."""

    code = "bad-arguments"


class SeqBeyondStreamError(QueryArgumentsError):
    """``after_seq`` is beyond the last message of the actor's stream: refused at once."""

    code = "seq-beyond-stream"


class QueryFailedError(QueryError):
    """The query method raised (or its result cannot be encoded to JSON); the actor runs on."""

    code = "query-failed"


class QueryMutatedStateError(QueryFailedError):
    """The query changed the state it read (found by the test kit's read-only check)."""

    code = "mutated-state"


class QueryNotRunningError(QueryError):
    """The actor is not running (starting, recovering, stopping, halted): nothing to ask."""

    code = "not-running"


class QueryTimeoutError(QueryError, TimeoutError):
    """No answer in time: the actor did not reach ``after_seq``, or did not answer."""

    code = "timeout"


#: The query errors by the code their reply carries.
QUERY_ERRORS: dict[str, type[QueryError]] = {
    cls.code: cls
    for cls in (
        UnknownActorError,
        UnknownQueryError,
        NoSuchEntityError,
        QueryArgumentsError,
        SeqBeyondStreamError,
        QueryFailedError,
        QueryMutatedStateError,
        QueryNotRunningError,
        QueryTimeoutError,
    )
}

"""actorsource: event-sourced actors for Python microservices, with NATS JetStream mailboxes.

An actor is a decorated class. Its mailbox is a durable JetStream consumer; every event it
accepts is written to its own SQLite journal before it is acknowledged; its state is a fold
of that journal, checkpointed by snapshots and recovered by replay::

    @actor("accounts", subjects=["bank.>"])
    class Accounts:
        balances: dict[str, int]

        def __init__(self) -> None:
            self.balances = {}

        @handles(Deposited)
        def deposited(self, event: Deposited) -> None:
            self.balances[event.account] = self.balances.get(event.account, 0) + event.amount
"""

from typing import Any as _Any

from ._errors import (
    ActorCrashed,
    ActorDefinitionError,
    ActorNotRunning,
    ActorsourceError,
    DuplicateMessageIdError,
    EffectError,
    EntityKeyError,
    EventCodecError,
    HandlerTimeout,
    InvalidNameError,
    JournalAccessError,
    JournalClosedError,
    JournalCorruptError,
    JournalError,
    JournalLockedError,
    JournalOrderError,
    MailboxError,
    NatsConnectionError,
    NatsServerError,
    NoSuchEntityError,
    QueryArgumentsError,
    QueryError,
    QueryFailedError,
    QueryMutatedStateError,
    QueryNotRunningError,
    QueryTimeoutError,
    SeqBeyondStreamError,
    SnapshotError,
    StreamMismatchError,
    UnknownActorError,
    UnknownEventTypeError,
    UnknownQueryError,
)
from ._mailbox.connection import NatsOptions
from ._model.actor import actor, every, handles
from ._model.context import Context
from ._model.entity import entity
from ._model.events import (
    EVENT_TYPE_HEADER,
    EVENT_VERSION_HEADER,
    MSG_ID_HEADER,
    encode_event,
    event,
    event_headers,
    upcaster,
)
from ._model.policy import ErrorPolicy
from ._model.query import query
from ._model.query_wire import QueryAnswer
from ._model.snapshots import SnapshotPolicy
from ._public import moved as _moved
from ._public import publish as _publish
from ._runtime.ask import ask
from ._runtime.binding import ensure_streams
from ._runtime.worker import Worker, run_worker

__version__ = "0.1.0"

__all__ = [
    # writing an actor
    "Context",
    "ErrorPolicy",
    "SnapshotPolicy",
    "actor",
    "entity",
    "event",
    "every",
    "handles",
    "query",
    "upcaster",
    # hosting it
    "NatsOptions",
    "Worker",
    "run_worker",
    # publishing to it
    "EVENT_TYPE_HEADER",
    "EVENT_VERSION_HEADER",
    "MSG_ID_HEADER",
    "encode_event",
    "ensure_streams",
    "event_headers",
    # asking it
    "QueryAnswer",
    "ask",
    # what can go wrong
    "ActorCrashed",
    "ActorDefinitionError",
    "ActorNotRunning",
    "ActorsourceError",
    "DuplicateMessageIdError",
    "EffectError",
    "EntityKeyError",
    "EventCodecError",
    "HandlerTimeout",
    "InvalidNameError",
    "JournalAccessError",
    "JournalClosedError",
    "JournalCorruptError",
    "JournalError",
    "JournalLockedError",
    "JournalOrderError",
    "MailboxError",
    "NatsConnectionError",
    "NatsServerError",
    "NoSuchEntityError",
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
    "__version__",
]

_publish(__name__, globals(), __all__)

_JOURNAL = "import it from actorsource.journal"
_TESTING = "import it from actorsource.testing"
_CLASS = "pass the actor class itself where a definition was asked for"

#: Names that left the top level, kept for one release: (module, attribute, advice).
_MOVED = {
    "DeadLetter": ("actorsource.journal", "DeadLetter", _JOURNAL),
    "JournalEntry": ("actorsource.journal", "JournalEntry", _JOURNAL),
    "RecoveryReport": ("actorsource.journal", "RecoveryReport", _JOURNAL),
    "SQLiteJournal": ("actorsource.journal", "SQLiteJournal", _JOURNAL),
    "journal_path": ("actorsource.journal", "journal_path", _JOURNAL),
    # These take the actor class now, and still an ActorDefinition as before.
    "fold": ("actorsource.journal", "fold", _JOURNAL),
    "restore_state": ("actorsource.journal", "restore_state", _JOURNAL),
    "ActorStats": ("actorsource._runtime.status", "ActorStats", _TESTING),
    "ActorStatus": ("actorsource._runtime.status", "ActorStatus", _TESTING),
    "ActorDefinition": ("actorsource._model.actor", "ActorDefinition", _CLASS),
    "definition_of": ("actorsource._model.actor", "definition_of", _CLASS),
    "ActorRunner": (
        "actorsource._runtime.runner",
        "ActorRunner",
        "host actors with actorsource.Worker, or actorsource.testing.ActorKit in tests",
    ),
}


def __getattr__(name: str) -> _Any:
    return _moved(__name__, _MOVED, name)

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

from ._actor import ActorDefinition, actor, definition_of, every, handles
from ._binding import ensure_streams
from ._connection import NatsOptions
from ._context import Context
from ._dispatch import fold
from ._errors import (
    ActorCrashed,
    ActorDefinitionError,
    ActorsourceError,
    EffectError,
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
    NatsServerError,
    SnapshotError,
    StreamMismatchError,
    UnknownEventTypeError,
)
from ._events import (
    EVENT_TYPE_HEADER,
    EVENT_VERSION_HEADER,
    MSG_ID_HEADER,
    JournalEntry,
    encode_event,
    event,
    event_headers,
    upcaster,
)
from ._journal import DeadLetter, SQLiteJournal
from ._policy import ErrorPolicy
from ._recovery import RecoveryReport, restore_state
from ._runner import ActorRunner
from ._runtime import Worker, run_worker
from ._snapshots import SnapshotPolicy
from ._status import ActorStats, ActorStatus
from ._storage import journal_path

__version__ = "0.1.0"

__all__ = [
    "EVENT_TYPE_HEADER",
    "EVENT_VERSION_HEADER",
    "MSG_ID_HEADER",
    "ActorCrashed",
    "ActorDefinition",
    "ActorDefinitionError",
    "ActorRunner",
    "ActorStats",
    "ActorStatus",
    "ActorsourceError",
    "Context",
    "DeadLetter",
    "EffectError",
    "ErrorPolicy",
    "EventCodecError",
    "HandlerTimeout",
    "InvalidNameError",
    "JournalAccessError",
    "JournalClosedError",
    "JournalCorruptError",
    "JournalEntry",
    "JournalError",
    "JournalLockedError",
    "JournalOrderError",
    "MailboxError",
    "NatsOptions",
    "NatsServerError",
    "RecoveryReport",
    "SQLiteJournal",
    "SnapshotError",
    "SnapshotPolicy",
    "StreamMismatchError",
    "UnknownEventTypeError",
    "Worker",
    "__version__",
    "actor",
    "definition_of",
    "encode_event",
    "ensure_streams",
    "event",
    "event_headers",
    "every",
    "fold",
    "handles",
    "journal_path",
    "restore_state",
    "run_worker",
    "upcaster",
]

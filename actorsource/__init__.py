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

from ._errors import (
    ActorCrashed,
    ActorDefinitionError,
    ActorNotRunning,
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
    NatsConnectionError,
    NatsServerError,
    SnapshotError,
    StreamMismatchError,
    UnknownEventTypeError,
)
from ._journal.journal import DeadLetter, SQLiteJournal
from ._journal.recovery import RecoveryReport, restore_state
from ._journal.storage import journal_path
from ._mailbox.connection import NatsOptions
from ._model.actor import ActorDefinition, actor, definition_of, every, handles
from ._model.context import Context
from ._model.dispatch import fold
from ._model.events import (
    EVENT_TYPE_HEADER,
    EVENT_VERSION_HEADER,
    MSG_ID_HEADER,
    JournalEntry,
    encode_event,
    event,
    event_headers,
    upcaster,
)
from ._model.policy import ErrorPolicy
from ._model.snapshots import SnapshotPolicy
from ._runtime.binding import ensure_streams
from ._runtime.runner import ActorRunner
from ._runtime.status import ActorStats, ActorStatus
from ._runtime.worker import Worker, run_worker

__version__ = "0.1.0"

__all__ = [
    "EVENT_TYPE_HEADER",
    "EVENT_VERSION_HEADER",
    "MSG_ID_HEADER",
    "ActorCrashed",
    "ActorDefinition",
    "ActorDefinitionError",
    "ActorNotRunning",
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
    "NatsConnectionError",
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

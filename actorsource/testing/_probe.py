"""The handle on one actor hosted by the test kit: crash it, restart it, inspect it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Generic, TypeVar

import anyio
import anyio.abc
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from .._errors import ActorsourceError
from .._journal.journal import SQLiteJournal
from .._journal.recovery import RecoveryReport
from .._journal.schema import DeadLetter
from .._model.actor import definition_of
from .._model.dispatch import fold
from .._model.events import JournalEntry
from .._model.query_wire import QueryAnswer
from .._model.snapshots import SnapshotInfo
from .._runtime.ask import ask
from .._runtime.runner import ActorRunner
from .._runtime.status import ActorStats, ActorStatus, CrashPoint, CrashSwitch, SimulatedCrash

__all__ = ["ActorProbe"]

S = TypeVar("S")


class ActorProbe(Generic[S]):
    """One actor hosted by the kit, with handles to crash, restart and inspect it.

    Made by :meth:`ActorKit.start <actorsource.testing.ActorKit.start>`, not directly.
    """

    def __init__(
        self,
        nc: NATS,
        actor_cls: type[S],
        *,
        data_dir: Path,
        ack_wait: float,
        js: JetStreamContext | None = None,
        tracing: Any = False,
    ) -> None:
        self._nc = nc
        self._tracing = tracing
        self._js = js or nc.jetstream()
        self._data_dir = data_dir
        self._definition = definition_of(actor_cls)
        self.name = self._definition.name
        self._ack_wait = ack_wait
        self._switch = CrashSwitch()
        self._runner: ActorRunner | None = None
        self._scope: anyio.CancelScope | None = None
        self._ended = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None
        self.error: BaseException | None = None
        #: What queries that changed the state they read said (the kit's read-only check);
        #: the kit fails the ``start`` block with them unless the test clears this list.
        self.query_violations: list[str] = []
        self.crashes = 0
        self.starts = 0

    # -- inspection --------------------------------------------------------------------------

    @property
    def _live_runner(self) -> ActorRunner:
        """The current runner (a new one after each crash or restart): the runtime's
        internals, for the library's own tests."""
        if self._runner is None:
            raise ActorsourceError(f"actor {self.name!r} is not started")
        return self._runner

    @property
    def state(self) -> S:
        """The live actor object (its state)."""
        return self._live_runner.state  # type: ignore[no-any-return]

    @property
    def status(self) -> ActorStatus:
        """The runner's life-cycle status."""
        return self._live_runner.status

    @property
    def recovery(self) -> RecoveryReport:
        """What the last recovery did (snapshot used, events replayed)."""
        return self._live_runner.recovery

    @property
    def stats(self) -> ActorStats:
        """The current runner's counters."""
        return self._live_runner.stats

    @property
    def journal_path(self) -> Path:
        """The journal file."""
        return self._live_runner.journal_path

    @property
    def journal(self) -> SQLiteJournal:
        """The journal as the current runner holds it open: read from it, never write."""
        return self._live_runner.journal

    async def entries(self) -> list[JournalEntry]:
        """Every journal entry, in position order."""
        out: list[JournalEntry] = []
        async for chunk in self._live_runner.journal.entries(0):
            out.extend(chunk)
        return out

    async def fold(self) -> S:
        """A fresh fold of the whole journal, ignoring snapshots (compare with :attr:`state`)."""
        return await fold(self._definition, await self.entries())  # type: ignore[no-any-return]

    async def snapshots(self) -> list[SnapshotInfo]:
        """The stored snapshots, newest first."""
        return await self._live_runner.journal.snapshots()

    async def dead_letters(self) -> list[DeadLetter]:
        """The dead letters recorded in the journal, oldest first."""
        return await self._live_runner.journal.dead_letters()

    # -- entities (of an entity actor) ---------------------------------------------------

    async def entity(self, key: str) -> Any:
        """The state of entity ``key``: the resident one, or else one loaded from the journal
        (its newest usable snapshot and later committed rows), which is not made resident."""
        return await self._live_runner.entities.state_of(key)

    async def fold_entity(self, key: str) -> Any:
        """A fresh fold of entity ``key``'s journal entries, ignoring snapshots."""
        entries = [e for e in await self.entries() if e.entity == key]
        return await fold(self._definition, entries)

    @property
    def resident(self) -> list[str]:
        """The keys of the resident entities, least recently used first."""
        return list(self._live_runner.entities.resident)

    @property
    def entity_loads(self) -> int:
        """How many entities the current runner loaded into residency (from the journal)."""
        return self._live_runner.entities.loads

    async def entity_snapshots(self, key: str) -> list[int]:
        """The positions of entity ``key``'s stored snapshots, newest first."""
        rows = await self._live_runner.journal._execute(
            "SELECT pos FROM entity_snapshots WHERE entity = ? ORDER BY pos DESC", (key,)
        )
        return [int(r[0]) for r in rows]

    # -- queries -----------------------------------------------------------------------------

    async def query(
        self,
        name: str,
        /,
        *,
        key: str | None = None,
        after_seq: int | None = None,
        timeout: float = 5.0,
        **args: Any,
    ) -> Any:
        """Ask the actor its query ``name`` over NATS, as :func:`actorsource.ask` does;
        returns the result's value (decoded JSON). Raises the :class:`QueryError` it got.

        In the kit every query is checked read-only: the state's encoding before and after
        must be equal, else it fails with :class:`QueryMutatedStateError` naming the query.
        """
        answer = await self.ask(name, key=key, after_seq=after_seq, timeout=timeout, **args)
        return answer.value

    async def ask(
        self,
        name: str,
        /,
        *,
        key: str | None = None,
        after_seq: int | None = None,
        timeout: float = 5.0,
        **args: Any,
    ) -> QueryAnswer:
        """Like :meth:`query`, but the whole :class:`QueryAnswer` (value, position, stream
        sequence)."""
        return await ask(
            self._nc, self.name, name, key=key, after_seq=after_seq, timeout=timeout, **args
        )

    async def snapshot(self) -> int:
        """Take a snapshot now; returns its position."""
        return await self._live_runner.snapshot()

    async def tick(self, now: float | None = None) -> int:
        """Run every ``@every`` method of the actor now, as if its time had come, giving it
        ``now`` (default: the clock); returns how many events they recorded, committed.

        Timers can then be tested at the times a test chooses, without waiting for them. In
        an entity actor (which has no timers) it passivates the entities idle at ``now``
        instead, and writes their snapshots, and returns 0.
        """
        return await self._live_runner.fire_timers(now)

    # -- waiting -----------------------------------------------------------------------------

    async def settled(self, timeout: float = 15.0) -> None:
        """Wait until the consumer has nothing pending or unacknowledged and the outbox is
        empty: everything published to the actor's subjects so far is applied, deduplicated
        or dead-lettered, and everything it had to publish was confirmed by JetStream.

        The consumer's counters alone are not enough: right after a publish, and more so on
        a loaded machine, the server may report nothing pending for a message its consumer
        has not noticed yet. So the journal must also have reached the stream's last message
        on the actor's subjects.
        """
        with anyio.fail_after(timeout):
            while True:
                self._raise_if_failed()
                runner = self._live_runner
                mailbox = runner.mailbox
                if runner.status is ActorStatus.RUNNING and mailbox is not None:
                    try:
                        info = await mailbox.consumer_info()
                    except nats.js.errors.NotFoundError:
                        info = None  # being re-created by the actor
                    outbox = runner.outbox
                    if (
                        info is not None
                        and info.num_pending == 0
                        and info.num_ack_pending == 0
                        and (outbox is None or outbox.pending == 0)
                        and runner.journal.stream_positions.get(info.stream_name, 0)
                        >= await self._last_seq(info.stream_name)
                    ):
                        return
                await anyio.sleep(0.01)

    async def _last_seq(self, stream: str) -> int:
        """The stream sequence of the last message on the actor's subjects (0: none)."""
        last = 0
        for subject in self._definition.subjects:
            try:
                msg = await self._js.get_last_msg(stream, subject)
            except nats.js.errors.NotFoundError:
                continue
            last = max(last, int(msg.seq or 0))
        return last

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            raise ActorsourceError(f"actor {self.name!r} failed: {self.error!r}") from self.error

    # -- life cycle --------------------------------------------------------------------------

    async def _host(
        self,
        runner: ActorRunner,
        ended: anyio.Event,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        scope = self._scope = anyio.CancelScope()
        try:
            with scope:
                await runner.run(task_status=task_status)
            if scope.cancelled_caught:  # crash() without a crash point: killed where it was
                self.crashes += 1
        except SimulatedCrash:
            self.crashes += 1
        except Exception as exc:
            self.error = exc
        finally:
            ended.set()

    async def _launch(self) -> None:
        assert self._tg is not None
        self.error = None
        runner = ActorRunner(
            self._definition,
            self._nc,
            data_dir=self._data_dir,
            ack_wait=self._ack_wait,
            crash_switch=self._switch,
            check_queries=True,
            on_query_violation=self.query_violations.append,
            tracing=self._tracing,
        )
        self._runner = runner
        self._ended = anyio.Event()
        self.starts += 1
        try:
            await self._tg.start(self._host, runner, self._ended)
        except RuntimeError:
            self._raise_if_failed()
            raise
        self._raise_if_failed()

    def arm_crash(self, at: CrashPoint) -> None:
        """Make the actor die the next time it reaches ``at``: ``"before_commit"``,
        ``"after_commit"``, ``"after_ack"``, around its outbox ``"before_publish"`` and
        ``"after_publish"`` (sent, not yet marked sent), or ``"between_snapshot_parts"`` (a
        large snapshot half written); then :meth:`crashed` waits for it."""
        self._switch.arm(at)

    async def crashed(self, *, restart: bool = True, timeout: float = 15.0) -> None:
        """Wait until the armed crash happened, then (unless ``restart=False``) restart the
        actor from its journal; a crashed actor that was not restarted starts with :meth:`start`."""
        with anyio.fail_after(timeout):
            await self._ended.wait()
        self._switch.armed = None
        self._raise_if_failed()
        if restart:
            await self._launch()

    async def halted(self, *, timeout: float = 15.0) -> BaseException | None:
        """Wait until the actor stops on its own; return the error it stopped with (if any).

        For tests of conditions that must halt an actor (a re-created stream, a corrupt
        journal): the error is handed over here instead of being raised at the block's end.
        """
        with anyio.fail_after(timeout):
            await self._ended.wait()
        error, self.error = self.error, None
        return error

    async def start(self) -> None:
        """Start the actor again after ``crashed(restart=False)`` or :meth:`stop`."""
        if self._runner is not None and not self._ended.is_set():
            raise ActorsourceError(f"actor {self.name!r} is already running")
        await self._launch()

    async def crash(
        self, at: CrashPoint | None = None, *, restart: bool = True, timeout: float = 15.0
    ) -> None:
        """Crash the actor and restart it, as after a ``kill -9``.

        With ``at`` the actor dies the next time it reaches that point (so events must be on
        their way); without, it dies at once, wherever it is. Either way nothing more is
        acknowledged, no final snapshot is written, and a new runner recovers from the journal.
        """
        if at is not None:
            self.arm_crash(at)
        elif self._scope is not None:
            self._scope.cancel()
        await self.crashed(restart=restart, timeout=timeout)

    async def restart(self, *, timeout: float = 15.0) -> None:
        """Stop gracefully (final snapshot) and start again, recovering from the journal."""
        await self.stop(timeout=timeout)
        await self._launch()

    async def stop(self, *, timeout: float = 15.0) -> None:
        """Stop gracefully: finish the batch in hand, snapshot, close."""
        if self._runner is not None and not self._ended.is_set():
            self._runner.stop()
            with anyio.fail_after(timeout):
                await self._ended.wait()
        self._raise_if_failed()

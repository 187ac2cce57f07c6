"""Tests for the nats-server launcher, against real nats-server processes."""

from __future__ import annotations

import json
import re
import socket
import ssl
import stat
import sys
import sysconfig
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import trustme
from nats.aio.client import Client
from nats.errors import Error as NatsClientError
from nats.js.api import StorageType

from actorsource import NatsServerError
from actorsource._mailbox.server import find_nats_server
from actorsource.testing import NatsServer, NatsServerConfig


@asynccontextmanager
async def connected(url: str, **options: Any) -> AsyncIterator[Client]:
    # Client() then connect() so that a failed connect (auth) can still be closed; nats-py
    # leaves its socket open otherwise. The close is bounded: after a failed TLS handshake
    # nats-py's close() never returns.
    nc = Client()
    try:
        await nc.connect(url, allow_reconnect=False, max_reconnect_attempts=1, **options)
        yield nc
    finally:
        with anyio.move_on_after(2, shield=True):
            await nc.close()


async def server_info(port: int) -> dict[str, Any]:
    """The INFO line a server sends to every new client, before any TLS upgrade."""
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        line = b""
        while not line.endswith(b"\r\n"):
            line += await stream.receive()
    assert line.startswith(b"INFO ")
    info: dict[str, Any] = json.loads(line[len(b"INFO ") :])
    return info


class Certs:
    """PEM files from a throwaway CA: a server certificate and a client certificate."""

    def __init__(self, directory: Path, *server_names: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        server = ca.issue_cert(*(server_names or ("127.0.0.1", "localhost")))
        client = ca.issue_cert("probe@actorsource.test")
        self.ca = directory / "ca.pem"
        self.cert = directory / "server.pem"
        self.key = directory / "server.key"
        self.client_cert = directory / "client.pem"
        self.client_key = directory / "client.key"
        ca.cert_pem.write_to_path(str(self.ca))
        self.cert.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
        server.private_key_pem.write_to_path(str(self.key))
        self.client_cert.write_bytes(b"".join(blob.bytes() for blob in client.cert_chain_pems))
        client.private_key_pem.write_to_path(str(self.client_key))

    def client_context(self, *, with_certificate: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        if with_certificate:
            ctx.load_cert_chain(self.client_cert, self.client_key)
        return ctx


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return Certs(tmp_path / "certs")


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


async def test_a_tls_server_has_a_tls_url_and_serves_jetstream_to_a_client_trusting_its_ca(
    tmp_path: Path, certs: Certs
) -> None:
    config = NatsServerConfig(store_dir=tmp_path / "js", tls_cert=certs.cert, tls_key=certs.key)
    async with NatsServer(config) as srv, connected(srv.url, tls=certs.client_context()) as nc:
        assert srv.url == f"tls://127.0.0.1:{srv.port}"
        await nc.jetstream().account_info()


async def test_a_tls_server_tells_every_client_that_tls_is_required(
    tmp_path: Path, certs: Certs
) -> None:
    config = NatsServerConfig(store_dir=tmp_path / "js", tls_cert=certs.cert, tls_key=certs.key)
    async with NatsServer(config) as srv:
        info = await server_info(srv.port)
    assert info["tls_required"] is True
    assert not info.get("tls_verify")


async def test_a_tls_server_with_a_ca_requires_client_certificates(
    tmp_path: Path, certs: Certs
) -> None:
    config = NatsServerConfig(
        store_dir=tmp_path / "js",
        tls_cert=certs.cert,
        tls_key=certs.key,
        tls_ca=certs.ca,
        client_tls=certs.client_context(with_certificate=True),
    )
    async with NatsServer(config) as srv:
        info = await server_info(srv.port)
        async with connected(srv.url, tls=certs.client_context(with_certificate=True)) as nc:
            await nc.jetstream().account_info()
    assert info["tls_required"] is True
    assert info["tls_verify"] is True


async def test_the_readiness_probe_pins_the_server_certificate_whatever_names_it_carries(
    tmp_path: Path,
) -> None:
    # The certificate does not name 127.0.0.1, where the probe connects; it still starts.
    certs = Certs(tmp_path / "certs", "nats.example.test")
    config = NatsServerConfig(store_dir=tmp_path / "js", tls_cert=certs.cert, tls_key=certs.key)
    async with NatsServer(config) as srv:
        assert srv.pid is not None


async def test_a_probe_that_does_not_trust_the_server_fails_start_at_once_with_the_tls_error(
    tmp_path: Path, certs: Certs
) -> None:
    srv = NatsServer(
        NatsServerConfig(
            store_dir=tmp_path / "js",
            tls_cert=certs.cert,
            tls_key=certs.key,
            client_tls=ssl.create_default_context(),  # the system CAs: not our throwaway CA
        )
    )
    with anyio.fail_after(5), pytest.raises(NatsServerError, match="CERTIFICATE_VERIFY_FAILED"):
        await srv.start(timeout=30)
    assert srv.pid is None


async def test_a_probe_without_a_client_certificate_fails_start_at_once_with_the_tls_error(
    tmp_path: Path, certs: Certs
) -> None:
    srv = NatsServer(
        NatsServerConfig(
            store_dir=tmp_path / "js",
            tls_cert=certs.cert,
            tls_key=certs.key,
            tls_ca=certs.ca,
            client_tls=certs.client_context(),  # trusts the server, but has no certificate
        )
    )
    with anyio.fail_after(5), pytest.raises(NatsServerError, match="certificate required"):
        await srv.start(timeout=30)
    assert srv.pid is None


async def test_a_missing_certificate_file_fails_start_naming_it(
    tmp_path: Path, certs: Certs
) -> None:
    missing = tmp_path / "no-such-key.pem"
    srv = NatsServer(
        NatsServerConfig(store_dir=tmp_path / "js", tls_cert=certs.cert, tls_key=missing)
    )
    with pytest.raises(NatsServerError, match=re.escape(str(missing))):
        await srv.start()
    assert srv.pid is None


async def test_a_tls_server_restarts_at_the_same_tls_url(tmp_path: Path, certs: Certs) -> None:
    config = NatsServerConfig(store_dir=tmp_path / "js", tls_cert=certs.cert, tls_key=certs.key)
    async with NatsServer(config) as srv:
        url = srv.url
        await srv.restart()
        assert srv.url == url
        async with connected(srv.url, tls=certs.client_context()) as nc:
            await nc.jetstream().account_info()


async def test_a_server_with_a_token_rejects_a_client_with_a_wrong_token(tmp_path: Path) -> None:
    config = NatsServerConfig(store_dir=tmp_path / "js", token='t0k"e$n')
    async with NatsServer(config) as srv:
        with pytest.raises(NatsClientError, match="Authorization Violation"):
            async with connected(srv.url, token="t0k", error_cb=swallow):
                pass


async def test_a_server_with_a_token_accepts_a_client_presenting_it(tmp_path: Path) -> None:
    config = NatsServerConfig(store_dir=tmp_path / "js", token='t0k"e$n')
    async with NatsServer(config) as srv, connected(srv.url, token='t0k"e$n') as nc:
        await nc.jetstream().account_info()


async def test_the_config_file_holding_a_token_is_readable_by_its_owner_only(
    tmp_path: Path,
) -> None:
    async with NatsServer(NatsServerConfig(store_dir=tmp_path / "js", token="t0ken")):
        conf = tmp_path / "js.nats-server.conf"
        assert stat.S_IMODE(conf.stat().st_mode) == 0o600
        assert '"t0ken"' in conf.read_text()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"token": "t", "user": "u", "password": "p"}, "a token or a user and password"),
        ({"token": ""}, "token must not be empty"),
        ({"tls_cert": Path("c.pem")}, "both tls_cert and tls_key"),
        ({"tls_key": Path("k.pem")}, "both tls_cert and tls_key"),
        ({"tls_ca": Path("ca.pem")}, "tls_ca .* needs tls_cert"),
        ({"client_tls": ssl.create_default_context()}, "client_tls is only used with TLS"),
        (
            {"tls_cert": Path("c.pem"), "tls_key": Path("k.pem"), "tls_ca": Path("ca.pem")},
            "pass client_tls",
        ),
    ],
)
def test_inconsistent_tls_or_auth_settings_are_refused_at_once(
    tmp_path: Path, settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(NatsServerError, match=message):
        NatsServerConfig(store_dir=tmp_path / "js", **settings)

"""Security: TLS, mutual TLS, tokens and passwords against real nats-server processes; names
that end up in subjects are validated; nothing received is ever unpickled.

Certificates come from a throwaway ``trustme`` CA per test; the system's trust store only
appears as one that does not know that CA.
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import ssl
import struct
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
import trustme
from actors import Added, Counter
from anyio.streams.tls import TLSStream
from nats.aio.client import Client

from actorsource import (
    EVENT_TYPE_HEADER,
    InvalidNameError,
    MailboxError,
    NatsOptions,
    Worker,
    actor,
    encode_event,
)
from actorsource._model.subjects import validate_name, validate_subject, validate_token
from actorsource.testing import ActorKit, NatsServer, NatsServerConfig

ROOT = Path(__file__).resolve().parent.parent

# nats-py cannot return from connect() or close() after a failed TLS handshake (actorsource's
# connect() bounds both); every test bounds its waits so that a regression fails fast.
DEADLINE = 15.0
CONNECT_DEADLINE = 8.0


@dataclass(frozen=True)
class Pki:
    """A throwaway CA, a server certificate for 127.0.0.1/localhost and a client certificate,
    all as PEM files."""

    ca_file: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def client_context(self, *, with_certificate: bool = False) -> ssl.SSLContext:
        """A client context trusting the CA, optionally presenting the client certificate."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        if with_certificate:
            ctx.load_cert_chain(self.client_cert, self.client_key)
        return ctx


def write_pki(directory: Path, ca: trustme.CA) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("worker@actorsource.test")
    pki = Pki(
        ca_file=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
    )
    ca.cert_pem.write_to_path(str(pki.ca_file))
    pki.server_cert.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
    server.private_key_pem.write_to_path(str(pki.server_key))
    pki.client_cert.write_bytes(b"".join(blob.bytes() for blob in client.cert_chain_pems))
    client.private_key_pem.write_to_path(str(pki.client_key))
    return pki


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return write_pki(tmp_path / "pki", trustme.CA())


@pytest.fixture
async def tls_server(tmp_path: Path, pki: Pki) -> AsyncIterator[NatsServer]:
    """A TLS-only server; clients need not present a certificate."""
    config = NatsServerConfig(
        store_dir=tmp_path / "store", tls_cert=pki.server_cert, tls_key=pki.server_key
    )
    async with NatsServer(config) as server:
        yield server


@pytest.fixture
async def mtls_server(tmp_path: Path, pki: Pki) -> AsyncIterator[NatsServer]:
    """A TLS-only server that requires a client certificate signed by the CA."""
    config = NatsServerConfig(
        store_dir=tmp_path / "store",
        tls_cert=pki.server_cert,
        tls_key=pki.server_key,
        tls_ca=pki.ca_file,
        client_tls=pki.client_context(with_certificate=True),
    )
    async with NatsServer(config) as server:
        yield server


@asynccontextmanager
async def connected(url: str, **options: Any) -> AsyncIterator[Client]:
    # Client() then connect(), closed in finally: a failed connect leaves its socket open.
    nc = Client()
    try:
        await nc.connect(url, allow_reconnect=False, max_reconnect_attempts=1, **options)
        yield nc
    finally:
        with anyio.move_on_after(2, shield=True):
            await nc.close()


async def run_until_ready(worker: Worker) -> None:
    """Start ``worker``, wait until its actors are running, then stop it."""
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(DEADLINE):
            await tg.start(worker.run)
            await worker.ready.wait()
        worker.stop()


async def apply_one_event(worker: Worker, url: str, **publisher: Any) -> None:
    """Run ``worker``, publish one Added event to its counter and wait until it is applied."""
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(DEADLINE):
            await tg.start(worker.run)
            await worker.ready.wait()
        type_name, payload = encode_event(Added("a", 5))
        async with connected(url, **publisher) as nc:
            await nc.jetstream().publish("count.a", payload, headers={EVENT_TYPE_HEADER: type_name})
        with anyio.fail_after(DEADLINE):
            while worker.runners["counter"].stats.applied < 1:
                await anyio.sleep(0.01)
        assert worker.runners["counter"].state.totals == {"a": 5}
        worker.stop()


async def connect_and_fail(worker: Worker) -> MailboxError:
    with anyio.fail_after(CONNECT_DEADLINE), pytest.raises(MailboxError) as info:
        await worker.run()
    return info.value


# -- TLS ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("trust", ["ssl context", "ca file"])
async def test_a_worker_connects_over_tls_and_its_actor_applies_an_event(
    tls_server: NatsServer, pki: Pki, tmp_path: Path, trust: str
) -> None:
    assert tls_server.url.startswith("tls://")
    options = (
        NatsOptions(servers=(tls_server.url,), tls=pki.client_context())
        if trust == "ssl context"
        else NatsOptions(servers=(tls_server.url,), tls_ca=str(pki.ca_file))
    )
    worker = Worker([Counter], nats=options, data_dir=tmp_path / "data")
    await apply_one_event(worker, tls_server.url, tls=pki.client_context())


# What nats-py reports when the server closed the connection after refusing it.


def assert_refusal_reported(message: str, refusal: str) -> None:
    """Assert that ``message`` reports the refusal itself, not the connection loss after it."""
    assert refusal in message, message


async def test_a_worker_that_does_not_trust_the_server_ca_fails_with_a_mailbox_error_saying_so(
    tls_server: NatsServer, tmp_path: Path
) -> None:
    # The system trust store (ssl.create_default_context()) does not know the throwaway CA.
    worker = Worker(
        [Counter],
        nats=NatsOptions(servers=(tls_server.url,), tls=ssl.create_default_context()),
        data_dir=tmp_path / "data",
    )
    error = await connect_and_fail(worker)
    assert tls_server.url in str(error)
    assert "certificate verify failed" in str(error)


async def test_a_worker_given_another_ca_file_fails_with_a_mailbox_error_saying_so(
    tls_server: NatsServer, tmp_path: Path
) -> None:
    other = write_pki(tmp_path / "other-pki", trustme.CA())
    worker = Worker(
        [Counter],
        nats=NatsOptions(servers=(tls_server.url,), tls_ca=str(other.ca_file)),
        data_dir=tmp_path / "data",
    )
    error = await connect_and_fail(worker)
    assert tls_server.url in str(error)
    assert "certificate verify failed" in str(error)


# -- mutual TLS --------------------------------------------------------------------------------


async def test_mutual_tls_accepts_a_worker_presenting_a_client_certificate_signed_by_the_ca(
    mtls_server: NatsServer, pki: Pki, tmp_path: Path
) -> None:
    options = NatsOptions(
        servers=(mtls_server.url,),
        tls_ca=str(pki.ca_file),
        tls_cert=str(pki.client_cert),
        tls_key=str(pki.client_key),
    )
    worker = Worker([Counter], nats=options, data_dir=tmp_path / "data")
    await apply_one_event(worker, mtls_server.url, tls=pki.client_context(with_certificate=True))


async def test_mutual_tls_refuses_a_worker_without_a_client_certificate_saying_so(
    mtls_server: NatsServer, pki: Pki, tmp_path: Path
) -> None:
    worker = Worker(
        [Counter],
        nats=NatsOptions(servers=(mtls_server.url,), tls_ca=str(pki.ca_file)),
        data_dir=tmp_path / "data",
    )
    error = await connect_and_fail(worker)
    assert mtls_server.url in str(error)
    assert_refusal_reported(str(error), "certificate required")


async def reset_twice_then_relay(
    listener: anyio.abc.SocketListener, server: NatsServer, pki: Pki, connections: list[int]
) -> None:
    """In front of a mutual-TLS server, the race its refusal can lose on a busy machine, lost
    every time by the client's first two connections (nats-py's connect and its retry): the
    handshake completes on the client's side, its CONNECT reaches a closed socket, and the
    reset destroys the alert unread. Here a stand-in server completes the handshake, reads
    the CONNECT and resets. Later connections are relayed to the real server."""
    info = {"server_id": "stand-in", "version": "2.10.0", "proto": 1, "tls_required": True}
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)

    async def pump(source: anyio.abc.ByteStream, sink: anyio.abc.ByteStream) -> None:
        try:
            async for chunk in source:
                await sink.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass

    async def serve(stream: anyio.abc.SocketStream) -> None:
        connections.append(1)
        async with stream:
            if len(connections) > 2:
                upstream = await anyio.connect_tcp("127.0.0.1", server.port)
                async with upstream, anyio.create_task_group() as tg:
                    tg.start_soon(pump, upstream, stream)
                    await pump(stream, upstream)
                    tg.cancel_scope.cancel()
                return
            raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
            await stream.send(f"INFO {json.dumps(info)}\r\n".encode())
            tls = await TLSStream.wrap(stream, server_side=True, ssl_context=context)
            await tls.receive()  # the client's CONNECT
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    await listener.serve(serve)


async def test_a_mutual_tls_refusal_lost_to_a_reset_is_still_reported(
    mtls_server: NatsServer, pki: Pki, tmp_path: Path
) -> None:
    connections: list[int] = []
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(reset_twice_then_relay, listener, mtls_server, pki, connections)
        worker = Worker(
            [Counter],
            nats=NatsOptions(servers=(f"tls://127.0.0.1:{port}",), tls_ca=str(pki.ca_file)),
            data_dir=tmp_path / "data",
        )
        error = await connect_and_fail(worker)
        tg.cancel_scope.cancel()
    assert_refusal_reported(str(error), "certificate required")
    assert len(connections) == 3  # two resets, then the real server's refusal


async def test_mutual_tls_refuses_a_client_certificate_from_another_ca_saying_so(
    mtls_server: NatsServer, pki: Pki, tmp_path: Path
) -> None:
    other = write_pki(tmp_path / "other-pki", trustme.CA())
    worker = Worker(
        [Counter],
        nats=NatsOptions(
            servers=(mtls_server.url,),
            tls_ca=str(pki.ca_file),
            tls_cert=str(other.client_cert),
            tls_key=str(other.client_key),
        ),
        data_dir=tmp_path / "data",
    )
    error = await connect_and_fail(worker)
    assert mtls_server.url in str(error)
    assert_refusal_reported(str(error), "unknown ca")


# -- token and password ------------------------------------------------------------------------


async def test_a_worker_with_the_right_token_connects(tmp_path: Path) -> None:
    token = 's3cr"t-$token'
    async with NatsServer(NatsServerConfig(store_dir=tmp_path / "store", token=token)) as server:
        worker = Worker(
            [Counter],
            nats=NatsOptions(servers=(server.url,), token=token),
            data_dir=tmp_path / "data",
        )
        await run_until_ready(worker)


async def test_a_worker_with_a_wrong_token_is_refused_with_a_mailbox_error(
    tmp_path: Path,
) -> None:
    config = NatsServerConfig(store_dir=tmp_path / "store", token="right-token")
    async with NatsServer(config) as server:
        worker = Worker(
            [Counter],
            nats=NatsOptions(servers=(server.url,), token="wrong-token"),
            data_dir=tmp_path / "data",
        )
        error = await connect_and_fail(worker)
    assert server.url in str(error)
    assert "wrong-token" not in str(error)
    assert_refusal_reported(str(error), "refused the credentials")


async def refuse_then_reset(listener: anyio.abc.SocketListener, attempts: list[int]) -> None:
    """A fake NATS server: the first connection is refused as nats-server refuses bad
    credentials; every later one is reset (RST) right after the client's CONNECT."""
    info = json.dumps(
        {
            "server_id": "fake",
            "version": "2.10.0",
            "proto": 1,
            "headers": True,
            "max_payload": 1048576,
            "auth_required": True,
        }
    )

    async def serve(stream: anyio.abc.SocketStream) -> None:
        attempts.append(1)
        async with stream:
            await stream.send(f"INFO {info}\r\n".encode())
            received = b""
            while b"CONNECT" not in received:
                received += await stream.receive()
            if len(attempts) == 1:
                await stream.send(b"-ERR 'Authorization Violation'\r\n")
                return
            raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    await listener.serve(serve)


async def test_a_reset_after_a_refusal_still_reports_the_refusal(tmp_path: Path) -> None:
    attempts: list[int] = []
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(refuse_then_reset, listener, attempts)
        worker = Worker(
            [Counter],
            nats=NatsOptions(servers=(f"nats://127.0.0.1:{port}",), token="wrong-token"),
            data_dir=tmp_path / "data",
        )
        error = await connect_and_fail(worker)
        tg.cancel_scope.cancel()
    assert len(attempts) >= 2  # the reset came last
    assert "refused the credentials" in str(error)


async def test_the_run_command_with_a_wrong_password_exits_1_with_one_line_naming_the_url(
    tmp_path: Path,
) -> None:
    config = NatsServerConfig(store_dir=tmp_path / "store", user="svc", password="right-pw")
    async with NatsServer(config) as server:
        with anyio.fail_after(60):
            out = await anyio.run_process(
                [
                    sys.executable,
                    "-m",
                    "actorsource",
                    "run",
                    "examples.bank:Accounts",
                    "--nats",
                    server.url,
                    "--user",
                    "svc",
                    "--password",
                    "wrong-pw",
                    "--data-dir",
                    str(tmp_path / "data"),
                ],
                check=False,
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
            )
    stderr = out.stderr.decode()
    assert out.returncode == 1, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("actorsource:")]
    assert len(lines) == 1, stderr
    assert server.url in lines[0]
    assert "Traceback" not in stderr
    assert "wrong-pw" not in stderr + out.stdout.decode()
    assert_refusal_reported(lines[0], "refused the credentials")


# -- names and keys that end up in subjects ----------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "a.b",
        "a*",
        "*",
        ">",
        "a>",
        "a b",
        "a\tb",
        "a\nb",
        "",
        "-a",
        "x" * 65,
        pytest.param("counter\n", id="trailing-newline"),
    ],
)
def test_an_actor_name_with_dots_wildcards_or_whitespace_is_refused(name: str) -> None:
    with pytest.raises(InvalidNameError, match="invalid actor name"):
        validate_name(name)


@pytest.mark.parametrize("name", [None, 7, b"counter"])
def test_an_actor_name_that_is_not_a_string_is_refused(name: object) -> None:
    with pytest.raises(InvalidNameError):
        validate_name(name)


def test_the_actor_decorator_refuses_a_name_with_a_trailing_newline() -> None:
    with pytest.raises(InvalidNameError):
        actor("counter\n", subjects=["count.>"])


@pytest.mark.parametrize("stream", ["A.B", "A*", "A>", "A B", ""])
def test_the_actor_decorator_refuses_a_bad_stream_name(stream: str) -> None:
    with pytest.raises(InvalidNameError, match="invalid stream name"):
        actor("a", subjects=["a.>"], stream=stream)


@pytest.mark.parametrize(
    "token", ["a.b", "*", ">", "a*", "a>", "a b", "a\tb", "a\r", "a\n", "", None, 3]
)
def test_a_subject_token_with_dots_wildcards_or_whitespace_is_refused(token: object) -> None:
    with pytest.raises(InvalidNameError, match="invalid subject token"):
        validate_token(token)


def test_a_plain_subject_token_is_accepted() -> None:
    assert validate_token("order-42_A") == "order-42_A"


@pytest.mark.parametrize("subject", ["a.*", "a.>", "*", ">", "*.b"])
def test_a_subject_without_wildcards_refuses_them(subject: str) -> None:
    with pytest.raises(InvalidNameError, match="wildcards are not allowed"):
        validate_subject(subject, wildcards=False)


@pytest.mark.parametrize("subject", ["a..b", ".a", "a.", "a b.c", "a.b\n", "a*.b", "a.b>"])
def test_a_malformed_literal_subject_is_refused(subject: str) -> None:
    with pytest.raises(InvalidNameError):
        validate_subject(subject, wildcards=False)


def test_a_literal_subject_is_accepted_without_wildcards() -> None:
    assert validate_subject("dlq.counter.orders", wildcards=False) == "dlq.counter.orders"


# -- nothing received is ever unpickled --------------------------------------------------------


class PlantsAFile:
    """Unpickling this creates ``marker``: evidence that someone ran pickle.loads on it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (Path(self.marker),))


def test_the_pickle_payload_used_below_does_plant_its_file_when_unpickled(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "unpickled"
    pickle.loads(pickle.dumps(PlantsAFile(marker)))
    assert marker.exists()


async def test_a_pickle_payload_is_dead_lettered_as_undecodable_and_never_unpickled(
    actor_kit: ActorKit, tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled"
    payload = pickle.dumps(PlantsAFile(marker))
    async with actor_kit.start(Counter) as counter:
        await actor_kit.publish_raw("count.a", payload, headers={EVENT_TYPE_HEADER: "Added"})
        await actor_kit.publish("count.a", Added("a", 1))  # the rest still flows
        await counter.settled()
        dead = await counter.dead_letters()
        assert counter.state.totals == {"a": 1}
    assert not marker.exists()
    assert [(d.reason, d.type, d.payload) for d in dead] == [("undecodable", "Added", payload)]

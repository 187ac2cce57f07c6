"""NATS connection options and the connection itself, with its callbacks wired to the logs."""

from __future__ import annotations

import math
import os
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import anyio
import nats
import nats.errors
import structlog
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.tls import TLSStream
from nats.aio.client import Client as NATS

from .._errors import NatsConnectionError, ServerTooOldError

__all__ = ["NatsOptions", "connect", "require_server_version"]

DEFAULT_URL = "nats://127.0.0.1:4222"


@dataclass(frozen=True)
class NatsOptions:
    """How to reach NATS. Every credential form nats-py supports passes through.

    ``servers`` defaults to ``$NATS_URL``, else ``nats://127.0.0.1:4222``. ``tls`` may be an
    ``ssl.SSLContext``; ``tls_ca``/``tls_cert``/``tls_key`` build one from PEM files.
    ``extra`` is passed to :func:`nats.connect` as is, for anything not named here.

    ``connect_timeout`` bounds one attempt (nats-py's). ``wait_for_server`` is how long
    the *first* connection keeps trying, with backoff, while no server answers (refused,
    reset, timed out): ``0`` gives up at the first failure, ``None`` waits for ever. A
    server that refuses the credentials or the TLS handshake fails at once either way.
    """

    servers: tuple[str, ...] = ()
    name: str | None = None
    user: str | None = None
    password: str | None = None
    token: str | None = None
    credentials: str | None = None
    nkeys_seed: str | None = None
    tls: ssl.SSLContext | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    connect_timeout: float = 2.0
    max_reconnect_attempts: int = -1
    reconnect_time_wait: float = 0.5
    wait_for_server: float | None = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def urls(self) -> list[str]:
        """The server URLs to try, from the options or the environment."""
        if self.servers:
            return list(self.servers)
        return [os.environ.get("NATS_URL") or DEFAULT_URL]

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context to use, if any."""
        if self.tls is not None:
            return self.tls
        if not (self.tls_ca or self.tls_cert):
            return None
        ctx = ssl.create_default_context(cafile=self.tls_ca)
        if self.tls_cert:
            ctx.load_cert_chain(self.tls_cert, self.tls_key)
        return ctx


def require_server_version(nc: NATS, minimum: tuple[int, int], needed_for: str) -> None:
    """Raise :class:`ServerTooOldError` (one line, naming the version required) unless the
    connected nats-server is at least ``minimum`` (major, minor)."""
    version = nc.connected_server_version
    try:
        found = (int(version.major or 0), int(version.minor or 0))
        shown = f"{found[0]}.{found[1]}.{int(version.patch or 0)}"
    except ValueError:
        found, shown = (0, 0), "of an unknown version"
    if found < minimum:
        required = f"{minimum[0]}.{minimum[1]}"
        raise ServerTooOldError(
            f"nats-server {shown} is too old: {needed_for} needs nats-server {required} or newer",
            required=required,
        )


async def connect(
    options: NatsOptions,
    *,
    log: structlog.stdlib.BoundLogger,
    on_reconnect: Callable[[], Awaitable[None]] | None = None,
) -> NATS:
    """Connect to NATS; failures raise NatsConnectionError naming the URLs tried.

    While no server answers, the first connection is retried with backoff for
    ``options.wait_for_server`` seconds (for ever if ``None``), each failure logged with
    the URLs. Connection events (disconnect, reconnect, errors) are logged instead of
    printed, and ``on_reconnect`` runs after every reconnect (the mailboxes re-issue their
    pull requests).
    """
    urls = ", ".join(options.urls())
    wait = options.wait_for_server
    deadline = math.inf if wait is None else anyio.current_time() + wait
    delay = options.reconnect_time_wait
    reason: str | None = None
    while True:
        try:
            # With no wait, the one attempt runs to nats-py's own timeout.
            return await _connect_once(
                options, log=log, on_reconnect=on_reconnect, deadline=deadline if wait else None
            )
        except _Unreachable as failure:
            # An attempt cut short by the deadline says less than the one before it.
            reason = reason if failure.cut_short and reason else failure.reason
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                within = f" within {wait:g} s" if wait else ""
                raise NatsConnectionError(
                    f"cannot connect to NATS at {urls}{within}: {reason}"
                ) from failure.__cause__
            pause = min(delay, remaining)
            log.warning(
                "cannot reach NATS; retrying", url=urls, error=reason, retry_in=round(pause, 2)
            )
            await anyio.sleep(pause)
            delay = min(delay * 2, 5.0)


#: How many times one first-connect attempt tries each server (each failure reaches error_cb).
_FIRST_CONNECT_TRIES = 2


class _GiveUp(Exception):
    """Raised by error_cb to end nats-py's first connect (see _connect_once)."""


class _Unreachable(Exception):
    """No server answered one attempt: waiting may heal it."""

    def __init__(self, reason: str, *, cut_short: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.cut_short = cut_short


async def _connect_once(
    options: NatsOptions,
    *,
    log: structlog.stdlib.BoundLogger,
    on_reconnect: Callable[[], Awaitable[None]] | None,
    deadline: float | None,
) -> NATS:
    errors: list[Exception] = []
    # nats-py gets the reconnect policy up front, and with a negative (or zero) number of
    # attempts it would also retry a failing *first* connect for ever. So error_cb ends it
    # once every server failed _FIRST_CONNECT_TRIES times (the caller's loop then retries
    # with backoff and logs, within its own deadline), by raising from the callback: that
    # stops nats-py between two tries, where close() still cleans up everything, which a
    # cancellation landing inside nats-py's own clean-up would not. nats-py never returns
    # from connect() (nor from close()) once a TLS handshake failed: asyncio's start_tls
    # closes the socket under a swapped protocol, so the stream's close waiter never fires.
    # A TLS failure is final anyway, so it cancels the first connect at once. The deadline
    # ends an attempt still waiting for a paused server.
    connecting = anyio.CancelScope(deadline=math.inf if deadline is None else deadline)
    connected = False
    tries = _FIRST_CONNECT_TRIES * len(options.urls())
    failed = 0  # tries that failed so far
    in_handshake = False  # the last failure came during a handshake
    gave_up = False

    async def error_cb(exc: Exception) -> None:
        nonlocal failed, in_handshake, gave_up
        if not connected:
            if gave_up:
                return  # the clean-up after giving up
            errors.append(exc)
            if nc.is_connecting:  # reached a server, failed in the handshake (TLS, INFO, CONNECT)
                failed += 1
                in_handshake = True
            elif in_handshake:  # the close after that failure failed too: the same try
                in_handshake = False
            else:  # reached no server (refused, unreachable, timed out)
                failed += 1
            if isinstance(exc, ssl.SSLError):
                connecting.cancel()
            elif failed >= tries:
                gave_up = True
                raise _GiveUp
            return
        if not nc.is_connected:
            return  # a failed reconnect: the disconnect was logged, nats-py keeps trying
        log.warning("nats error", error=repr(exc))

    async def disconnected_cb() -> None:
        if not connected:
            return  # a failed first attempt: the error says it all
        if nc.is_closed:
            log.info("nats connection closed")  # closed on purpose: no news
            return
        log.warning("nats disconnected")

    async def reconnected_cb() -> None:
        log.info("nats reconnected", url=str(nc.connected_url.geturl() if nc.connected_url else ""))
        if on_reconnect is not None:
            await on_reconnect()

    kwargs: dict[str, Any] = {
        "servers": options.urls(),
        "name": options.name,
        "connect_timeout": options.connect_timeout,
        "max_reconnect_attempts": options.max_reconnect_attempts,
        "reconnect_time_wait": options.reconnect_time_wait,
        "allow_reconnect": True,
        "error_cb": error_cb,
        "disconnected_cb": disconnected_cb,
        "reconnected_cb": reconnected_cb,
    }
    if options.user is not None:
        kwargs["user"] = options.user
        kwargs["password"] = options.password
    if options.token is not None:
        kwargs["token"] = options.token
    if options.credentials is not None:
        kwargs["user_credentials"] = str(Path(options.credentials))
    if options.nkeys_seed is not None:
        kwargs["nkeys_seed"] = options.nkeys_seed
    tls = options.ssl_context()
    if tls is not None:
        kwargs["tls"] = tls
    kwargs.update(options.extra)
    nc = NATS()
    try:
        try:
            with connecting:
                await nc.connect(**kwargs)
        except _GiveUp:
            raise errors[-1] from None
        if connecting.cancelled_caught:
            raise errors[-1] if errors else TimeoutError()
    except anyio.get_cancelled_exc_class():
        await _close_quietly(nc)  # the caller gave up waiting (a worker stopped meanwhile)
        raise
    except (nats.errors.Error, OSError, ssl.SSLError, TimeoutError) as exc:
        await _close_quietly(nc)
        cause = _most_telling(errors) or exc
        if tls is not None and _is_connection_lost(cause):
            cause = await _tls_refusal(options, tls) or cause
        if _may_heal(cause):
            cut_short = connecting.cancelled_caught and not errors
            raise _Unreachable(_describe(cause), cut_short=cut_short) from exc
        raise NatsConnectionError(
            f"cannot connect to NATS at {', '.join(options.urls())}: {_describe(cause)}"
        ) from exc
    connected = True
    return nc


async def _close_quietly(nc: NATS) -> None:
    # Bounded: nats-py's close() never returns once a TLS handshake failed (see above).
    with anyio.move_on_after(1.0, shield=True):
        try:
            await nc.close()
        except Exception:
            pass


def _may_heal(exc: BaseException) -> bool:
    """Whether a failed first connect may succeed later: no server answered (yet)."""
    if isinstance(exc, ssl.SSLError) or "authorization" in str(exc).lower():
        return False
    return isinstance(
        exc, OSError | TimeoutError | nats.errors.NoServersError | nats.errors.TimeoutError
    )


# OpenSSL's names for the alerts a server sends when it rejects the client's certificate.
_REFUSED_CERTIFICATE = frozenset(
    {
        "TLSV1_ALERT_UNKNOWN_CA",
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED",
        "TLSV1_ALERT_ACCESS_DENIED",
    }
)


def _is_connection_lost(error: BaseException) -> bool:
    """Whether ``error`` only says that the server hung up, not why."""
    return isinstance(
        error,
        ConnectionResetError | BrokenPipeError | ssl.SSLEOFError | nats.errors.UnexpectedEOF,
    )


def _most_telling(errors: list[Exception]) -> Exception | None:
    """The last error that says more than "the connection went away".

    A server closes the socket right after refusing credentials or a certificate, and the
    retry often meets that reset: it must not hide the refusal that explains it.
    """
    for error in reversed(errors):
        if not _is_connection_lost(error):
            return error
    return errors[-1] if errors else None


async def _tls_refusal(options: NatsOptions, tls: ssl.SSLContext) -> ssl.SSLError | None:
    """Why a TLS server hung up on us: the alert it sends a client that only listens.

    A server refusing the client's certificate sends its alert after the handshake, which
    the client has already finished on its side, and closes. nats-py writes CONNECT and PING
    at once: when they reach the closed socket, the server's reset can destroy the alert
    unread, and the client sees EPIPE or ECONNRESET instead, depending on timing. So one
    more connection upgrades to TLS, writes nothing and reads: the alert (or nothing, within
    ``connect_timeout``, from a server that did not refuse the handshake).
    """
    hostname = options.extra.get("tls_hostname")
    handshake_first = bool(options.extra.get("tls_handshake_first"))
    for url in options.urls():
        parsed = urlparse(url if "://" in url else f"nats://{url}")
        host = parsed.hostname or "127.0.0.1"
        with anyio.move_on_after(options.connect_timeout):
            try:
                async with await anyio.connect_tcp(host, parsed.port or 4222) as tcp:
                    if not handshake_first:  # the server's INFO comes first, in clear
                        await BufferedByteReceiveStream(tcp).receive_until(b"\r\n", 1 << 20)
                    stream = await TLSStream.wrap(
                        tcp, hostname=hostname or host, ssl_context=tls, standard_compatible=False
                    )
                    await stream.receive()
            except ssl.SSLError as exc:
                return exc
            except (
                OSError,
                anyio.EndOfStream,
                anyio.BrokenResourceError,
                anyio.IncompleteRead,
                anyio.DelimiterNotFound,
            ):
                pass  # it said nothing telling: keep the error already in hand
    return None


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"the server's TLS certificate is not trusted ({exc.verify_message}: "
            "certificate verify failed); pass the CA that signed it with --tls-ca "
            "(NatsOptions(tls_ca=...))"
        )
    if isinstance(exc, ssl.SSLError) and exc.reason == "TLSV13_ALERT_CERTIFICATE_REQUIRED":
        return (
            "the server requires a client certificate (tls alert: certificate required); "
            "pass one with --tls-cert and --tls-key (NatsOptions(tls_cert=..., tls_key=...))"
        )
    if isinstance(exc, ssl.SSLError) and exc.reason in _REFUSED_CERTIFICATE:
        alert = exc.reason.lower().replace("_", " ")
        return (
            f"the server refused the client certificate ({alert}); is it signed by the CA "
            "the server trusts, and still valid?"
        )
    if isinstance(exc, TimeoutError | nats.errors.TimeoutError):
        return "no answer in time (is the server paused or overloaded, or a firewall in the way?)"
    if isinstance(exc, nats.errors.NoServersError | ConnectionRefusedError):
        return "no server answered (is nats-server running? or use `actorsource run --embedded`)"
    if "authorization" in text.lower():
        return f"the server refused the credentials ({text})"
    return text

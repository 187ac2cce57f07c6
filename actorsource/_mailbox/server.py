"""Launch a real ``nats-server`` process with JetStream for tests, the demo and ``--embedded``.

The server is a child process started with :class:`subprocess.Popen` rather than
``anyio.open_process``: a Popen object belongs to no event loop, so a server started in one
loop (a session-scoped fixture) can be stopped from another. Its output goes to a log file
next to the store directory, never to a pipe, because nobody would read the pipe and a full
pipe blocks the server.

Nothing global is registered (no ``atexit`` hook, no signal handler): whoever starts a server
stops it, typically by using :class:`NatsServer` as an async context manager.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import signal
import ssl
import subprocess
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

import anyio
from nats.aio.client import Client as NatsClient
from nats.errors import Error as _NatsClientError

from .._errors import NatsServerError
from .server_config import (
    NatsServerConfig,
    find_nats_server,
    free_port,
    port_is_free,
    probe_tls,
    write_config,
)
from .server_process import log_tail, wait_exit, wait_stopped

__all__ = ["NatsServer", "NatsServerConfig", "find_nats_server"]

_LOG_TAIL_LINES = 20
_READY_POLL = 0.02
_CLOSE_GRACE = 1.0
_STOP_WAIT = 1.0
_PROBE_ATTEMPT = 0.5


def _client_host(host: str) -> str:
    # A wildcard bind address is not something to connect to; its loopback is.
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


async def _ignore_client_error(exc: Exception) -> None:
    # nats-py reports every failed readiness attempt here; the poll loop keeps the last one.
    pass


class NatsServer:
    """A nats-server process with JetStream, started and stopped explicitly or as an async
    context manager.

    Guarantees:

    * :meth:`start` returns only once the server accepts TCP connections *and* answers
      JetStream API requests; otherwise the process is killed and :class:`NatsServerError`
      is raised with the tail of the server's log.
    * The port is fixed for the life of the object, so :meth:`restart` (and a later
      :meth:`start` after :meth:`stop` or :meth:`kill`) comes back at the same :attr:`url`
      with the same store directory, hence the same streams.
    * :meth:`stop` is idempotent and completes even if the calling task is cancelled.

    Files next to the store directory: the server's output is appended to
    ``<store_dir>.nats-server.log``; ``<store_dir>.nats-server.ports/`` receives the ports
    file that tells start-up readiness apart from another server on the same port; with
    auth, TLS or ``sync_always``, ``<store_dir>.nats-server.conf`` (mode 0600) holds the
    settings. ``extra_args`` must not redirect the ports file (``--ports_file_dir``).
    The object is not meant to be driven from several tasks at once.
    """

    def __init__(self, config: NatsServerConfig) -> None:
        """Prepare (but do not start) a server; picks the port now if none is configured."""
        self._config = config
        # Absolute, so a later chdir cannot move the store, log or config file.
        self._store_dir = Path(config.store_dir).absolute()
        self._port = config.port if config.port is not None else free_port(config.host)
        self._log_path = self._store_dir.parent / f"{self._store_dir.name}.nats-server.log"
        self._conf_path = self._store_dir.parent / f"{self._store_dir.name}.nats-server.conf"
        self._ports_dir = self._store_dir.parent / f"{self._store_dir.name}.nats-server.ports"
        # Absolute for the same reason, and because nats-server resolves relative paths
        # against its own working directory.
        self._tls_files = {
            what: Path(path).absolute()
            for what, path in (
                ("tls_cert", config.tls_cert),
                ("tls_key", config.tls_key),
                ("tls_ca", config.tls_ca),
            )
            if path is not None
        }
        self._probe_tls: ssl.SSLContext | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    def __repr__(self) -> str:
        return f"NatsServer(url={self.url!r}, pid={self.pid!r}, store_dir={str(self._store_dir)!r})"

    @property
    def url(self) -> str:
        """The client URL, e.g. ``nats://127.0.0.1:4222``; valid before start and after restarts.

        With TLS it is ``tls://127.0.0.1:4222``. nats-py upgrades to TLS whenever the server
        requires it, whatever the scheme, with the ``tls=`` context it was given (else the
        system's CAs); the scheme tells other clients (Go, the ``nats`` CLI) to insist on it.
        """
        host = _client_host(self._config.host)
        if ":" in host:
            host = f"[{host}]"
        scheme = "tls" if self._config.tls else "nats"
        return f"{scheme}://{host}:{self._port}"

    @property
    def port(self) -> int:
        """The client port; the same for every start of this object."""
        return self._port

    @property
    def pid(self) -> int | None:
        """The process id while the process is alive (running or paused), else ``None``."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    # The timeouts below are part of the API the harness and CLI call with; a caller's
    # fail_after could not tell start-up failures apart nor bound the SIGTERM grace period.
    async def start(self, *, timeout: float = 10.0) -> None:
        """Start the server and wait until it accepts connections and JetStream is ready.

        Raises:
            NatsServerError: the server is already running, the executable cannot be found
                or run, the process exited during start-up, or it was not ready within
                ``timeout`` seconds. The message includes the last lines of the server's
                output. On any failure (including cancellation) the process is killed.
        """
        if self.pid is not None:
            raise NatsServerError(f"nats-server is already running (pid {self.pid}) at {self.url}")
        executable = find_nats_server(self._config.executable)
        self._probe_tls = probe_tls(self._config, self._tls_files)
        args = [str(executable)]
        conf = write_config(self._config, self._conf_path, self._tls_files, self.url)
        if conf is not None:
            args += ["-c", str(conf)]
        # -sd must not also appear in the config file: nats-server rejects that as a
        # "Duplicate 'store_dir' configuration" even when both values are equal.
        args += ["-js", "-sd", str(self._store_dir)]
        args += ["-a", self._config.host, "-p", str(self._port)]
        args += ["--ports_file_dir", str(self._ports_dir)]
        args += list(self._config.extra_args)

        self._proc = self._spawn(args)

        try:
            await self._wait_ready(anyio.current_time() + timeout, timeout)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._kill_and_reap()
            raise

    async def stop(self, *, timeout: float = 10.0) -> None:
        """Stop the server gracefully: SIGTERM, then SIGKILL if it has not exited in ``timeout``.

        Idempotent (stopping a stopped, killed or never-started server does nothing), works
        on a paused server, and is shielded from cancellation so the process is always
        reaped. When it returns, the process has exited and the port is free.
        """
        with anyio.CancelScope(shield=True):
            proc = self._proc
            if proc is None:
                return
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                # A stopped (paused) process acts on SIGTERM only once continued.
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGCONT)
                if not await wait_exit(proc, timeout):
                    await self._kill_and_reap()
            self._proc = None

    async def kill(self) -> None:
        """Kill the server with SIGKILL, as a crash would, and wait for it to exit.

        Does nothing if the server is not running. JetStream data already written stays in
        the store directory; a later :meth:`start` recovers it.
        """
        with anyio.CancelScope(shield=True):
            await self._kill_and_reap()

    def pause(self) -> None:
        """Freeze the server with SIGSTOP: connections stay open but nothing is answered.

        Returns once every thread of the server has stopped (where ``/proc`` shows it, else
        right after the signal), so a request sent afterwards is not answered.

        Raises:
            NatsServerError: the server is not running.
        """
        self._signal_running(signal.SIGSTOP)
        assert self._proc is not None
        wait_stopped(self._proc.pid, _STOP_WAIT)

    def resume(self) -> None:
        """Let a paused server continue (SIGCONT).

        Raises:
            NatsServerError: the server is not running.
        """
        self._signal_running(signal.SIGCONT)

    async def restart(self, *, timeout: float = 10.0) -> None:
        """Stop the server (if running) and start it again on the same port and store dir.

        ``timeout`` applies to the stop and to the start separately.
        """
        await self.stop(timeout=timeout)
        deadline = anyio.current_time() + timeout
        # The old process is reaped, so its listener is gone; this only waits out whatever
        # else may briefly hold the port, and start() reports it if it stays taken.
        while not port_is_free(self._config.host, self._port):
            if anyio.current_time() >= deadline:
                break
            await anyio.sleep(_READY_POLL)
        await self.start(timeout=timeout)

    async def __aenter__(self) -> NatsServer:
        """Start the server (see :meth:`start`) and return it."""
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server (see :meth:`stop`)."""
        await self.stop()

    def _spawn(self, args: list[str]) -> subprocess.Popen[bytes]:
        # Synchronous on purpose: Popen returns as soon as the child is forked, and a Popen
        # object, unlike anyio's Process, is not tied to the event loop that created it.
        try:
            self._store_dir.mkdir(parents=True, exist_ok=True)
            # Files left by a killed server could carry a pid that is reused now.
            shutil.rmtree(self._ports_dir, ignore_errors=True)
            self._ports_dir.mkdir()
            with self._log_path.open("ab") as log:
                log.write(f"--- actorsource: starting {' '.join(args)}\n".encode())
                log.flush()
                self._log_offset = log.tell()
                return subprocess.Popen(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    # Keep a terminal's Ctrl-C away from the server, so the application can
                    # drain against a live server and stop it last.
                    start_new_session=True,
                )
        except OSError as exc:
            raise NatsServerError(f"cannot start {args[0]}: {exc}") from exc

    def _signal_running(self, sig: signal.Signals) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise NatsServerError(f"nats-server at {self.url} is not running")
        proc.send_signal(sig)

    async def _kill_and_reap(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            # SIGKILL cannot be ignored; the bound only guards against an unkillable process
            # (e.g. stuck in uninterruptible I/O), which is then left for the OS to reap.
            await wait_exit(proc, 30.0)
        self._proc = None

    def _failure(self, what: str, cause: BaseException | None = None) -> NatsServerError:
        detail = f" (last error: {cause!r})" if cause is not None else ""
        return NatsServerError(
            f"nats-server at {self.url} {what}{detail}; "
            f"last lines of {self._log_path}:\n"
            f"{log_tail(self._log_path, self._log_offset, _LOG_TAIL_LINES)}"
        )

    def _read_ports_file(self) -> set[int] | None:
        proc = self._proc
        assert proc is not None
        try:
            found = next(self._ports_dir.glob(f"*_{proc.pid}.ports"), None)
            if found is None:
                return None
            urls = json.loads(found.read_text(encoding="utf-8")).get("nats", [])
        except (OSError, ValueError):
            # Read while nats-server was still writing it; the next poll sees it whole.
            return None
        return {urlsplit(url).port or 4222 for url in urls}

    def _check_alive(self) -> None:
        proc = self._proc
        assert proc is not None
        code = proc.poll()
        if code is not None:
            self._proc = None
            # Exit status 0 is a failure too: an unknown flag makes nats-server print its
            # usage and exit 0.
            raise self._failure(f"exited with status {code} during start-up")

    async def _wait_ready(self, deadline: float, budget: float) -> None:
        last_error: BaseException | None = None

        # Wait for our own process to report its listener before probing the port: a probe
        # alone can be answered by another server already on that port, while ours is still
        # starting and about to die with "address already in use". The ports file carries
        # the pid in its name, so it cannot be someone else's.
        while True:
            self._check_alive()
            ports = self._read_ports_file()
            if ports is not None:
                break
            if anyio.current_time() >= deadline:
                raise self._failure(f"did not open its client port within {budget}s")
            await anyio.sleep(_READY_POLL)
        if self._port not in ports:
            raise self._failure(
                f"listens on port(s) {sorted(ports)} instead of {self._port} "
                "(does extra_args override -p?)"
            )

        while True:
            self._check_alive()
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                raise self._failure(f"JetStream was not ready within {budget}s", last_error)
            # One attempt is bounded well below the budget: a clustered server that has no
            # JetStream meta leader yet leaves the request unanswered rather than refusing it.
            attempt = min(remaining, _PROBE_ATTEMPT)
            try:
                with anyio.fail_after(attempt):
                    await self._probe_jetstream(attempt)
                return
            except ssl.SSLError as exc:
                # The server is up (it answered with TLS), and a certificate the probe does not
                # trust, or a client certificate the server refuses, stays so on a retry.
                self._check_alive()
                raise self._failure(
                    "failed the TLS handshake with the readiness probe (does client_tls trust "
                    "the server's certificate, and hold a client certificate that tls_ca "
                    "signed?)",
                    exc,
                ) from exc
            except (_NatsClientError, OSError, TimeoutError) as exc:
                last_error = exc
                await anyio.sleep(_READY_POLL)

    async def _probe_jetstream(self, seconds: float) -> None:
        # Client() then connect(), not nats.connect(): when connect() fails after the TCP
        # handshake (e.g. an authorization error) nats-py keeps the socket open, and only a
        # close() on a client we hold releases it.
        nc = NatsClient()
        try:
            await nc.connect(
                self.url,
                user=self._config.user,
                password=self._config.password,
                token=self._config.token,
                tls=self._probe_tls,
                name="actorsource-readiness-probe",
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0,
                # Typed as int by nats-py; the caller's fail_after is the real bound.
                connect_timeout=max(1, math.ceil(seconds)),
                error_cb=_ignore_client_error,
            )
            await nc.jetstream(timeout=max(seconds, 0.1)).account_info()
        finally:
            # After a failed TLS handshake nats-py's close() never returns: asyncio's
            # start_tls closes the socket under a swapped protocol, so the stream's close
            # waiter never fires. The socket is closed by then; bounding the wait loses nothing.
            with anyio.move_on_after(_CLOSE_GRACE, shield=True):
                await nc.close()

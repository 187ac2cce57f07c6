"""The HTTP server of a worker's metrics and health probes, in a thread of its own.

``GET /metrics`` answers the Prometheus text format (:class:`~.metrics.WorkerCollector`,
plus the process's CPU, memory and file descriptors), ``GET /healthz`` 200 while the event
loop's heartbeat is fresh and 503 when it is stale, ``GET /readyz`` 200 when every hosted
actor is running and caught up within the allowed lag, else 503; both with one line saying
why. The server runs in its own thread so that it answers while the event loop is blocked:
that is what ``/healthz`` is there to see. Needs ``prometheus-client``
(``actorsource[prometheus]``).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anyio
import anyio.to_thread
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector
from prometheus_client.exposition import generate_latest

from .._errors import ActorsourceError
from .._log import get_logger
from .health import Health, HealthOptions, Hosting, Verdict
from .metrics import WorkerCollector

__all__ = ["ProbeServer", "serve_probes"]


class ProbeServer:
    """Serves ``/metrics``, ``/healthz`` and ``/readyz`` for ``health`` on ``host:port``
    (port 0: any free port, see :attr:`port`) from :meth:`start` until :meth:`close`."""

    def __init__(self, health: Health, *, host: str = "0.0.0.0", port: int = 9464) -> None:
        self.health = health
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(WorkerCollector(health))
        ProcessCollector(registry=self.registry)
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="actorsource-probes", daemon=True
        )

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Start answering (in the server's thread)."""
        self._thread.start()

    def close(self) -> None:
        """Stop answering and release the port (blocks for up to half a second)."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def metrics(self) -> bytes:
        """The metrics in the Prometheus text format."""
        return generate_latest(self.registry)


def _handler(probes: ProbeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, probes.metrics(), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._verdict(probes.health.alive())
            elif path == "/readyz":
                self._verdict(probes.health.ready())
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n")

        def _verdict(self, verdict: Verdict) -> None:
            self._send(200 if verdict.ok else 503, f"{verdict.reason}\n".encode())

        def _send(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # a scrape every few seconds is not worth a log line

    return Handler


@asynccontextmanager
async def serve_probes(
    worker: Hosting,
    *,
    host: str = "0.0.0.0",
    port: int = 9464,
    options: HealthOptions | None = None,
) -> AsyncIterator[ProbeServer]:
    """Serve the metrics and probes of ``worker`` while the block runs. A port that is taken
    fails here, before the worker starts (``OSError``)."""
    health = Health(worker, options)
    try:
        probes = ProbeServer(health, host=host, port=port)
    except OSError as exc:
        raise ActorsourceError(
            f"cannot serve metrics and probes on {host}:{port}: {exc.strerror or exc}"
        ) from exc
    log = get_logger(component="probes")
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(health.run)
            probes.start()
            log.info("metrics and health probes listening", host=host, port=probes.port)
            yield probes
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(probes.close)

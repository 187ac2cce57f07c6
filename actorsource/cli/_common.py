"""What the commands share: loading actors, the shared options, one-line failures, NATS.

Expected failures (no server, a journal held by another worker, a bad target) print one
line to stderr and exit non-zero; tracebacks are for bugs.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import anyio
import click
from click.core import ParameterSource

from .._errors import ActorDefinitionError, ActorsourceError, find_error
from .._mailbox.connection import NatsOptions
from .._model.actor import definition_of
from ._logging_setup import configure_logging

__all__ = [
    "BadTarget",
    "connection_options_given",
    "data_dir_option",
    "exit_on_expected_failure",
    "fail",
    "load_actors",
    "nats_connection_options",
    "plural",
    "require_extra",
    "run_or_fail",
    "with_nats",
]

T = TypeVar("T")


class BadTarget(click.ClickException):
    """A target of the command line that names no usable actor: one line, exit 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"actorsource: {self.format_message()}", err=True)


def require_extra(module: str, extra: str, feature: str) -> None:
    """Fail in one line (exit 2) naming the extra to install when ``module``, which
    ``feature`` needs, cannot be imported."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise BadTarget(
            f"{feature} needs {module}, which is not installed: pip install 'actorsource[{extra}]'"
        ) from None


def load_actors(targets: tuple[str, ...]) -> list[type]:
    """Import ``MODULE:CLASS`` (one actor) or ``MODULE`` (every actor it defines).

    The current directory is put on ``sys.path`` first, as application runners do, so that
    ``actorsource run myservice:Orders`` finds ``./myservice.py``. A target that cannot be
    imported, or whose actor is defined wrongly, is a :class:`BadTarget` (one line, exit 2).
    """
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    actors: list[type] = []
    for target in targets:
        module_name, _, attr = target.partition(":")
        module = _import(module_name, attr)
        if attr:
            cls = getattr(module, attr, None)
            if cls is None:
                raise BadTarget(f"{module_name!r} has no attribute {attr!r}")
            try:
                definition_of(cls)
            except ActorDefinitionError as exc:
                raise BadTarget(str(exc)) from exc
            actors.append(cls)
            continue
        found = [
            obj
            for obj in vars(module).values()
            if isinstance(obj, type) and "__actorsource_actor__" in obj.__dict__
        ]
        if not found:
            raise BadTarget(f"{module_name!r} defines no @actor classes")
        actors.extend(found)
    return actors


def _import(module_name: str, attr: str) -> Any:
    if not all(part.isidentifier() for part in module_name.split(".")):
        raise BadTarget(f"{module_name!r} is not a module name{_file_hint(module_name, attr)}")
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        hint = _file_hint(module_name, attr)
        raise BadTarget(f"cannot import {module_name!r}: {exc}{hint}") from exc
    except ActorsourceError as exc:
        # A decorator refused a definition (no handlers, not an event type, a bad name...)
        raise BadTarget(f"{module_name!r} defines an actor wrongly: {exc}") from exc


def _file_hint(module_name: str, attr: str) -> str:
    """For ``mymodule.py:Accounts``: say ``mymodule:Accounts`` was meant."""
    if not module_name.endswith(".py"):
        return ""
    path = Path(module_name)
    target = path.stem + (f":{attr}" if attr else "")
    where = "" if path.parent == Path() else f", run from {str(path.parent)!r}"
    return f"; name a module, not a file: {target!r}{where}"


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("data"),
    show_default=True,
    help="Where the journals live.",
)

_EXISTING_FILE = click.Path(exists=True, dir_okay=False)

# In the order --help lists them.
_CONNECTION_OPTIONS = (
    click.option(
        "--nats",
        "url",
        envvar="NATS_URL",
        help="NATS URL, or several of a cluster separated by commas [env NATS_URL; "
        "default nats://127.0.0.1:4222]",
    ),
    click.option("--user", envvar="NATS_USER", help="NATS user name [env NATS_USER]."),
    click.option("--password", envvar="NATS_PASSWORD", help="NATS password [env NATS_PASSWORD]."),
    click.option("--token", envvar="NATS_TOKEN", help="NATS token [env NATS_TOKEN]."),
    click.option("--creds", type=_EXISTING_FILE, help="NATS credentials file."),
    click.option("--tls-ca", type=_EXISTING_FILE, help="CA certificate (PEM)."),
    click.option("--tls-cert", type=_EXISTING_FILE, help="Client certificate (PEM)."),
    click.option("--tls-key", type=_EXISTING_FILE, help="Client key (PEM)."),
)
_CONNECTION_PARAMS = ("url", "user", "password", "token", "creds", "tls_ca", "tls_cert", "tls_key")


def nats_connection_options(command: Callable[..., T]) -> Callable[..., T]:
    """Give a command the NATS connection options, handed to it as one ``nats: NatsOptions``.

    ``--nats`` (``$NATS_URL``), ``--user``/``--password`` (``$NATS_USER``/``$NATS_PASSWORD``),
    ``--token`` (``$NATS_TOKEN``), ``--creds`` and ``--tls-ca``/``--tls-cert``/``--tls-key``.
    """

    @functools.wraps(command)
    def with_connection(*args: Any, **kwargs: Any) -> T:
        given = {name: kwargs.pop(name) for name in _CONNECTION_PARAMS}
        nats = NatsOptions(
            # Several servers of a cluster: comma-separated (the client fails over).
            servers=tuple(u.strip() for u in given["url"].split(",") if u.strip())
            if given["url"]
            else (),
            user=given["user"],
            password=given["password"],
            token=given["token"],
            credentials=given["creds"],
            tls_ca=given["tls_ca"],
            tls_cert=given["tls_cert"],
            tls_key=given["tls_key"],
        )
        return command(*args, nats=nats, **kwargs)

    decorated: Callable[..., T] = with_connection
    for option in reversed(_CONNECTION_OPTIONS):
        decorated = option(decorated)
    return decorated


def connection_options_given() -> list[str]:
    """The connection options of the running command given on its command line.

    Values from the environment do not count: an exported ``$NATS_URL`` says nothing about
    what one invocation asks for.
    """
    ctx = click.get_current_context()
    return [
        param.opts[0]
        for param in ctx.command.params
        if param.name in _CONNECTION_PARAMS
        and ctx.get_parameter_source(param.name) is ParameterSource.COMMANDLINE
    ]


def plural(n: int, word: str) -> str:
    """``1 event``, ``2 events``: counts in messages agree with their nouns."""
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def fail(exc: ActorsourceError) -> NoReturn:
    """Report an expected failure in one line on stderr and exit 1."""
    click.echo(f"actorsource: {exc}", err=True)
    sys.exit(1)


def run_or_fail(work: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``anyio.run(work, *args)``; an ActorsourceError ends the command through :func:`fail`."""
    try:
        return anyio.run(work, *args)
    except ActorsourceError as exc:
        fail(exc)


@contextmanager
def exit_on_expected_failure(prefix: str) -> Iterator[None]:
    """Report an ActorsourceError (also one inside a task group's exception group) in one
    line starting with ``prefix`` and exit 1; anything else is a bug and propagates."""
    try:
        yield
    except (ActorsourceError, BaseExceptionGroup) as exc:
        expected = find_error(exc, ActorsourceError)
        if expected is None:
            raise
        click.echo(f"{prefix}: {expected}", err=True)
        sys.exit(1)


async def with_nats(nats: NatsOptions, work: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Connect (one clear error if no server answers), run ``work(nc, *args)``, close."""
    from .._log import get_logger
    from .._mailbox.connection import connect

    # A tool's own connection: its disconnect at close is no news, only errors are.
    configure_logging("auto", "ERROR")
    nc = await connect(replace(nats, name="actorsource-cli"), log=get_logger(component="cli"))
    try:
        return await work(nc, *args)
    finally:
        with anyio.CancelScope(shield=True):
            await nc.close()

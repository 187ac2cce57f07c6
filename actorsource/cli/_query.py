"""``actorsource query``: ask a running actor one of its queries."""

from __future__ import annotations

import json
from typing import Any

import click

from .._mailbox.connection import NatsOptions
from ._common import nats_connection_options, run_or_fail, with_nats

__all__ = ["query"]


def _arguments(pairs: tuple[str, ...]) -> dict[str, str]:
    args: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.isidentifier():
            raise click.BadParameter(
                f"{pair!r} is not name=value (e.g. --arg account=acct-7)", param_hint="--arg"
            )
        if name in args:
            raise click.BadParameter(f"argument {name!r} given twice", param_hint="--arg")
        args[name] = value
    return args


@click.command()
@click.argument("actor_name")
@click.argument("query_name")
@click.option("--key", help="The entity to ask (an entity actor).")
@click.option(
    "--arg",
    "pairs",
    multiple=True,
    metavar="NAME=VALUE",
    help="An argument of the query (repeat for each); converted to its annotated type.",
)
@click.option(
    "--after-seq",
    type=click.IntRange(min=1),
    help="Answer only once every message of the actor's subjects up to this stream "
    "sequence is applied and committed (read-your-writes).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="Give up after this many seconds (exit 1, saying how far the actor is).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the whole answer as JSON: value, journal position, stream sequence.",
)
@nats_connection_options
def query(
    actor_name: str,
    query_name: str,
    key: str | None,
    pairs: tuple[str, ...],
    after_seq: int | None,
    timeout: float,
    as_json: bool,
    nats: NatsOptions,
) -> None:
    """Ask ACTOR_NAME, hosted by a running worker, its query QUERY_NAME; print the answer.

    The answer reflects committed events only. Without --json the value is printed as
    JSON (a string as it is). A query that cannot be answered prints one line saying why
    (unknown actor or query, no such entity, bad arguments, not running, timeout, the
    query failed) and exits 1.
    """
    args = _arguments(pairs)
    answer = run_or_fail(
        with_nats, nats, _ask, actor_name, query_name, key, after_seq, timeout, args
    )
    if as_json:
        import msgspec

        click.echo(msgspec.json.encode(answer).decode())
    elif isinstance(answer.value, str):
        click.echo(answer.value)
    else:
        indent = 2 if isinstance(answer.value, dict | list) and answer.value else None
        click.echo(json.dumps(answer.value, indent=indent, ensure_ascii=False))


async def _ask(
    nc: Any,
    actor_name: str,
    query_name: str,
    key: str | None,
    after_seq: int | None,
    timeout: float,
    args: dict[str, str],
) -> Any:
    from .._runtime.ask import ask

    return await ask(
        nc, actor_name, query_name, key=key, after_seq=after_seq, timeout=timeout, **args
    )

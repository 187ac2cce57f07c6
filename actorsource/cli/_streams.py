"""``actorsource streams ensure``: the streams of some actors, before any worker runs."""

from __future__ import annotations

from typing import Any

import click

from .._mailbox.connection import NatsOptions
from .._model.actor import definition_of
from ._common import load_actors, nats_connection_options, run_or_fail, with_nats

__all__ = ["streams_ensure"]


@click.command("ensure")
@click.argument("targets", nargs=-1, required=True)
@nats_connection_options
def streams_ensure(targets: tuple[str, ...], nats: NatsOptions) -> None:
    """Create or update the streams the actors of TARGETS (MODULE[:CLASS]) consume from,
    and their dead-letter stream, exactly as a worker does on its first start.

    Publishers can then publish before any worker has run. Creates no consumer; running it
    again changes nothing.
    """
    actors = load_actors(targets)
    streams = run_or_fail(with_nats, nats, _ensure, actors)
    for cls in actors:
        definition = definition_of(cls)
        click.echo(
            f"{definition.name}: stream {streams[definition.name]} stores "
            f"{', '.join(definition.subjects)}; dead letters go to "
            f"{definition.errors.dlq_subject(definition.name)}"
        )


async def _ensure(nc: Any, actors: list[type]) -> dict[str, str]:
    from .._runtime.binding import ensure_streams

    return await ensure_streams(nc, *actors)

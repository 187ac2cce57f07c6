"""``actorsource asyncapi``: the AsyncAPI 3.0 document of some actors (no NATS needed)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .._model.actor import definition_of
from .._model.asyncapi import asyncapi_document
from ._common import load_actors

__all__ = ["asyncapi"]


@click.command()
@click.argument("targets", nargs=-1, required=True)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Write the document to FILE (default: standard output).",
)
@click.option("--title", default=None, help="info.title (default: the actors' names).")
@click.option("--api-version", default="1.0.0", show_default=True, help="info.version.")
def asyncapi(
    targets: tuple[str, ...], output: Path | None, title: str | None, api_version: str
) -> None:
    """Write the AsyncAPI 3.0 document (JSON) of the actors of TARGETS (MODULE[:CLASS]):
    the subjects each consumes, the events it handles, and what it declares it publishes
    (publishes=), each event with its headers and the JSON Schema of its payload."""
    definitions = [definition_of(cls) for cls in load_actors(targets)]
    document = asyncapi_document(definitions, title=title, version=api_version)
    text = json.dumps(document, indent=2) + "\n"
    if output is None:
        click.echo(text, nl=False)
        return
    output.write_text(text)
    click.echo(
        f"{output}: AsyncAPI 3.0.0, {len(document['channels'])} channels, "
        f"{len(document['operations'])} operations, "
        f"{len(document['components']['messages'])} messages",
        err=True,
    )

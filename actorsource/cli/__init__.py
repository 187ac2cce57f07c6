"""The ``actorsource`` command line: run workers, watch them, read and repair journals.

The commands live by what they work on: ``_worker`` (run, demo), ``_journal`` (a journal
file), ``_ops`` (running workers and streams), ``_streams`` (setting streams up), ``_wait``
(waiting for an actor), ``_query`` (asking an actor a query), ``_asyncapi`` (the actors' AsyncAPI document); ``_common`` holds what they
share, among it the NATS connection options every command that connects takes. Expected failures print
one line to stderr and exit non-zero; tracebacks are for bugs.
"""

from __future__ import annotations

import click

from ._asyncapi import asyncapi
from ._common import load_actors
from ._journal import (
    journal_export,
    journal_import,
    journal_info,
    journal_show,
    journal_tail,
    snapshots_delete,
    snapshots_list,
)
from ._ops import dlq_list, dlq_replay, rebuild, snapshots_take, status
from ._query import query
from ._streams import streams_ensure
from ._wait import wait
from ._worker import demo, run

__all__ = ["load_actors", "main"]


@click.group()
@click.version_option(package_name="actorsource")
def main() -> None:
    """actorsource: event-sourced actors on NATS JetStream with SQLite journals."""


@main.group()
def journal() -> None:
    """Read a journal file (read-only: safe while a worker holds it)."""


@main.group()
def snapshots() -> None:
    """List or delete an actor's snapshots (a cache: deleting them changes no state)."""


@main.group()
def streams() -> None:
    """Set up the JetStream streams of actors before any worker runs."""


@main.group()
def dlq() -> None:
    """Inspect an actor's dead letters and re-publish them after a fix."""


def _add(group: click.Group, *commands: click.Command) -> None:
    for command in commands:
        group.add_command(command)


_add(main, run, demo, rebuild, status, wait, query, asyncapi)
_add(journal, journal_info, journal_tail, journal_show, journal_export, journal_import)
_add(snapshots, snapshots_list, snapshots_delete, snapshots_take)
_add(dlq, dlq_list, dlq_replay)
_add(streams, streams_ensure)

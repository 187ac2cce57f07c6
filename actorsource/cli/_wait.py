"""``actorsource wait``: block until a running actor has caught up (for scripts and CI)."""

from __future__ import annotations

from typing import Any

import click

from .._errors import InvalidNameError
from .._mailbox.connection import NatsOptions
from ._common import nats_connection_options, run_or_fail, with_nats

__all__ = ["wait"]


@click.command()
@click.argument("actor_name")
@click.option(
    "--caught-up",
    is_flag=True,
    help="Wait until the actor has applied everything its consumer had to deliver.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Give up after this many seconds (exit 1).",
)
@nats_connection_options
def wait(actor_name: str, caught_up: bool, timeout: float, nats: NatsOptions) -> None:
    """Wait until ACTOR_NAME, hosted by a running worker, is caught up; exit 0 then.

    Caught up, as its worker sees it at one instant: its consumer has nothing pending or
    unacknowledged, the worker holds nothing in hand or being committed, and the journal
    holds the last delivered message. A partitioned actor (or any actor in cluster mode) is
    caught up when every one of its partitions is, whichever workers own them. Its outbox is
    not waited for. After --timeout seconds, prints how far the actor is and exits 1.
    """
    from .._model.subjects import validate_name

    if not caught_up:
        raise click.UsageError("say what to wait for: --caught-up")
    try:
        validate_name(actor_name)
    except InvalidNameError as exc:
        raise click.BadParameter(str(exc), param_hint="ACTOR_NAME") from exc
    reports = run_or_fail(with_nats, nats, _wait, actor_name, timeout)
    for a in sorted(reports, key=lambda a: (a.partition or 0, a.actor)):
        at = a.progress.journal_seq if a.progress is not None else a.stream_seq
        click.echo(f"{a.actor} is caught up: journal at stream sequence {at or 0:,}")


async def _wait(nc: Any, actor_name: str, timeout: float) -> Any:
    from ._discovery import wait_caught_up

    return await wait_caught_up(nc, actor_name, timeout=timeout)

"""The actor of ``bench/partition_chaos.py``: each key's values in the order applied.

Its partition count comes from ``PARTITION_CHAOS_P`` (the worker processes inherit it),
since a partition count is part of the actor's declaration.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from actorsource import Context, actor, handles

PARTITIONS = int(os.environ.get("PARTITION_CHAOS_P", "8"))


@dataclass
class Ticked:
    key: str
    n: int


@actor(
    "chaos",
    subjects=["chaos.*"],
    partitions=PARTITIONS,
    snapshot_every=500,
    ack_wait=10.0,
)
class Ticks:
    """Per key: the values applied, in order (a fold whose order matters)."""

    seen: dict[str, list[int]]

    def __init__(self) -> None:
        self.seen = {}

    @handles(Ticked)
    def ticked(self, event: Ticked, ctx: Context) -> None:
        self.seen.setdefault(event.key, []).append(event.n)

"""The actors of ``bench/fence_cost.py``: one fold, declared plain and partitioned."""

from __future__ import annotations

import os
from dataclasses import dataclass

from actorsource import actor, handles

PARTITIONS = int(os.environ.get("FENCE_COST_P", "8"))


@dataclass
class Bumped:
    key: str
    amount: int


class _Totals:
    totals: dict[str, int]

    def __init__(self) -> None:
        self.totals = {}

    @handles(Bumped)
    def bumped(self, event: Bumped) -> None:
        self.totals[event.key] = self.totals.get(event.key, 0) + event.amount


@actor("fcplain", subjects=["fcplain.*"], snapshot_every=10_000)
class Plain(_Totals):
    """Without partitions."""


@actor("fcsplit", subjects=["fcsplit.*"], snapshot_every=10_000, partitions=PARTITIONS)
class Split(_Totals):
    """The same, split into partitions."""

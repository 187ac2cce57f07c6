"""A partitioned actor for the tests of partitions on one worker and on a cluster."""

from __future__ import annotations

from dataclasses import dataclass

from actorsource import Context, actor, entity, handles, query


@dataclass
class Placed:
    key: str
    n: int


@actor("porders", subjects=["porders.*"], partitions=4, snapshot_every=40)
class Orders:
    """Each key's values in the order applied, and where each key was seen."""

    seen: dict[str, list[int]]
    where: dict[str, str]

    def __init__(self) -> None:
        self.seen = {}
        self.where = {}

    @handles(Placed)
    def placed(self, event: Placed, ctx: Context) -> None:
        self.seen.setdefault(event.key, []).append(event.n)
        self.where[event.key] = f"{ctx.subject}@{ctx.partition}"

    @query
    def values(self) -> dict[str, list[int]]:
        """Every key of the partition with its values (asked with key=: the key's)."""
        return self.seen


def fold(events: list[Placed]) -> dict[str, list[int]]:
    """An independent fold of what was published: each key's values in order."""
    out: dict[str, list[int]] = {}
    for e in events:
        out.setdefault(e.key, []).append(e.n)
    return out


@entity("pcarts", subjects=["pcart.*"], partitions=3, snapshot_every=5)
class Cart:
    """One total per cart (the subject's key token), in one of three partitions."""

    total: int

    def __init__(self) -> None:
        self.total = 0

    @handles(Placed)
    def placed(self, event: Placed, ctx: Context) -> None:
        assert ctx.key == event.key
        assert ctx.partition is not None
        self.total += event.n

    @query
    def cart_total(self) -> int:
        return self.total

"""Partitioned actors: how a subject maps to a partition, and back.

An actor declared with ``partitions=P`` reads one subject filter, e.g. ``orders.*``, whose
key token (by default its first ``*``) picks the partition. Its stream stores the subjects
rewritten at ingest by a ``subject_transform`` that inserts the partition token right after
the filter's literal prefix::

    orders.*        ->  orders.{{partition(P,1)}}.{{wildcard(1)}}
    shop.*.placed   ->  shop.{{partition(P,1)}}.{{wildcard(1)}}.placed
    shop.*.*.>      ->  shop.{{partition(P,2)}}.{{wildcard(1)}}.{{wildcard(2)}}.>   (token 2)

so publishers are unchanged, and a message published to ``orders.abc`` is stored as
``orders.5.abc``. The partition is ``FNV-1a-32(key) mod P`` (what nats-server computes), so
a client can compute it too. Partition *k* runs as an actor of its own, named
``<actor>-p<k>`` (a consumer name may hold no dot), reading ``orders.<k>.*``; its handlers
see the subject as published (:meth:`Partitioning.published`).

Everything here is pure: the stream is provisioned in
:mod:`actorsource._mailbox.partitioned`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .._errors import ActorDefinitionError, InvalidNameError

__all__ = [
    "MAX_PARTITIONS",
    "Partitioning",
    "fnv1a_32",
    "partition_name",
    "partitioning_for",
]

#: The most partitions an actor may have: each is a consumer, a journal file and a lease.
MAX_PARTITIONS = 1024

_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193


def fnv1a_32(data: bytes) -> int:
    """The 32-bit FNV-1a hash of ``data`` (the hash of nats-server's ``partition()``)."""
    h = _FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & 0xFFFFFFFF
    return h


def partition_name(actor: str, partition: int) -> str:
    """The name of partition ``partition`` of ``actor`` (its consumer and journal):
    ``orders-p3``. Dots are refused in consumer names, hence the dash."""
    return f"{actor}-p{partition}"


@dataclass(frozen=True, slots=True)
class Partitioning:
    """How a partitioned actor's subject filter ``source`` is split into ``count``
    partitions by its subject token ``token`` (0-based, a ``*`` of ``source``)."""

    count: int
    source: str
    token: int
    #: The index of the partition token in a stored subject: after the literal prefix.
    at: int = field(init=False, compare=False)

    def __post_init__(self) -> None:
        tokens = self.source.split(".")
        at = next((i for i, t in enumerate(tokens) if t in ("*", ">")), len(tokens))
        object.__setattr__(self, "at", at)

    def destination(self) -> str:
        """The transform's destination: the source with the partition token inserted and
        every ``*`` carried over (``orders.{{partition(8,1)}}.{{wildcard(1)}}``)."""
        tokens = self.source.split(".")
        out: list[str] = []
        wildcard = 0
        key_wildcard = tokens[: self.token + 1].count("*")
        for i, t in enumerate(tokens):
            if i == self.at:
                out.append(f"{{{{partition({self.count},{key_wildcard})}}}}")
            if t == "*":
                wildcard += 1
                out.append(f"{{{{wildcard({wildcard})}}}}")
            else:
                out.append(t)
        return ".".join(out)

    def filter_subject(self, partition: int) -> str:
        """The consumer filter of partition ``partition`` over the stored subjects."""
        self._check(partition)
        tokens = self.source.split(".")
        tokens.insert(self.at, str(partition))
        return ".".join(tokens)

    def partition_of_key(self, key: str) -> int:
        """The partition of the messages whose key token is ``key``."""
        return fnv1a_32(key.encode()) % self.count

    def partition_of(self, published: str) -> int:
        """The partition a message published to ``published`` is stored in."""
        tokens = published.split(".")
        if len(tokens) <= self.token:
            raise InvalidNameError(
                f"subject {published!r} has no token {self.token} to partition by"
            )
        return self.partition_of_key(tokens[self.token])

    def stored(self, published: str) -> str:
        """The subject a message published to ``published`` is stored under."""
        tokens = published.split(".")
        tokens.insert(self.at, str(self.partition_of(published)))
        return ".".join(tokens)

    def published(self, stored: str) -> str:
        """The subject a stored message was published to: the partition token taken out."""
        at = self.at
        tokens = stored.split(".", at + 1)
        if len(tokens) < at + 2 or not tokens[at].isdigit():
            raise InvalidNameError(
                f"subject {stored!r} has no partition token at {at} (not from a stream "
                f"partitioned by {self.source!r})"
            )
        del tokens[at]
        return ".".join(tokens)

    def partition_of_stored(self, stored: str) -> int:
        """The partition token of a stored subject."""
        token = stored.split(".", self.at + 1)[self.at]
        if not token.isdigit():
            raise InvalidNameError(f"subject {stored!r} has no partition token at {self.at}")
        return int(token)

    def _check(self, partition: int) -> None:
        if isinstance(partition, bool) or not isinstance(partition, int):
            raise InvalidNameError(f"partition {partition!r} is not an int")
        if not 0 <= partition < self.count:
            raise InvalidNameError(f"partition {partition} is not in 0..{self.count - 1}")


def partitioning_for(
    name: str,
    subjects: Sequence[str],
    partitions: object,
    token: object,
    *,
    what: str = "actor",
    token_arg: str = "partition_token",
) -> Partitioning | None:
    """The :class:`Partitioning` an actor declares (None when ``partitions`` is None);
    raises :class:`ActorDefinitionError` naming the fix for every declaration that cannot
    be partitioned."""
    if partitions is None:
        if token is not None:
            raise ActorDefinitionError(f"{what} {name!r}: {token_arg}= only goes with partitions=P")
        return None
    if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
        raise ActorDefinitionError(
            f"{what} {name!r}: partitions must be an int >= 2, got {partitions!r}"
        )
    if partitions == 1:
        raise ActorDefinitionError(
            f"{what} {name!r}: partitions=1 is an unpartitioned actor: leave partitions out "
            "(the partition count is fixed for the stream's life; choose about 10x the "
            "largest number of workers you expect)"
        )
    if partitions > MAX_PARTITIONS:
        raise ActorDefinitionError(
            f"{what} {name!r}: partitions={partitions} is over the limit of {MAX_PARTITIONS}"
        )
    if len(subjects) != 1:
        raise ActorDefinitionError(
            f"{what} {name!r}: a partitioned actor reads one subject filter (its stream "
            f"has one subject transform), got {list(subjects)}: split the actor, or "
            "subscribe to one filter such as 'orders.*.>'"
        )
    [source] = subjects
    tokens = source.split(".")
    if token is None:
        if "*" not in tokens:
            raise ActorDefinitionError(
                f"{what} {name!r}: subject {source!r} has no '*' token to partition by: "
                "subscribe to e.g. 'orders.*' (the key token picks the partition)"
            )
        index = tokens.index("*")
    else:
        if isinstance(token, bool) or not isinstance(token, int) or token < 0:
            raise ActorDefinitionError(
                f"{what} {name!r}: {token_arg} must be an int >= 0 (a subject token "
                f"index), got {token!r}"
            )
        index = token
        if index >= len(tokens) or tokens[index] != "*":
            found = tokens[index] if index < len(tokens) else None
            raise ActorDefinitionError(
                f"{what} {name!r}: token {index} of subject {source!r} is "
                f"{'missing' if found is None else repr(found)}; the partition is taken "
                f"from a '*' token: point {token_arg} at one"
            )
    return Partitioning(count=partitions, source=source, token=index)

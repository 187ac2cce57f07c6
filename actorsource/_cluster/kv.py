"""KV buckets with a TTL, and compare-and-set creation that sees through expired keys.

Every decision of the cluster mode is a compare-and-set write to a KV bucket (a JetStream
stream, ``KV_<bucket>``, subject ``$KV.<bucket>.<key>``): reads may be stale, writes are
linearizable. nats-py's ``KeyValue.create`` writes with "expected last subject sequence 0",
and when that is refused it re-reads the key, and takes over only a key that was deleted
or purged; a key the server aged out *with a marker* (``Nats-Marker-Reason``) looks alive to
it until the marker's own TTL passes. :func:`claim` treats a marker like a delete: it
compares and sets on the tombstone's sequence, so a key is claimable the moment it expired.
"""

from __future__ import annotations

from dataclasses import dataclass

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE, KeyValue

from .._errors import ClusterError

__all__ = ["Holder", "Taken", "claim", "latest", "open_bucket"]

_MARKER_REASON = "Nats-Marker-Reason"


async def open_bucket(
    js: JetStreamContext,
    bucket: str,
    *,
    ttl: float,
    replicas: int = 1,
    markers: bool = False,
) -> KeyValue:
    """The KV bucket ``bucket`` whose keys live ``ttl`` seconds, created if missing.

    ``markers``: the server writes a marker when a key ages out, so watchers see it go
    (nats-server 2.11+). A bucket that exists with another TTL is refused: every worker of
    a cluster must agree on it.
    """
    try:
        kv = await js.key_value(bucket)
    except nats.js.errors.BucketNotFoundError:
        config = KeyValueConfig(
            bucket=bucket,
            ttl=ttl,
            history=1,
            replicas=replicas,
            limit_marker_ttl=ttl if markers else None,
        )
        try:
            return await js.create_key_value(config)
        except nats.js.errors.BadRequestError:
            kv = await js.key_value(bucket)  # created meanwhile by another worker
    status = await kv.status()
    if status.ttl is None or abs(status.ttl - ttl) > 1e-3:
        raise ClusterError(
            f"the KV bucket {bucket!r} keeps keys {status.ttl}s, but this worker is "
            f"configured for {ttl}s: every worker of a cluster must use the same (delete "
            "the bucket while no worker runs to change it)",
            key=bucket,
        )
    return kv


@dataclass(frozen=True, slots=True)
class Holder:
    """The live value of a key that :func:`claim` could not take."""

    revision: int
    value: bytes


class Taken(Exception):
    """Raised by :func:`claim`: the key is alive (``holder``). Internal; callers translate."""

    def __init__(self, holder: Holder) -> None:
        super().__init__(f"key held at revision {holder.revision}")
        self.holder = holder


async def latest(js: JetStreamContext, bucket: str, key: str) -> Holder | None:
    """The last message of ``key`` (a value, a delete or a limit marker), read from the
    bucket stream's leader: a direct get may be answered by a replica that lags. None if
    the key has none."""
    try:
        msg = await js.get_msg(f"KV_{bucket}", subject=f"$KV.{bucket}.{key}")
    except nats.js.errors.NotFoundError:
        return None
    return Holder(revision=int(msg.seq or 0), value=msg.data or b"")


async def claim(js: JetStreamContext, bucket: str, key: str, value: bytes) -> int:
    """Write ``value`` to ``key`` if the key is absent, deleted, purged or expired; its new
    revision. Raises :class:`Taken` if the key holds a live value, ``nats.errors.Error``
    if JetStream cannot answer."""
    kv_stream = f"KV_{bucket}"
    subject = f"$KV.{bucket}.{key}"
    last = 0
    for _ in range(3):
        try:
            ack = await js.publish(
                subject, value, headers={"Nats-Expected-Last-Subject-Sequence": str(last)}
            )
            return int(ack.seq)
        except nats.js.errors.APIError as exc:
            if exc.err_code not in (10071, 10164):  # wrong last sequence
                raise
        try:
            msg = await js.get_msg(kv_stream, subject=subject)
        except nats.js.errors.NotFoundError:
            last = 0  # aged out between the two requests
            continue
        headers = msg.headers or {}
        if headers.get(KV_OP) in (KV_DEL, KV_PURGE) or _MARKER_REASON in headers:
            last = int(msg.seq or 0)
            continue
        raise Taken(Holder(revision=int(msg.seq or 0), value=msg.data or b""))
    raise Taken(Holder(revision=last, value=b""))  # raced three times: someone is active

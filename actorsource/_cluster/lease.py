"""Who owns a partition: one key per partition in a KV bucket, taken by compare-and-set.

The bucket ``actorsource_leases`` keeps keys for the lease time L (its TTL). A worker
:meth:`Leases.acquire` s partition ``orders-p3`` by creating key ``orders-p3`` (refused
while another worker's key lives); the revision of that write is the **epoch**, a number
that grows with every acquisition of any lease (revisions are the bucket stream's
sequences). The holder renews every L/3 by an ``update`` compare-and-set on its last
revision, and on a planned stop releases with a ``delete`` on it, so the next owner need
not wait out L. The bucket has limit markers (nats-server 2.11+): a key that runs out leaves
a marker, so :meth:`Leases.freed` (a watch of the bucket) reports a lease the moment it is
released *or* runs out, and a worker waiting for it acquires it then rather than at its
next retry.

A renewal stored although its reply never came (a timeout) moves the key past the
revision the holder knows, so the next compare-and-set (or the release) is refused. The
holder then reads the key from the bucket's leader: if it holds exactly the value of one of
the renewals it sent since its last confirmed one, the lease goes on from that revision
(the epoch stays the acquiring revision: the fence knows nothing of renewals); any other
value, a delete or a marker means the lease is lost.

A lease is not what keeps two workers from committing one partition: a worker paused past
L still believes it holds it. The journal fence does that
(:mod:`actorsource._cluster.fence`). The lease decides who *should* own a partition, and
lets its holder stop early: :meth:`Lease.valid` turns False once the last successful renewal
is older than ``L - margin`` (measured from when that renewal was *sent*), and the holder
then stops committing (self-fencing saves work; correctness never rests on clocks).
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from contextlib import suppress

import anyio
import msgspec
import nats.errors
import nats.js.errors
from anyio.abc import TaskStatus
from nats.js import JetStreamContext
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from .._errors import LeaseHeld, LeaseLost
from .kv import Holder, Taken, claim, latest, open_bucket

__all__ = ["LEASES_BUCKET", "Lease", "LeaseValue", "Leases"]

LEASES_BUCKET = "actorsource_leases"


class LeaseValue(msgspec.Struct, frozen=True):
    """What a lease key holds: who holds it (and since when, for people)."""

    owner: str
    acquired_at: float


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(LeaseValue).decode


class Leases:
    """The lease bucket: acquire a partition's lease, or ask who holds it."""

    def __init__(
        self,
        js: JetStreamContext,
        *,
        ttl: float = 10.0,
        margin: float | None = None,
        bucket: str = LEASES_BUCKET,
        replicas: int = 1,
    ) -> None:
        if not ttl >= 1.0:
            raise ValueError(f"the lease time must be at least 1 s, got {ttl!r}")
        self.ttl = ttl
        #: How long before L a holder stops trusting its lease (default L/5).
        self.margin = ttl / 5 if margin is None else margin
        if not 0 <= self.margin < ttl:
            raise ValueError(f"the lease margin must be in [0, {ttl}), got {margin!r}")
        self._js = js
        self._bucket = bucket
        self._replicas = replicas
        self._kv: KeyValue | None = None

    async def kv(self) -> KeyValue:
        """The bucket (created at first use, with the TTL; see :func:`open_bucket`)."""
        if self._kv is None:
            self._kv = await open_bucket(
                self._js, self._bucket, ttl=self.ttl, replicas=self._replicas, markers=True
            )
        return self._kv

    async def freed(self) -> AsyncGenerator[str, None]:
        """The keys whose lease ends, as they end: deleted (released) or aged out (the
        bucket's limit marker; a bucket created without markers reports releases only).
        Keys already free when the watch starts are reported first. Runs until closed."""
        kv = await self.kv()
        watcher = await kv.watchall()
        try:
            async for entry in watcher:
                if entry is not None and entry.operation in (KV_DEL, KV_PURGE):
                    yield entry.key
        finally:
            with anyio.CancelScope(shield=True), suppress(nats.errors.Error, OSError):
                await watcher.stop()  # type: ignore[no-untyped-call]

    async def acquire(self, key: str, owner: str) -> Lease:
        """Take the lease ``key`` for ``owner``. Raises :class:`LeaseHeld` (with the holder
        and its revision) while another holder's key lives."""
        await self.kv()
        sent = time.monotonic()
        try:
            revision = await claim(
                self._js, self._bucket, key, _encode(LeaseValue(owner, time.time()))
            )
        except Taken as taken:
            holder = taken.holder
            try:
                held_by = _decode(holder.value).owner
            except msgspec.DecodeError:
                held_by = "?"
            raise LeaseHeld(
                f"the lease {key!r} is held by {held_by!r} (revision {holder.revision})",
                key=key,
                owner=held_by,
                revision=holder.revision,
            ) from None
        return Lease(self, key, owner, revision, sent)

    async def holder(self, key: str) -> tuple[str, int] | None:
        """Who holds ``key`` and at which revision, as far as a (possibly stale) read says."""
        kv = await self.kv()
        try:
            entry = await kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        try:
            return _decode(entry.value or b"").owner, int(entry.revision or 0)
        except msgspec.DecodeError:
            return None

    async def stored(self, key: str) -> Holder | None:
        """The last message of ``key`` as the bucket's leader has it (None: none)."""
        await self.kv()
        return await latest(self._js, self._bucket, key)


class Lease:
    """One held lease: its ``epoch`` (the acquiring revision) and its current revision.

    States: held (renewed in time), lapsed (:meth:`valid` is False: stop committing; a
    renewal may still succeed if nobody took it), lost (a renewal was refused: another
    worker may own it now) and released. Not meant to be used from several tasks at once,
    except :meth:`valid`.
    """

    def __init__(self, leases: Leases, key: str, owner: str, revision: int, sent: float) -> None:
        self.key = key
        self.owner = owner
        #: The revision that acquired the lease: the owner's epoch for this partition.
        self.epoch = revision
        self._leases = leases
        self._revision = revision
        self._renewed_at = sent
        #: The values of the renewals sent since the last confirmed write, with when each
        #: was sent: one whose reply was lost may have been stored all the same.
        self._unconfirmed: dict[bytes, float] = {}
        self._lost = False
        self._released = False

    def __repr__(self) -> str:
        return (
            f"Lease(key={self.key!r}, owner={self.owner!r}, epoch={self.epoch}, "
            f"revision={self._revision}, valid={self.valid()})"
        )

    @property
    def revision(self) -> int:
        """The revision of the last successful write (acquire or renewal)."""
        return self._revision

    @property
    def lost(self) -> bool:
        """Whether a renewal was refused (the key changed hands or expired and was reused)."""
        return self._lost

    def valid(self, now: float | None = None) -> bool:
        """Whether the holder may still act on the lease: held, not released, and last
        renewed (counting from when the renewal was sent) less than ``L - margin`` ago."""
        if self._lost or self._released:
            return False
        now = time.monotonic() if now is None else now
        return now - self._renewed_at < self._leases.ttl - self._leases.margin

    async def renew(self) -> None:
        """Compare-and-set the key on this lease's revision. A refusal is looked into: a
        renewal of this lease stored although its reply was lost is taken as the last
        write, and the renewal is sent again on its revision. Raises :class:`LeaseLost` if
        the key holds anything else (for good); ``nats.errors.Error`` if JetStream does not
        answer."""
        if self._lost or self._released:
            raise LeaseLost(f"the lease {self.key!r} is no longer held", key=self.key)
        kv = await self._leases.kv()
        for _ in range(3):
            sent = time.monotonic()
            value = _encode(LeaseValue(self.owner, time.time()))
            self._unconfirmed[value] = sent
            try:
                revision = await kv.update(self.key, value, last=self._revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                if await self._stored_renewal():
                    continue  # this lease's own write: renew on its revision
                break
            self._confirmed(revision, sent)
            return
        self._lost = True
        raise LeaseLost(
            f"the lease {self.key!r} (epoch {self.epoch}) was lost: it expired or "
            "another worker holds it",
            key=self.key,
        )

    def _confirmed(self, revision: int, sent: float) -> None:
        self._revision = revision
        self._renewed_at = sent
        self._unconfirmed.clear()

    async def _stored_renewal(self) -> bool:
        """After a refused write: whether the key's last value is one of this lease's
        unconfirmed renewals (stored, its reply lost). If so the lease goes on from that
        renewal's revision, renewed as of when it was sent."""
        held = await self._leases.stored(self.key)
        sent = self._unconfirmed.get(held.value) if held is not None else None
        if held is None or sent is None:
            return False
        self._confirmed(held.revision, sent)
        return True

    async def release(self) -> None:
        """Delete the key if it is still this lease's (a planned stop): the next owner can
        acquire it at once. Idempotent; a lost lease is left alone."""
        if self._lost or self._released:
            return
        self._released = True
        kv = await self._leases.kv()
        for _ in range(2):
            try:
                await kv.delete(self.key, last=self._revision)
                return
            except nats.js.errors.APIError as exc:
                # Refused: the key is someone else's already (nothing to release), unless
                # it holds a renewal of this lease whose reply was lost.
                if exc.err_code not in (10071, 10164) or not await self._stored_renewal():
                    return

    async def keep(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Renew every L/3 until cancelled. Raises :class:`LeaseLost` when a renewal is
        refused, or when renewals failed (JetStream unreachable, an election) for so long
        that the lease lapsed. Meanwhile :meth:`valid` says whether to commit."""
        task_status.started()
        while True:
            await anyio.sleep(self._leases.ttl / 3)
            try:
                await self.renew()
            except (nats.errors.Error, OSError):
                if not self.valid():
                    self._lost = True
                    raise LeaseLost(
                        f"the lease {self.key!r} lapsed: no renewal succeeded within "
                        f"{self._leases.ttl - self._leases.margin:.1f}s",
                        key=self.key,
                    ) from None

"""Workers announce themselves in a KV bucket and watch who else is there.

Each worker owns one key, its worker id, in the bucket ``actorsource_members``. The bucket
has a TTL (``max_age``): a key not rewritten within it disappears, and with the bucket's
limit markers (nats-server 2.11+) watchers see it disappear at once rather than never.
A worker :meth:`Membership.join` s by ``create`` (refused while another live worker holds
the id), heartbeats every TTL/3 by a compare-and-set ``update`` on its own last revision
(so a worker whose key expired, and was maybe taken by a namesake, learns it instead of
overwriting), and :meth:`Membership.leave` s by deleting its key, so the others rebalance
at once instead of after the TTL.

:meth:`Membership.watch` yields the set of live members whenever it changes; what to do
with it (when a change counts, who owns what) is :mod:`actorsource._cluster.assignment`'s.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing, suppress

import anyio
import msgspec
import nats.errors
import nats.js.errors
from anyio.abc import TaskStatus
from nats.js import JetStreamContext
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from .._errors import WorkerIdTaken
from .._model.subjects import validate_name
from .kv import Taken, claim, open_bucket
from .unavailable import SETUP_PATIENCE, patiently

__all__ = ["MEMBERS_BUCKET", "MemberInfo", "Membership"]

MEMBERS_BUCKET = "actorsource_members"


class MemberInfo(msgspec.Struct, frozen=True):
    """What a worker announces about itself (for ``status`` and logs)."""

    id: str
    host: str
    pid: int
    started_at: float


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(MemberInfo).decode


class Membership:
    """This worker's key in the members bucket, and a watch of everyone's.

    Not meant to be used from several tasks at once, except :meth:`watch`, which any
    number of tasks may run.
    """

    def __init__(
        self,
        js: JetStreamContext,
        worker_id: str,
        *,
        ttl: float = 10.0,
        bucket: str = MEMBERS_BUCKET,
        replicas: int = 1,
        stopping: Callable[[], bool] | None = None,
    ) -> None:
        self.worker_id = validate_name(worker_id, what="worker id")
        #: Whether the worker stops: a join then stops waiting for JetStream to answer.
        self._stopping = stopping
        self.ttl = ttl
        self._js = js
        self._bucket = bucket
        self._replicas = replicas
        self._kv: KeyValue | None = None
        self._revision = 0
        self.info = MemberInfo(
            id=worker_id, host=socket.gethostname(), pid=os.getpid(), started_at=time.time()
        )

    @property
    def revision(self) -> int:
        """The revision of this worker's key (0 when not joined)."""
        return self._revision

    async def _bucket_kv(self) -> KeyValue:
        if self._kv is None:
            self._kv = await open_bucket(
                self._js, self._bucket, ttl=self.ttl, replicas=self._replicas, markers=True
            )
        return self._kv

    async def join(self) -> None:
        """Announce this worker. Raises :class:`WorkerIdTaken` while another live worker
        has the same id."""

        async def announce() -> int:
            # A bucket just created on another server of the cluster: this one may not
            # have learnt of it yet, or it has no leader yet (see :mod:`.unavailable`).
            await self._bucket_kv()
            return await claim(self._js, self._bucket, self.worker_id, _encode(self.info))

        try:
            self._revision = await patiently(
                announce, patience=SETUP_PATIENCE, what="join", stopping=self._stopping
            )
        except Taken as taken:
            if self._own(taken.holder.value):
                # Our own announcement, stored by a heartbeat whose reply never came (it
                # timed out): the key is ours, at that revision.
                self._revision = taken.holder.revision
                return
            raise WorkerIdTaken(
                f"worker id {self.worker_id!r} is in use by a live worker (bucket "
                f"{self._bucket!r}); give each worker its own id",
                key=self.worker_id,
            ) from None

    def _own(self, value: bytes) -> bool:
        try:
            return _decode(value) == self.info
        except msgspec.DecodeError:
            return False

    async def heartbeat(self) -> None:
        """Rewrite this worker's key (compare-and-set on its revision). If it expired
        meanwhile, join again; raises :class:`WorkerIdTaken` if a namesake took it."""
        kv = await self._bucket_kv()
        try:
            self._revision = await kv.update(
                self.worker_id, _encode(self.info), last=self._revision
            )
        except nats.js.errors.KeyWrongLastSequenceError:
            await self.join()

    async def run(
        self,
        *,
        patience: float = 0.0,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Join, then heartbeat every TTL/3 until cancelled; leave (shielded) on the way out.

        ``patience``: how long to keep trying to join while the id is taken (a worker
        restarted under its id after a crash waits out its previous incarnation's key, at
        most the TTL). A heartbeat that fails on the connection is tried again at the next
        tick (the key lives for the whole TTL); :class:`WorkerIdTaken` ends the loop.
        """
        give_up = time.monotonic() + patience
        while True:
            try:
                await self.join()
                break
            except WorkerIdTaken:
                if time.monotonic() >= give_up:
                    raise
                await anyio.sleep(min(self.ttl / 10, 0.5))
        task_status.started()
        try:
            while True:
                await anyio.sleep(self.ttl / 3)
                with suppress(nats.errors.Error, OSError):
                    await self.heartbeat()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2.0):
                await self.leave()

    async def leave(self) -> None:
        """Delete this worker's key (if it is still ours) so the others rebalance at once."""
        if not self._revision or self._kv is None:
            return
        revision, self._revision = self._revision, 0
        with suppress(nats.errors.Error, OSError):
            await self._kv.delete(self.worker_id, last=revision)

    async def members(self) -> dict[str, MemberInfo]:
        """The live members now (one read of the bucket)."""
        async with aclosing(self.watch()) as updates:
            async for live in updates:
                return live
        return {}  # pragma: no cover - watch() yields at least once

    async def watch(self) -> AsyncGenerator[dict[str, MemberInfo], None]:
        """The live members, first as they are, then again after every change."""
        kv = await self._bucket_kv()
        watcher = await kv.watchall()
        live: dict[str, MemberInfo] = {}
        initial = True
        try:
            async for entry in watcher:
                if entry is None:  # the initial values are all in
                    initial = False
                    yield dict(live)
                    continue
                if entry.operation in (KV_DEL, KV_PURGE):
                    changed = live.pop(entry.key, None) is not None
                else:
                    try:
                        info = _decode(entry.value or b"")
                    except msgspec.DecodeError:
                        continue  # not a worker's announcement: ignore
                    changed = live.get(entry.key) != info
                    live[entry.key] = info
                if changed and not initial:
                    yield dict(live)
        finally:
            with anyio.CancelScope(shield=True), suppress(nats.errors.Error, OSError):
                await watcher.stop()  # type: ignore[no-untyped-call]

"""Checkpoints: a partition's whole SQLite store, copied and kept in a JetStream Object Store.

A checkpoint is a consistent copy of a partition's journal file (``VACUUM INTO`` from a
connection of its own, on a worker thread: a read transaction in WAL mode, so the owner's
commits go on meanwhile and the copy is the file as of one commit). Its position is read
from the copy itself: the journal-subject sequence recorded with the last batch it holds
(and with it, in the same table, the input stream's position). It is uploaded to the bucket
``actorsource_checkpoints`` under ``<partition>/<journal seq, 20 digits>-e<epoch>``: names
sort by position and are never written twice (a name that exists is left as it is). A
stale owner can only add a checkpoint of what the fence once admitted, at a sequence below
the newer owner's epoch marker.

Everything here that knows how nats-py's object store lays out its subjects is in
:class:`CheckpointStore` (the purge of a deleted object's record).
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import ObjectMeta, ObjectMetaOptions, ObjectStoreConfig
from nats.js.object_store import OBJ_META_PRE_TEMPLATE, ObjectStore

from .._journal.storage import quick_check

__all__ = [
    "CHECKPOINT_BUCKET",
    "CHUNK_BYTES",
    "Checkpoint",
    "CheckpointStore",
    "checkpoint_store",
    "copy_journal",
    "recorded_position",
    "verify_copy",
]

CHECKPOINT_BUCKET = "actorsource_checkpoints"
_NAME = re.compile(r"^(?P<seq>\d{20})-e(?P<epoch>\d+)$")
#: Bytes per object-store chunk (one JetStream message each; below the 1 MiB default).
CHUNK_BYTES = 512 * 1024


@dataclass(frozen=True, slots=True, order=True)
class Checkpoint:
    """One stored checkpoint of a partition: it holds the journal up to subject sequence
    ``seq``, written by the owner of ``epoch``."""

    seq: int
    epoch: int
    name: str
    size: int = 0


async def checkpoint_store(js: JetStreamContext, *, replicas: int = 1) -> ObjectStore:
    """The checkpoints bucket, created if missing (R``replicas``)."""
    try:
        return await js.object_store(CHECKPOINT_BUCKET)
    except nats.js.errors.BucketNotFoundError:
        pass
    try:
        return await js.create_object_store(
            CHECKPOINT_BUCKET, config=ObjectStoreConfig(replicas=replicas)
        )
    except nats.js.errors.BadRequestError:
        return await js.object_store(CHECKPOINT_BUCKET)  # created meanwhile by another worker


class CheckpointStore:
    """The checkpoints of one partition (``orders-p3``) in the bucket."""

    def __init__(self, js: JetStreamContext, store: ObjectStore, partition: str) -> None:
        self._js = js
        self._store = store
        self.partition = partition

    def name(self, seq: int, epoch: int) -> str:
        """``orders-p3/00000000000000001234-e7``."""
        return f"{self.partition}/{seq:020d}-e{epoch}"

    async def stored(self) -> list[Checkpoint]:
        """The partition's checkpoints, oldest first."""
        try:
            infos = await self._store.list(ignore_deletes=True)
        except nats.js.errors.NotFoundError:
            return []
        prefix = f"{self.partition}/"
        found = []
        for info in infos:
            name = info.name or ""
            match = _NAME.match(name[len(prefix) :]) if name.startswith(prefix) else None
            if match is not None and not info.deleted:
                found.append(
                    Checkpoint(int(match["seq"]), int(match["epoch"]), name, int(info.size or 0))
                )
        return sorted(found)

    async def upload(self, path: Path, *, seq: int, epoch: int) -> Checkpoint | None:
        """Upload the file at ``path`` as the checkpoint at ``seq`` of ``epoch``; None if
        that name exists already (it is never overwritten)."""
        name = self.name(seq, epoch)
        try:
            await self._store.get_info(name)
            return None
        except nats.js.errors.NotFoundError:
            pass
        options = ObjectMetaOptions(max_chunk_size=CHUNK_BYTES)
        with path.open("rb") as data:
            info = await self._store.put(name, data, meta=ObjectMeta(name=name, options=options))
        return Checkpoint(seq, epoch, name, int(info.size or 0))

    async def download(self, checkpoint: Checkpoint, path: Path) -> None:
        """Write the checkpoint to ``path`` (its SHA-256 digest checked by nats-py: a
        mismatch raises ``DigestMismatchError``)."""
        with path.open("wb") as out:
            await self._store.get(checkpoint.name, writeinto=out)

    async def delete(self, checkpoint: Checkpoint) -> None:
        """Delete the checkpoint, and the record the object store keeps of the deletion."""
        await self._store.delete(checkpoint.name)
        encoded = base64.urlsafe_b64encode(checkpoint.name.encode()).decode()
        meta = OBJ_META_PRE_TEMPLATE.format(bucket=CHECKPOINT_BUCKET, obj=encoded)
        await self._js.purge_stream(f"OBJ_{CHECKPOINT_BUCKET}", subject=meta)

    async def keep_newest(self, count: int) -> list[Checkpoint]:
        """Delete all but the newest ``count`` checkpoints; the kept ones, oldest first."""
        found = await self.stored()
        kept, older = found[-count:], found[:-count]
        for checkpoint in older:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await self.delete(checkpoint)
        return kept


# -- the copy ---------------------------------------------------------------------------------


def recorded_position(path: Path, key: str) -> int | None:
    """The position the journal file at ``path`` records under ``key`` (0: none yet); None
    when there is no usable journal there."""
    if not path.exists():
        return None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT last_seq FROM positions WHERE stream = ?", (key,)).fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return None
    return int(row[0]) if row else 0


def _copy(source: Path, key: str) -> tuple[Path, int]:
    for leftover in source.parent.glob(f".{source.name}.*.ckpt"):  # of a process killed
        leftover.unlink(missing_ok=True)
    fd, name = tempfile.mkstemp(dir=source.parent, prefix=f".{source.name}.", suffix=".ckpt")
    os.close(fd)
    target = Path(name)
    target.unlink()  # VACUUM INTO wants to create it
    try:
        db = sqlite3.connect(source, isolation_level=None)
        try:
            db.execute("VACUUM INTO ?", (str(target),))
        finally:
            db.close()
        position = recorded_position(target, key)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return target, position or 0


async def copy_journal(source: Path, key: str) -> tuple[Path, int]:
    """A consistent copy of the journal file at ``source``, in a temporary file beside it,
    and the position it records under ``key``. Runs on a worker thread; commits go on."""
    return await anyio.to_thread.run_sync(_copy, source, key)


def verify_copy(path: Path, key: str, seq: int) -> str | None:
    """Why the downloaded checkpoint at ``path`` is unusable (None: it is usable): SQLite's
    quick_check, and the position it records must be the one its name says."""
    problems = quick_check(path)
    if problems != ["ok"]:
        return "; ".join(problems)
    recorded = recorded_position(path, key)
    if recorded != seq:
        return f"it records journal-subject sequence {recorded}, its name says {seq}"
    return None

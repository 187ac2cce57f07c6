"""Restore: a new owner whose journal file is missing, or behind what the journal subject
still holds, installs a checkpoint before its runner opens the file.

::

    compacted = first message left on the subject -> the sequence purged up to (0: none)
    local     = the subject sequence the journal file records (None: no usable file)
    local is not None and local >= compacted      -> nothing to do (the tail import suffices)
    else, newest first, each checkpoint at seq >= compacted (and > local):
        download (digest checked) -> quick_check, position matches its name -> install
    none usable: compacted == 0 -> import the whole subject; else refuse (ClusterError)

Installing is atomic: the copy is written beside the journal file, its stale ``-wal`` and
``-shm`` are removed under the journal's lock, and the copy is renamed over it. The runner
then imports the subject after the checkpoint's position (recorded events, dead letters,
outbox rows) and resumes consuming at the input stream's recorded position + 1.
"""

from __future__ import annotations

import contextlib
import os
from functools import partial
from pathlib import Path
from typing import Any

import anyio.to_thread
import nats.errors

from .._errors import ClusterError
from .._journal.lock import take_lock
from .checkpoints import Checkpoint, CheckpointStore, recorded_position, verify_copy
from .fence import JournalFence

__all__ = ["install", "restore_if_needed"]

#: A checkpoint's download is given up after this many seconds, plus one per this many bytes.
_DOWNLOAD_SECONDS = 30.0
_DOWNLOAD_BYTES_PER_S = 1_000_000


async def restore_if_needed(
    store: CheckpointStore, fence: JournalFence, path: Path, log: Any
) -> Checkpoint | None:
    """Install the newest usable checkpoint at ``path`` if the journal file there cannot be
    brought up to date from the journal subject alone; the checkpoint installed, or None."""
    key = fence.subject
    local = await anyio.to_thread.run_sync(recorded_position, path, key)
    compacted = await fence.compacted_to()
    if local is not None and local >= compacted:
        return None
    floor = max(compacted, local or 0)
    candidates = [c for c in reversed(await store.stored()) if c.seq >= floor]
    for checkpoint in candidates:
        why = await _fetch(store, checkpoint, path, key)
        if why is None:
            log.info(
                "checkpoint restored",
                checkpoint=checkpoint.name,
                journal_seq=checkpoint.seq,
                local=local,
                compacted=compacted,
            )
            return checkpoint
        log.warning("checkpoint unusable; trying an older one", checkpoint=checkpoint.name, why=why)
    if compacted == 0:
        if candidates:
            log.warning("no usable checkpoint; importing the whole journal subject")
        return None
    raise ClusterError(
        f"{fence.subject}: the journal file {path} is at sequence {local or 0}, the journal "
        f"subject was compacted up to {compacted}, and no usable checkpoint covers the gap",
        key=fence.subject,
    )


async def _fetch(
    store: CheckpointStore, checkpoint: Checkpoint, path: Path, key: str
) -> str | None:
    """Download, verify and install ``checkpoint``; why it is unusable, or None."""
    part = path.with_name(f".{path.name}.restore")
    await anyio.to_thread.run_sync(
        partial(path.parent.mkdir, mode=0o700, parents=True, exist_ok=True)
    )
    try:
        try:
            # nats-py waits for the last chunk: an object missing chunks would never end.
            with anyio.fail_after(_DOWNLOAD_SECONDS + checkpoint.size / _DOWNLOAD_BYTES_PER_S):
                await store.download(checkpoint, part)
        except (nats.errors.Error, TimeoutError) as exc:
            return f"download failed: {exc!r}"
        why = await anyio.to_thread.run_sync(verify_copy, part, key, checkpoint.seq)
        if why is not None:
            return why
        await anyio.to_thread.run_sync(install, part, path)
        return None
    finally:
        part.unlink(missing_ok=True)


def install(copy: Path, path: Path) -> None:
    """Put the verified ``copy`` in place of the journal file at ``path``, atomically, under
    the journal's single-writer lock (a worker holding it makes this fail)."""
    fd = take_lock(path)
    try:
        os.chmod(copy, 0o600)  # owner-only, as the journal file it replaces
        with copy.open("rb") as f:
            os.fsync(f.fileno())
        for stale in (Path(f"{path}-wal"), Path(f"{path}-shm")):
            stale.unlink(missing_ok=True)
        os.replace(copy, path)
        with contextlib.suppress(OSError):
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    finally:
        os.close(fd)

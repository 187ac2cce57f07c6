"""The journal's single-writer lock: an exclusive ``flock`` on a sidecar ``.lock`` file.

Held from open to close (or process death, when the kernel drops it), so a second process
fails fast with :class:`JournalLockedError` instead of interleaving writes. The holder's pid
is written into the file, for the error message of the one refused.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .._errors import JournalLockedError
from .storage import os_error

__all__ = ["take_lock"]


def take_lock(path: Path) -> int:
    """Create the journal's directory if needed and take its single-writer lock."""
    lock_path = path.with_name(path.name + ".lock")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise os_error(exc, path, "open the journal") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = ""
        try:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
        except OSError:
            pass
        os.close(fd)
        raise JournalLockedError(
            f"journal {path} is already open for writing"
            + (f" by process {holder}" if holder else "")
            + ": only one worker may host an actor per data directory",
            path=path,
        ) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd

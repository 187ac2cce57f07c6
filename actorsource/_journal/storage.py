"""Where journals live on disk, and which of the file system's refusals heal by waiting.

A full disk or a busy file heals: the commit is retried. Permission denied, a path through
a regular file, a read-only file system do not: they become :class:`JournalAccessError`,
which halts an actor at once (and fails a worker's start) with the path and the reason.
"""

from __future__ import annotations

import errno
import sqlite3
import tempfile
from pathlib import Path

from .._errors import JournalAccessError, JournalError

__all__ = [
    "ENTITY_CACHE_KIB",
    "is_access_error",
    "journal_path",
    "os_error",
    "prepare_data_dir",
    "quick_check",
    "set_cache",
]


def journal_path(data_dir: Path, actor: str) -> Path:
    """Where an actor's journal lives under a data directory."""
    return data_dir / f"{actor}.journal.sqlite"


#: OS errors that waiting does not heal.
PERMANENT_ERRNOS = frozenset(
    {
        errno.EACCES,
        errno.EPERM,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.EEXIST,
        errno.EROFS,
        errno.ENOENT,
        errno.ELOOP,
        errno.ENAMETOOLONG,
    }
)

# SQLite's result codes for the same refusals (a full disk, SQLITE_FULL, is not one).
_PERMANENT_SQLITE = frozenset(
    {sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_AUTH}
)


def is_access_error(exc: sqlite3.Error) -> bool:
    """Whether SQLite refused the file for a reason waiting does not heal."""
    return getattr(exc, "sqlite_errorcode", None) in _PERMANENT_SQLITE


def os_error(exc: OSError, path: Path, doing: str, *, detail: bool = True) -> JournalError:
    """``exc`` as a journal error naming ``path`` (and the file that failed, if another
    and ``detail``)."""
    reason = exc.strerror or str(exc)
    failed = exc.filename
    shown = detail and failed is not None and Path(failed) != path
    detail_text = f" ({failed})" if shown else ""
    message = f"cannot {doing} {path}: {reason}{detail_text}"
    if exc.errno in PERMANENT_ERRNOS:
        return JournalAccessError(message, path=path)
    return JournalError(message, path=path)


def prepare_data_dir(path: Path) -> None:
    """Create the data directory if needed and prove it writable, or raise a journal error.

    Writing a file is the only proof: root ignores permission bits but not an immutable
    directory or a read-only mount.
    """
    doing = "use the data directory"
    if path.exists() and not path.is_dir():
        raise JournalAccessError(f"cannot {doing} {path}: Not a directory", path=path)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=".actorsource-probe-"):
            pass
    except OSError as exc:
        raise os_error(exc, path, doing, detail=False) from exc


def quick_check(path: Path) -> list[str]:
    """SQLite's ``quick_check`` of the file at ``path``: ``["ok"]``, or what is wrong."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return [str(r[0]) for r in db.execute("PRAGMA quick_check(5)")]
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        return [str(exc)]


#: SQLite's page cache of each connection to an entity actor's journal, in KiB: its inserts
#: and loads go to random places of indexes ordered by entity key, and with SQLite's default
#: cache (2 MiB) most of them missed it (measured: half the throughput at 200,000 entities).
#: SQLite fills the cache as pages are used, so it is a bound, reached only on a large journal.
ENTITY_CACHE_KIB = 65_536


def set_cache(conn: sqlite3.Connection, kib: int) -> None:
    """Let ``conn``'s page cache grow to ``kib`` KiB."""
    conn.execute(f"PRAGMA cache_size = -{int(kib)}")

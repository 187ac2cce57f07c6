"""Large snapshots, written in parts: each part its own short transaction, the header last.

A snapshot of a few megabytes written in one transaction holds up every batch behind it for
the whole of it: inserting the blob, deleting the one it replaces and the WAL checkpoint the
commit then triggers (measured: 60-120 ms for 7.5 MB). :class:`PartedSnapshot` writes such a
snapshot as parts of ``part_bytes`` in ``snapshot_parts``, one short transaction each, so the
batches can commit between two parts, and checksums them as it goes (SHA-256 releases the
GIL: the event loop does not pay for it). The header row in ``snapshots`` (position, model
version, codec, the checksum of the whole, the number of parts) is written last, in a
transaction of its own: until it is, recovery does not see the snapshot, so a crash half-way
leaves only orphan parts, never half a snapshot. A header whose parts are not all there is
skipped by recovery like a bad checksum.

Older snapshots go the same way, in steps (:func:`prune_step`): first their header rows (a
parted header holds no bytes, so that is cheap), then their parts, one per transaction.
Orphan parts (a write cut short by a crash, a header pruned) are deleted when the journal is
opened (:func:`delete_orphans`) and by the pruning steps.

Snapshots under ``2 * part_bytes`` are not parted: they go into their batch's transaction in
``snapshots.state`` as they always did, and journals written before parts existed read as
they are (``parts`` is NULL in their rows).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar, TypeVarTuple, Unpack

from .._model.snapshots import NewSnapshot, Snapshot, snapshot_hasher

T = TypeVar("T")
Args = TypeVarTuple("Args")

__all__ = [
    "PART_BYTES",
    "PARTS_MIGRATION",
    "PARTS_SCHEMA",
    "PartedSnapshot",
    "delete_orphans",
    "prune_step",
    "read_snapshot",
]

#: The size of one part (a part's insert takes about 1.5 ms here; a snapshot at least twice
#: this size is parted).
PART_BYTES = 512 * 1024

PARTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshot_parts (
    snapshot INTEGER NOT NULL,
    n        INTEGER NOT NULL,
    data     BLOB    NOT NULL,
    PRIMARY KEY (snapshot, n)
);
"""

#: Brings a journal of schema 3 to 4: definitions only, no row is rewritten. A parted
#: snapshot's header has ``parts`` (how many) and ``size`` (bytes in all), and an empty state.
PARTS_MIGRATION = (
    "ALTER TABLE snapshots ADD COLUMN parts INTEGER;"
    "ALTER TABLE snapshots ADD COLUMN size INTEGER;" + PARTS_SCHEMA
)

_ORPHAN = (
    "SELECT snapshot, n FROM snapshot_parts WHERE snapshot IS NOT ? "
    "AND snapshot NOT IN (SELECT id FROM snapshots) LIMIT 1"
)


class PartedSnapshot:
    """One large snapshot being written, a part per :meth:`step` (on the journal's thread)."""

    def __init__(self, snapshot: NewSnapshot, part_bytes: int = PART_BYTES) -> None:
        self.snapshot = snapshot
        self._view = memoryview(snapshot.state)
        self._part_bytes = part_bytes
        self.parts = -(-len(snapshot.state) // part_bytes)
        self._hasher = snapshot_hasher(snapshot.model_version, snapshot.pos, snapshot.codec)
        #: The header's id, reserved with the first part (None before).
        self.id: int | None = None
        self.written = 0  # parts written
        self.done = False
        #: Time spent writing on the journal's thread so far (what the snapshot cost it).
        self.seconds = 0.0

    def step(self, conn: sqlite3.Connection) -> bool:
        """Write the next part, or the header once every part is in; True once it is."""
        started = time.perf_counter()
        if self.written < self.parts:
            start = self.written * self._part_bytes
            part = self._view[start : start + self._part_bytes]
            self._hasher.update(part)
            _transaction(conn, self._write_part, part)
            self.written += 1
        else:
            _transaction(conn, self._write_header)
            self.done = True
        self.seconds += time.perf_counter() - started
        return self.done

    def _write_part(self, conn: sqlite3.Connection, part: memoryview) -> None:
        if self.id is None:
            # The id is taken from the snapshots' AUTOINCREMENT sequence, which is moved past
            # it in the same transaction: a snapshot written inline meanwhile gets the next.
            self.id = _reserve_id(conn)
        conn.execute(
            "INSERT INTO snapshot_parts (snapshot, n, data) VALUES (?, ?, ?)",
            (self.id, self.written, part),
        )

    def _write_header(self, conn: sqlite3.Connection) -> None:
        snap = self.snapshot
        conn.execute(
            "INSERT INTO snapshots (id, pos, model_version, codec, checksum, state, created_at, "
            "parts, size) VALUES (?, ?, ?, ?, ?, x'', ?, ?, ?)",
            (
                self.id,
                snap.pos,
                snap.model_version,
                snap.codec,
                self._hasher.hexdigest(),
                time.time(),
                self.parts,
                len(snap.state),
            ),
        )


def _reserve_id(conn: sqlite3.Connection) -> int:
    (seq,) = conn.execute(
        "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'snapshots'), 0), "
        "coalesce((SELECT max(snapshot) FROM snapshot_parts), 0))"
    ).fetchone()
    reserved = int(seq) + 1
    updated = conn.execute(
        "UPDATE sqlite_sequence SET seq = ? WHERE name = 'snapshots'", (reserved,)
    ).rowcount
    if not updated:
        conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('snapshots', ?)", (reserved,))
    return reserved


def prune_step(conn: sqlite3.Connection, keep: int, writing: int | None) -> bool:
    """Delete one snapshot beyond the newest ``keep``, or else one orphan part (not of the
    snapshot ``writing``), in one transaction; True while there may be more to delete."""

    def one(conn: sqlite3.Connection) -> bool:
        row = conn.execute(
            "SELECT id FROM snapshots ORDER BY pos DESC, id DESC LIMIT 1 OFFSET ?", (keep,)
        ).fetchone()
        if row is not None:
            conn.execute("DELETE FROM snapshots WHERE id = ?", row)
            return True
        part = conn.execute(_ORPHAN, (writing,)).fetchone()
        if part is None:
            return False
        conn.execute("DELETE FROM snapshot_parts WHERE snapshot = ? AND n = ?", part)
        return True

    return _transaction(conn, one)


def delete_orphans(conn: sqlite3.Connection) -> int:
    """Delete every part that belongs to no snapshot header (at open: nothing is writing)."""
    return _transaction(
        conn,
        lambda c: (
            c.execute(
                "DELETE FROM snapshot_parts WHERE snapshot NOT IN (SELECT id FROM snapshots)"
            ).rowcount
        ),
    )


def read_snapshot(conn: sqlite3.Connection, snapshot_id: int) -> Snapshot | None:
    """One snapshot with its state bytes (a parted one's parts joined), or None if there is
    none with this id. A parted snapshot missing parts says how many in ``parts_missing``."""
    row = conn.execute(
        "SELECT id, pos, model_version, codec, checksum, state, created_at, parts "
        "FROM snapshots WHERE id = ?",
        (snapshot_id,),
    ).fetchone()
    if row is None:
        return None
    parts = row[7]
    if not parts:
        return Snapshot(*row[:7])
    found = conn.execute(
        "SELECT data FROM snapshot_parts WHERE snapshot = ? AND n >= 0 AND n < ? ORDER BY n",
        (snapshot_id, parts),
    ).fetchall()
    state = b"".join(r[0] for r in found)
    snapshot_id, pos, model_version, codec, checksum, _, created_at, _ = row
    return Snapshot(
        snapshot_id,
        pos,
        model_version,
        codec,
        checksum,
        state,
        created_at,
        parts_missing=parts - len(found),
    )


def _transaction(
    conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection, Unpack[Args]], T], *args: *Args
) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn, *args)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result

"""Each entity's head (the position of its newest row): staged in memory, stored in bulk.

An entity row names its entity's row before it (``prev_pos``), so an entity's rows are a
chain that a load walks down from the head (:mod:`.entity_store`). The heads live in two
places:

* ``entity_heads`` holds every entity's head *as of the horizon*, a position stored in
  ``meta`` (:data:`HORIZON_KEY`): for each entity with rows at or below it, its newest such
  row;
* the heads moved by the rows after the horizon are staged in memory by the journal's
  writer (:class:`StagedHeads`), and they are in those rows too.

The staged heads are written to the table all at once, sorted by key, inside the
transaction of the batch that makes them due (every :data:`FLUSH_ROWS` entity rows or
:data:`FLUSH_KEYS` keys), together with the new horizon, and when the journal closes. Why:
an entity's head is one small row at a random place of a B-tree keyed by entity; written
with every batch, as the rows are, each event dirtied about one page of it once the keys
outnumbered the batch, and each dirty page is written whole to the WAL, then again at the
checkpoint. Measured with ``python bench/entity_storage.py`` (1M keys, 2M events, the
journal alone): 21k events/s, falling from 39k to 14k as the table grew, against 118k
for the same rows without a key. Staged, a flush of 65,536 keys writes each of the
table's pages about once, where the batches wrote one per event.

Nothing depends on the flush for safety: a crash loses only the staged heads, and opening
the journal finds them again in one scan of the rows after the horizon
(:func:`staged_after_horizon`, a bounded scan: at most about :data:`FLUSH_ROWS` rows); a
reader with no writer beside it (a tool, a test) does the same scan.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Sequence

from .._model.events import JournalEntry

__all__ = [
    "FLUSH_KEYS",
    "FLUSH_ROWS",
    "HORIZON_KEY",
    "HORIZON_MIGRATION",
    "StagedHeads",
    "chain_entities",
    "flush_heads",
    "flush_staged",
    "read_heads",
    "staged_after_horizon",
]

#: The ``meta`` key of the horizon: ``entity_heads`` is complete up to this position.
HORIZON_KEY = "entity_heads_through"

#: Brings a journal of schema 5 to 6: its ``entity_heads`` is complete (every batch wrote
#: its heads), so the horizon is its last row.
HORIZON_MIGRATION = (
    f"INSERT OR REPLACE INTO meta (key, value) VALUES ('{HORIZON_KEY}', "
    "(SELECT ifnull(max(pos), 0) FROM events));"
)

#: Staged heads are stored once this many entity rows were written since the last time...
FLUSH_ROWS = 65_536
#: ... or once this many keys are staged (the memory they hold is bounded by this).
FLUSH_KEYS = 65_536

#: Keys asked for in one ``IN (...)``, and heads written by one statement.
_KEYS_PER_QUERY = 512


class StagedHeads:
    """The heads moved by the rows after the horizon, kept by the journal's writer.

    Only the journal's writer moves heads: :meth:`committed` after each batch's commit
    (which :meth:`due` says whether to flush first); a failed batch leaves them as they were
    (what it moved was rolled back with it). Readers on other threads only :meth:`get`.
    """

    __slots__ = ("flush_keys", "flush_rows", "heads", "loaded", "rows")

    def __init__(
        self,
        heads: dict[str, int] | None = None,
        rows: int = 0,
        *,
        flush_rows: int = FLUSH_ROWS,
        flush_keys: int = FLUSH_KEYS,
    ) -> None:
        #: entity -> the position of its newest row, for the entities moved after the horizon.
        self.heads = heads if heads is not None else {}
        #: Entity rows written after the horizon.
        self.rows = rows
        #: Whether they were read from the journal (:meth:`load`); until then, nothing is known.
        self.loaded = heads is not None
        self.flush_rows = flush_rows
        self.flush_keys = flush_keys

    def load(self, conn: sqlite3.Connection) -> None:
        """Read them from the journal (:func:`staged_after_horizon`)."""
        found = staged_after_horizon(conn)
        self.heads, self.rows, self.loaded = found.heads, found.rows, True

    def get(self, entity: str) -> int | None:
        """The entity's head if it moved after the horizon (else ``entity_heads`` has it)."""
        return self.heads.get(entity)

    def due(self, moved: dict[str, int], rows: int) -> bool:
        """Whether the batch that moved ``moved`` with ``rows`` entity rows should store
        every staged head."""
        return self.rows + rows >= self.flush_rows or len(self.heads) + len(moved) >= (
            self.flush_keys
        )

    def committed(self, moved: dict[str, int], rows: int, *, flushed: bool) -> None:
        """A batch that moved ``moved`` with ``rows`` entity rows is committed, and stored
        every staged head if ``flushed``."""
        if flushed:
            self.heads.clear()
            self.rows = 0
        else:
            self.heads.update(moved)
            self.rows += rows


def staged_after_horizon(conn: sqlite3.Connection) -> StagedHeads:
    """The heads of the rows after the journal's horizon, by one scan of those rows."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (HORIZON_KEY,)).fetchone()
    horizon = int(row[0]) if row else 0
    heads: dict[str, int] = {}
    rows = 0
    for entity, pos in conn.execute(
        "SELECT entity, pos FROM events WHERE pos > ? AND entity IS NOT NULL ORDER BY pos",
        (horizon,),
    ):
        heads[entity] = pos
        rows += 1
    return StagedHeads(heads, rows)


def read_heads(conn: sqlite3.Connection) -> dict[str, int]:
    """Every entity's head (``entity_heads``, then the rows after the horizon)."""
    heads = dict(conn.execute("SELECT entity, pos FROM entity_heads").fetchall())
    heads.update(staged_after_horizon(conn).heads)
    return heads


def chain_entities(
    conn: sqlite3.Connection,
    entries: Sequence[JournalEntry],
    heads: dict[str, int],
    staged: StagedHeads,
) -> list[int | None]:
    """``prev_pos`` of each of ``entries`` (None for one of no entity), in order: its
    entity's head before it. ``heads`` carries the heads across the chunks of one batch
    (taken from ``staged`` or read from ``entity_heads`` on first need, then moved to each
    entry). ``staged`` is read from the journal first if it was not yet."""
    if not staged.loaded:
        staged.load(conn)
    missing = {e.entity for e in entries if e.entity is not None and e.entity not in heads}
    if missing and staged.heads:
        known = staged.heads
        for hit in [k for k in missing if k in known]:
            heads[hit] = known[hit]
            missing.discard(hit)
    if missing:
        keys = list(missing)
        for start in range(0, len(keys), _KEYS_PER_QUERY):
            some = keys[start : start + _KEYS_PER_QUERY]
            marks = ",".join("?" * len(some))
            heads.update(
                conn.execute(
                    f"SELECT entity, pos FROM entity_heads WHERE entity IN ({marks})", some
                ).fetchall()
            )
    prevs: list[int | None] = []
    for e in entries:
        key = e.entity
        if key is None:
            prevs.append(None)
            continue
        prevs.append(heads.get(key, 0))
        heads[key] = e.pos
    return prevs


def flush_heads(
    conn: sqlite3.Connection, staged: StagedHeads, moved: dict[str, int], through: int
) -> None:
    """Store the staged heads and ``moved`` in ``entity_heads``, sorted by key, and move
    the horizon to ``through`` (inside the caller's transaction; ``through`` is its last
    row's position).

    In multi-row statements of a power of two rows (kept prepared), as the rows themselves
    (:mod:`.event_rows`): ``executemany`` steps once per row and takes the GIL back at each
    step, which a busy event loop makes dear."""
    merged = dict(staged.heads)
    merged.update(moved)
    items = sorted(merged.items())
    i, n = 0, len(items)
    while i < n:
        size = min(_KEYS_PER_QUERY, 1 << ((n - i).bit_length() - 1))
        params: list[object] = []
        for key, pos in items[i : i + size]:
            params.append(key)
            params.append(pos)
        i += size
        conn.execute(_upsert_heads_sql(size), params)
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (HORIZON_KEY, str(through))
    )


def flush_staged(conn: sqlite3.Connection, staged: StagedHeads) -> None:
    """Store every staged head and move the horizon to the journal's last row, in one
    transaction of its own (a journal being closed)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        last = conn.execute("SELECT ifnull(max(pos), 0) FROM events").fetchone()[0]
        flush_heads(conn, staged, {}, last)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    staged.committed({}, 0, flushed=True)


@functools.lru_cache(maxsize=16)
def _upsert_heads_sql(rows: int) -> str:
    values = ",".join(["(?,?)"] * rows)
    return (
        f"INSERT INTO entity_heads (entity, pos) VALUES {values} "
        "ON CONFLICT (entity) DO UPDATE SET pos = excluded.pos"
    )

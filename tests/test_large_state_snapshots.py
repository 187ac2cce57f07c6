"""A large state snapshots less often than a small one, and both still recover to the fold."""

from __future__ import annotations

from dataclasses import dataclass

from actorsource import actor, handles
from actorsource._model.snapshots import SMALL_STATE_BYTES
from actorsource.testing import ActorKit, ActorProbe


@dataclass
class Noted:
    key: str
    text: str


class Notes:
    notes: dict[str, str]

    def __init__(self) -> None:
        self.notes = {}

    @handles(Noted)
    def noted(self, event: Noted) -> None:
        self.notes[event.key] = event.text


# A budget of 0.1% spaces a large state's snapshots by at least 1,000 times their cost
# (a millisecond or more here, so a second or more): far longer than this test runs.
@actor("big-notes", subjects=["bignotes.>"], snapshot_every=10, snapshot_budget=0.001)
class BigNotes(Notes):
    pass


@actor("small-notes", subjects=["smallnotes.>"], snapshot_every=10, snapshot_budget=0.001)
class SmallNotes(Notes):
    pass


ROUNDS = 20
TEXT = 2_000  # bytes per note of the big state: past SMALL_STATE_BYTES after ~33 notes


async def feed(kit: ActorKit, probe: ActorProbe[Notes], subject: str, text: int) -> None:
    """Ten notes at a time, each ten settled before the next: a snapshot is due after each."""
    for r in range(ROUNDS):
        for i in range(10):
            n = r * 10 + i
            await kit.publish(f"{subject}.{n}", Noted(f"k{n}", f"{n}:" + "x" * text))
        await probe.settled()


async def test_a_large_state_gets_fewer_snapshots_than_a_small_one_and_both_recover_to_the_fold(
    actor_kit: ActorKit,
) -> None:
    async with actor_kit.start(SmallNotes) as small:
        await feed(actor_kit, small, "smallnotes", 1)
        small_snapshots = small.stats.snapshots
        await small.crash()  # killed where it was: newest snapshot + the tail after it
        assert small.state.notes == (await small.fold()).notes
        assert len(small.state.notes) == ROUNDS * 10
    async with actor_kit.start(BigNotes) as big:
        await feed(actor_kit, big, "bignotes", TEXT)
        big_snapshots = big.stats.snapshots
        [newest, *_] = await big.snapshots()
        assert newest.size > SMALL_STATE_BYTES
        await big.crash()
        assert big.state.notes == (await big.fold()).notes
        assert len(big.state.notes) == ROUNDS * 10
        assert big.recovery.snapshot_pos == newest.pos
        assert big.recovery.replayed == ROUNDS * 10 - newest.pos
    assert small_snapshots == ROUNDS  # exactly every 10 events, as without a budget
    # Every 10 events while small (up to ~33 notes), then one more at most.
    assert big_snapshots <= SMALL_STATE_BYTES // TEXT // 10 + 2

"""Bounded-load rendezvous assignment and the member set it is computed over."""

from __future__ import annotations

import math
import random

import pytest

from actorsource._cluster.assignment import MemberSet, assign, moved


def _members(n: int, rng: random.Random | None = None) -> list[str]:
    tag = rng.getrandbits(32) if rng else 0
    return [f"worker-{tag:x}-{i}" for i in range(n)]


def _cases(count: int) -> list[tuple[int, list[str]]]:
    rng = random.Random(20_240_601)
    return [(rng.randint(1, 256), _members(rng.randint(1, 24), rng)) for _ in range(count)]


@pytest.mark.parametrize(("partitions", "members"), _cases(80))
def test_every_partition_is_assigned_and_nobody_holds_more_than_its_share(
    partitions: int, members: list[str]
) -> None:
    owners = assign(partitions, members)
    assert sorted(owners) == list(range(partitions))
    loads = [list(owners.values()).count(m) for m in members]
    assert max(loads) <= math.ceil(partitions / len(members))
    assert sum(loads) == partitions


def test_the_assignment_depends_only_on_the_set_of_members() -> None:
    members = _members(7)
    shuffled = list(reversed(members)) + members[:2]
    assert assign(64, members) == assign(64, shuffled)


def test_no_members_no_assignment() -> None:
    assert assign(8, []) == {}
    assert assign(0, ["a"]) == {}


def _sized_cases(count: int) -> list[tuple[int, list[str]]]:
    """P = 8..16 x N partitions, as a deployment would choose."""
    rng = random.Random(77)
    cases = []
    for _ in range(count):
        n = rng.randint(2, 16)
        cases.append((n * rng.randint(8, 16), _members(n, rng)))
    return cases


@pytest.mark.parametrize(("partitions", "members"), _sized_cases(100))
def test_a_join_moves_about_one_share(partitions: int, members: list[str]) -> None:
    before = assign(partitions, members)
    after = assign(partitions, [*members, "newcomer"])
    share = partitions / (len(members) + 1)
    assert len(moved(before, after)) <= 2.5 * share
    assert list(after.values()).count("newcomer") >= share / 2


@pytest.mark.parametrize(("partitions", "members"), _sized_cases(100))
def test_a_leave_moves_about_one_share(partitions: int, members: list[str]) -> None:
    before = assign(partitions, members)
    gone = members[len(members) // 2]
    after = assign(partitions, [m for m in members if m != gone])
    held = {p for p, m in before.items() if m == gone}
    assert held <= moved(before, after)
    assert len(moved(before, after)) <= 2.5 * partitions / len(members)


def test_on_average_a_join_moves_little_more_than_one_share() -> None:
    total_moved = total_share = 0.0
    for partitions, members in _cases(120):
        before = assign(partitions, members)
        after = assign(partitions, [*members, "newcomer"])
        total_moved += len(moved(before, after))
        total_share += partitions / (len(members) + 1)
    assert total_moved <= 1.5 * total_share


def test_a_member_is_applied_after_the_join_delay() -> None:
    members = MemberSet(join_delay=5.0, hold=0.0)
    assert members.observe({"a"}, now=0.0) == frozenset()
    assert members.next_change_at(0.0) == 5.0
    assert members.observe({"a"}, now=4.9) == frozenset()
    assert members.observe({"a"}, now=5.0) == {"a"}
    assert members.observe({"a", "b"}, now=6.0) == {"a"}
    assert members.observe({"a", "b"}, now=11.0) == {"a", "b"}
    assert members.next_change_at(11.0) is None


def test_a_member_that_flaps_never_joins() -> None:
    members = MemberSet(join_delay=5.0, hold=0.0)
    members.observe({"a"}, now=0.0)
    members.observe({"a"}, now=5.0)
    for t in range(6, 30, 2):
        # b is seen, then gone, again and again: its delay starts over each time.
        assert members.observe({"a", "b"} if t % 4 else {"a"}, now=float(t)) == {"a"}


def test_a_leave_is_applied_at_once_and_changes_close_together_are_held() -> None:
    members = MemberSet(join_delay=0.0, hold=2.0)
    assert members.observe({"a", "b", "c"}, now=0.0) == {"a", "b", "c"}
    assert members.observe({"a", "b"}, now=1.0) == {"a", "b", "c"}  # held
    assert members.next_change_at(1.0) == 2.0
    assert members.observe({"a"}, now=1.5) == {"a", "b", "c"}
    assert members.observe({"a"}, now=2.0) == {"a"}  # both leaves in one change

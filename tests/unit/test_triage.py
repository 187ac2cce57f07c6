"""Triage of a batch, without a broker: duplicates, dead letters, positions, the commit job."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from actorsource import Context, ErrorPolicy, actor, event, handles
from actorsource._log import get_logger
from actorsource._mailbox.mailbox import Delivery
from actorsource._model.actor import definition_of
from actorsource._model.dispatch import LiveState
from actorsource._model.effects import RECORDED_SUBJECT, Effects
from actorsource._model.events import JournalEntry
from actorsource._runtime.deadletters import dlq_message
from actorsource._runtime.triage import Triage, triage

STREAM = "LEDGER"


@event("unit.Added")
@dataclass
class Added:
    amount: int


@event("unit.Noted")
@dataclass
class Noted:
    amount: int


@actor("ledger", subjects=["ledger.>"])
class Ledger:
    """Records a ``Noted`` and publishes an alert for every amount of 100 or more."""

    def __init__(self) -> None:
        self.total = 0
        self.notes: list[int] = []

    @handles(Added)
    def added(self, e: Added, ctx: Context) -> None:
        if e.amount < 0:
            raise ValueError("negative amount")
        self.total += e.amount
        if e.amount >= 100:
            ctx.record(Noted(e.amount))
            ctx.publish("alerts.big", Noted(e.amount))

    @handles(Noted)
    def noted(self, e: Noted) -> None:
        self.notes.append(e.amount)


LEDGER = definition_of(Ledger)


def delivery(
    seq: int,
    amount: int = 1,
    *,
    type_name: str | None = "unit.Added",
    data: bytes | None = None,
    msg_id: str | None = None,
) -> Delivery:
    headers: dict[str, str] = {}
    if type_name is not None:
        headers["Event-Type"] = type_name
    if msg_id is not None:
        headers["Nats-Msg-Id"] = msg_id
    payload = json.dumps({"amount": amount}).encode() if data is None else data
    return Delivery(
        subject="ledger.in",
        data=payload,
        headers=headers,
        reply=f"$JS.ACK.{STREAM}.ledger.1.{seq}.{seq}.0.0",
        stream=STREAM,
        stream_seq=seq,
        delivered=1,
        timestamp_ns=0,
    )


class Applied:
    """An ``apply`` that records what it was given; fails on negative amounts."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, JournalEntry]] = []

    async def __call__(self, event: object, entry: JournalEntry) -> Effects | None:
        self.calls.append((event, entry))
        if isinstance(event, Added) and event.amount < 0:
            raise ValueError("negative amount")
        return None


async def run(
    deliveries: list[Delivery],
    *,
    start: int = 0,
    high: int = 0,
    pos: int = 0,
    known_seqs: Iterable[int] = (),
    known_ids: Iterable[str] = (),
    policy: ErrorPolicy | None = None,
    apply: Callable[[object, JournalEntry], Awaitable[Effects | None]] | None = None,
) -> Triage:
    return await triage(
        deliveries,
        start,
        high=high,
        pos=pos,
        known_seqs=set(known_seqs),
        known_ids=set(known_ids),
        policy=policy or ErrorPolicy(),
        codec=LEDGER.codec,
        apply=apply or Applied(),
    )


def reasons(outcome: Triage) -> list[str]:
    return [dl.reason for _, dl in outcome.dead]


# -- duplicates ----------------------------------------------------------------------------


async def test_a_delivery_at_a_known_stream_sequence_is_acknowledged_as_a_duplicate_and_not_applied() -> (
    None
):
    apply = Applied()
    d = delivery(7)
    outcome = await run([d], high=6, known_seqs={7}, apply=apply)
    assert apply.calls == []
    assert outcome.duplicates == 1
    assert outcome.to_ack == [d]
    assert outcome.entries == []
    assert outcome.top == 7


async def test_a_stream_sequence_seen_earlier_in_the_batch_is_a_duplicate() -> None:
    apply = Applied()
    first, again = delivery(3, 5), delivery(3, 5)
    outcome = await run([first, again], apply=apply)
    assert len(apply.calls) == 1
    assert outcome.duplicates == 1
    assert [e.stream_seq for e in outcome.entries] == [3]
    assert outcome.to_ack == [first, again]


async def test_a_known_message_id_is_a_duplicate_at_a_new_stream_sequence() -> None:
    apply = Applied()
    outcome = await run([delivery(9, msg_id="m-1")], known_ids={"m-1"}, apply=apply)
    assert apply.calls == []
    assert outcome.duplicates == 1
    assert outcome.entries == []
    assert outcome.top == 9


async def test_a_message_id_applied_earlier_in_the_batch_makes_a_later_copy_a_duplicate() -> None:
    apply = Applied()
    outcome = await run([delivery(1, msg_id="m-1"), delivery(2, msg_id="m-1")], apply=apply)
    assert len(apply.calls) == 1
    assert outcome.duplicates == 1
    assert [e.msg_id for e in outcome.entries] == ["m-1"]


# -- dead letters --------------------------------------------------------------------------


async def test_a_payload_over_max_payload_is_dead_lettered_as_too_large_without_decoding() -> None:
    apply = Applied()
    d = delivery(4, data=b"not even json" * 10)
    outcome = await run([d], policy=ErrorPolicy(max_payload=64), apply=apply)
    assert apply.calls == []
    assert reasons(outcome) == ["too-large"]
    assert "exceeds max_payload 64" in outcome.dead[0][1].error
    assert outcome.to_ack == []
    assert outcome.top == 4


async def test_a_message_without_an_event_type_header_is_dead_lettered_as_undecodable() -> None:
    outcome = await run([delivery(1, type_name=None)])
    assert reasons(outcome) == ["undecodable"]
    assert "no Event-Type header" in outcome.dead[0][1].error


async def test_an_unknown_event_type_is_dead_lettered_as_unknown_type() -> None:
    outcome = await run([delivery(1, type_name="unit.Nobody")])
    assert reasons(outcome) == ["unknown-type"]
    assert outcome.dead[0][1].type == "unit.Nobody"


async def test_a_payload_of_the_wrong_shape_is_dead_lettered_as_undecodable() -> None:
    outcome = await run([delivery(1, data=b'{"amount": "many"}')])
    assert reasons(outcome) == ["undecodable"]
    assert "EventCodecError" in outcome.dead[0][1].error


async def test_a_dead_letter_keeps_the_raw_message_and_moves_top_but_takes_no_position() -> None:
    d = delivery(12, data=b"{", msg_id="m-12")
    outcome = await run([d], high=11, pos=5)
    [(dead_delivery, dl)] = outcome.dead
    assert dead_delivery is d
    assert (dl.payload, dl.stream, dl.stream_seq, dl.msg_id) == (b"{", STREAM, 12, "m-12")
    assert outcome.top == 12
    assert outcome.pos == 5
    assert outcome.entries == []


async def test_unknown_types_are_acknowledged_and_counted_when_the_policy_ignores_them() -> None:
    d = delivery(2, type_name="unit.Nobody")
    outcome = await run([d], policy=ErrorPolicy(on_unknown="ignore"))
    assert outcome.ignored == 1
    assert outcome.dead == []
    assert outcome.to_ack == [d]
    assert outcome.entries == []
    assert outcome.top == 2


async def test_an_undecodable_payload_is_dead_lettered_even_when_unknown_types_are_ignored() -> (
    None
):
    outcome = await run([delivery(1, data=b"{")], policy=ErrorPolicy(on_unknown="ignore"))
    assert outcome.ignored == 0
    assert reasons(outcome) == ["undecodable"]


# -- a failing handler ---------------------------------------------------------------------


async def test_a_failing_handler_stops_triage_with_nothing_from_it_on_journaled_or_acknowledged() -> (
    None
):
    apply = Applied()
    ok, bad, later = delivery(1, 5), delivery(2, -1), delivery(3, 7)
    outcome = await run([ok, bad, later], apply=apply)
    assert outcome.failure is not None
    assert outcome.failure.index == 1
    assert outcome.failure.delivery is bad
    assert isinstance(outcome.failure.error, ValueError)
    assert outcome.end == 1
    assert [e.stream_seq for e in outcome.entries] == [1]
    assert outcome.to_ack == [ok]
    assert outcome.top == 1
    assert outcome.pos == 1
    assert len(apply.calls) == 2  # the delivery after the failure is not even looked at


async def test_a_failing_handler_leaves_the_next_position_free_for_its_retry() -> None:
    outcome = await run([delivery(1, -1)], pos=4)
    assert outcome.failure is not None
    assert outcome.failure.entry.pos == 5
    assert outcome.pos == 4


# -- positions -----------------------------------------------------------------------------


async def test_events_take_the_journal_positions_after_pos_and_top_is_the_highest_sequence() -> (
    None
):
    outcome = await run([delivery(21), delivery(22), delivery(23)], high=20, pos=10)
    assert [(e.pos, e.stream_seq) for e in outcome.entries] == [(11, 21), (12, 22), (13, 23)]
    assert outcome.pos == 13
    assert outcome.top == 23
    assert outcome.end == 3


async def test_triage_starts_at_the_index_it_is_given() -> None:
    apply = Applied()
    deliveries = [delivery(1), delivery(2), delivery(3)]
    outcome = await run(deliveries, start=2, high=2, pos=2, apply=apply)
    assert [entry.stream_seq for _, entry in apply.calls] == [3]
    assert outcome.to_ack == [deliveries[2]]


async def test_nothing_handled_leaves_top_at_high() -> None:
    outcome = await run([], high=40, pos=3)
    assert (outcome.top, outcome.pos, outcome.end) == (40, 3, 0)


async def test_events_a_handler_records_take_the_positions_right_after_its_event() -> None:
    live = LiveState(LEDGER, get_logger(actor="ledger"), max_payload=1024 * 1024)
    deliveries = [delivery(1, 1), delivery(2, 100), delivery(3, 2)]
    outcome = await run(deliveries, apply=live.apply_live)
    assert [(e.pos, e.type, e.subject) for e in outcome.entries] == [
        (1, "unit.Added", "ledger.in"),
        (2, "unit.Added", "ledger.in"),
        (3, "unit.Noted", RECORDED_SUBJECT),
        (4, "unit.Added", "ledger.in"),
    ]
    assert outcome.pos == 4
    assert [(m.subject, m.pos) for m in outcome.outbox] == [("alerts.big", 2)]
    assert outcome.to_ack == deliveries
    assert live.state.notes == [100]


@actor("tally", subjects=["tally.>"])
class Tally:
    """Plain handlers only (synchronous, no context): triage calls them itself."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    @handles(Added)
    def added(self, e: Added) -> None:
        if e.amount < 0:
            raise ValueError("negative amount")
        self.seen.append(e.amount)


async def _tally(deliveries: list[Delivery], *, plain: bool) -> tuple[Triage, list[int]]:
    live = LiveState(definition_of(Tally), get_logger(actor="tally"), max_payload=1 << 20)
    outcome = await triage(
        deliveries,
        0,
        high=0,
        pos=0,
        known_seqs=set(),
        known_ids=set(),
        policy=ErrorPolicy(),
        codec=live.definition.codec,
        apply=live.apply_live,
        plain=live.dispatch.plain if plain else None,
    )
    return outcome, live.state.seen


async def test_plain_handlers_called_by_triage_give_the_outcome_of_the_full_dispatch() -> None:
    deliveries = [
        delivery(1, 5),
        delivery(2, data=b"{"),
        delivery(3, 7, msg_id="m"),
        delivery(4, -1),
    ]
    fast, fast_seen = await _tally(deliveries, plain=True)
    slow, slow_seen = await _tally(deliveries, plain=False)
    assert fast_seen == slow_seen == [5, 7]
    for outcome in (fast, slow):
        assert [e.stream_seq for e in outcome.entries] == [1, 3]
        assert [dl.reason for _, dl in outcome.dead] == ["undecodable"]
        assert outcome.failure is not None
        assert outcome.failure.index == 3
        assert (outcome.pos, outcome.top, outcome.end) == (2, 3, 3)
    assert [e.msg_id for e in fast.entries] == [e.msg_id for e in slow.entries]


# -- the commit job ------------------------------------------------------------------------


def _dlq(dl):  # type: ignore[no-untyped-def]
    return dlq_message("ledger", ErrorPolicy(), dl)


async def test_the_job_carries_the_stream_position_when_top_moved_past_high() -> None:
    deliveries = [delivery(5), delivery(6)]
    outcome = await run(deliveries, high=4)
    job = outcome.to_job(deliveries, stream=STREAM, high=4, dlq=_dlq)
    assert job.batch.positions == {STREAM: 6}
    assert job.batch.entries == outcome.entries
    assert job.deliveries == deliveries
    assert job.to_ack == deliveries


async def test_the_job_carries_no_stream_position_when_nothing_moved_past_high() -> None:
    d = delivery(5)
    outcome = await run([d], high=9, known_seqs={5})
    job = outcome.to_job([d], stream=STREAM, high=9, dlq=_dlq)
    assert job.batch.positions == {}
    assert job.to_ack == [d]


async def test_the_job_sends_each_dead_letter_to_the_dlq_after_the_handlers_outbox() -> None:
    live = LiveState(LEDGER, get_logger(actor="ledger"), max_payload=1024 * 1024)
    deliveries = [delivery(1, 100), delivery(2, data=b"{"), delivery(3, type_name="unit.X")]
    outcome = await run(deliveries, apply=live.apply_live)
    job = outcome.to_job(deliveries, stream=STREAM, high=0, dlq=_dlq)
    assert [dl.reason for dl in job.batch.dead_letters] == ["undecodable", "unknown-type"]
    assert [m.subject for m in job.batch.outbox] == [
        "alerts.big",
        "actorsource.dlq.ledger",
        "actorsource.dlq.ledger",
    ]
    assert [m.msg_id for m in job.batch.outbox[1:]] == [
        f"dlq.ledger.{STREAM}.2",
        f"dlq.ledger.{STREAM}.3",
    ]
    assert [d for d, _ in job.dead] == deliveries[1:]
    assert job.to_ack == deliveries[:1]

"""The query mode of ``bench/chaos.py``: clients that ask while workers are killed, and the
offline check of every answer they got against the final journal.

With ``--queries C``, C clients ask the hosted actor one query after another for as long as
the kill loop runs, and then while the final worker catches up: the bank's ``balance`` of a random account (the singleton), or the
account's ``view`` (``bench._bank_entities``, with ``--entities``). A quarter of the queries
carry ``after_seq``: the stream sequence of the newest publish acknowledged so far
(read-your-writes). Errors are expected while no worker runs or one recovers (no responder,
``not-running``, ``timeout``) and are counted by code in ``query_errors``
(``timeout-no-reply``: the worker was killed with the query in hand). Every answer is recorded with the
journal position and stream sequence it says it reflects, and then held to the journal the
run left behind:

* ``query_replies_inconsistent``: answers whose value is not the independent fold of the
  journal's events up to the answer's position (so an answer reflected an event the journal
  does not hold there: applied and not yet committed, then lost in a kill), or whose stream
  sequence does not fall between the journaled entry at that position and the next one;
* ``query_backwards``: answers whose position is below an earlier answer's, per client;
* ``query_after_seq_short``: answers asked with ``after_seq`` whose stream sequence is
  below it (the actor reads every subject of its stream).
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from _bank_entities import ChurningAccounts, fold_account
from nats.aio.client import Client as NATS

from actorsource import QueryError, ask
from actorsource._model.actor import definition_of
from actorsource.journal import JournalEntry, read_entries
from examples import bank

__all__ = ["QueryLoad", "check_answers"]

TIMEOUT = 0.5  # each query's; a worker killed mid-query costs its client this much
PAUSE = 0.005  # between two queries of one client
AFTER_SEQ_SHARE = 0.25


@dataclass(frozen=True, slots=True)
class Answer:
    """One answer a client got: what it asked and what the answer says it reflects."""

    client: int
    account: str
    value: Any
    pos: int
    stream_seq: int
    after_seq: int | None


@dataclass
class QueryLoad:
    """``clients`` clients asking ``actor`` about ``accounts`` until :meth:`stop`."""

    nc: NATS
    actor: str
    accounts: list[str]
    clients: int
    seed: int
    latest_seq: Callable[[], int | None]
    entities: bool = False
    answers: list[Answer] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    asked: int = 0
    _done: anyio.Event = field(default_factory=anyio.Event)
    _answered: anyio.Event = field(default_factory=anyio.Event)

    async def run(self) -> None:
        """Run the clients until :meth:`stop`."""
        async with anyio.create_task_group() as tg:
            for client in range(self.clients):
                tg.start_soon(self._client, client, random.Random(self.seed * 1_000 + client))
            await self._done.wait()
            tg.cancel_scope.cancel()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The clients ask while the block runs."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.run)
            try:
                yield
            finally:
                self.stop()

    async def answered(self, timeout: float) -> None:
        """Wait (up to ``timeout`` s) for one more answer: with the final worker running, the
        clients' next questions are answered, so a run short enough to be spent mostly in
        restarts still holds some answers to the journal."""
        self._answered = anyio.Event()
        with anyio.move_on_after(timeout):
            await self._answered.wait()

    def stop(self) -> None:
        """Stop asking (the answers stay for :func:`check_answers`)."""
        self._done.set()

    async def _client(self, client: int, rng: random.Random) -> None:
        while True:
            account = rng.choice(self.accounts)
            after_seq = self.latest_seq() if rng.random() < AFTER_SEQ_SHARE else None
            self.asked += 1
            # The entity mode asks the account itself; the singleton, its balance query.
            name, key, args = (
                ("view", account, {}) if self.entities else ("balance", None, {"account": account})
            )
            try:
                answer = await ask(
                    self.nc, self.actor, name, key=key, after_seq=after_seq, timeout=TIMEOUT, **args
                )
            except QueryError as exc:
                # A timeout with no reply at all: the worker died with the query in hand.
                silent = exc.code == "timeout" and str(exc).startswith("no answer from")
                self.errors[f"{exc.code}-no-reply" if silent else exc.code] += 1
                await anyio.sleep(PAUSE * 10)
                continue
            self.answers.append(
                Answer(client, account, answer.value, answer.pos, answer.stream_seq, after_seq)
            )
            self._answered.set()
            await anyio.sleep(PAUSE)


def check_answers(path: Path, load: QueryLoad) -> dict[str, Any]:
    """Hold every answer of ``load`` to the journal at ``path`` (see the module doc)."""
    entries = list(read_entries(path))
    by_pos = {e.pos: e for e in entries}
    answers = load.answers
    if load.entities:
        wrong = _entity_values_wrong(entries, answers)
    else:
        wrong = _singleton_values_wrong(entries, answers)
    wrong |= {i for i, a in enumerate(answers) if not _seq_fits(a, by_pos)}
    backwards = 0
    last: dict[int, int] = {}
    for a in answers:
        backwards += a.pos < last.get(a.client, 0)
        last[a.client] = max(a.pos, last.get(a.client, 0))
    with_after = [a for a in answers if a.after_seq is not None]
    return {
        "query_clients": load.clients,
        "query_asked": load.asked,
        "query_replies": len(answers),
        "query_replies_inconsistent": len(wrong),
        "query_backwards": backwards,
        "query_with_after_seq": len(with_after),
        "query_after_seq_short": sum(1 for a in with_after if a.stream_seq < (a.after_seq or 0)),
        "query_errors": dict(sorted(load.errors.items())),
        "query_max_pos": max((a.pos for a in answers), default=0),
    }


def _seq_fits(answer: Answer, by_pos: dict[int, JournalEntry]) -> bool:
    """The stream sequence the answer reports lies between the entry at its position and
    the next entry (later stream messages the journal skipped, duplicates or dead letters,
    may have moved it past the first)."""
    here, after = by_pos.get(answer.pos), by_pos.get(answer.pos + 1)
    if answer.pos > 0 and (here is None or (here.stream_seq or 0) > answer.stream_seq):
        return False
    return after is None or (after.stream_seq or 0) > answer.stream_seq


def _singleton_values_wrong(entries: list[JournalEntry], answers: list[Answer]) -> set[int]:
    """The answers (by index) whose balance is not the fold of the journal up to its pos."""
    codec = definition_of(bank.Accounts).codec
    order = sorted(range(len(answers)), key=lambda i: answers[i].pos)
    balances: dict[str, int] = {}
    wrong: set[int] = set()
    it = iter(entries)
    pos = 0
    for i in order:
        answer = answers[i]
        while pos < answer.pos:
            entry = next(it, None)
            if entry is None:
                break  # the answer claims a position the journal never reached
            pos = entry.pos
            _apply(balances, codec.decode(entry.type, entry.payload))
        if pos != answer.pos or answer.value != balances.get(answer.account, 0):
            wrong.add(i)
    return wrong


def _apply(balances: dict[str, int], e: object) -> None:
    """One step of the bank's rules (a withdrawal or transfer that would overdraw is
    declined), written apart from the actor's handlers."""
    if isinstance(e, bank.Deposited):
        balances[e.account] = balances.get(e.account, 0) + e.amount
    elif isinstance(e, bank.Withdrawn):
        if balances.get(e.account, 0) >= e.amount:
            balances[e.account] -= e.amount
    elif isinstance(e, bank.Transferred) and balances.get(e.source, 0) >= e.amount:
        balances[e.source] -= e.amount
        balances[e.target] = balances.get(e.target, 0) + e.amount


def _entity_values_wrong(entries: list[JournalEntry], answers: list[Answer]) -> set[int]:
    """The answers whose account is not the fold of its journaled events up to the pos."""
    codec = definition_of(ChurningAccounts).codec
    events: dict[str, list[tuple[int, bank.BankEvent]]] = defaultdict(list)
    for entry in entries:
        events[str(entry.entity)].append((entry.pos, codec.decode(entry.type, entry.payload)))
    top = entries[-1].pos if entries else 0
    wrong: set[int] = set()
    for i, answer in enumerate(answers):
        upto = [e for pos, e in events.get(answer.account, []) if pos <= answer.pos]
        balance, declined = fold_account(upto)
        if (
            answer.pos > top
            or not upto
            or answer.value
            != {
                "balance": balance,
                "declined": declined,
            }
        ):
            wrong.add(i)
    return wrong

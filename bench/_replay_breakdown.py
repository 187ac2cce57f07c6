"""Where a replay's time goes, per journal row, measured in one process.

``bench/recovery.py`` runs this in a fresh process on its journal and reports the figures as
``replay_breakdown_ns``:

* ``read``: the replay reader alone (``JournalReader.replay_chunks``: the rows in position
  order, each coded by the actor's handlers), over the whole journal.
* ``decode_dataclass`` / ``decode_struct``: decoding the rows' payloads (already in memory)
  into the bank's ``@dataclass`` events with the actor's own decoders, and into the same
  events as ``msgspec.Struct`` s; each loop's own cost is included, as in a replay.
* ``dispatch_dataclass`` / ``dispatch_struct``: ``Dispatch.replay`` over the same rows in
  memory (decoding, the handler call, its Context, the handler's body), for each actor.
* ``direct_dataclass`` / ``direct_struct``: the same handlers called straight from a loop
  (resolved once, a new Context for a handler that takes one): ``dispatch_over_direct`` =
  dispatch_struct - direct_struct is what ``Dispatch`` itself adds.
* ``fold_struct``: the msgspec fold of ``bench/recovery.py`` over the same rows in memory
  (Struct decoding and the fold written inline).

The rows in memory are the journal's first ``SAMPLE`` rows; each figure is the best of
``ROUNDS`` runs. From them: ``handlers_dataclass`` = dispatch - decode (what calling the
actor's own handlers adds to decoding, the handler bodies included), and
``fold_body`` = fold_struct - decode_struct (the inline fold's body). ``python_call`` is
what calling an empty Python function once per row adds to a loop over the rows.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgspec
import structlog
from _bank_structs import StructAccounts
from _scaffold import BankEventStruct, bank

from actorsource._journal.reader import JournalReader
from actorsource._model.actor import definition_of
from actorsource._model.context import Context, Scope
from actorsource._model.dispatch import Dispatch

SAMPLE = 200_000
ROUNDS = 5


def _best(run: Callable[[], Any], rows: int) -> float:
    """The fastest of ``ROUNDS`` runs, in nanoseconds per row."""
    best = float("inf")
    for _ in range(ROUNDS):
        gc.collect()
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best / rows * 1e9


def breakdown(path: Path) -> dict[str, float]:
    """The figures of the module doc for the bank journal at ``path``."""
    plain = definition_of(bank.Accounts)
    structs = definition_of(StructAccounts)
    kinds = Dispatch.replay_kinds_of(plain)
    if kinds != Dispatch.replay_kinds_of(structs):
        raise RuntimeError("the two bank actors code the journal's rows differently")
    with JournalReader(path) as reader:
        total = 0
        started = time.perf_counter()
        for chunk in reader.replay_chunks(0, kinds):
            total += len(chunk.rows)
        read = (time.perf_counter() - started) / total * 1e9
        chunks = []
        for chunk in reader.replay_chunks(0, kinds):
            chunks.append(chunk)
            if chunk.last >= SAMPLE:
                break
        n = sum(len(c.rows) for c in chunks)
        names = [name for name, _ in kinds]
        figures = {"read": read}
        for label, definition in (("dataclass", plain), ("struct", structs)):
            decoders = [definition.codec.decoder(name) for name in names]

            def decode(decoders: list[Any] = decoders) -> None:
                for chunk in chunks:
                    for code, payload in chunk.rows:
                        decoders[code](payload)

            def dispatch(definition: Any = definition) -> None:
                state = definition.new_state()
                replay = Dispatch(definition, state, structlog.get_logger()).replay
                for chunk in chunks:
                    _drive(replay(chunk))

            def direct(definition: Any = definition, decoders: list[Any] = decoders) -> None:
                state = definition.new_state()
                scope = Scope(definition.name, structlog.get_logger(), replaying=True)
                steps = [
                    (getattr(state, definition.handlers[name].method), decoders[code])
                    for code, name in enumerate(names)
                ]
                takes = [definition.handlers[name].takes_context for name in names]
                for chunk in chunks:
                    for pos, (code, payload) in enumerate(chunk.rows, chunk.first):
                        handler, decode_one = steps[code]
                        if takes[code]:
                            handler(decode_one(payload), Context(scope, pos))
                        else:
                            handler(decode_one(payload))

            figures[f"decode_{label}"] = _best(decode, n)
            figures[f"direct_{label}"] = _best(direct, n)
            figures[f"dispatch_{label}"] = _best(dispatch, n)

        def call(chunks: list[Any] = chunks) -> None:
            for chunk in chunks:
                for _code, payload in chunk.rows:
                    _noop(payload)

        def loop(chunks: list[Any] = chunks) -> None:
            for chunk in chunks:
                for _code, _payload in chunk.rows:
                    pass

        figures["python_call"] = _best(call, n) - _best(loop, n)
        typed = [[(names[code], payload) for code, payload in c.rows] for c in chunks]
        figures["fold_struct"] = _best(lambda: msgspec_fold(typed), n)
    figures["handlers_dataclass"] = figures["dispatch_dataclass"] - figures["decode_dataclass"]
    figures["handlers_struct"] = figures["dispatch_struct"] - figures["decode_struct"]
    figures["dispatch_over_direct"] = figures["dispatch_struct"] - figures["direct_struct"]
    figures["fold_body"] = figures["fold_struct"] - figures["decode_struct"]
    return {key: round(value, 1) for key, value in figures.items()}


def _noop(payload: bytes) -> None:
    """A handler that does nothing: what one Python call per row costs."""


def _drive(coroutine: Any) -> None:
    """Run a coroutine that never suspends (a replay of synchronous handlers) to its end."""
    try:
        coroutine.send(None)
    except StopIteration:
        return
    coroutine.close()
    raise RuntimeError("the replay suspended: a handler is async")


def msgspec_fold(batches: Iterable[list[tuple[str, bytes]]]) -> tuple[dict[str, int], int, int]:
    """The msgspec fold of ``bench/recovery.py`` over batches of ``(type, payload)`` rows:
    one typed decoder for the three bank events, the bank's rules written inline. Returns
    the balances, the declined count and the rows folded."""
    decode = msgspec.json.Decoder(BankEventStruct).decode
    balances: dict[str, int] = {}
    declined = 0
    count = 0
    for rows in batches:
        for type_name, payload in rows:
            e = decode(payload)
            if type_name == "Deposited":
                balances[e.account] = balances.get(e.account, 0) + e.amount
                continue
            account = e.account if type_name == "Withdrawn" else e.source
            balance = balances.get(account, 0)
            if balance < e.amount:
                declined += 1
                continue
            balances[account] = balance - e.amount
            if type_name == "Transferred":
                balances[e.target] = balances.get(e.target, 0) + e.amount
        count += len(rows)
    return balances, declined, count

"""Decode and encode cost per event of each kind of event class, measured in one run.

    python bench/event_codecs.py [--events N] [--repeat R] [--json]

The bank's ``Transferred`` event (``source``, ``target``, ``amount``) declared three ways:
a ``@dataclass`` (``examples/bank.py``), a ``msgspec.Struct`` (``bench/_bank_structs.py``)
and a pydantic v2 ``BaseModel`` (declared here; the ``pydantic`` extra). N payloads of
``examples.bank.random_events`` transfers (as published) are decoded by the actor's own
decode function (``EventCodec.decoder``: what the live path and replay call per event),
then the decoded events encoded again (``encode_event``: what ``ctx.publish`` and the test
kit call). Best of R passes, in nanoseconds per event; ``pydantic_vs_msgspec`` is the
ratio of the decode costs. The pydantic line is null, with one line on stderr, if pydantic
is not installed (``pip install -e '.[pydantic]'``).

The last line on stdout is one JSON object (with ``--json``, the only line on stdout).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bank_structs import Transferred as StructTransferred
from _scaffold import emit

from actorsource._model.events import EventCodec, encode_event
from examples import bank


def best_ns(work: Callable[[], object], n: int, repeat: int) -> float:
    """The fastest of ``repeat`` passes of ``work`` over ``n`` items, per item, in ns."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter_ns()
        work()
        best = min(best, time.perf_counter_ns() - started)
    return best / n


def measure(cls: type, payloads: list[bytes], repeat: int) -> tuple[float, float]:
    """(decode, encode) ns per event for event class ``cls``."""
    decode = EventCodec([cls]).decoder(cls.__name__)
    decoded: list[Any] = [decode(p) for p in payloads]
    if [encode_event(e)[1] for e in decoded] != payloads:
        raise SystemExit(f"{cls.__qualname__}: the payloads do not survive a round trip")
    n = len(payloads)
    decode_ns = best_ns(lambda: [decode(p) for p in payloads], n, repeat)
    encode_ns = best_ns(lambda: [encode_event(e) for e in decoded], n, repeat)
    return decode_ns, encode_ns


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="payloads decoded per pass")
    parser.add_argument("--repeat", type=int, default=5, help="passes (the best is kept)")
    parser.add_argument("--json", action="store_true", help="print only the JSON line on stdout")
    args = parser.parse_args(argv)
    if args.events < 1 or args.repeat < 1:
        parser.error("--events and --repeat must be >= 1")
    transfers = [
        e for e in bank.random_events(args.events * 4, seed=1) if isinstance(e, bank.Transferred)
    ][: args.events]
    payloads = [encode_event(e)[1] for e in transfers]
    result: dict[str, Any] = {"events": len(payloads), "repeat": args.repeat}
    kinds: dict[str, type] = {
        "dataclass": bank.Transferred,
        "msgspec": StructTransferred,
    }
    try:
        import pydantic

        class Transferred(pydantic.BaseModel):
            source: str
            target: str
            amount: int

        kinds["pydantic"] = Transferred
    except ImportError:
        print("pydantic not installed: pip install -e '.[pydantic]'", file=sys.stderr)
    for kind in ("dataclass", "msgspec", "pydantic"):
        cls = kinds.get(kind)
        if cls is None:
            result[f"{kind}_decode_ns"] = result[f"{kind}_encode_ns"] = None
            continue
        decode_ns, encode_ns = measure(cls, payloads, args.repeat)
        result[f"{kind}_decode_ns"] = round(decode_ns)
        result[f"{kind}_encode_ns"] = round(encode_ns)
        print(
            f"{kind:<10} decode {decode_ns:>7,.0f} ns/event  encode {encode_ns:>7,.0f} ns/event",
            file=sys.stderr,
        )
    pyd, msg = result["pydantic_decode_ns"], result["msgspec_decode_ns"]
    result["pydantic_vs_msgspec"] = round(pyd / msg, 2) if pyd is not None else None
    result["states_equal"] = True  # nothing to compare: kept for the bench scripts' contract
    emit(result, json_only=args.json, summary=[f"{k}: {v}" for k, v in result.items()])
    return 0


if __name__ == "__main__":
    sys.exit(main())

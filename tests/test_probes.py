"""Metrics and health probes over HTTP, scraped from a real worker process
(``actorsource run --metrics-port``) on a real nats-server."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from actors import Added, Counter, Nap
from click.testing import CliRunner

from actorsource import NatsOptions, Worker, ensure_streams
from actorsource.cli import main
from actorsource.testing import ActorKit, NatsServer, WorkerProcess

TESTS = Path(__file__).parent
pytest.importorskip("prometheus_client")


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def get(port: int, path: str) -> tuple[int, str]:
    """GET from the worker's probe server (in a thread: the test's loop stays free)."""
    return await anyio.to_thread.run_sync(_get, port, path)


async def until(condition: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    with anyio.move_on_after(timeout):
        while not await condition():  # type: ignore[misc]
            await anyio.sleep(0.05)
        return
    pytest.fail(f"timed out waiting for {what}")


@asynccontextmanager
async def worker_with_probes(
    kit: ActorKit, tmp_path: Path, target: str, *args: str
) -> AsyncIterator[tuple[WorkerProcess, int]]:
    """``actorsource run TARGET --metrics-port 0 ARGS``; yields it and its probes' port."""
    assert kit.server is not None
    worker = WorkerProcess(
        [target],
        urls=[kit.server.url],
        data_dir=tmp_path / "worker",
        args=["--metrics-port", "0", "--metrics-host", "127.0.0.1", *args],
        pythonpath=[TESTS],
    )
    async with worker:
        port = 0

        async def listening() -> bool:
            nonlocal port
            assert worker.running(), worker.log_path.read_text()
            for line in worker.logs():
                if line.get("event") == "metrics and health probes listening":
                    port = int(line["port"])
            return port != 0

        await until(listening, "the probe server")
        yield worker, port


def sample(text: str, name: str, actor: str) -> float | None:
    """The value of ``name{actor="..."}`` in a Prometheus text exposition."""
    m = re.search(rf'^{re.escape(name)}{{actor="{re.escape(actor)}"}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else None


async def test_a_worker_process_serves_its_actors_metrics_in_prometheus_text_format(
    actor_kit: ActorKit, tmp_path: Path
) -> None:
    # Published before the worker starts: it finds them all waiting, and takes them in
    # batches.
    await ensure_streams(actor_kit.nc, Counter)
    for i in range(25):
        await actor_kit.publish("count.a", Added("a", i), msg_id=f"m-{i}")
    await actor_kit.publish("count.a", Added("a", 0), msg_id="m-0")  # stored once
    await actor_kit.publish_raw("count.a", b"{}", headers={"Event-Type": "Nope"})
    async with worker_with_probes(actor_kit, tmp_path, "actors:Counter") as (_, port):

        async def scraped() -> bool:
            status, text = await get(port, "/metrics")
            assert status == 200
            return sample(text, "actorsource_dead_letters_total", "counter") == 1.0

        await until(scraped, "the dead letter in the metrics")
        await until(lambda: _ready(port), "/readyz 200 (its lag read)")
        _, text = await get(port, "/metrics")
        assert sample(text, "actorsource_events_applied_total", "counter") == 25
        assert sample(text, "actorsource_restarts_total", "counter") == 0
        assert sample(text, "actorsource_journal_position", "counter") == 25
        assert sample(text, "actorsource_stream_sequence", "counter") == 26
        assert sample(text, "actorsource_lag", "counter") == 0
        assert sample(text, "actorsource_outbox_pending", "counter") == 0  # the DLQ confirmed
        assert sample(text, "actorsource_running", "counter") == 1
        commits = sample(text, "actorsource_commit_duration_seconds_count", "counter")
        applies = sample(text, "actorsource_apply_duration_seconds_count", "counter")
        # Observed once per batch, never per event: 26 messages came in a few batches.
        assert commits is not None
        assert 1 <= commits < 26
        assert applies is not None
        assert 1 <= applies < 26
        assert 'actorsource_commit_duration_seconds_bucket{actor="counter",le="+Inf"}' in text
        assert "process_resident_memory_bytes" in text


async def _ready(port: int) -> bool:
    status, _ = await get(port, "/readyz")
    return status == 200


async def test_a_blocked_event_loop_fails_healthz_while_metrics_still_answer(
    actor_kit: ActorKit, tmp_path: Path
) -> None:
    target, args = "actors:Napper", ("--health-stale-after", "0.5")
    async with worker_with_probes(actor_kit, tmp_path, target, *args) as (_, port):
        await until(lambda: _ready(port), "/readyz 200")
        assert (await get(port, "/healthz"))[0] == 200
        await actor_kit.publish("nap.x", Nap(seconds=6.0, block=True))

        async def unhealthy() -> bool:
            return (await get(port, "/healthz"))[0] == 503

        await until(unhealthy, "/healthz 503", timeout=5.0)
        status, text = await get(port, "/metrics")  # the loop is still blocked
        assert status == 200
        assert sample(text, "actorsource_running", "napper") == 1
        healthz = await get(port, "/healthz")
        assert healthz[0] == 503
        assert healthz[1].startswith("event loop unresponsive for ")
        readyz = await get(port, "/readyz")
        assert readyz[0] == 503
        assert "event loop unresponsive" in readyz[1]

        async def healthy() -> bool:
            return (await get(port, "/healthz"))[0] == 200

        await until(healthy, "/healthz 200 again", timeout=15.0)


async def test_readyz_says_which_actor_lags_beyond_the_allowed_lag(
    actor_kit: ActorKit, tmp_path: Path
) -> None:
    args = ("--ready-max-lag", "2")
    async with worker_with_probes(actor_kit, tmp_path, "actors:Napper", *args) as (_, port):
        await until(lambda: _ready(port), "/readyz 200")
        await actor_kit.publish("nap.x", Nap(seconds=4.0, block=False))
        await anyio.sleep(0.3)  # the first nap in hand; the next ones wait behind it
        for _ in range(5):
            await actor_kit.publish("nap.x", Nap(seconds=0.0, block=False))

        async def lagging() -> bool:
            status, reason = await get(port, "/readyz")
            return status == 503 and reason.startswith("actor napper lags ")

        await until(lagging, "/readyz 503 saying the actor lags", timeout=3.5)
        assert (await get(port, "/healthz"))[0] == 200  # alive all the while
        await until(lambda: _ready(port), "/readyz 200 once caught up")


def test_a_taken_metrics_port_fails_the_start_in_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            main,
            [
                "run",
                "examples.bank:Accounts",
                "--nats",
                "nats://127.0.0.1:1",
                "--data-dir",
                str(tmp_path / "data"),
                "--metrics-host",
                "127.0.0.1",
                "--metrics-port",
                str(port),
            ],
        )
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith(f"actorsource: cannot serve metrics and probes on 127.0.0.1:{port}")


async def test_counters_keep_counting_across_an_actors_restarts(
    actor_kit: ActorKit, nats_server: NatsServer, tmp_path: Path
) -> None:
    from actorsource._runtime.probe_server import serve_probes

    worker = Worker(
        [Counter],
        nats=NatsOptions(servers=(nats_server.url,)),
        data_dir=tmp_path / "w",
        restart_backoff=(0.05, 0.2),
    )

    async def applied(n: int) -> bool:
        runner = worker.runners.get("counter")
        return runner is not None and runner.stats.applied >= n

    async with anyio.create_task_group() as tg, serve_probes(worker, port=0) as probes:
        await tg.start(worker.run)
        with anyio.fail_after(15):
            await worker.ready.wait()
        for i in range(5):
            await actor_kit.publish("count.a", Added("a", i))
        await until(lambda: applied(5), "5 events applied")
        first = worker.runners["counter"]
        first._crash.arm("after_ack")  # the runner dies after its next acknowledgement
        await actor_kit.publish("count.a", Added("a", 5))
        await until(lambda: _restarted(worker, first), "the actor restarted")
        for i in range(6, 9):
            await actor_kit.publish("count.a", Added("a", i))
        await until(lambda: applied(3), "3 more events applied by the new runner")
        text = probes.metrics().decode()
        worker.stop()
    # The crashed batch was acknowledged before the runner counted it: 5 + 3.
    assert sample(text, "actorsource_events_applied_total", "counter") == 8
    assert sample(text, "actorsource_restarts_total", "counter") == 1
    assert worker.totals("counter").applied == 8


async def _restarted(worker: Worker, first: object) -> bool:
    runner = worker.runners.get("counter")
    return runner is not None and runner is not first and runner.status.value == "running"

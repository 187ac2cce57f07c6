"""A runner served as ``actorsource run --metrics-port`` serves a worker's: the probe server
in its thread, the health task on the loop, and a scraper that GETs ``/metrics`` every
``every`` seconds from a thread of its own (as Prometheus would, from another process)."""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.to_thread

from actorsource._runtime.health import Health
from actorsource._runtime.probe_server import ProbeServer
from actorsource._runtime.runner import ActorRunner
from actorsource._runtime.status import ActorStats


class _OneRunner:
    """What health and metrics read of a worker, for a lone runner."""

    def __init__(self, runner: ActorRunner) -> None:
        self.runners = {runner.name: runner}
        self.restarts = {runner.name: 0}
        self.halted: dict[str, BaseException] = {}

    def hosted(self) -> list[str]:
        return list(self.runners)

    def totals(self, name: str) -> ActorStats:
        return self.runners[name].stats


@asynccontextmanager
async def scraped(runner: ActorRunner, every: float, counts: list[int]) -> AsyncIterator[None]:
    """Serve ``runner``'s metrics and scrape them every ``every`` s; appends the number of
    scrapes (each checked to hold the applied counter) to ``counts``."""
    health = Health(_OneRunner(runner))
    probes = ProbeServer(health, host="127.0.0.1", port=0)
    probes.start()
    stop = threading.Event()
    scrapes = 0
    url = f"http://127.0.0.1:{probes.port}/metrics"

    def scrape() -> None:
        nonlocal scrapes
        while not stop.wait(every):
            with urllib.request.urlopen(url, timeout=5) as reply:
                body = reply.read()
            assert b"actorsource_events_applied_total{" in body
            scrapes += 1

    scraper = threading.Thread(target=scrape, daemon=True)
    scraper.start()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(health.run)
            yield
            tg.cancel_scope.cancel()
    finally:
        stop.set()
        await anyio.to_thread.run_sync(scraper.join)
        await anyio.to_thread.run_sync(probes.close)
        counts.append(scrapes)

"""Finding the running workers and asking them for their status or a snapshot.

The client side of :mod:`actorsource._runtime.service`, used by ``actorsource status`` and
``actorsource snapshots take`` and ``actorsource wait``. Discovery is the standard micro service scatter-gather: one
request on ``$SRV.INFO.actorsource``, every reply within a short window is a worker. Each
worker is then asked on the endpoint subject its INFO announced.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio
import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from .._errors import MailboxError
from .._runtime.progress import describe
from .._runtime.service import SERVICE_NAME, ActorReport, SnapshotReply, WorkerReport

__all__ = [
    "WorkerInfo",
    "ask_status",
    "collect_status",
    "find_workers",
    "request_snapshot",
    "partition_summary",
    "wait_caught_up",
]

_ERROR_HEADER = "Nats-Service-Error"


@dataclass(frozen=True)
class WorkerInfo:
    """One worker as its INFO reply describes it."""

    id: str
    name: str
    host: str
    actors: tuple[str, ...]
    endpoints: dict[str, str] = field(default_factory=dict)  # endpoint name -> subject


async def find_workers(nc: NATS, *, wait: float = 0.5) -> list[WorkerInfo]:
    """Every worker that answers ``$SRV.INFO.actorsource`` within ``wait`` seconds."""
    replies: list[Msg] = []

    async def collect(msg: Msg) -> None:
        replies.append(msg)

    try:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox, cb=collect)
        try:
            await nc.publish(f"$SRV.INFO.{SERVICE_NAME}", b"", reply=inbox)
            await nc.flush()
            # Scatter-gather: nobody knows how many workers there are, so wait out the window.
            await anyio.sleep(wait)
        finally:
            await sub.unsubscribe()
    except (nats.errors.Error, OSError) as exc:
        raise MailboxError(f"cannot ask NATS for the running workers: {exc!r}") from exc
    workers: dict[str, WorkerInfo] = {}
    for msg in replies:
        try:
            info = json.loads(msg.data)
            metadata = info.get("metadata") or {}
            worker = WorkerInfo(
                id=str(info["id"]),
                name=str(metadata.get("worker") or info["id"]),
                host=str(metadata.get("host", "")),
                actors=tuple(a for a in str(metadata.get("actors", "")).split(",") if a),
                endpoints={str(e["name"]): str(e["subject"]) for e in info.get("endpoints") or []},
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            continue  # not one of ours after all: another service cannot break the listing
        workers[worker.id] = worker
    return sorted(workers.values(), key=lambda w: (w.name, w.id))


async def _ask(nc: NATS, worker: WorkerInfo, endpoint: str, data: bytes, timeout: float) -> bytes:
    subject = worker.endpoints.get(endpoint)
    if subject is None:
        raise MailboxError(f"worker {worker.name} has no {endpoint!r} endpoint")
    try:
        reply = await nc.request(subject, data, timeout=timeout)
    except nats.errors.TimeoutError as exc:
        raise MailboxError(f"worker {worker.name} did not answer in {timeout} s") from exc
    except (nats.errors.Error, OSError) as exc:
        raise MailboxError(f"cannot ask worker {worker.name}: {exc!r}") from exc
    error = (reply.headers or {}).get(_ERROR_HEADER)
    if error is not None:
        raise MailboxError(error)
    return bytes(reply.data)


async def collect_status(
    nc: NATS, *, wait: float = 0.5, timeout: float = 5.0
) -> list[WorkerReport]:
    """The status of every running worker (those that do not answer are left out)."""
    return await ask_status(nc, await find_workers(nc, wait=wait), timeout=timeout)


async def ask_status(
    nc: NATS, workers: list[WorkerInfo], *, timeout: float = 5.0
) -> list[WorkerReport]:
    """The status of these workers (those that do not answer are left out)."""
    reports: dict[str, WorkerReport] = {}

    async def ask(worker: WorkerInfo) -> None:
        try:
            data = await _ask(nc, worker, "status", b"", timeout)
            reports[worker.id] = msgspec.json.decode(data, type=WorkerReport)
        except (MailboxError, msgspec.DecodeError):
            pass  # stopped since it answered INFO, or not one of ours

    async with anyio.create_task_group() as tg:
        for worker in workers:
            tg.start_soon(ask, worker)
    return [reports[w.id] for w in workers if w.id in reports]


async def request_snapshot(
    nc: NATS, actor: str, *, wait: float = 0.5, timeout: float = 35.0
) -> list[SnapshotReply]:
    """Ask every worker that hosts ``actor`` to snapshot it now; their replies.

    Raises :class:`MailboxError` if no running worker hosts ``actor`` or one refuses.
    """
    hosts = [w for w in await find_workers(nc, wait=wait) if actor in w.actors]
    if not hosts:
        raise MailboxError(f"no running worker hosts actor {actor!r}", actor=actor)
    replies: list[SnapshotReply] = []
    for worker in hosts:
        data = await _ask(nc, worker, "snapshot", actor.encode(), timeout)
        try:
            replies.append(msgspec.json.decode(data, type=SnapshotReply))
        except msgspec.DecodeError as exc:
            raise MailboxError(f"worker {worker.name} answered {data[:80]!r}") from exc
    return replies


def _partition_of(name: str, actor: str) -> bool:
    """Whether ``name`` is one of ``actor``'s partitions (``orders-p3`` of ``orders``)."""
    prefix = f"{actor}-p"
    return name.startswith(prefix) and name[len(prefix) :].isdigit()


async def wait_caught_up(
    nc: NATS, actor: str, *, timeout: float, poll: float = 0.1, wait: float = 0.25
) -> list[ActorReport]:
    """Ask the workers hosting ``actor`` until they report it caught up; their reports.

    Each answer is one worker's view at one instant (:mod:`actorsource._runtime.progress`). Raises
    :class:`MailboxError` after ``timeout`` seconds, saying how far the actor is (or that
    no running worker hosts it).
    """
    deadline = time.monotonic() + timeout
    hosts: list[WorkerInfo] = []
    last: list[ActorReport] = []
    while True:
        left = deadline - time.monotonic()
        if not hosts:
            hosts = [
                w
                for w in await find_workers(nc, wait=min(wait, max(left, 0.05)))
                if any(a == actor or _partition_of(a, actor) for a in w.actors)
            ]
        reports = await ask_status(nc, hosts, timeout=min(2.0, max(left, 0.2)))
        found = [a for r in reports for a in r.actors if actor in (a.actor, a.of)]
        # A partitioned actor (or any actor in cluster mode) is reported partition by
        # partition, by whichever worker owns each: all of them must be there.
        complete = bool(found) and len({a.partition for a in found}) >= (
            found[0].partitions or 1 if found else 1
        )
        if complete and all(a.caught_up for a in found):
            return found
        if found:
            last = found
        if not complete:
            hosts = []  # stopped, not started yet, or a partition moved: look again
        left = deadline - time.monotonic()
        if left <= 0:
            break
        await anyio.sleep(min(poll, left))
    if not last:
        raise MailboxError(
            f"no running worker hosts actor {actor!r} (waited {timeout:g} s)", actor=actor
        )
    behind = next((a for a in last if not a.caught_up), None)
    if behind is None:
        count = last[0].partitions or 1
        raise MailboxError(
            f"actor {actor!r} is not caught up after {timeout:g} s: only "
            f"{len({a.partition for a in last})} of its {count} partitions are running",
            actor=actor,
        )
    raise MailboxError(
        f"actor {actor!r} is not caught up after {timeout:g} s ({behind.state}): "
        f"{describe(behind.progress)}",
        actor=actor,
    )


def partition_summary(reports: Sequence[WorkerReport]) -> list[str]:
    """One line per partitioned (or cluster-mode) actor: how many of its partitions run,
    on how many workers, and whether all are caught up."""
    by_actor: dict[str, list[tuple[str, ActorReport]]] = {}
    for report in reports:
        for a in report.actors:
            if a.of is not None:
                by_actor.setdefault(a.of, []).append((report.worker, a))
    lines = []
    for actor, parts in sorted(by_actor.items()):
        count = parts[0][1].partitions or 1
        running = {a.partition for _, a in parts if a.state == "running"}
        workers = {w for w, _ in parts}
        caught_up = len(running) == count and all(a.caught_up for _, a in parts)
        lines.append(
            f"{actor}: {len(running)}/{count} partitions running on {len(workers)} "
            f"worker{'s' if len(workers) != 1 else ''}, "
            f"lag {sum(a.lag or 0 for _, a in parts):,}, "
            f"{'caught up' if caught_up else 'not caught up'}"
        )
    return lines

"""Finding the running workers and asking them for their status or a snapshot.

The client side of :mod:`actorsource._service`, used by ``actorsource status`` and
``actorsource snapshots take``. Discovery is the standard micro service scatter-gather: one
request on ``$SRV.INFO.actorsource``, every reply within a short window is a worker. Each
worker is then asked on the endpoint subject its INFO announced.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import anyio
import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from ._errors import MailboxError
from ._service import SERVICE_NAME, SnapshotReply, WorkerReport

__all__ = ["WorkerInfo", "collect_status", "find_workers", "request_snapshot"]

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
    workers = await find_workers(nc, wait=wait)
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

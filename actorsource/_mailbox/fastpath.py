"""A fast lane for the mailbox's inbox: raw frames, without nats-py's per-message machinery.

For every message nats-py parses all headers (a per-character Python loop), builds a
``Msg``, queues it and wakes a task per subscription: about two thirds of the event loop's
time when consuming at full speed. The mailbox needs three header values and the raw bytes.
So, for the inbox subscriptions registered here, the connection's ``_process_msg`` hands the
raw frame straight to the mailbox; every other subscription goes through nats-py as usual.

This leans on one private method of nats-py's client (stable across 2.x); if it is not
there, :func:`route_raw` returns False and the mailbox uses a normal subscription callback.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client as NATS

__all__ = ["RawHandler", "parse_headers", "route_raw", "unroute_raw"]

RawHandler = Callable[[bytes, bytes, bytes, bytes | None], None]

_ROUTES_ATTR = "_actorsource_raw_routes"
_STATUS = "Status"
_DESCRIPTION = "Description"


def parse_headers(raw: bytes) -> dict[str, str]:
    """Parse a NATS header block (``NATS/1.0[ code text]\\r\\nName: value\\r\\n...``).

    An inline status (``NATS/1.0 408 Request Timeout``) becomes ``Status`` and
    ``Description`` entries, as nats-py reports them.
    """
    first, _, rest = raw.partition(b"\r\n")
    out: dict[str, str] = {}
    if len(first) > 9:
        code, _, text = first[9:].strip().partition(b" ")
        if code.isdigit():
            out[_STATUS] = code.decode()
            if text:
                out[_DESCRIPTION] = text.decode(errors="replace")
    for line in rest.split(b"\r\n"):
        if line:
            name, sep, value = line.partition(b":")
            if sep:
                out[name.strip().decode(errors="replace")] = value.strip().decode(errors="replace")
    return out


def route_raw(nc: NATS, sid: int, handler: RawHandler) -> bool:
    """Send raw frames for subscription ``sid`` to ``handler``; False if nats-py cannot."""
    routes: dict[int, RawHandler] | None = getattr(nc, _ROUTES_ATTR, None)
    if routes is None:
        original: Callable[..., Awaitable[None]] | None = getattr(nc, "_process_msg", None)
        if original is None or len(inspect.signature(original).parameters) != 5:
            return False
        table: dict[int, RawHandler] = {}

        async def process_msg(
            sid: int, subject: bytes, reply: bytes, data: bytes, headers: Any
        ) -> None:
            handler = table.get(sid)
            if handler is None:
                await original(sid, subject, reply, data, headers)
            else:
                handler(subject, reply, data, headers or None)

        nc._process_msg = process_msg  # type: ignore[method-assign]
        setattr(nc, _ROUTES_ATTR, table)
        routes = table
    routes[sid] = handler
    return True


def unroute_raw(nc: NATS, sid: int) -> None:
    """Stop routing ``sid`` (before unsubscribing it)."""
    routes: dict[int, RawHandler] | None = getattr(nc, _ROUTES_ATTR, None)
    if routes is not None:
        routes.pop(sid, None)

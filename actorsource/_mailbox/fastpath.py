"""A fast lane for the mailbox's inbox: raw frames, without nats-py's per-message machinery.

For every message nats-py parses all headers (a per-character Python loop), builds a
``Msg``, queues it and wakes a task per subscription: about two thirds of the event loop's
time when consuming at full speed (about 15 % of the actor's throughput). The mailbox needs
three header values and the raw bytes. So, for the inbox subscriptions made here, the
connection's ``_process_msg`` hands the raw frame straight to the mailbox; every other
subscription goes through nats-py as usual. Routed messages skip nats-py's statistics,
``max_msgs`` and slow-consumer accounting (the mailbox bounds what it requests itself).

This module is the ONLY place that touches nats-py's private API, and it touches exactly:

* ``Client._process_msg(sid, subject, reply, data, headers)``, which nats-py's protocol parser
  calls on the client instance for every ``MSG``/``HMSG`` frame (``subject``, ``reply`` and
  ``data`` bytes, ``headers`` the raw header block or empty), replaced on the one connection;
* ``Subscription._id``, the ``sid`` of a subscription in those frames.

``tests/test_inbox.py`` checks both against the installed nats-py, and ``pyproject.toml``
pins nats-py below its next minor version for them. If the method is missing or its
signature differs, or ``ACTORSOURCE_NATS_FASTPATH=0`` is set, the inbox is an ordinary
``subscribe(cb=...)`` subscription instead, with the same messages in the same order.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

__all__ = [
    "ENV_SWITCH",
    "InboxSubscription",
    "Receiver",
    "fastpath_enabled",
    "parse_headers",
    "route_raw",
    "subscribe_inbox",
    "unroute_raw",
]

#: Set to ``0`` (or ``false``, ``no``, ``off``) to receive through nats-py's public path.
ENV_SWITCH = "ACTORSOURCE_NATS_FASTPATH"

#: What the inbox hands each message to: ``(subject, reply, data, headers or None)``.
Receiver = Callable[[str, str, bytes, dict[str, str] | None], None]

#: The parameters of ``Client._process_msg`` the replacement is written for.
PROCESS_MSG_PARAMETERS = ("sid", "subject", "reply", "data", "headers")

_ROUTES_ATTR = "_actorsource_raw_routes"
_STATUS = "Status"
_DESCRIPTION = "Description"


def fastpath_enabled() -> bool:
    """Whether the environment leaves the fast lane on (the default)."""
    value = os.environ.get(ENV_SWITCH, "").strip().lower()
    return value not in ("0", "false", "no", "off")


def parse_headers(raw: bytes) -> dict[str, str]:
    """Parse a NATS header block (``NATS/1.0[ code text]\\r\\nName: value\\r\\n...``).

    An inline status (``NATS/1.0 408 Request Timeout``) becomes ``Status`` and
    ``Description`` entries, as nats-py reports them.
    """
    try:
        lines = raw.decode().split("\r\n")
    except UnicodeDecodeError:
        return _parse_headers(raw)
    if lines[0] != "NATS/1.0":
        return _parse_headers(raw)
    # The usual block: no status, each line ``Name: value`` with nothing to strip.
    out: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, sep, value = line.partition(": ")
            if not sep or ":" in name or name != name.strip() or value != value.strip():
                return _parse_headers(raw)
            out[name] = value
    return out


def _parse_headers(raw: bytes) -> dict[str, str]:
    """:func:`parse_headers` for any block: a status line, odd spacing, invalid UTF-8."""
    text = raw.decode(errors="replace")
    first, _, rest = text.partition("\r\n")
    out: dict[str, str] = {}
    if len(first) > 9:
        code, _, reason = first[9:].strip().partition(" ")
        if code.isdigit():
            out[_STATUS] = code
            if reason:
                out[_DESCRIPTION] = reason
    for line in rest.split("\r\n"):
        name, sep, value = line.partition(":")
        if sep:
            out[name.strip()] = value.strip()
    return out


class InboxSubscription:
    """A subscription whose messages reach a :data:`Receiver`, by the fast lane or not."""

    def __init__(self, nc: NATS, sub: Subscription, sid: int | None) -> None:
        self._nc = nc
        self._sub = sub
        self._sid = sid

    @property
    def fast(self) -> bool:
        """True if messages arrive through the fast lane."""
        return self._sid is not None

    async def unsubscribe(self) -> None:
        """Stop routing, then unsubscribe (errors are nats-py's)."""
        if self._sid is not None:
            unroute_raw(self._nc, self._sid)
        await self._sub.unsubscribe()


async def subscribe_inbox(
    nc: NATS, subject: str, receive: Receiver, *, fastpath: bool | None = None
) -> InboxSubscription:
    """Subscribe ``receive`` to ``subject``: through the fast lane if ``fastpath`` (default:
    :func:`fastpath_enabled`) and nats-py allows, else through ``subscribe(cb=...)``."""

    async def on_msg(msg: Msg) -> None:
        receive(msg.subject, msg.reply, msg.data, msg.headers)

    sub = await nc.subscribe(subject, cb=on_msg)
    use = fastpath_enabled() if fastpath is None else fastpath
    sid: int | None = sub._id if use else None
    if sid is not None and not route_raw(nc, sid, receive):
        sid = None
    return InboxSubscription(nc, sub, sid)


def route_raw(nc: NATS, sid: int, receive: Receiver) -> bool:
    """Send the frames of subscription ``sid`` to ``receive``; False if nats-py cannot."""
    routes: dict[int, Receiver] | None = getattr(nc, _ROUTES_ATTR, None)
    if routes is None:
        original: Callable[..., Awaitable[None]] | None = getattr(nc, "_process_msg", None)
        if original is None or tuple(inspect.signature(original).parameters) != (
            PROCESS_MSG_PARAMETERS
        ):
            return False
        table: dict[int, Receiver] = {}

        async def process_msg(
            sid: int, subject: bytes, reply: bytes, data: bytes, headers: Any
        ) -> None:
            route = table.get(sid)
            if route is None:
                await original(sid, subject, reply, data, headers)
            else:
                route(
                    subject.decode(),
                    reply.decode(),
                    data,
                    parse_headers(headers) if headers else None,
                )

        nc._process_msg = process_msg  # type: ignore[method-assign]
        setattr(nc, _ROUTES_ATTR, table)
        routes = table
    routes[sid] = receive
    return True


def unroute_raw(nc: NATS, sid: int) -> None:
    """Stop routing ``sid`` (before unsubscribing it)."""
    routes: dict[int, Receiver] | None = getattr(nc, _ROUTES_ATTR, None)
    if routes is not None:
        routes.pop(sid, None)

"""The headers that carry an event on the wire, and reading them strictly.

``Event-Type`` names the event type, ``Event-Version`` its version when above 1, and
``Nats-Msg-Id`` the message id JetStream deduplicates on (and every journal refuses twice).
Header names are case-sensitive; a header spelled otherwise is named in the error, never
read as if it were absent.
"""

from __future__ import annotations

from collections.abc import Mapping

from .._errors import EventCodecError

__all__ = [
    "EVENT_TYPE_HEADER",
    "EVENT_VERSION_HEADER",
    "MSG_ID_HEADER",
    "missing_header",
    "parse_version",
    "version_header",
]

EVENT_TYPE_HEADER = "Event-Type"
EVENT_VERSION_HEADER = "Event-Version"
MSG_ID_HEADER = "Nats-Msg-Id"
_VERSION_LOWER = EVENT_VERSION_HEADER.lower()


def parse_version(value: str | None) -> int:
    """The version an ``Event-Version`` header names (absent: 1); EventCodecError if bad."""
    if value is None:
        return 1
    if value.isdigit() and value.isascii():
        version = int(value)
        if version >= 1:
            return version
    raise EventCodecError(f"invalid {EVENT_VERSION_HEADER} header {value!r}: expected 1, 2, ...")


def missing_header(headers: Mapping[str, str] | None, name: str) -> str:
    """Why a message has no header ``name``, naming a header it has under another spelling.

    Header names are matched exactly, as JetStream matches ``Nats-Msg-Id`` (it deduplicates
    nothing on ``nats-msg-id``): ``event-type`` is not ``Event-Type``. This is where the
    reason says so, for every reader of the headers.
    """
    wanted = name.lower()
    found = [k for k in headers or () if k.lower() == wanted and k != name]
    if found:
        return f"message has no {name} header (found {found[0]!r}: header names are case-sensitive)"
    return f"message has no {name} header"


def version_header(headers: Mapping[str, str] | None) -> int:
    """The version the ``Event-Version`` header names (absent: 1); EventCodecError if bad.

    A header spelled otherwise (``event-version``) is refused rather than read as version 1:
    a payload of another version must not be decoded as the first one.
    """
    if not headers:
        return 1
    value = headers.get(EVENT_VERSION_HEADER)
    if value is not None:
        return parse_version(value)
    # Absent: look for another spelling only when the headers hold more than the two every
    # message carries (the common case costs two lookups, not a scan).
    usual = (EVENT_TYPE_HEADER in headers) + (MSG_ID_HEADER in headers)
    if len(headers) > usual and any(k.lower() == _VERSION_LOWER for k in headers):
        raise EventCodecError(missing_header(headers, EVENT_VERSION_HEADER))
    return 1

"""Validation of the names and NATS subjects that actorsource puts on the wire or on disk."""

from __future__ import annotations

import re

from .._errors import InvalidNameError

__all__ = ["subject_matches", "validate_name", "validate_subject", "validate_token"]

# Actor and stream names end up in consumer names, file names and subjects: keep them to a
# portable alphabet so that none of those three places needs escaping.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_BAD_TOKEN_CHARS = frozenset(" \t\r\n*>.")


def validate_name(name: object, *, what: str = "actor name") -> str:
    """Return ``name`` if it is a valid actor or stream name, else raise InvalidNameError.

    Valid names are 1-64 characters of letters, digits, ``_`` and ``-``, starting with a
    letter or digit: they are used as the durable consumer name, the journal file name and a
    subject token, so dots, wildcards and spaces are refused.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidNameError(
            f"invalid {what} {name!r}: use 1-64 letters, digits, '_' or '-', "
            "starting with a letter or digit (no dots, spaces or wildcards)"
        )
    return name


def validate_token(token: object, *, what: str = "subject token") -> str:
    """Return ``token`` if it can stand as one subject token (no dots, wildcards or spaces)."""
    if not isinstance(token, str) or not token or any(c in _BAD_TOKEN_CHARS for c in token):
        raise InvalidNameError(
            f"invalid {what} {token!r}: a subject token must be non-empty and contain "
            "no '.', '*', '>' or whitespace"
        )
    return token


def validate_subject(subject: object, *, wildcards: bool = True) -> str:
    """Return ``subject`` if it is a valid NATS subject (wildcards allowed when asked).

    ``*`` must be a whole token; ``>`` must be the whole last token; tokens are non-empty and
    hold no whitespace.
    """
    if not isinstance(subject, str) or not subject:
        raise InvalidNameError(f"invalid subject {subject!r}: must be a non-empty string")
    tokens = subject.split(".")
    for i, token in enumerate(tokens):
        if not token or any(c in " \t\r\n" for c in token):
            raise InvalidNameError(f"invalid subject {subject!r}: empty token or whitespace")
        if token in ("*", ">"):
            if not wildcards:
                raise InvalidNameError(
                    f"invalid subject {subject!r}: wildcards are not allowed here"
                )
            if token == ">" and i != len(tokens) - 1:
                raise InvalidNameError(f"invalid subject {subject!r}: '>' must be the last token")
        elif "*" in token or ">" in token:
            raise InvalidNameError(
                f"invalid subject {subject!r}: wildcards must be whole tokens ('a.*', not 'a*')"
            )
    return subject


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether ``subject`` (no wildcards) is matched by ``pattern`` (``*`` and ``>`` allowed)."""
    tokens = subject.split(".")
    wanted = pattern.split(".")
    for i, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > i
        if i >= len(tokens) or (token != "*" and token != tokens[i]):
            return False
    return len(wanted) == len(tokens)

"""The methods of an actor class: ``@handles`` and ``@every``, read and checked when the
class is defined (:func:`~.actor.actor`, which ``@entity`` goes through, calls
:func:`collect_handlers` and :func:`collect_timers`), so that a wrong signature or two
handlers for one event type raise :class:`ActorDefinitionError` at import time, naming the
method and the likely fix.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .._errors import ActorDefinitionError
from .events import EventCodec, event_type_name

__all__ = [
    "Handler",
    "Timer",
    "check_constructible",
    "collect_handlers",
    "collect_timers",
    "every",
    "handles",
]

F = TypeVar("F", bound=Callable[..., Any])

_HANDLES_ATTR = "__actorsource_handles__"
_EVERY_ATTR = "__actorsource_every__"


@dataclass(frozen=True, slots=True)
class Handler:
    """One bound handler: the method that applies events of one type."""

    method: str
    event_cls: type
    takes_context: bool
    is_async: bool


@dataclass(frozen=True, slots=True)
class Timer:
    """One ``@every`` method: what it is called and how often."""

    method: str
    interval: float
    is_async: bool


def handles(event_cls: type) -> Callable[[F], F]:
    """Bind a method to an event type: ``def method(self, event[, ctx]) -> None``.

    The method is called once per accepted event of that type, in journal order, live and on
    every replay. It may be ``async``.
    """
    if not isinstance(event_cls, type):
        raise ActorDefinitionError(
            f"@handles expects an event class, got {event_cls!r}: write @handles(Deposited)"
        )

    def mark(func: F) -> F:
        if not callable(func):
            raise ActorDefinitionError(f"@handles({event_cls.__name__}) must decorate a method")
        setattr(func, _HANDLES_ATTR, event_cls)
        return func

    return mark


def every(seconds: float) -> Callable[[F], F]:
    """Call a method every ``seconds`` while the actor runs live: ``def m(self, now: float)``.

    It returns the event, or list of events, or None, that the actor records for itself at
    that moment: they are
    journaled and applied through the actor's handlers like ``ctx.record`` s, so that what
    time made happen (an order expiring, a reminder) is part of the journal and replays
    without the timer. The method runs between batches, never on replay; it should only
    read the state and decide. It may be ``async``. A method that raises is logged and
    tried again at its next tick.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
        raise ActorDefinitionError(f"@every expects a number of seconds > 0, got {seconds!r}")

    def mark(func: F) -> F:
        if not callable(func):
            raise ActorDefinitionError("@every must decorate a method: def m(self, now)")
        setattr(func, _EVERY_ATTR, float(seconds))
        return func

    return mark


def check_constructible(cls: type) -> None:
    try:
        sig = inspect.signature(cls)
    except (TypeError, ValueError):
        return
    required = [
        p.name
        for p in sig.parameters.values()
        if p.default is p.empty
        and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    if required:
        raise ActorDefinitionError(
            f"actor {cls.__qualname__} must be constructible without arguments (its initial "
            f"state), but __init__ requires {required}: give them defaults"
        )


def collect_handlers(cls: type) -> dict[str, Handler]:
    by_type: dict[str, Handler] = {}
    for klass in reversed(cls.__mro__):
        for attr, func in vars(klass).items():
            event_cls = getattr(func, _HANDLES_ATTR, None)
            if event_cls is None:
                continue
            if isinstance(func, staticmethod | classmethod):
                raise ActorDefinitionError(
                    f"{cls.__qualname__}.{attr}: a handler must be a plain method "
                    "(self, event[, ctx]), not a static or class method"
                )
            handler = _make_handler(cls, attr, func, event_cls)
            type_name = event_type_name(event_cls)
            previous = by_type.get(type_name)
            if previous is not None and previous.event_cls is not event_cls:
                raise ActorDefinitionError(
                    f"{cls.__qualname__}: event type name {type_name!r} is used by both "
                    f"{previous.event_cls.__qualname__} ({previous.method}) and "
                    f"{event_cls.__qualname__} ({attr}): rename one with @event(...)"
                )
            if previous is not None and previous.method != attr:
                raise ActorDefinitionError(
                    f"{cls.__qualname__} has two handlers for {event_cls.__name__}: "
                    f"{previous.method}() and {attr}(); keep one"
                )
            by_type[type_name] = handler
    return by_type


def collect_timers(cls: type) -> tuple[Timer, ...]:
    timers: dict[str, Timer] = {}
    for klass in reversed(cls.__mro__):
        for attr, func in vars(klass).items():
            interval = getattr(func, _EVERY_ATTR, None)
            if interval is None:
                continue
            if isinstance(func, staticmethod | classmethod):
                raise ActorDefinitionError(
                    f"{cls.__qualname__}.{attr}: an @every method must be a plain method "
                    "(self, now)"
                )
            if hasattr(func, _HANDLES_ATTR):
                raise ActorDefinitionError(
                    f"{cls.__qualname__}.{attr} is both a handler and a timer: split it"
                )
            positional = [
                p
                for p in inspect.signature(func).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            ]
            if len(positional) != 2:
                raise ActorDefinitionError(
                    f"{cls.__qualname__}.{attr} has the wrong signature "
                    f"{inspect.signature(func)}: an @every method is "
                    f"`def {attr}(self, now: float) -> list[Event] | None`"
                )
            timers[attr] = Timer(attr, interval, inspect.iscoroutinefunction(func))
    return tuple(timers.values())


def _make_handler(cls: type, attr: str, func: Callable[..., Any], event_cls: type) -> Handler:
    where = f"{cls.__qualname__}.{attr}"
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError) as exc:
        raise ActorDefinitionError(f"{where}: cannot read the handler's signature") from exc
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    extra = [p for p in params if p.kind in (p.KEYWORD_ONLY,) and p.default is p.empty]
    if extra or any(p.kind is p.VAR_POSITIONAL for p in params) or len(positional) not in (2, 3):
        raise ActorDefinitionError(
            f"{where} has the wrong signature {inspect.signature(func)}: a handler is "
            f"`def {attr}(self, event: {event_cls.__name__}, ctx: Context) -> None` "
            "(ctx may be left out)"
        )
    # Validates the event class now (dataclass / msgspec.Struct) so the error names the handler.
    try:
        EventCodec([event_cls])
    except ActorDefinitionError as exc:
        raise ActorDefinitionError(f"{where}: {exc}") from None
    return Handler(
        method=attr,
        event_cls=event_cls,
        takes_context=len(positional) == 3,
        is_async=inspect.iscoroutinefunction(func),
    )

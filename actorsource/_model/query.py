"""The ``@query`` decorator: a read-only question an actor or entity answers over NATS.

A query is a plain method of the actor (or entity) class that reads ``self`` and returns
something that encodes to JSON: a dataclass, a ``msgspec.Struct``, a pydantic model (if
pydantic is installed), or plain JSON values. It takes named arguments (converted to their
annotated types) and no :class:`~actorsource.Context`: it cannot record or publish. It is
checked when the class is defined, like a handler, so a mistake names the method::

    @query
    def balance(self, account: str) -> int:
        return self.balances.get(account, 0)

The runtime answers it on the actor's own loop, between two batches, once everything
applied is committed (:mod:`actorsource._runtime.queries`).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, overload

import msgspec

from .._errors import ActorDefinitionError, QueryArgumentsError, QueryFailedError

__all__ = ["QUERY_ATTR", "Query", "collect_queries", "encode_result", "query"]

F = TypeVar("F", bound=Callable[..., Any])

QUERY_ATTR = "__actorsource_query__"
_HANDLER_MARKS = ("__actorsource_handles__", "__actorsource_every__")


@overload
def query(func: F, /) -> F: ...
@overload
def query() -> Callable[[F], F]: ...


def query(func: Any = None, /) -> Any:
    """Mark a method as a query: ``def name(self[, arg: T, ...]) -> Result``.

    The method only reads the state; the test kit checks that it does (the state's encoding
    before and after every query must be equal). Its arguments are passed by name, converted
    to their annotations (``"5"`` becomes ``5`` for an ``int``); those without a default are
    required. Write ``@query`` or ``@query()``.
    """
    if func is None:
        return query
    if isinstance(func, staticmethod | classmethod):
        raise ActorDefinitionError(
            "@query must decorate a plain method (self, ...), not a static or class method"
        )
    if not callable(func):
        raise ActorDefinitionError(f"@query must decorate a method, not {func!r}")
    setattr(func, QUERY_ATTR, True)
    return func


class Query:
    """One declared query: its name (the method's), its arguments, how they are converted."""

    __slots__ = ("_types", "cls", "method", "name", "params", "required")

    def __init__(self, cls: type, name: str, func: Callable[..., Any]) -> None:
        self.cls = cls
        self.name = name
        self.method = name
        params = _check_signature(cls, name, func)
        self.params: tuple[str, ...] = tuple(p.name for p in params)
        self.required = frozenset(p.name for p in params if p.default is p.empty)
        self._types: dict[str, Any] | None = None

    def bind(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """The arguments converted to their annotated types; raises
        :class:`QueryArgumentsError` naming the one missing, unknown or of the wrong type."""
        unknown = sorted(set(args) - set(self.params))
        if unknown:
            takes = ", ".join(self.params) or "no arguments"
            raise QueryArgumentsError(
                f"query {self.name!r} has no argument {unknown[0]!r} (it takes: {takes})",
                query=self.name,
            )
        missing = sorted(self.required - set(args))
        if missing:
            raise QueryArgumentsError(
                f"query {self.name!r} needs the argument {missing[0]!r}", query=self.name
            )
        types = self._argument_types()
        out: dict[str, Any] = {}
        for name, value in args.items():
            kind = types.get(name, Any)
            if kind is Any:
                out[name] = value
                continue
            try:
                out[name] = msgspec.convert(value, kind, strict=False)
            except msgspec.ValidationError as exc:
                raise QueryArgumentsError(
                    f"argument {name!r} of query {self.name!r}: {exc} (got {value!r})",
                    query=self.name,
                ) from None
        return out

    def _argument_types(self) -> dict[str, Any]:
        """The annotations of the arguments, resolved on first use (forward references to
        classes defined later in the module resolve by then); one msgspec cannot convert
        to, or none, takes the value as it is."""
        if self._types is None:
            try:
                hints = typing.get_type_hints(getattr(self.cls, self.method))
            except Exception:
                hints = {}
            types: dict[str, Any] = {}
            for name in self.params:
                kind = hints.get(name, Any)
                try:
                    msgspec.json.Decoder(kind)
                except TypeError:
                    kind = Any
                types[name] = kind
            self._types = types
        return self._types


def collect_queries(cls: type) -> dict[str, Query]:
    """The ``@query`` methods of ``cls`` (and its bases) by name, checked."""
    found: dict[str, Query] = {}
    for klass in reversed(cls.__mro__):
        for attr, func in vars(klass).items():
            if isinstance(func, staticmethod | classmethod):
                if getattr(func.__func__, QUERY_ATTR, False):
                    raise ActorDefinitionError(
                        f"{cls.__qualname__}.{attr}: a query must be a plain method "
                        "(self, ...), not a static or class method"
                    )
                continue
            if not getattr(func, QUERY_ATTR, False):
                found.pop(attr, None)  # overridden by a method that is not a query
                continue
            found[attr] = Query(cls, attr, func)
    return found


def _check_signature(cls: type, attr: str, func: Callable[..., Any]) -> list[inspect.Parameter]:
    where = f"{cls.__qualname__}.{attr}"
    if any(hasattr(func, mark) for mark in _HANDLER_MARKS):
        raise ActorDefinitionError(
            f"{where} is both a query and a handler or timer: a query only reads; split it"
        )
    if inspect.iscoroutinefunction(func):
        raise ActorDefinitionError(
            f"{where}: a query must be a plain (not async) method: it reads the state "
            "between two batches and returns at once"
        )
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError) as exc:
        raise ActorDefinitionError(f"{where}: cannot read the query's signature") from exc
    usage = f"a query is `def {attr}(self, name: T = default, ...) -> Result`"
    if not params or params[0].kind not in (
        params[0].POSITIONAL_ONLY,
        params[0].POSITIONAL_OR_KEYWORD,
    ):
        raise ActorDefinitionError(f"{where} takes no self: {usage}")
    rest = params[1:]
    for p in rest:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            raise ActorDefinitionError(
                f"{where} has the wrong signature {inspect.signature(func)}: {usage} "
                "(arguments are passed by name: no *args, **kwargs or positional-only ones)"
            )
        if p.name in ("ctx", "context") or _is_context(p.annotation):
            raise ActorDefinitionError(
                f"{where} takes a Context: a query has none (it cannot record or publish): {usage}"
            )
    return rest


def _is_context(annotation: object) -> bool:
    if isinstance(annotation, str):
        return annotation.split(".")[-1] == "Context"
    return getattr(annotation, "__name__", None) == "Context"


def _enc_hook(value: object) -> Any:
    dump = getattr(value, "model_dump", None)  # a pydantic (v2) model
    if callable(dump):
        return dump(mode="json")
    raise NotImplementedError(f"{type(value).__qualname__} does not encode to JSON")


_encoder = msgspec.json.Encoder(enc_hook=_enc_hook)


def encode_result(name: str, value: object) -> bytes:
    """The JSON encoding of a query's result; raises :class:`QueryFailedError` if it has none."""
    try:
        return _encoder.encode(value)
    except (TypeError, NotImplementedError, msgspec.EncodeError, ValueError) as exc:
        raise QueryFailedError(
            f"the result of query {name!r} does not encode to JSON: {exc} (return a "
            "dataclass, a msgspec Struct, a pydantic model or plain JSON values)",
            query=name,
        ) from None

"""pydantic v2 models as event types and in snapshot states (the ``actorsource[pydantic]`` extra).

An event class may be a ``pydantic.BaseModel``: its payload is validated by pydantic
(``model_validate_json``; upcasters run on the JSON object first, then ``model_validate``)
and encoded with its own JSON serializer (``model_dump_json``). A snapshot state may hold
models in annotated attributes (``orders: dict[str, Order]``): they are written as their JSON
form and validated back.

This module never imports pydantic: a class can only be a model if its module imported
pydantic already, so it is looked up in ``sys.modules``. A service without pydantic events
never loads it.

A validation failure becomes a ``msgspec.ValidationError`` whose message is pydantic's, in
one line (``1 validation error for Deposited: amount: Input should be a valid integer ...``),
so that the codecs treat it as any payload of the wrong shape: an :class:`EventCodecError`,
and a dead letter carrying that message.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import msgspec

__all__ = [
    "dec_hook",
    "enc_hook",
    "encode_model",
    "is_model",
    "is_model_class",
    "model_converter",
    "model_decoder",
]


def _pydantic() -> Any:
    return sys.modules.get("pydantic")


def is_model_class(cls: object) -> bool:
    """Whether ``cls`` is a pydantic ``BaseModel`` subclass (False if pydantic is not loaded)."""
    pydantic = _pydantic()
    return pydantic is not None and isinstance(cls, type) and issubclass(cls, pydantic.BaseModel)


def is_model(obj: object) -> bool:
    """Whether ``obj`` is an instance of a pydantic model."""
    pydantic = _pydantic()
    return pydantic is not None and isinstance(obj, pydantic.BaseModel)


def describe(exc: Any) -> str:
    """pydantic's message for a ``ValidationError``, in one line."""
    errors = exc.errors(include_url=False)
    count = len(errors)
    parts = [f"{'.'.join(str(p) for p in e['loc']) or '(payload)'}: {e['msg']}" for e in errors]
    noun = "error" if count == 1 else "errors"
    return f"{count} validation {noun} for {exc.title}: " + "; ".join(parts)


def model_decoder(cls: type) -> Callable[[bytes], Any]:
    """JSON bytes -> a validated ``cls``; a validation error is a ``msgspec.ValidationError``
    with pydantic's message (an invalid JSON document is one too)."""
    validate = getattr(cls, "model_validate_json")  # noqa: B009 - typed Any on purpose
    invalid = _pydantic().ValidationError

    def decode(payload: bytes) -> Any:
        try:
            return validate(payload)
        except invalid as exc:
            raise msgspec.ValidationError(describe(exc)) from exc

    return decode


def model_converter(cls: type) -> Callable[[Any], Any]:
    """A JSON object (after upcasting) -> a validated ``cls``, errors as :func:`model_decoder`."""
    validate = getattr(cls, "model_validate")  # noqa: B009 - typed Any on purpose
    invalid = _pydantic().ValidationError

    def convert(data: Any) -> Any:
        try:
            return validate(data)
        except invalid as exc:
            raise msgspec.ValidationError(describe(exc)) from exc

    return convert


def encode_model(obj: Any) -> bytes:
    """A model's JSON, by its own serializer."""
    return str(obj.model_dump_json()).encode()


def enc_hook(obj: Any) -> Any:
    """msgspec's ``enc_hook`` for states that hold models: their JSON form."""
    if is_model(obj):
        return obj.model_dump(mode="json")
    raise NotImplementedError(f"Encoding objects of type {type(obj).__name__} is unsupported")


def dec_hook(cls: type, obj: Any) -> Any:
    """msgspec's ``dec_hook`` for annotated states that hold models: validated back."""
    if is_model_class(cls):
        return model_converter(cls)(obj)
    raise NotImplementedError(f"Decoding objects of type {cls!r} is unsupported")

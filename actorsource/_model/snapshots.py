"""Snapshots: when to take them, how state becomes bytes, and how those bytes are verified.

A snapshot is a cache of the fold of the journal up to ``pos``. It is stored with the model
version and a SHA-256 checksum over (version, pos, codec, state bytes); recovery uses the
newest one whose checksum verifies, whose version matches and whose bytes decode, and skips
the others. Deleting every snapshot never changes the recovered state, only its cost.

How state is serialized, by default: every instance attribute of the actor object is written
as JSON with msgspec. Attributes annotated in the class body (``balances: dict[str, int]``)
are decoded back into exactly that type. An attribute without a class-level annotation is
decoded as plain JSON, so each snapshot checks that it survives the round trip unchanged;
if it would not (a tuple, an ``int`` dict key, a set ...), taking the snapshot fails with
an error that names the attribute and the fix. A class can take over completely by defining
``snapshot_state(self) -> object`` and ``restore_state(self, data) -> None``.
"""

from __future__ import annotations

import hashlib
import math
import time
import typing
from dataclasses import dataclass
from typing import Any

import msgspec

from .._errors import ActorDefinitionError, SnapshotError
from .pydantic_models import dec_hook, enc_hook

__all__ = [
    "NewSnapshot",
    "SMALL_STATE_BYTES",
    "STRETCH_LIMIT",
    "Snapshot",
    "SnapshotInfo",
    "SnapshotPolicy",
    "StateCodec",
    "snapshot_checksum",
    "snapshot_hasher",
]

# The hooks let a state hold pydantic models (see .pydantic_models); other types unknown to
# msgspec are refused as before.
_encoder = msgspec.json.Encoder(enc_hook=enc_hook)
_untyped = msgspec.json.Decoder()
CODEC_NAME = "msgspec-json"

#: A snapshot this small is never spaced out by its cost: it cannot weigh on the actor.
SMALL_STATE_BYTES = 64 * 1024
#: Whatever a snapshot costs, one is due after at most this many times ``every`` events.
STRETCH_LIMIT = 100


@dataclass(frozen=True, slots=True)
class SnapshotPolicy:
    """When an actor checkpoints its state.

    ``every``: after this many applied events (``None``: never by count). ``interval``: after
    this many seconds with at least one new event (``None``: never by time). ``keep``: how many
    of the newest snapshots to keep; older ones are pruned in the same transaction. A final
    snapshot is also taken on graceful shutdown when events arrived since the last one.

    ``budget``: the share of the actor's time its snapshots may take (default 0.1). A running
    actor measures what each snapshot of a large state costs (encoding it on the event loop,
    committing it) and spaces the next one so that this cost stays within ``budget`` of the
    time between two snapshots: ``every`` is then the least spacing, and at most 100 times
    ``every`` events go by without one, so that replay after a crash stays bounded. Fewer
    snapshots mean a longer replay on restart. States under 64 KiB snapshot exactly by
    ``every`` and ``interval``; ``None`` turns the spacing off for every state.
    """

    every: int | None = 1_000
    interval: float | None = None
    keep: int = 3
    budget: float | None = 0.1

    def __post_init__(self) -> None:
        if self.every is not None and (not isinstance(self.every, int) or self.every < 1):
            raise ActorDefinitionError(
                f"snapshot_every must be a positive int or None, got {self.every!r}"
            )
        if self.interval is not None and not self.interval > 0:
            raise ActorDefinitionError(
                f"snapshot_interval must be a positive number of seconds or None, got {self.interval!r}"
            )
        if not isinstance(self.keep, int) or self.keep < 1:
            raise ActorDefinitionError(f"keep_snapshots must be an int >= 1, got {self.keep!r}")
        budget = self.budget
        if budget is not None and (
            isinstance(budget, bool) or not isinstance(budget, int | float) or not 0 < budget <= 1
        ):
            raise ActorDefinitionError(
                f"snapshot_budget must be a share of time in (0, 1], e.g. 0.1, or None, "
                f"got {budget!r}"
            )

    def due(self, events_since: int, last_at: float, now: float | None = None) -> bool:
        """Tell whether a snapshot is due after ``events_since`` new events since ``last_at``."""
        if events_since <= 0:
            return False
        if self.every is not None and events_since >= self.every:
            return True
        if self.interval is not None:
            return (time.monotonic() if now is None else now) - last_at >= self.interval
        return False


@dataclass(frozen=True, slots=True)
class NewSnapshot:
    """A snapshot to store: the state's bytes at ``pos``, and how many to keep.

    The journal writes it in its batch's transaction, or a large one in parts
    (:class:`~actorsource._journal.snapshot_parts.PartedSnapshot`)."""

    state: bytes
    pos: int
    model_version: int
    codec: str
    keep: int = 3


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """A stored snapshot's metadata: where it stands and what it weighs, without its bytes."""

    id: int
    pos: int
    model_version: int
    codec: str
    size: int
    created_at: float


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A stored snapshot: the state bytes at journal position ``pos``."""

    id: int
    pos: int
    model_version: int
    codec: str
    checksum: str
    state: bytes
    created_at: float
    #: How many of a parted snapshot's parts are not in the journal (it is then unusable).
    parts_missing: int = 0

    def verifies(self) -> bool:
        """Tell whether every part is there and the stored checksum matches the bytes."""
        return not self.parts_missing and self.checksum == snapshot_checksum(
            self.model_version, self.pos, self.codec, self.state
        )


def snapshot_hasher(model_version: int, pos: int, codec: str) -> hashlib._Hash:
    """A SHA-256 hash already fed with what binds state bytes to their position, version
    and codec: update it with the bytes (all at once or piece by piece), then take its hex
    digest to have :func:`snapshot_checksum`."""
    h = hashlib.sha256()
    h.update(f"{model_version}:{pos}:{codec}:".encode())
    return h


def snapshot_checksum(model_version: int, pos: int, codec: str, state: bytes) -> str:
    """The SHA-256 checksum that binds state bytes to their position, version and codec."""
    h = snapshot_hasher(model_version, pos, codec)
    h.update(state)
    return h.hexdigest()


class StateCodec:
    """Serializes an actor object's state to JSON bytes and restores it onto a fresh object."""

    __slots__ = ("_cls", "_custom", "_decoders", "_hints")

    def __init__(self, cls: type) -> None:
        self._cls = cls
        self._custom = callable(getattr(cls, "snapshot_state", None)) and callable(
            getattr(cls, "restore_state", None)
        )
        if callable(getattr(cls, "snapshot_state", None)) != callable(
            getattr(cls, "restore_state", None)
        ):
            raise ActorDefinitionError(
                f"{cls.__qualname__} defines only one of snapshot_state/restore_state: "
                "define both, or neither to use the default attribute snapshot"
            )
        self._hints: dict[str, Any] | None = None
        self._decoders: dict[str, msgspec.json.Decoder[Any]] = {}

    def _type_hints(self) -> dict[str, Any]:
        if self._hints is None:
            try:
                hints = typing.get_type_hints(self._cls)
            except Exception as exc:
                raise SnapshotError(
                    f"cannot resolve the type annotations of {self._cls.__qualname__} "
                    f"for its snapshots: {exc}"
                ) from exc
            self._hints = {
                k: v for k, v in hints.items() if typing.get_origin(v) is not typing.ClassVar
            }
            self._decoders = {
                k: msgspec.json.Decoder(v, dec_hook=dec_hook) for k, v in self._hints.items()
            }
        return self._hints

    def encode(self, state: object) -> bytes:
        """Serialize ``state`` (the actor object); raises SnapshotError if it cannot round-trip."""
        try:
            if self._custom:
                custom = state.snapshot_state()  # type: ignore[attr-defined]
                data = _encoder.encode(custom)
                self._refuse_non_finite(data, {"snapshot_state()": custom})
                return data
            hints = self._type_hints()
            attrs = vars(state)
            data = _encoder.encode(attrs)
            self._refuse_non_finite(data, attrs)
        except SnapshotError:
            raise
        except Exception as exc:
            raise SnapshotError(
                f"cannot serialize the state of {self._cls.__qualname__}: {exc}"
            ) from exc
        untyped = [k for k in attrs if k not in hints]
        if untyped:
            decoded = _untyped.decode(data)
            for k in untyped:
                if decoded[k] != attrs[k] or _shape(decoded[k]) != _shape(attrs[k]):
                    raise SnapshotError(
                        f"attribute {k!r} of {self._cls.__qualname__} does not survive a JSON "
                        f"round trip ({type(attrs[k]).__name__} value): annotate it in the class "
                        f"body (e.g. `{k}: dict[int, str]`) or define snapshot_state/restore_state"
                    )
        return data

    def _refuse_non_finite(self, data: bytes, values: dict[str, Any]) -> None:
        """Raise SnapshotError naming the first inf or nan in ``values`` (written as null)."""
        if b"null" not in data:
            return  # the common case, at the cost of one scan of the bytes
        for name, value in values.items():
            found = _non_finite(value)
            if found is None:
                continue
            path, number = found
            what = name if name.endswith(")") else f"attribute {name!r}"
            raise SnapshotError(
                f"{what} of {self._cls.__qualname__} holds {number!r}"
                + (f" at {name}{path}" if path else "")
                + ": JSON has no inf or nan (they would be written as null and not restored); "
                "keep a finite value or None there, or define snapshot_state/restore_state"
            )

    def restore(self, state: object, data: bytes) -> None:
        """Restore serialized ``data`` onto the freshly constructed actor object ``state``."""
        try:
            if self._custom:
                state.restore_state(_untyped.decode(data))  # type: ignore[attr-defined]
                return
            raw = msgspec.json.decode(data, type=dict[str, msgspec.Raw])
            self._type_hints()
            for key, value in raw.items():
                decoder = self._decoders.get(key)
                setattr(state, key, decoder.decode(value) if decoder else _untyped.decode(value))
        except SnapshotError:
            raise
        except Exception as exc:
            raise SnapshotError(
                f"cannot restore a snapshot of {self._cls.__qualname__}: {exc}"
            ) from exc


def _non_finite(value: object) -> tuple[str, float] | None:
    """Where in ``value`` a float is inf or nan (``"['a'][2]"``, ``""`` for the value itself)."""
    stack: list[tuple[object, tuple[str, ...]]] = [
        (msgspec.to_builtins(value, enc_hook=enc_hook), ())
    ]
    while stack:
        item, path = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return "".join(path), item
        elif isinstance(item, dict):
            stack.extend((v, (*path, f"[{k!r}]")) for k, v in reversed(item.items()))
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend((v, (*path, f"[{i}]")) for i, v in reversed(list(enumerate(item))))
    return None


def _shape(value: object) -> object:
    """A structural fingerprint of types, so ``1 == 1.0`` or ``{1: x}`` vs ``{"1": x}`` differ."""
    if isinstance(value, dict):
        return ("d", tuple((type(k), _shape(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("l", tuple(_shape(v) for v in value))
    return type(value)

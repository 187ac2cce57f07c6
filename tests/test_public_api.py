"""The public API: three public modules, each listing exactly what it offers, documented,
named by its public home, and never naming a private type in a signature."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pickle
import typing
import warnings
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
from actors import Added, Counter

import actorsource
import actorsource.journal
import actorsource.testing
from actorsource import encode_event
from actorsource.journal import JournalEntry, fold

PUBLIC_MODULES = ("actorsource", "actorsource.journal", "actorsource.testing")


def _modules() -> list[ModuleType]:
    return [importlib.import_module(name) for name in PUBLIC_MODULES]


def _ours(obj: object) -> bool:
    """A class or function of actorsource (what has a public home to find)."""
    return callable(obj) and str(getattr(obj, "__module__", "")).startswith("actorsource")


def _public_objects() -> dict[int, str]:
    """id of every object a public module lists -> its public name."""
    return {
        id(getattr(module, name)): f"{module.__name__}.{name}"
        for module in _modules()
        for name in module.__all__
    }


def _members(module: ModuleType) -> Iterator[tuple[str, Any]]:
    for name in module.__all__:
        obj = getattr(module, name)
        if _ours(obj):
            yield f"{module.__name__}.{name}", obj


@pytest.mark.parametrize("module", _modules(), ids=PUBLIC_MODULES)
def test_all_lists_every_public_name_a_module_defines_and_nothing_else(module: ModuleType) -> None:
    defined = {
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and not isinstance(obj, ModuleType)
        and not name.startswith("pytest_")  # the plugin's hooks, for pytest only
        and _ours(obj)
    }
    listed = set(module.__all__)
    assert defined - listed == set(), "public but not in __all__"
    assert {n for n in listed if n.startswith("_") and n != "__version__"} == set()
    assert all(hasattr(module, name) for name in listed)
    assert len(module.__all__) == len(listed), "listed twice"


def test_no_name_has_two_public_homes() -> None:
    homes: dict[int, list[str]] = {}
    for module in _modules():
        for name, obj in _members(module):
            homes.setdefault(id(obj), []).append(name)
    assert [names for names in homes.values() if len(names) > 1] == []


@pytest.mark.parametrize("module", _modules(), ids=PUBLIC_MODULES)
def test_every_public_name_has_a_docstring(module: ModuleType) -> None:
    undocumented = [
        name
        for name, obj in _members(module)
        if not (obj.__doc__ or "").strip()
        or (dataclasses.is_dataclass(obj) and obj.__doc__.startswith(f"{obj.__name__}("))
    ]
    assert undocumented == []


@pytest.mark.parametrize("module", _modules(), ids=PUBLIC_MODULES)
def test_every_public_name_says_it_lives_in_its_public_module(module: ModuleType) -> None:
    elsewhere = {
        name: obj.__module__ for name, obj in _members(module) if obj.__module__ != module.__name__
    }
    assert elsewhere == {}


def test_public_classes_show_and_pickle_under_their_public_home() -> None:
    assert repr(actorsource.Worker) == "<class 'actorsource.Worker'>"
    assert repr(actorsource.journal.SQLiteJournal) == "<class 'actorsource.journal.SQLiteJournal'>"
    policy = actorsource.SnapshotPolicy(every=10)
    assert pickle.loads(pickle.dumps(policy)) == policy
    assert b"actorsource._" not in pickle.dumps(policy)


# -- signatures ---------------------------------------------------------------------------


def _namespace(obj: Any) -> dict[str, Any]:
    """The globals the annotations of ``obj`` were written in (its defining module's)."""
    candidates = [obj] if not isinstance(obj, type) else list(vars(obj).values())
    for candidate in candidates:
        func = inspect.unwrap(
            getattr(candidate, "fget", None) or getattr(candidate, "__func__", candidate)
        )
        namespace = getattr(func, "__globals__", None)
        if isinstance(namespace, dict) and str(namespace.get("__name__")).startswith("actorsource"):
            return namespace
    return {}


def _function_hints(func: Any) -> dict[str, Any]:
    namespace = inspect.unwrap(func).__globals__
    return typing.get_type_hints(func, globalns=namespace, localns=namespace)


def _signatures(qualname: str, obj: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, resolved annotations) of a public function, or of a public class's
    constructor, methods, properties and dataclass fields."""
    if not isinstance(obj, type):
        yield qualname, _function_hints(obj)
        return
    if dataclasses.is_dataclass(obj):
        namespace = _namespace(obj)
        yield f"{qualname} fields", typing.get_type_hints(obj, namespace, namespace)
    for klass in obj.__mro__:
        if not klass.__module__.startswith("actorsource"):
            continue
        for attr, member in vars(klass).items():
            if attr.startswith("_") and attr != "__init__":
                continue
            func = getattr(member, "fget", None) or getattr(member, "__func__", member)
            if inspect.isfunction(inspect.unwrap(func)):
                yield f"{qualname}.{attr}", _function_hints(func)


def _types_in(hint: Any) -> Iterator[type]:
    if isinstance(hint, type) and not typing.get_args(hint):
        yield hint
    origin = typing.get_origin(hint)
    if isinstance(origin, type):
        yield origin
    for arg in typing.get_args(hint):
        if isinstance(arg, list):
            for item in arg:
                yield from _types_in(item)
        elif origin is not typing.Literal:
            yield from _types_in(arg)


def _private_types_named() -> list[str]:
    public = _public_objects()
    found = []
    for module in _modules():
        for qualname, obj in _members(module):
            for where, hints in _signatures(qualname, obj):
                for name, hint in hints.items():
                    for kind in _types_in(hint):
                        if kind.__module__.startswith("actorsource") and id(kind) not in public:
                            found.append(
                                f"{where}: {name} is {kind.__module__}.{kind.__qualname__}"
                            )
    return found


#: Constructors only the runtime calls: a handler is given its Context, never makes one.
MADE_BY_THE_RUNTIME = {"actorsource.Context.__init__"}


def test_no_public_signature_names_a_private_type() -> None:
    assert [
        found for found in _private_types_named() if found.split(":")[0] not in MADE_BY_THE_RUNTIME
    ] == []


def test_the_signature_check_sees_types_inside_generics_and_unions() -> None:
    class Hidden:
        pass

    Hidden.__module__ = "actorsource._hidden"
    hint = dict[str, list[Hidden | None]] | Callable[[Hidden], None]
    assert Hidden in set(_types_in(hint))


# -- names that moved ---------------------------------------------------------------------

MOVED_FROM_THE_TOP = {
    "SQLiteJournal": "actorsource.journal",
    "JournalEntry": "actorsource.journal",
    "DeadLetter": "actorsource.journal",
    "RecoveryReport": "actorsource.journal",
    "journal_path": "actorsource.journal",
    "fold": "actorsource.journal",
    "restore_state": "actorsource.journal",
    "ActorStats": "actorsource.testing",
    "ActorStatus": "actorsource.testing",
}


@pytest.mark.parametrize(("name", "home"), MOVED_FROM_THE_TOP.items())
def test_a_name_that_left_the_top_level_still_works_with_a_warning_naming_its_home(
    name: str, home: str
) -> None:
    message = f"actorsource.{name} is deprecated; import it from {home}"
    with pytest.deprecated_call(match=f"^{message}$"):
        obj = getattr(actorsource, name)
    assert obj is getattr(importlib.import_module(home), name)


@pytest.mark.parametrize("name", ["ActorRunner", "ActorDefinition", "definition_of"])
def test_an_internal_name_that_left_the_top_level_still_works_with_a_warning(name: str) -> None:
    with pytest.deprecated_call(match=f"^actorsource.{name} is deprecated; "):
        assert getattr(actorsource, name) is not None


@pytest.mark.parametrize(
    ("name", "home"), [("fold", "actorsource.journal"), ("NatsOptions", "actorsource")]
)
def test_a_name_that_left_the_testing_module_still_works_with_a_warning(
    name: str, home: str
) -> None:
    with pytest.deprecated_call(
        match=f"^actorsource.testing.{name} is deprecated; import it from {home}$"
    ):
        obj = getattr(actorsource.testing, name)
    assert obj is getattr(importlib.import_module(home), name)


def test_the_deprecation_warning_points_at_the_line_that_used_the_old_name() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        actorsource.SQLiteJournal  # noqa: B018
    assert [w.filename for w in caught] == [__file__]


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'Nonesuch'"):
        actorsource.Nonesuch  # noqa: B018


async def test_fold_takes_the_actor_class_and_still_its_definition() -> None:
    from actorsource._model.actor import definition_of

    entries = [
        JournalEntry(pos, "count.a", "Added", encode_event(Added("a", pos))[1], 0.0)
        for pos in (1, 2, 3)
    ]
    by_class = await fold(Counter, entries)
    assert by_class.totals == {"a": 6}
    assert (await fold(definition_of(Counter), entries)).totals == by_class.totals  # type: ignore[arg-type]

"""How the public modules present what they re-export: one public home per name.

Each public module (``actorsource``, ``actorsource.journal``, ``actorsource.testing``)
imports its names from private modules and hands them to :func:`publish`, which sets their
``__module__`` to the public module, as anyio does: ``repr``, documentation and pickling
then name ``actorsource.journal.SQLiteJournal``, never the private module it lives in.
:func:`moved` keeps names that moved working for one release, with a
:class:`DeprecationWarning` that names their new home.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["moved", "publish"]


def publish(module: str, namespace: Mapping[str, Any], names: Iterable[str]) -> None:
    """Set ``__module__`` of every class and function among ``names`` to ``module``."""
    for name in names:
        obj = namespace[name]
        home = getattr(obj, "__module__", None) or ""
        private = any(part.startswith("_") for part in home.split("."))
        if home.startswith("actorsource.") and private and callable(obj):
            obj.__module__ = module


def moved(module: str, aliases: Mapping[str, tuple[str, str, str]], name: str) -> Any:
    """What a public module's ``__getattr__`` returns for a name that left it.

    ``aliases`` maps each old name to ``(module, attribute, advice)``; the object is imported
    on first use and returned with a :class:`DeprecationWarning` made of the old name and the
    advice (``"import it from actorsource.journal"``), pointing at the caller's line.
    """
    try:
        source, attribute, advice = aliases[name]
    except KeyError:
        raise AttributeError(f"module {module!r} has no attribute {name!r}") from None
    warnings.warn(f"{module}.{name} is deprecated; {advice}", DeprecationWarning, stacklevel=3)
    return getattr(importlib.import_module(source), attribute)

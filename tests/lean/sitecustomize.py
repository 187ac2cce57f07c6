"""Loaded at start-up by a Python whose ``PYTHONPATH`` holds this directory: the optional
extras' packages (pydantic, opentelemetry, prometheus_client) cannot be imported, as if not
installed. tests/test_lean_core.py runs the core, the CLI and the test kit so."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

BLOCKED = frozenset({"pydantic", "pydantic_core", "opentelemetry", "prometheus_client"})


class _Blocked:
    """A meta path finder that refuses the blocked packages."""

    @staticmethod
    def find_spec(
        name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None


sys.meta_path.insert(0, _Blocked())  # type: ignore[arg-type]

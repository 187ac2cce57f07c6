"""Shared test fixtures; ``nats_server`` and ``actor_kit`` come from the actorsource plugin.

``import examples...`` and ``from actors import ...`` resolve through ``pythonpath`` in
pyproject.toml (the repository root and ``tests/``).
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave the ``slow`` tests out unless a ``-m`` expression asks about markers
    (``-m slow`` runs only them, ``-m "slow or not slow"`` everything)."""
    if config.option.markexpr:
        return
    slow = [item for item in items if item.get_closest_marker("slow") is not None]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if item.get_closest_marker("slow") is None]

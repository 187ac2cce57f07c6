"""Shared test fixtures; ``nats_server`` and ``actor_kit`` come from the actorsource plugin.

``import examples...`` and ``from actors import ...`` resolve through ``pythonpath`` in
pyproject.toml (the repository root and ``tests/``).
"""

"""Shared test fixtures; ``nats_server`` and ``actor_kit`` come from the actorsource plugin."""

from __future__ import annotations

import sys
from pathlib import Path

# The examples are run as modules by the tests (``import examples.bank``).
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

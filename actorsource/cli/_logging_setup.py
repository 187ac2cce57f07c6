"""Log output for the command line: console lines on a terminal, JSON lines otherwise.

Only the CLI calls :func:`configure_logging`; the library never configures logging itself.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

__all__ = ["configure_logging"]


def configure_logging(
    fmt: Literal["console", "json", "auto"] = "auto", level: str = "INFO"
) -> None:
    """Route the ``actorsource`` stdlib logger to stderr, rendered by structlog."""
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: structlog.typing.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
            ],
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.ExtraAdder(),
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
        )
    )
    logger = logging.getLogger("actorsource")
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False

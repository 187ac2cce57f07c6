"""Loggers for the library: structlog on top of the stdlib ``logging`` module.

The library never configures structlog globally and never prints: its loggers hand their
event dicts to the stdlib logger ``actorsource`` (the application or the CLI decides where
they go). Context (actor, position, subject) is bound on the logger, so every line carries it.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog

__all__ = ["get_logger"]


def get_logger(**context: Any) -> structlog.stdlib.BoundLogger:
    """A logger bound to ``context`` that writes through stdlib logging to ``actorsource``."""
    logger: structlog.stdlib.BoundLogger = structlog.wrap_logger(
        logging.getLogger("actorsource"),
        wrapper_class=structlog.stdlib.BoundLogger,
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.processors.format_exc_info,
            structlog.stdlib.render_to_log_kwargs,
        ],
    )
    return logger.bind(**context)

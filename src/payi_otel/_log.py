"""The package logger, and "log once" for problems inside the instrumentation."""

from __future__ import annotations

import logging
import threading
from typing import Set

logger = logging.getLogger("payi_otel")

_seen: Set[str] = set()
_lock = threading.Lock()


def log_once(key: str, message: str, *args: object, exc_info: bool = False) -> None:
    """Log ``message`` as a warning the first time ``key`` is seen in this process."""
    with _lock:
        if key in _seen:
            return
        _seen.add(key)
    logger.warning(message, *args, exc_info=exc_info)


def reset_log_once() -> None:
    """Forget what was logged (tests)."""
    with _lock:
        _seen.clear()

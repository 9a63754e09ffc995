"""The package logger, "log once", and the one internal-error policy (docs/failure-policy.md).

An unexpected error inside payi_otel never breaks the user's call: :func:`internal_error`
logs it once (with its traceback) and the caller goes on as if payi_otel were not there. The
test suite sets :data:`RAISE_INTERNAL_ERRORS` so that such errors fail the test instead.
"""

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


#: Re-raise internal errors instead of logging them (the test suite turns this on).
RAISE_INTERNAL_ERRORS = False


def internal_error(key: str, what: str) -> None:
    """Handle the exception being handled as internal: log ``what`` once per ``key``, with
    the traceback; re-raised when :data:`RAISE_INTERNAL_ERRORS`. Call it in an ``except``."""
    if RAISE_INTERNAL_ERRORS:
        raise
    log_once(f"internal:{key}", f"payi_otel: {what} (the call goes on unchanged)", exc_info=True)

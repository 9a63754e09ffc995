"""``opentelemetry-instrument`` hooks (entry points ``opentelemetry_pre_instrument`` and
``opentelemetry_post_instrument``).

The loader instruments every installed instrumentor, in no set order. So while it runs,
``PayiInstrumentor`` leaves the GenAI instrumentations to it, and once it is done
:func:`after_instrumentors` makes sure each installed SDK has exactly one GenAI instrumentation
on (one the loader skipped is turned on; a duplicate is turned off). Under the loader a
``PAYI_*`` variable that does not parse is one ERROR line naming it, and the app runs on.
"""

from __future__ import annotations

__all__ = ["after_instrumentors", "before_instrumentors", "loading"]

_loading = False


def loading() -> bool:
    """Whether the auto-instrumentation loader is running its instrumentors now."""
    return _loading


def before_instrumentors() -> None:
    global _loading
    _loading = True


def after_instrumentors() -> None:
    global _loading
    _loading = False
    from payi_otel.instrumentor import PayiInstrumentor

    try:
        PayiInstrumentor().finish_zero_code()
    except Exception:  # never into the app's start-up
        from payi_otel._log import log_once

        log_once("zero-code", "payi_otel: failed to finish instrumenting", exc_info=True)

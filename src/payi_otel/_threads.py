"""Context into threads: every ``Thread`` started, and every ``ThreadPoolExecutor`` task
submitted, runs in the OpenTelemetry context of the code that started or submitted it.

Written here rather than taken from ``opentelemetry-instrumentation-threading``: that package
pins ``opentelemetry-instrumentation`` to its own exact release, which makes pip downgrade a
user's OpenTelemetry (or fail to resolve) next to the GenAI instrumentations (docs: README,
"Where the context travels"). It is also per task, not per worker: a pool's long-lived worker
threads never carry the scope of whoever happened to start them into a later task.
"""

from __future__ import annotations

import threading
from concurrent import futures
from typing import Any, Callable, Dict, List, Tuple

from opentelemetry import context as otel_context
from wrapt import wrap_function_wrapper

from payi_otel._wrapping import unwrapper

__all__ = ["instrument_threads"]


def _in_context(ctx: otel_context.Context, fn: Callable[..., Any]) -> Callable[..., Any]:
    def run_in_context(*args: Any, **kwargs: Any) -> Any:
        token = otel_context.attach(ctx)
        try:
            return fn(*args, **kwargs)
        finally:
            otel_context.detach(token)

    return run_in_context


def _thread_start(
    wrapped: Callable[..., Any], instance: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]
) -> Any:
    # The instance attribute shadows ``run`` for every subclass, overridden ``run()`` or not.
    instance.run = _in_context(otel_context.get_current(), instance.run)
    return wrapped(*args, **kwargs)


def _executor_submit(
    wrapped: Callable[..., Any], instance: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]
) -> Any:
    if args:
        fn, *rest = args
        return wrapped(_in_context(otel_context.get_current(), fn), *rest, **kwargs)
    return wrapped(*args, **kwargs)  # the executor's own TypeError for a missing fn


def instrument_threads() -> List[Callable[[], None]]:
    """Wrap ``Thread.start`` and ``ThreadPoolExecutor.submit``; returns the undo callables."""
    wrap_function_wrapper(threading, "Thread.start", _thread_start)
    wrap_function_wrapper(futures.ThreadPoolExecutor, "submit", _executor_submit)
    return [
        unwrapper(threading.Thread, "start", _thread_start),
        unwrapper(futures.ThreadPoolExecutor, "submit", _executor_submit),
    ]

"""Context into threads: every ``Thread`` started, and every ``ThreadPoolExecutor`` task
submitted, runs in the OpenTelemetry context of the code that started or submitted it.

Work handed off carries the submitter's scope per task, or none - never a stale one
(README, "Where the context travels"):

* ``Thread`` (any subclass, ``run()`` overridden or not), ``Timer``: the starter's context;
* ``ThreadPoolExecutor.submit`` (so ``loop.run_in_executor``): the submitter's, per task;
* ``multiprocessing.pool.ThreadPool`` (``multiprocessing.dummy``): its worker threads start
  with no scope (their tasks would otherwise all run in whatever scope created the pool);
* a forked child process (``os.fork``, multiprocessing's ``fork`` start method): starts with
  an empty context; ``spawn`` / ``forkserver`` children start empty anyway.

Written here rather than taken from ``opentelemetry-instrumentation-threading``: that package
pins ``opentelemetry-instrumentation`` to its own exact release, which makes pip downgrade a
user's OpenTelemetry (or fail to resolve) next to the GenAI instrumentations (docs: README,
"Where the context travels"). It is also per task, not per worker: a pool's long-lived worker
threads never carry the scope of whoever happened to start them into a later task.
"""

from __future__ import annotations

import multiprocessing.dummy
import os
import threading
from concurrent import futures
from typing import Any, Callable, Dict, List, Tuple

from opentelemetry import context as otel_context
from wrapt import wrap_function_wrapper

from payi_otel._context import settled
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
    ctx = _EMPTY if isinstance(instance, _POOL_WORKERS) else settled(otel_context.get_current())
    instance.run = _in_context(ctx, instance.run)
    return wrapped(*args, **kwargs)


_EMPTY = otel_context.Context()
# The worker threads of multiprocessing.pool.ThreadPool, which run every later task.
_POOL_WORKERS: Tuple[type, ...] = (multiprocessing.dummy.DummyProcess,)
_forking_enabled = False


def _reset_in_child() -> None:
    """In a forked child: no scope of the parent's survives into it."""
    if _forking_enabled:
        otel_context.attach(_EMPTY)


def _executor_submit(
    wrapped: Callable[..., Any], instance: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]
) -> Any:
    if args:
        fn, *rest = args
        return wrapped(_in_context(settled(otel_context.get_current()), fn), *rest, **kwargs)
    return wrapped(*args, **kwargs)  # the executor's own TypeError for a missing fn


def instrument_threads() -> List[Callable[[], None]]:
    """Wrap ``Thread.start`` and ``ThreadPoolExecutor.submit``; returns the undo callables."""
    global _forking_enabled
    wrap_function_wrapper(threading, "Thread.start", _thread_start)
    wrap_function_wrapper(futures.ThreadPoolExecutor, "submit", _executor_submit)
    if hasattr(os, "register_at_fork") and not _fork_hook_registered():
        os.register_at_fork(after_in_child=_reset_in_child)
    _forking_enabled = True

    def stop_fork_reset() -> None:
        global _forking_enabled
        _forking_enabled = False

    return [
        stop_fork_reset,
        unwrapper(threading.Thread, "start", _thread_start),
        unwrapper(futures.ThreadPoolExecutor, "submit", _executor_submit),
    ]


_registered: list[bool] = []


def _fork_hook_registered() -> bool:
    """``os.register_at_fork`` cannot be undone: register once per process."""
    if _registered:
        return True
    _registered.append(True)
    return False

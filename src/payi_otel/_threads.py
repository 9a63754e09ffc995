"""Context into threads and callbacks: work handed off runs in the OpenTelemetry context of
the code that handed it off, or in none - never in an earlier, unrelated submitter's.

The rule (README, "Where the context travels", the hand-off table): work done *for one
submitter* carries that submitter's scope; hooks that run for the whole process or thread
(exit and signal handlers, pool initializers, the threads a pool keeps) carry none, because
whoever happened to register or start them is arbitrary.

* ``Thread`` (any subclass, ``run()`` overridden or not), ``Timer``: the starter's context;
* ``ThreadPoolExecutor.submit`` (so ``loop.run_in_executor``): the submitter's, per task;
* ``concurrent.futures.Future.add_done_callback``: the adder's, whichever thread completes
  the future (asyncio futures and loop callbacks copy the context themselves);
* ``multiprocessing.pool`` ``callback=`` / ``error_callback=``: the submitter's;
* the threads a pool keeps - ``ThreadPoolExecutor`` workers (so their ``initializer``),
  ``multiprocessing.pool`` workers and handler threads, ``ProcessPoolExecutor``'s manager
  thread: start with no scope (each would otherwise run every later task or callback in the
  scope of whichever submit started it);
* ``atexit.register``, ``signal.signal``: none (``atexit.unregister`` and
  ``signal.getsignal`` still see the user's function);
* ``weakref.finalize``: the creator's (``peek`` / ``detach`` return the user's function);
  ``weakref.ref`` callbacks are not carried (a type, not patched; README);
* carried work keeps the scopes it was handed even where the running thread noted them as
  exited (``_context.carried_in``): it carries them by right;
* a forked child process (``os.fork``, multiprocessing's ``fork`` start method): starts with
  an empty context; ``spawn`` / ``forkserver`` children start empty anyway.

Written here rather than taken from ``opentelemetry-instrumentation-threading``: that package
pins ``opentelemetry-instrumentation`` to its own exact release, which makes pip downgrade a
user's OpenTelemetry (or fail to resolve) next to the GenAI instrumentations (docs: README,
"Where the context travels"). It is also per task, not per worker: a pool's long-lived worker
threads never carry the scope of whoever happened to start them into a later task.
"""

from __future__ import annotations

import atexit
import contextvars
import multiprocessing.dummy
import multiprocessing.pool
import os
import signal
import threading
import weakref
from concurrent import futures
from concurrent.futures import process as futures_process
from concurrent.futures import thread as futures_thread
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from opentelemetry import context as otel_context
from wrapt import wrap_function_wrapper

from payi_otel._context import carried_in, carried_out, settled
from payi_otel._wrapping import unwrapper

__all__ = ["instrument_threads"]


def _in_context(ctx: otel_context.Context, fn: Callable[..., Any]) -> Callable[..., Any]:
    def run_in_context(*args: Any, **kwargs: Any) -> Any:
        token = otel_context.attach(ctx)
        note = carried_in(ctx)
        try:
            return fn(*args, **kwargs)
        finally:
            carried_out(note)
            otel_context.detach(token)

    return run_in_context


class _Carried:
    """``fn``, called in ``ctx``. It equals (and hashes as) ``fn`` and has its repr, so
    ``atexit.unregister(fn)`` still finds it and error messages still name the user's
    function."""

    __slots__ = ("ctx", "fn")

    def __init__(self, ctx: otel_context.Context, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.ctx = ctx

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # In a copy of the caller's contextvars.Context, never in the caller's own: a
        # ``weakref.finalize`` callback can run inside the garbage collector, which can run
        # inside the caller's own ContextVar.set (an allocation in it), and setting the same
        # Context there frees the mapping that set is still reading (CPython: a segfault).
        return contextvars.copy_context().run(self._run, *args, **kwargs)

    def _run(self, *args: Any, **kwargs: Any) -> Any:
        token = otel_context.attach(self.ctx)
        note = carried_in(self.ctx)
        try:
            return self.fn(*args, **kwargs)
        finally:
            carried_out(note)
            otel_context.detach(token)

    def __eq__(self, other: object) -> bool:
        return bool(self.fn == (other.fn if isinstance(other, _Carried) else other))

    def __hash__(self) -> int:
        return hash(self.fn)

    def __repr__(self) -> str:
        return repr(self.fn)


def _user_fn(obj: Any) -> Any:
    return obj.fn if isinstance(obj, _Carried) else obj


def _thread_start(
    wrapped: Callable[..., Any], instance: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]
) -> Any:
    # The instance attribute shadows ``run`` for every subclass, overridden ``run()`` or not.
    kept = (
        isinstance(instance, _POOL_THREADS)
        or id(getattr(instance, "_target", None)) in _POOL_TARGETS
    )
    ctx = _EMPTY if kept else settled(otel_context.get_current())
    instance.run = _in_context(ctx, instance.run)
    return wrapped(*args, **kwargs)


_EMPTY = otel_context.Context()
# The threads a pool keeps, which run every later task or callback: by class ...
_POOL_THREADS: Tuple[type, ...] = (
    multiprocessing.dummy.DummyProcess,
    futures_process._ExecutorManagerThread,
)
# ... and plain threads by their target (module-level functions: their ids are stable).
_POOL_TARGETS = frozenset(
    [id(futures_thread._worker)]
    + [
        id(getattr(multiprocessing.pool.Pool, name))
        for name in ("_handle_workers", "_handle_tasks", "_handle_results")
    ]
)
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


def _add_done_callback(
    wrapped: Callable[..., Any], instance: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]
) -> Any:
    if len(args) == 1 and not kwargs and callable(args[0]):
        return wrapped(_Carried(settled(otel_context.get_current()), args[0]))
    return wrapped(*args, **kwargs)


def _carry(fn: Optional[Callable[..., Any]]) -> Optional[Callable[..., Any]]:
    return _Carried(settled(otel_context.get_current()), fn) if callable(fn) else fn


def _apply_result_init(
    wrapped: Callable[..., Any], instance: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]
) -> Any:
    def carried(pool: Any, callback: Any, error_callback: Any) -> Any:
        return wrapped(pool, _carry(callback), _carry(error_callback))

    return carried(*args, **kwargs)


def _atexit_register(
    wrapped: Callable[..., Any], instance: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]
) -> Any:
    if args and callable(args[0]):
        fn, *rest = args
        wrapped(_Carried(_EMPTY, fn), *rest, **kwargs)
        return fn  # as atexit.register does: usable as a decorator
    return wrapped(*args, **kwargs)


_handled_signals: Set[int] = set()


def _signal_signal(
    wrapped: Callable[..., Any], instance: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]
) -> Any:
    if len(args) == 2 and callable(args[1]) and args[1] is not signal.default_int_handler:
        previous = wrapped(args[0], _Carried(_EMPTY, args[1]))
        _handled_signals.add(args[0])
        return _user_fn(previous)
    return _user_fn(wrapped(*args, **kwargs))


def _signal_getsignal(
    wrapped: Callable[..., Any], instance: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]
) -> Any:
    return _user_fn(wrapped(*args, **kwargs))


def _restore_signal_handlers() -> None:
    """After uninstrumenting, ``getsignal`` is the stdlib's again: give it back the user's
    handlers (only the main thread may set them; elsewhere the carried ones stay, working)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in list(_handled_signals):
        handler = signal.getsignal(signum)
        if isinstance(handler, _Carried):
            signal.signal(signum, handler.fn)
    _handled_signals.clear()


def _finalize_init(
    wrapped: Callable[..., Any], instance: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]
) -> Any:
    if len(args) >= 2 and callable(args[1]):
        obj, fn, *rest = args
        return wrapped(obj, _Carried(settled(otel_context.get_current()), fn), *rest, **kwargs)
    return wrapped(*args, **kwargs)


def _finalize_info(
    wrapped: Callable[..., Any], instance: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]
) -> Any:
    """``peek()`` / ``detach()``: ``(obj, func, args, kwargs)`` with the user's ``func``."""
    info = wrapped(*args, **kwargs)
    if info is None:
        return None
    obj, fn, fn_args, fn_kwargs = info
    return (obj, _user_fn(fn), fn_args, fn_kwargs)


_PATCHES: Tuple[Tuple[Any, str, Callable[..., Any]], ...] = (
    (threading.Thread, "start", _thread_start),
    (futures.ThreadPoolExecutor, "submit", _executor_submit),
    (futures.Future, "add_done_callback", _add_done_callback),
    (multiprocessing.pool.ApplyResult, "__init__", _apply_result_init),
    (atexit, "register", _atexit_register),
    (signal, "signal", _signal_signal),
    (signal, "getsignal", _signal_getsignal),
    (weakref.finalize, "__init__", _finalize_init),
    (weakref.finalize, "peek", _finalize_info),
    (weakref.finalize, "detach", _finalize_info),
)


def instrument_threads() -> List[Callable[[], None]]:
    """Wrap the hand-offs of the table above; returns the undo callables."""
    global _forking_enabled
    for owner, name, wrapper in _PATCHES:
        wrap_function_wrapper(owner, name, wrapper)
    if hasattr(os, "register_at_fork") and not _fork_hook_registered():
        os.register_at_fork(after_in_child=_reset_in_child)
    _forking_enabled = True

    def stop_fork_reset() -> None:
        global _forking_enabled
        _forking_enabled = False

    # Undone last to first: the stdlib's signal functions are back before the handlers are.
    undo = [stop_fork_reset, _restore_signal_handlers]
    undo.extend(unwrapper(owner, name, wrapper) for owner, name, wrapper in _PATCHES)
    return undo


_registered: list[bool] = []


def _fork_hook_registered() -> bool:
    """``os.register_at_fork`` cannot be undone: register once per process."""
    if _registered:
        return True
    _registered.append(True)
    return False

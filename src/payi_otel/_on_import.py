"""Instrumenting a module when the program imports it (issue 20: start-up).

``payi_instrument()`` used to import every installed SDK, GenAI instrumentation, agent
framework and HTTP client to wrap them: ~2-3 s in an environment that has them all, whether
the program used them or not. Now each of those steps waits for its module:
:func:`when_imported` runs it at once when the module is already imported, else right after
the program imports it (a ``wrapt`` post-import hook), in the importing thread, before the
``import`` statement returns. So a program pays for what it imports, and a call cannot be
made with a module that is imported but not yet instrumented.

- A step never breaks the program's import: an exception in it is an internal error
  (``_log.internal_error``: logged once, the import goes on).
- For a module already imported, :func:`when_imported` runs the step and returns its undo
  callables, as instrumenting did before. For one not imported yet, it returns one undo that
  drops the step while it waits (``wrapt`` cannot take a hook back: the hook is registered
  once per module name and finds nothing left to run), or undoes what the step did since
  (the undo callables it returned, last first).
- No lock is held while a step runs: a step imports modules, and an import in another
  thread may wait on the step's own import lock.
- A step runs while the importing thread holds its module's import lock: it must import
  nothing another thread may be importing then (so the module waited for is the one whose
  import makes the rest ready: ``Provider.ready_module``). And a hook on a submodule makes
  wrapt's finder import its package first: never on a submodule its package imports.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import threading
from collections.abc import Sequence
from types import ModuleType
from typing import Any, Callable, Dict, List, Set

import wrapt

from payi_otel._log import internal_error

__all__ = ["installed", "when_imported"]

Undo = Callable[[], Any]
Step = Callable[[], Sequence[Undo]]

_WAITING, _RUNNING, _DONE, _DROPPED = range(4)

_lock = threading.Lock()
_waiting: Dict[str, List[_Pending]] = {}  # module name -> its steps not run yet
_hooked: Set[str] = set()  # module names with our wrapt hook registered, not yet fired


class _Pending:
    """One step for one module, from waiting to done (or dropped)."""

    __slots__ = ("_module", "_state", "_step", "_undo", "_what")

    def __init__(self, module: str, step: Step, what: str) -> None:
        self._module = module
        self._step = step
        self._what = what
        self._state = _WAITING
        self._undo: Sequence[Undo] = ()

    def run(self) -> None:
        with _lock:
            if self._state != _WAITING:
                return
            self._state = _RUNNING
        undo = _run_step(self._step, self._what)
        with _lock:
            dropped = self._state == _DROPPED
            self._state = _DONE
            self._undo = () if dropped else undo
        if dropped:  # undone while it ran (in another thread): never fail this import
            try:
                _run_undo(undo)
            except Exception:
                internal_error(f"on-import:{self._what}:undo", f"undoing {self._what} failed")

    def drop(self) -> None:
        with _lock:
            state, self._state = self._state, _DROPPED
            undo, self._undo = self._undo, ()
            if state == _WAITING:
                steps = _waiting.get(self._module, [])
                if self in steps:
                    steps.remove(self)
        if state == _DONE:
            _run_undo(undo)


def _run_step(step: Step, what: str) -> Sequence[Undo]:
    try:
        return tuple(step())
    except Exception:
        internal_error(f"on-import:{what}", f"instrumenting {what} failed")
        return ()


def _run_undo(undo: Sequence[Undo]) -> None:
    for one in reversed(undo):
        one()


def _imported(module: ModuleType) -> None:
    """The wrapt hook: run every step waiting for ``module``."""
    name = getattr(module, "__name__", "")
    with _lock:
        _hooked.discard(name)
        steps = _waiting.pop(name, [])
    if steps:
        _bind_to_package(name, module)
    for step in steps:
        step.run()


def _bind_to_package(name: str, module: ModuleType) -> None:
    """Binds a submodule the hook fired for on its package now, as the import system does
    right after the hook: a step - or a module it imports - that reads it as an attribute
    (``botocore.client``) would find it missing, "most likely due to a circular import"
    (genai-bedrock importing aiobotocore's client while botocore's is being imported)."""
    package_name, _, child = name.rpartition(".")
    package = sys.modules.get(package_name) if package_name else None
    if package is None:
        return
    # (a package whose ``__getattr__`` raises, or that refuses it: the import system binds
    # it next)
    with contextlib.suppress(Exception):
        if getattr(package, child, None) is None:
            setattr(package, child, module)


def installed(module: str) -> bool:
    """Whether ``module`` can be imported: its spec is found without importing it (its
    parent packages are imported to look)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def when_imported(module: str, step: Step, what: str) -> List[Undo]:
    """Run ``step`` (which returns its undo callables) when ``module`` is imported: now if it
    is; ``what`` names it in an error. The undo callables: the step's own when it ran now,
    else one that drops it or undoes what it did."""
    with _lock:
        imported = module in sys.modules
        if not imported:
            pending = _Pending(module, step, what)
            _waiting.setdefault(module, []).append(pending)
            hook = module not in _hooked
            _hooked.add(module)
    if imported:
        return list(_run_step(step, what))
    if hook:
        # Imported meanwhile (another thread): wrapt calls the hook at once.
        wrapt.register_post_import_hook(_imported, module)
    return [pending.drop]

"""Undo exactly payi_otel's own ``wrapt`` wrapper of a class attribute.

``opentelemetry.instrumentation.utils.unwrap`` removes whatever wrapper is on top, which may
be another library's; a later instrument would then stack a second payi_otel wrapper. Here the
chain of wrappers is walked and only the one whose wrapper function is ours is taken out.
"""

from __future__ import annotations

from typing import Any, Callable

from payi_otel._log import log_once

__all__ = ["unwrapper"]


def _wrapper_of(obj: object) -> object:
    return getattr(obj, "_self_wrapper", None)


def _live(obj: Any) -> Any:
    """The wrapper whose chain calls go through: a bound wrapper (what another library's
    ``unwrap`` leaves on the class when it takes its wrapper off the top) binds again through
    its parent's chain at every call."""
    return getattr(obj, "_self_parent", None) or obj


def unwrap_own(owner: Any, name: str, wrapper: Callable[..., Any]) -> None:
    """Remove the ``wrapt`` wrapper made with ``wrapper`` from ``owner.name``, wherever it
    sits in the chain of wrappers (its live chain: a bound wrapper's parent's); the others
    stay."""
    top = owner.__dict__.get(name)
    if top is None:
        return
    if _wrapper_of(top) is wrapper:
        setattr(owner, name, _live(top).__wrapped__)
        return
    outer = top
    while True:
        live = _live(outer)
        inner = getattr(live, "__wrapped__", None)
        if inner is None or inner is live:
            return
        if _wrapper_of(inner) is wrapper:
            try:
                live.__wrapped__ = _live(inner).__wrapped__
                stale: Any = getattr(outer, "__wrapped__", None)
                if outer is not live and _wrapper_of(stale) is wrapper:
                    outer.__wrapped__ = stale.__wrapped__  # the bound view, for its readers
            except (AttributeError, TypeError):
                log_once(
                    f"unwrap:{name}",
                    "payi_otel: cannot remove its wrapper of %s.%s from under another "
                    "library's wrapper; it stays installed",
                    getattr(owner, "__name__", owner),
                    name,
                )
            return
        outer = inner


def unwrapper(owner: Any, name: str, wrapper: Callable[..., Any]) -> Callable[[], None]:
    """The undo callable of ``wrap_function_wrapper(owner, name, wrapper)``."""

    def undo() -> None:
        unwrap_own(owner, name, wrapper)

    return undo

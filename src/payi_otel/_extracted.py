"""Contexts extracted from a carrier keep the scopes in force where they are extracted.

A server's tracing extracts the caller's trace context from the request headers and attaches
it in place of the current context: FastAPI's own telemetry on every request,
``opentelemetry-instrumentation-asgi`` / ``-wsgi`` when no span is current (payi_otel's
spanless mode). Inside a request scope (``payi_otel.web``), or any ``track_context``, that
context would have no scope, and the handler's calls none of the request's attribution, with
nothing said. A scope is the program's own declaration, not the remote caller's: so a context
extracted fresh (``propagate.extract(carrier)``, no base context given) while scopes are in
force gets them, over whatever ``payi.*`` baggage it brought, which stays their baggage level
below them (README "Where the context travels"). An extraction onto a context given
explicitly is left as it is.

Done by the global propagator: the one in force when payi_otel is instrumented is wrapped, and
put back by ``uninstrument()`` unless the program has set another since.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Set

from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)

from payi_otel._context import with_current_scopes
from payi_otel._log import internal_error

__all__ = ["KeepsScopes", "keep_scopes_on_extract"]


class KeepsScopes(TextMapPropagator):
    """``inner``, whose fresh extractions keep the scopes in force where they are made."""

    def __init__(self, inner: TextMapPropagator) -> None:
        self.inner = inner

    def extract(
        self,
        carrier: CarrierT,
        context: Optional[Context] = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        extracted = self.inner.extract(carrier, context, getter)
        if context is not None:
            return extracted
        try:
            return with_current_scopes(extracted)
        except Exception:
            internal_error("extract", "keeping the scopes in an extracted context failed")
            return extracted

    def inject(
        self,
        carrier: CarrierT,
        context: Optional[Context] = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        self.inner.inject(carrier, context, setter)

    @property
    def fields(self) -> Set[str]:
        return self.inner.fields

    def __getattr__(self, name: str) -> Any:  # the inner propagator's own attributes
        if name == "inner":  # not set (a copy made without __init__): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)


def keep_scopes_on_extract() -> Callable[[], None]:
    """Wrap the global propagator (see module doc); the undo."""
    inner = propagate.get_global_textmap()
    if isinstance(inner, KeepsScopes):
        return lambda: None
    ours = KeepsScopes(inner)
    propagate.set_global_textmap(ours)

    def undo() -> None:
        if propagate.get_global_textmap() is ours:
            propagate.set_global_textmap(inner)

    return undo

"""A web request's scope survives the server tracing that extracts the request's own context.

A server's tracing extracts the caller's trace context from the request headers and attaches
it in place of the current context: FastAPI's own telemetry on every request,
``opentelemetry-instrumentation-asgi`` / ``-wsgi`` when no span is current (payi_otel's
spanless mode). Inside ``payi_otel.web``'s request scope, that context would have no scope, and
the handler's calls none of the request's attribution, with nothing said (a review). So the
request scope notes the trace headers of its request (``traceparent``, ``tracestate``,
``baggage``: :func:`fingerprint`), and a context extracted fresh (``propagate.extract(carrier)``,
no base context given) from a carrier with those same headers, while that scope is current,
gets the scopes in force there, over the ``payi.*`` baggage it brought (which stays their
baggage level below them; README "Where the context travels").

Any other extraction is left as it is: a message's carrier extracted in a consumer task that
inherited some scope (a task started inside a request) keeps what the message says - a fresh
extraction stays the boundary it is. Done by the global propagator: the one in force when
payi_otel is instrumented is wrapped, and put back by ``uninstrument()`` unless the program
has set another since.
"""

from __future__ import annotations

import re
from typing import Any, Callable, List, Optional, Set

from opentelemetry import context as otel_context
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

__all__ = [
    "REQUEST_CARRIER",
    "KeepsScopes",
    "RequestMark",
    "fingerprint",
    "keep_scopes_on_extract",
]

#: The context key of a web request scope's :class:`RequestMark`.
REQUEST_CARRIER = otel_context.create_key("payi_otel.request_carrier")


class RequestMark:
    """What a web request notes in its context (``payi_otel.web``), scope or not."""

    __slots__ = ("fingerprint", "outer", "over", "request")

    def __init__(self, fingerprint: str, request: object, outer: Context) -> None:
        #: The :func:`fingerprint` of its request's trace headers.
        self.fingerprint = fingerprint
        #: Its request's token (kept in the request's ASGI scope / WSGI environ).
        self.request = request
        #: The context the request was entered over: what its context is brought back to
        #: where it leaked to a later request (``_context.as_outside``).
        self.outer = outer
        #: Its response is complete: a request that finds this mark in force, not its own,
        #: runs where this request's context leaked (an asyncio server's connection); one
        #: that finds a mark not over is nested in that request (a sub-app, an in-process
        #: call), and keeps its scopes.
        self.over = False


_TRACE_HEADERS = ("traceparent", "tracestate", "baggage")


def fingerprint(get: Callable[[str], Optional[List[str]]]) -> str:
    """What identifies a request's trace context: its trace headers' values (``get``: a
    header name -> its values, or None), repeated values joined, of their printable ASCII
    but the backslash. Whitespace, and anything the two sides may decode differently, is
    left out: the request scope reads a header's bytes as UTF-8, a framework as Latin-1
    (Starlette, a WSGI environ), OpenTelemetry's ASGI getter with ``unicode_escape`` (a
    review: a UTF-8 byte in ``baggage`` or ``tracestate`` lost the request's scope)."""
    parts = []
    for name in _TRACE_HEADERS:
        values = get(name)
        parts.append(_NOT_KEPT.sub("", ",".join(values)) if values else "")
    return "\n".join(parts)


#: What :func:`fingerprint` leaves out: all but the printable ASCII, and the backslash.
_NOT_KEPT = re.compile(r"[^!-\[\]-~]+")


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
            mark = otel_context.get_value(REQUEST_CARRIER)
            if not isinstance(mark, RequestMark) or mark.over:
                return extracted  # no request, or one whose context leaked here
            if fingerprint(lambda name: getter.get(carrier, name)) != mark.fingerprint:
                return extracted
            # The request's mark goes with its scopes: a middleware below knows the request.
            return otel_context.set_value(REQUEST_CARRIER, mark, with_current_scopes(extracted))
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

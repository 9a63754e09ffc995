"""The ``payi_otel`` tracer: from the provider given to ``payi_instrument``, else the global one."""

from __future__ import annotations

from typing import Optional

from opentelemetry import trace
from opentelemetry.trace import Tracer, TracerProvider

from payi_otel.version import __version__

__all__ = ["TRACER_NAME", "get_payi_tracer", "set_payi_tracer_provider"]

TRACER_NAME = "payi_otel"

# A ProxyTracer until a global provider is set, then it delegates to the real one.
_tracer: Tracer = trace.get_tracer(TRACER_NAME, __version__)


def set_payi_tracer_provider(provider: Optional[TracerProvider]) -> None:
    """Use ``provider`` for scope spans (``None``: the global provider)."""
    global _tracer
    _tracer = (
        trace.get_tracer(TRACER_NAME, __version__)
        if provider is None
        else provider.get_tracer(TRACER_NAME, __version__)
    )


def get_payi_tracer() -> Tracer:
    return _tracer

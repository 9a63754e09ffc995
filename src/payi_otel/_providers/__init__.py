"""Providers: one module per SDK family on the base of ``_base`` (its facts and hooks), each
registered with one line in ``_registry.PROVIDERS``; ``_core`` is the generic request hook
that wraps them (imported by the instrumentor, not here: the base and the registry are read
by modules ``_core`` itself stands on, as ``_genai`` and ``_spans``)."""

from __future__ import annotations

from payi_otel._providers._base import (
    USAGE_PARTS,
    Call,
    CallRecord,
    Instrumentation,
    PatchPoint,
    Provider,
    ResponseObserver,
    Role,
    Service,
    Usage,
)
from payi_otel._providers._registry import PROVIDERS, derived, is_generation, providers

__all__ = [
    "PROVIDERS",
    "USAGE_PARTS",
    "Call",
    "CallRecord",
    "Instrumentation",
    "PatchPoint",
    "Provider",
    "ResponseObserver",
    "Role",
    "Service",
    "Usage",
    "derived",
    "is_generation",
    "providers",
]

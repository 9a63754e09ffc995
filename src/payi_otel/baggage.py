"""Parameters across processes as W3C baggage entries ``payi.<parameter>`` (opt-in).

Outgoing: a scope writes the effective parameters into the baggage of the context it attaches,
so any configured propagator (``OTEL_PROPAGATORS`` defaults to ``tracecontext,baggage``)
injects them into outgoing requests. Incoming: entries found in the context (extracted by a
server instrumentation or ``propagate.extract``) form the *baggage* level of the precedence.
"""

from __future__ import annotations

from typing import Optional

from opentelemetry import baggage as otel_baggage
from opentelemetry.context import Context

from payi_otel._log import log_once
from payi_otel.codec import parse_value
from payi_otel.effective import BAGGAGE_PREFIX, Effective
from payi_otel.merge import Level, new_level
from payi_otel.parameters import PARAMETERS, Params

__all__ = ["read_incoming", "with_outgoing"]


def read_incoming(ctx: Optional[Context]) -> Optional[Level]:
    """The baggage level found in ``ctx``, or ``None`` when it has no ``payi.*`` entry.

    An entry that does not parse comes from another process, not from this program's code:
    it is skipped and logged once rather than raised.
    """
    entries = otel_baggage.get_all(ctx)
    if not entries:
        return None
    params: Params = {}
    for key, raw in entries.items():
        if not key.startswith(BAGGAGE_PREFIX):
            continue
        name = key[len(BAGGAGE_PREFIX):]
        if name not in PARAMETERS:
            continue
        try:
            params[name] = parse_value(name, str(raw), what=f"baggage entry {key!r}")
        except (TypeError, ValueError) as exc:
            log_once(f"baggage:{key}", "ignoring incoming baggage entry: %s", exc)
    return new_level(params) if params else None


def with_outgoing(ctx: Context, effective: Effective) -> Context:
    """``ctx`` with its ``payi.*`` baggage entries replaced by ``effective``'s."""
    for key in otel_baggage.get_all(ctx):
        if key.startswith(BAGGAGE_PREFIX):
            ctx = otel_baggage.remove_baggage(key, ctx)
    for key, text in effective.baggage().items():
        ctx = otel_baggage.set_baggage(key, text, ctx)
    return ctx

"""What one scope cost: the usage and cost of every call made inside it (issue 20).

Each scope that starts a span (``_scopes``) puts a :class:`ScopeTotals` in the context it
attaches, linked to the enclosing scope's; the cost observer (``_cost``) adds each completed
call, once, to the totals of every scope that was open around it when it was sent (the
context the call was sent in: ``CallRecord.context``), so nested scopes each get their own
subtree's total. When the scope ends, its span gets them under names that are not
``gen_ai.usage.*`` (rolling usage up under the inference names would count it twice)::

    payi_otel.scope.calls                    = 3
    payi_otel.scope.usage.input_tokens       = 3600
    payi_otel.scope.usage.output_tokens      = 930
    payi_otel.scope.cost.total               = 0.000873   # the calls that were priced
    payi_otel.scope.cost.currency            = "USD"

A call that completes after its scope ended (a stream read later) counts in the scopes
still open; one whose calls were priced in several currencies gets
``payi_otel.scope.cost.total.<CURRENCY>`` per currency instead of a single total.
"""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Dict, Optional

from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.trace import Span
from opentelemetry.util.types import AttributeValue

from payi_otel._deferred import flush

__all__ = ["ScopeTotals", "enter", "innermost"]

_KEY = otel_context.create_key("payi_otel.scope_totals")
#: Reentrant: a collection may run a finalizer that reports an abandoned stream's call here.
_lock = threading.RLock()


class ScopeTotals:
    """One scope's running totals, and the enclosing scope's (``outer``)."""

    __slots__ = ("calls", "cost", "ended", "input_tokens", "outer", "output_tokens")

    def __init__(self, outer: Optional[ScopeTotals]) -> None:
        self.outer = outer
        self.calls = 0
        self.input_tokens = 0
        self.output_tokens = 0
        #: Currency -> the sum of the priced calls' costs.
        self.cost: Dict[str, Decimal] = {}
        self.ended = False

    def add(
        self, input_tokens: int, output_tokens: int, cost: Optional[Decimal], currency: str
    ) -> None:
        """One call, to this scope and every enclosing one still open."""
        with _lock:
            totals: Optional[ScopeTotals] = self
            while totals is not None:
                if not totals.ended:
                    totals.calls += 1
                    totals.input_tokens += input_tokens
                    totals.output_tokens += output_tokens
                    if cost is not None:
                        totals.cost[currency] = totals.cost.get(currency, Decimal(0)) + cost
                totals = totals.outer

    def end(self, span: Span) -> None:
        """Put the totals on the scope's span (before it ends); later calls add nothing."""
        flush()  # the calls completed so far whose totals wait (``_deferred``)
        with _lock:
            self.ended = True
            calls, inputs, outputs = self.calls, self.input_tokens, self.output_tokens
            cost = self.cost
        if not calls:
            return
        attributes: Dict[str, AttributeValue] = {
            "payi_otel.scope.calls": calls,
            "payi_otel.scope.usage.input_tokens": inputs,
            "payi_otel.scope.usage.output_tokens": outputs,
        }
        if len(cost) == 1:
            ((currency, total),) = cost.items()
            attributes["payi_otel.scope.cost.total"] = float(total)
            attributes["payi_otel.scope.cost.currency"] = currency
        else:
            for currency, total in cost.items():
                attributes[f"payi_otel.scope.cost.total.{currency}"] = float(total)
        span.set_attributes(attributes)


def enter(ctx: Context) -> Context:
    """``ctx`` with a new scope's totals, inside those of the scope it is in."""
    outer = otel_context.get_value(_KEY, ctx)
    totals = ScopeTotals(outer if isinstance(outer, ScopeTotals) else None)
    return otel_context.set_value(_KEY, totals, ctx)


def innermost(ctx: Optional[Context]) -> Optional[ScopeTotals]:
    """The totals of the innermost scope with a span in ``ctx``, if any."""
    if ctx is None:
        return None
    totals = otel_context.get_value(_KEY, ctx)
    return totals if isinstance(totals, ScopeTotals) else None

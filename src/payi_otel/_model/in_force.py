"""What is in force: the one rule for which parameters are emitted (docs/parameters.md).

Cleared values, and a use case's (or experience's) id / version / step / properties with no
name in force, are not emitted, on a span, a header or in baggage.
"""

from __future__ import annotations

from typing import List, Set, Tuple

from payi_otel._model.parameters import PAIRS, PARAMETERS, Params, Value

__all__ = ["emitted", "is_cleared"]

_ORDER = {name: i for i, name in enumerate(PARAMETERS)}


def is_cleared(value: Value) -> bool:
    return not value and type(value) is not int and type(value) is not bool  # "", () or {}


def emitted(params: Params) -> List[Tuple[str, Value]]:
    """The parameters in force, in canonical order, without cleared values or orphans."""
    hidden: Set[str] = set()
    for pair in PAIRS:
        if not params.get(pair.name):
            hidden.update(pair.fields)
    items = [
        (name, value)
        for name, value in params.items()
        if name not in hidden and not is_cleared(value)
    ]
    items.sort(key=lambda item: _ORDER[item[0]])
    return items

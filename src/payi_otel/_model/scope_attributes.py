"""The attributes of a scope span (``scope_span_attributes="own"``): what the scope set."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from payi_otel._model.attributes import AttributeValue, attribute_items
from payi_otel._model.parameters import ATTRIBUTE_NAMES, PAIRS, SCOPE_ATTRIBUTE, Pair, Params, Value

if TYPE_CHECKING:
    from payi_otel._model.effective import Effective

__all__ = ["ScopeAttributes"]

_PAIR_OF: Dict[str, Pair] = {f: p for p in PAIRS for f in p.fields}


class ScopeAttributes:
    """The attributes of a scope span: what the scope itself set, plus ``payi.scope``.

    Built once per ``track_context`` / ``@track`` (on first use, not per entry). A scope span
    does not repeat what it inherits: the SDK validates every attribute of every span it
    starts, so writing the whole effective set made each scope cost grow with what is in force
    (and with nesting). GenAI spans still carry the whole effective set (docs/performance.md).
    As for the effective set, cleared values are not shown, nor a use case's (experience's)
    fields while no name of it is in force; for a pair the scope names, the id in force is
    added per entry when the entity in force is the one it names (the id may have been
    generated for this entry; another entity's id never goes with this scope's name).
    """

    __slots__ = ("_method", "_pairs", "_params", "_static")

    def __init__(self, params: Params, method: str) -> None:
        self._params = params
        self._method = method
        self._static: Optional[Dict[str, AttributeValue]] = None  # built on first use
        self._pairs: Tuple[Tuple[str, str, str, str, Dict[str, AttributeValue]], ...] = ()

    def _build(self) -> Dict[str, AttributeValue]:
        params = self._params
        plain: List[Tuple[str, Value]] = []
        by_pair: Dict[Pair, List[Tuple[str, Value]]] = {}
        for name, value in params.items():
            if not value and type(value) is not int:
                continue  # cleared
            pair = _PAIR_OF.get(name)
            if pair is None:
                plain.append((name, value))
            else:
                by_pair.setdefault(pair, []).append((name, value))
        # Per pair set here: its fields, shown while the pair is in force, and the id in force
        # where the entity in force is the one this scope names (the id may be new; another
        # entity's id never goes with this scope's name).
        self._pairs = tuple(
            (
                pair.name,
                str(params.get(pair.name) or ""),
                pair.id,
                ATTRIBUTE_NAMES[pair.id],
                attribute_items(fields),
            )
            for pair, fields in by_pair.items()
        )
        static = self._static = attribute_items(plain)
        static[SCOPE_ATTRIBUTE] = self._method
        return static

    def for_entry(self, effective: Effective) -> Mapping[str, AttributeValue]:
        static = self._static
        if static is None:
            static = self._build()
        if not self._pairs:
            return static
        attributes = dict(static)
        params = effective.params
        for name, own, id_name, id_attribute, fields in self._pairs:
            in_force = params.get(name)
            if in_force:  # the pair is in force: its fields are shown
                attributes.update(fields)
                entity_id = params.get(id_name) if in_force == own else None
                if isinstance(entity_id, str) and entity_id:
                    attributes[id_attribute] = entity_id
        return attributes

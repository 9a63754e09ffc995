"""``Effective``: resolved parameters with their outward forms (attributes, headers, baggage)
computed once, and the merge cache that makes entering the same scope again a lookup."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Dict, Hashable, Optional

from payi_otel._model.attributes import AttributeValue, attribute_items
from payi_otel._model.codec import format_value
from payi_otel._model.dialects import X_PAYI, Dialect
from payi_otel._model.in_force import emitted, is_cleared
from payi_otel._model.merge import Level, merge
from payi_otel._model.parameters import (
    ATTRIBUTE_NAMES,
    BAGGAGE_PREFIX,
    PARAMETERS,
    SCOPE_ATTRIBUTE,
    Params,
    Value,
)

__all__ = ["CHILD_CACHE_SIZE", "GLOBAL_CACHE_SIZE", "Effective"]


#: Children cached per Effective (see :meth:`Effective.child`); the cache is reset when full.
CHILD_CACHE_SIZE = 64
#: Templates cached in the whole process. Per-parent bounds alone grow with fan-out to the
#: power of the nesting depth; past this, every cache starts again (a new generation: a cache
#: of an older one is dropped when next used, and the tree hanging from it with it - the
#: global level's cache is used by every scope, so the whole tree goes at once).
GLOBAL_CACHE_SIZE = 20_000

_generation = 0
_cached = 0


def _count_cached() -> int:
    """Count one newly cached template; the generation caches now belong to."""
    global _cached, _generation
    _cached += 1
    if _cached > GLOBAL_CACHE_SIZE:
        _cached = 0
        _generation += 1
    return _generation


def _placeholder(name: str) -> str:
    return f"\x00payi-fresh-{name}"  # NUL: never a valid parameter value


class Effective:
    """Immutable effective parameters with their outward forms computed once, on demand."""

    __slots__ = (
        "_attributes",
        "_children",
        "_generation",
        "_headers",
        "_scope_attributes",
        "params",
    )

    def __init__(self, params: Params) -> None:
        self.params = params
        self._attributes: Optional[Dict[str, AttributeValue]] = None
        self._headers: Optional[Dict[Dialect, Mapping[str, str]]] = None
        self._scope_attributes: Optional[Dict[str, Dict[str, AttributeValue]]] = None
        self._children: Optional[Dict[Hashable, Optional[Effective]]] = None
        self._generation = -1

    def child(self, level: Level) -> Effective:
        """``level`` merged over these parameters.

        The result depends only on these parameters, the level's, what of its binding is in
        its key and the values the level fixed at entry (ids; a bound use case's members), so
        from the second time a ``level.key`` (its hashable form) is seen it is cached as a
        template made with placeholders for those values: entering the same scope again costs
        a lookup (plus, for a level that made ids, copying the template with the real ids in),
        and the child's attributes are already built. The first time a key is only noted, and the
        merge done directly: a scope entered once (a distinct user id on every request) pays
        for no template.
        """
        key = level.key
        if key is None:
            return Effective(merge(self.params, level))
        children = self._children
        if children is None or self._generation != _generation:
            children = self._children = {}
            self._generation = _generation
        template = children.get(key)
        if template is None:
            if len(children) >= CHILD_CACHE_SIZE:
                children.clear()
            if key not in children:  # first time: noted, merged directly
                children[key] = None
                if _count_cached() != self._generation:  # notes count against the bound too
                    self._children = None
                return Effective(merge(self.params, level))
            if level.fresh_ids or level.unit:
                template = Effective(
                    merge(
                        self.params,
                        level._replace(
                            fresh_ids={name: _placeholder(name) for name in level.fresh_ids},
                            unit={name: _placeholder(name) for name in level.unit},
                        ),
                    )
                )
            else:
                template = Effective(merge(self.params, level))
            children[key] = template
            if _count_cached() != self._generation:
                self._children = None  # a new generation began: start this cache again
        if level.unit:
            return template._with_ids({**level.fresh_ids, **level.unit}, ids_only=False)
        if not level.fresh_ids:
            return template
        return template._with_ids(level.fresh_ids)

    def _with_ids(self, ids: Mapping[str, Value], ids_only: bool = True) -> Effective:
        """A copy of this template with its placeholders replaced by ``ids`` (the ids, and
        the members a bound use case carries, of one entry)."""
        params = dict(self.params)
        # The template's attributes are copied only when already built (a template made for
        # one entry, e.g. with a distinct user id, is never asked for them), and only when
        # what is filled in is ids (a member may be a dict of attributes).
        attributes = None
        if self._attributes is not None and ids_only:
            attributes = dict(self._attributes)
        for name, value in ids.items():
            if params.get(name) == _placeholder(name):
                params[name] = value
                attribute = ATTRIBUTE_NAMES[name]
                if attributes is not None and attribute in attributes:
                    attributes[attribute] = str(value)
        result = Effective(params)
        result._attributes = attributes
        return result

    def scope_attributes(self, method: str) -> Mapping[str, AttributeValue]:
        """The attributes of a scope span with ``scope_span_attributes="effective"``:
        :meth:`attributes` and ``payi.scope``."""
        cached = self._scope_attributes
        if cached is None:
            cached = self._scope_attributes = {}
        found = cached.get(method)
        if found is None:
            found = cached[method] = {**self.attributes(), SCOPE_ATTRIBUTE: method}
        return found

    def attributes(self) -> Mapping[str, AttributeValue]:
        """``payi.*`` span attributes (values kept as-is, non-ASCII included)."""
        attributes = self._attributes
        if attributes is None:
            attributes = self._attributes = attribute_items(emitted(self.params))
        return attributes

    def headers(self, dialect: Dialect = X_PAYI) -> Mapping[str, str]:
        """The attribution headers in ``dialect`` (``dialect.inject``), made once per dialect."""
        cache = self._headers
        if cache is None:
            cache = self._headers = {}
        headers = cache.get(dialect)
        if headers is None:
            headers = cache[dialect] = dialect.inject(self.params)
        return headers

    def baggage(self) -> Dict[str, str]:
        """``payi.<parameter>`` baggage entries: what is in force, and cleared values as ``""``."""
        entries = {
            BAGGAGE_PREFIX + name: format_value(name, value) for name, value in emitted(self.params)
        }
        for name, value in self.params.items():
            if is_cleared(value) and BAGGAGE_PREFIX + name not in entries:
                entries[BAGGAGE_PREFIX + name] = ""
        return entries

    def public(self) -> Mapping[str, object]:
        """A read-only view for ``get_context()``: lists as fresh lists, dicts as copies."""
        view: Dict[str, object] = {}
        for name in PARAMETERS:
            if name in self.params:
                value = self.params[name]
                if isinstance(value, tuple):
                    view[name] = list(value)
                elif isinstance(value, dict):
                    view[name] = dict(value)
                else:
                    view[name] = value
        return MappingProxyType(view)

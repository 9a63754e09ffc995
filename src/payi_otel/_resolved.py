"""Effective parameters and their three outward forms: span attributes, headers, baggage.

What is "in force" is decided once, here: cleared values, and a use case's (or experience's)
id / version / step / properties with no name in force, are not emitted (docs/parameters.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Dict, Hashable, List, Optional, Sequence, Set, Tuple, Union

from payi_otel._codec import format_value, format_wire_value, parse_value
from payi_otel._merge import Level, merge
from payi_otel._parameters import (
    ATTRIBUTE_NAMES,
    BAGGAGE_PREFIX,
    HEADER_NAMES,
    PAIRS,
    PARAMETERS,
    PAYI_HEADER_NAMES,
    SCOPE_ATTRIBUTE,
    Kind,
    Pair,
    Params,
    Value,
)

__all__ = [
    "DIALECTS",
    "GLOBAL_CACHE_SIZE",
    "MAX_PROPERTY_ATTRIBUTES",
    "PAYI_PROXY",
    "X_PAYI",
    "AttributeValue",
    "Effective",
    "ScopeAttributes",
    "emitted",
    "params_from_attributes",
]

#: Wire dialects: ``x-payi`` (docs/parameters.md, the default) and ``payi-proxy`` (Pay-i's
#: own SDK in proxy mode: its ``xProxy-*`` names, properties as base64 of the JSON, and no
#: header for the parameters it has no name for).
X_PAYI = "x-payi"
PAYI_PROXY = "payi-proxy"
DIALECTS = (X_PAYI, PAYI_PROXY)
_NAMES = {X_PAYI: HEADER_NAMES, PAYI_PROXY: PAYI_HEADER_NAMES}

AttributeValue = Union[str, int, Sequence[str]]

#: Property keys (both dicts together) a span carries as attributes of their own.
MAX_PROPERTY_ATTRIBUTES = 32

_ORDER = {name: i for i, name in enumerate(PARAMETERS)}
_PAIR_OF: Dict[str, Pair] = {f: p for p in PAIRS for f in p.fields}


def _is_cleared(value: Value) -> bool:
    return not value and type(value) is not int  # "", () or {} (0 is a version)


def emitted(params: Params) -> List[Tuple[str, Value]]:
    """The parameters in force, in canonical order, without cleared values or orphans."""
    hidden: Set[str] = set()
    for pair in PAIRS:
        if not params.get(pair.name):
            hidden.update(pair.fields)
    items = [
        (name, value)
        for name, value in params.items()
        if name not in hidden and not _is_cleared(value)
    ]
    items.sort(key=lambda item: _ORDER[item[0]])
    return items


def _attribute_items(
    items: Sequence[Tuple[str, Value]],
) -> Dict[str, AttributeValue]:
    """``payi.*`` span attributes of ``items`` (values kept as-is, non-ASCII included)."""
    attributes: Dict[str, AttributeValue] = {}
    # A span keeps at most 128 attributes (the SDK default) and evicts the oldest - the
    # instrumentation's gen_ai.* first. So property keys are attributes of their own only
    # while few; past MAX_PROPERTY_ATTRIBUTES each dict is one attribute, its header's JSON
    # text (docs/parameters.md, "Span attributes").
    per_key = sum(len(v) for _, v in items if isinstance(v, dict)) <= MAX_PROPERTY_ATTRIBUTES
    for name, value in items:
        key = ATTRIBUTE_NAMES[name]
        if isinstance(value, dict) and not per_key:
            attributes[key] = format_value(name, value)
        elif isinstance(value, dict):
            for prop, item in value.items():
                if item is not None:
                    attributes[f"{key}.{prop}"] = item
        elif isinstance(value, tuple):
            attributes[key] = list(value)
        else:
            attributes[key] = value
    return attributes


def params_from_attributes(attributes: Mapping[str, object]) -> Params:
    """The Pay-i parameters a span's ``payi.*`` attributes carry: the inverse of
    :func:`_attribute_items` (a properties dict per key, or as one JSON attribute)."""
    params: Params = {}
    for name, attribute in ATTRIBUTE_NAMES.items():
        kind = PARAMETERS[name]
        value = attributes.get(attribute)
        if kind is Kind.DICT:
            prefix = attribute + "."
            found = {k[len(prefix):]: str(v) for k, v in attributes.items()
                     if k.startswith(prefix)}
            if isinstance(value, str):  # many keys: the dict as its header's JSON text
                parsed = parse_value(name, value, what=attribute)
                if isinstance(parsed, dict):
                    found.update({k: v for k, v in parsed.items() if v is not None})
            if found:
                params[name] = dict(found)
            continue
        if value is None:
            continue
        if kind is Kind.LIST and isinstance(value, (list, tuple)):
            params[name] = tuple(str(v) for v in value)
        elif kind is Kind.INT and isinstance(value, int):
            params[name] = int(value)
        else:
            params[name] = str(value)
    return params


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
            (pair.name, str(params.get(pair.name) or ""), pair.id, ATTRIBUTE_NAMES[pair.id],
             _attribute_items(fields))
            for pair, fields in by_pair.items()
        )
        static = self._static = _attribute_items(plain)
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
        "_attributes", "_children", "_generation", "_headers", "_scope_attributes", "params",
    )

    def __init__(self, params: Params) -> None:
        self.params = params
        self._attributes: Optional[Dict[str, AttributeValue]] = None
        self._headers: Optional[Dict[str, Mapping[str, str]]] = None
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
                template = Effective(merge(self.params, level._replace(
                    fresh_ids={name: _placeholder(name) for name in level.fresh_ids},
                    unit={name: _placeholder(name) for name in level.unit})))
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
            attributes = self._attributes = _attribute_items(emitted(self.params))
        return attributes

    def headers(self, dialect: str = X_PAYI) -> Mapping[str, str]:
        """The attribution headers in ``dialect`` (:data:`DIALECTS`), values percent-encoded
        where not plain ASCII."""
        cache = self._headers
        if cache is None:
            cache = self._headers = {}
        headers = cache.get(dialect)
        if headers is None:
            names = _NAMES[dialect]
            headers = cache[dialect] = {
                names[name]: format_wire_value(name, value, dialect == PAYI_PROXY)
                for name, value in emitted(self.params)
                if name in names
            }
        return headers

    def baggage(self) -> Dict[str, str]:
        """``payi.<parameter>`` baggage entries: what is in force, and cleared values as ``""``."""
        entries = {
            BAGGAGE_PREFIX + name: format_value(name, value)
            for name, value in emitted(self.params)
        }
        for name, value in self.params.items():
            if _is_cleared(value) and BAGGAGE_PREFIX + name not in entries:
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

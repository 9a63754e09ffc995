"""The one merge engine (docs/precedence.md).

A *level* is one source of parameters (the global context, incoming baggage, one ``@track``
invocation, one ``track_context`` entry, one call's headers). The effective parameters are
the left fold of :func:`merge` over the levels, lowest first. Everything that resolves
parameters - scopes, headers, baggage, the property tests' reference - goes through here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from types import MappingProxyType
from typing import Dict, Hashable, NamedTuple, Optional, Tuple

from payi_otel._parameters import PAIRS, PARAMETERS, Kind, Pair, Params, Value

__all__ = ["Level", "combine", "fold", "merge", "new_id", "new_level"]


_PAIR_FIELDS = frozenset(f for p in PAIRS for f in p.fields)
_CONTAINERS = (Kind.LIST, Kind.DICT)


def new_id() -> str:
    """A random (version 4) UUID as text: what ``new_id()`` gives, at half the cost
    (one is made per entry of a scope naming a new use case; docs/performance.md)."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


_NO_IDS: Mapping[str, str] = MappingProxyType({})


class Level(NamedTuple):
    """One level's own parameters plus the ids it generated once, when it was created.

    ``key`` is the parameters' hashable form when the level comes from a scope that is
    entered again and again (it lets ``Effective.child`` cache the merge); else ``None``.
    (A NamedTuple, not a frozen dataclass: one is made per scope entry, and this is
    several times cheaper to construct; see docs/performance.md.)
    """

    params: Params
    fresh_ids: Mapping[str, str] = _NO_IDS
    key: Optional[Hashable] = None


def new_level(params: Params, key: Optional[Hashable] = None) -> Level:
    """Make a level, generating a UUID4 for each pair that names an entity without an id.

    Call once per scope entry (or per call for headers): the ids are then stable for every
    call in that scope, including retries, and for every re-fold of the same level.
    """
    if _PAIR_FIELDS.isdisjoint(params):  # names no use case or experience: no ids to make
        return Level(params, _NO_IDS, key)
    fresh: Optional[Dict[str, str]] = None
    for pair in PAIRS:
        if params.get(pair.name) and not params.get(pair.id):
            if fresh is None:
                fresh = {}
            fresh[pair.id] = new_id()
    return Level(params, fresh or _NO_IDS, key)


def _merge_value(kind: Kind, lower: Optional[Value], upper: Value, within: bool) -> Value:
    if kind is Kind.LIST:
        assert isinstance(upper, tuple)
        if not upper:
            return ()
        base: Tuple[str, ...] = lower if isinstance(lower, tuple) else ()
        return tuple(dict.fromkeys((*base, *upper)))
    if kind is Kind.DICT:
        assert isinstance(upper, dict)
        if not upper:
            return {}
        merged: Dict[str, Optional[str]] = dict(lower) if isinstance(lower, dict) else {}
        for key, item in upper.items():
            if item is None and not within:  # within one level the removal is kept
                merged.pop(key, None)
            else:
                merged[key] = item
        return merged
    return upper  # strings (including "" = cleared) and ints replace


def _merge_into(
    result: Params, lower: Params, upper: Params, names: Iterable[str], within: bool = False
) -> None:
    for name in names:
        if name in upper:
            kind = PARAMETERS[name]
            if kind is Kind.STRING or kind is Kind.INT:  # replace (the common case, inlined)
                result[name] = upper[name]
            else:
                result[name] = _merge_value(kind, lower.get(name), upper[name], within)


def _merge_pair(
    result: Params, lower: Params, level: Level, pair: Pair, within: bool
) -> None:
    upper = level.params
    up_name = upper.get(pair.name)
    up_id = upper.get(pair.id)
    if up_name is None:
        # Nothing or id only: same entity (lower's name), members merge as usual.
        if up_id is not None:
            result[pair.id] = up_id
        _merge_into(result, lower, upper, pair.members, within)
        return
    if up_name == "" or up_name != lower.get(pair.name):
        # Cleared, or a different entity: nothing of lower's survives.
        for name in pair.fields:
            result.pop(name, None)
        result[pair.name] = up_name
        if up_name and (up_id or not within):
            result[pair.id] = up_id or level.fresh_ids.get(pair.id) or new_id()
        _merge_into(result, {}, upper, pair.members, within)
        return
    # Same name as lower: same entity, lower's id kept unless upper gives one.
    if up_id:
        result[pair.id] = up_id
    elif not within and not lower.get(pair.id):
        result[pair.id] = level.fresh_ids.get(pair.id) or new_id()
    _merge_into(result, lower, upper, pair.members, within)


def merge(lower: Params, level: Level, within: bool = False) -> Params:
    """Merge one level over the parameters below it; returns a new dict.

    ``within`` (only :func:`combine`): ``lower`` is a lower source of the same level, so no
    id is made for a name without one, and a dict key set to None stays (it still removes
    that key from the levels below).
    """
    upper = level.params
    if not upper:
        return lower
    result = dict(lower)
    if _PAIR_FIELDS.isdisjoint(upper):  # the common case (user id, limits, properties)
        _merge_into(result, lower, upper, upper, within)
        return result
    for pair in PAIRS:
        _merge_pair(result, lower, level, pair, within)
    _merge_into(result, lower, upper, [n for n in upper if n not in _PAIR_FIELDS], within)
    return result


def combine(sources: Iterable[Tuple[Params, AbstractSet[str]]]) -> Tuple[Level, ...]:
    """Several sources of ONE level - a client's default headers, then the call's own headers
    (docs/precedence.md, "The per-call level") - as the levels to merge over the scopes,
    lowest first (most often one). Each source comes with the parameters it removes from
    the sources below it (a call's ``Omit()`` on a client default).

    Within the level the upper source merges over the lower by the same rules as one level
    over another (strings and the version replace, lists add, ``""`` clears, dicts update,
    a pair moves as a unit), except that a dict key set to None stays (to remove that key
    from the scopes too), and no id is made there: a name the sources leave
    without an id gets one when the level is merged over the scopes (:func:`new_level`, once
    per call), so a call naming the use case already in force keeps that use case's id. A
    list or dict a lower source clears and an upper one adds to stays cleared below it (one
    level cannot say "clear, then add"): that clearing is the first level returned.
    """
    params: Params = {}
    floor: Params = {}
    for given, removed in sources:
        if removed:
            params = {n: v for n, v in params.items() if n not in removed}
            floor = {n: v for n, v in floor.items() if n not in removed}
        for name in given.keys() & params.keys():
            lower = params[name]
            if not lower and PARAMETERS[name] in _CONTAINERS:
                floor[name] = lower
        params = merge(params, Level(given), within=True)
    level = new_level(params)
    return (Level(floor), level) if floor else (level,)


def fold(base: Params, levels: Iterable[Level]) -> Params:
    """Merge ``levels`` (lowest first) over ``base``."""
    result = base
    for level in levels:
        result = merge(result, level)
    return result

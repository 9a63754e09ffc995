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

from payi_otel._model.parameters import PAIRS, PARAMETERS, Kind, Pair, Params, Value

__all__ = ["Level", "combine", "fold", "merge", "new_id", "new_level"]


_PAIR_FIELDS = frozenset(f for p in PAIRS for f in p.fields)
_CONTAINERS = (Kind.LIST, Kind.DICT)


def new_id() -> str:
    """A random (version 4) UUID as text: what ``new_id()`` gives, at half the cost
    (one is made per entry of a scope naming a new use case; docs/performance.md)."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


_NO_IDS: Mapping[str, str] = MappingProxyType({})
_NO_VALUES: Mapping[str, Value] = MappingProxyType({})


class Level(NamedTuple):
    """One level's own parameters plus what was fixed when it was created.

    ``fresh_ids``: the id of each pair the level names without giving one - made once, or,
    for a scope naming the use case in force where it was entered, that use case's id.
    ``anchors``: ``None`` for a level applied where it is given (global, baggage, a call's
    headers); for a scope, per pair it sets, the use case (experience) name it is bound to:
    the one it names, or - when it gives an id or members but no name - the one in force where
    it was entered (``""``: none). ``unit``: for a scope naming the use case in force where it
    was entered, that use case's members with the scope's own merged over them (what moves
    with it when it is re-applied over another use case). See docs/precedence.md, "A use case
    is bound where it was given".

    ``key`` is the parameters' hashable form (plus what of the binding changes the merge)
    when the level comes from a scope that is entered again and again (it lets
    ``Effective.child`` cache the merge); else ``None``. (A NamedTuple, not a frozen
    dataclass: one is made per scope entry, and this is several times cheaper to construct;
    see docs/performance.md.)
    """

    params: Params
    fresh_ids: Mapping[str, str] = _NO_IDS
    key: Optional[Hashable] = None
    anchors: Optional[Mapping[str, str]] = None
    unit: Mapping[str, Value] = _NO_VALUES


def new_level(
    params: Params, key: Optional[Hashable] = None, entry: Optional[Params] = None
) -> Level:
    """Make a level, generating a UUID4 for each pair that names an entity without an id.

    Call once per scope entry (or per call for headers): the ids are then stable for every
    call in that scope, including retries, and for every re-fold of the same level. A scope
    passes ``entry``, the effective parameters where it is entered: its pairs are then bound
    there (docs/precedence.md, "A use case is bound where it was given").
    """
    if _PAIR_FIELDS.isdisjoint(params):  # names no use case or experience: no ids to make
        return Level(params, _NO_IDS, key)
    if entry is not None:
        return _bound_level(params, key, entry)
    fresh: Optional[Dict[str, str]] = None
    for pair in PAIRS:
        if params.get(pair.name) and not params.get(pair.id):
            if fresh is None:
                fresh = {}
            fresh[pair.id] = new_id()
    return Level(params, fresh or _NO_IDS, key)


#: Per pair: the pair, its fields other than the name (what a level may give without naming
#: it), its members.
_PAIR_PARTS = tuple((p, frozenset((p.id, *p.members)), frozenset(p.members)) for p in PAIRS)


def _bound_level(params: Params, key: Optional[Hashable], entry: Params) -> Level:
    """A scope's level bound where it is entered (docs/precedence.md, "A use case is bound
    where it was given"); only for levels that set a pair field."""
    fresh: Optional[Dict[str, str]] = None
    anchors: Dict[str, str] = {}
    unit: Optional[Dict[str, Value]] = None
    attached: Tuple[str, ...] = ()
    for pair, unnamed, members in _PAIR_PARTS:
        name = params.get(pair.name)
        if name is None:
            if not unnamed.isdisjoint(params):  # attached to the use case in force
                anchor = anchors[pair.name] = str(entry.get(pair.name) or "")
                attached += (anchor,)
            continue
        if not name:
            continue  # clears, whatever it is re-applied over
        anchors[pair.name] = str(name)
        if name != entry.get(pair.name):
            if not params.get(pair.id):
                if fresh is None:
                    fresh = {}
                fresh[pair.id] = new_id()
            continue
        # The use case in force: its id, and its members with this scope's over them.
        if not params.get(pair.id):
            entry_id = entry.get(pair.id)
            if fresh is None:
                fresh = {}
            fresh[pair.id] = entry_id if isinstance(entry_id, str) and entry_id else new_id()
        if not members.isdisjoint(entry):
            if unit is None:
                unit = {}
            for member in pair.members:
                if member in params:
                    unit[member] = _merge_value(
                        PARAMETERS[member], entry.get(member), params[member], False
                    )
                elif member in entry:
                    unit[member] = entry[member]
    if key is not None and (attached or unit):
        # What of the binding changes the merge's shape (the values themselves are filled in
        # per entry, see Effective.child): the names attached to, the members carried.
        key = (key, attached, tuple(unit or ()))
    return Level(params, fresh or _NO_IDS, key, anchors, unit or _NO_VALUES)


def _merge_value(kind: Kind, lower: Optional[Value], upper: Value, within: bool = False) -> Value:
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
    return upper  # strings (including "" = cleared), ints and bools replace


def _merge_into(
    result: Params, lower: Params, upper: Params, names: Iterable[str], within: bool = False
) -> None:
    for name in names:
        if name in upper:
            kind = PARAMETERS[name]
            if kind is not Kind.LIST and kind is not Kind.DICT:  # replace (inlined)
                result[name] = upper[name]
            else:
                result[name] = _merge_value(kind, lower.get(name), upper[name], within)


def _merge_pair(result: Params, lower: Params, level: Level, pair: Pair, within: bool) -> None:
    upper = level.params
    up_name = upper.get(pair.name)
    up_id = upper.get(pair.id)
    anchors = level.anchors
    low_name = lower.get(pair.name)
    if up_name is None:
        # Nothing or id / members only: the lower's entity, members merge as usual - unless
        # the scope attached them to another use case than the lower's (docs/precedence.md).
        if anchors is not None:
            anchor = anchors.get(pair.name)
            if anchor is not None and anchor != (low_name or ""):
                return
        if up_id is not None:
            result[pair.id] = up_id
        _merge_into(result, lower, upper, pair.members, within)
        return
    if up_name == "" or up_name != low_name:
        # Cleared, or a different entity: nothing of lower's survives.
        for name in pair.fields:
            result.pop(name, None)
        result[pair.name] = up_name
        if not up_name:
            _merge_into(result, {}, upper, pair.members, within)
            return
        if up_id or not within:  # within one level no id is made (see combine)
            result[pair.id] = up_id or level.fresh_ids.get(pair.id) or new_id()
        unit = level.unit
        for name in pair.members:  # the bound use case's members, else this level's own
            if name in unit:
                result[name] = unit[name]
            elif name in upper:
                result[name] = _merge_value(PARAMETERS[name], None, upper[name], within)
        return
    # Same name as lower: same entity, lower's id kept unless upper gives one - or, for a
    # scope, the id of the use case it was bound to.
    if up_id:
        result[pair.id] = up_id
    elif anchors is not None or (not within and not lower.get(pair.id)):
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
    level cannot say "clear, then add"): that clearing is the first level returned, and so
    is a use case (experience) id or members a lower source gives without a name when an
    upper one names it (they attach to the one in force for the call, which may be that one).
    """
    params: Params = {}
    floor: Params = {}
    for given, removed in sources:
        if removed:
            params = {n: v for n, v in params.items() if n not in removed}
            floor = {n: v for n, v in floor.items() if n not in removed}
        if not _PAIR_FIELDS.isdisjoint(given):
            for pair, unnamed, _ in _PAIR_PARTS:
                if pair.name in given and pair.name not in params:
                    # A lower source's id / members given without a name attach to the use
                    # case in force for the call, which the upper source may name again: they
                    # go below it, as the floor (docs/precedence.md, "The per-call level").
                    attached = {n: v for n, v in params.items() if n in unnamed}
                    if attached:
                        floor.update(attached)
                        params = {n: v for n, v in params.items() if n not in unnamed}
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

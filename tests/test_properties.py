"""Property tests: the merge engine, real scopes and real SDK calls against a reference model.

The reference model below is written from docs/precedence.md alone: the kind table
(string / int / list / dict: unset inherits, empty clears, a value replaces or adds) and the
name-ID pair table (nothing, name "", same name, another name, id only, name and id), applied
as a left fold over the levels, lowest first, with the levels ordered "by method first,
nesting second" (global < every @track < every track_context < per-call headers).

Generated ids are symbolic in the reference: ``Fresh(level, field)`` means "the UUID4 that
``level`` made once when it was entered". Against the engine they are resolved through
``Level.fresh_ids``; against real scopes (whose levels are internal) they are learned on first
sight and must then be consistent everywhere (same token -> same id, different tokens ->
different ids).

Scopes are bound where they are entered (docs/precedence.md, "A use case is bound where it was
given"): the reference binds each scope's pairs against its own result for the scopes outside
it (``ref_bind``), then folds the bound levels by method.

Where the contract is silent the reference says what it assumes (an empty ``*_id``; the
members given by a level that also clears the name).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import pytest
from fixtures_genai import CHAT, GenAI, payi_headers
from fixtures_otel import Otel, payi_attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan

from payi_otel import PayiInstrumentor, get_context, track, track_context
from payi_otel._model.merge import Level, fold, merge, new_level
from payi_otel._model.parameters import PAIRS as REGISTRY_PAIRS
from payi_otel._model.parameters import REGISTRY

# --------------------------------------------------------------------------------------------
# The reference model (independent of src/)
# --------------------------------------------------------------------------------------------

STR, INT, LIST, DICT, BOOL = "string", "int", "list", "dict", "bool"

# Names, kinds and pairs from the one parameter registry (never a second table of them).
KINDS: dict[str, str] = {p.name: p.kind.value for p in REGISTRY}

# (name, id, members): the members belong to the same entity as the name.
PAIRS: tuple[tuple[str, str, tuple[str, ...]], ...] = tuple(
    (pair.name, pair.id, pair.members) for pair in REGISTRY_PAIRS
)
PAIR_FIELDS = {f for name, id_, members in PAIRS for f in (name, id_, *members)}
GENERIC = [p for p in KINDS if p not in PAIR_FIELDS]

ATTRIBUTES = {p.name: p.attribute for p in REGISTRY}

MISSING: Any = object()


@dataclass(frozen=True)
class Fresh:
    """The UUID4 that level ``level`` generated, once, for ``field``."""

    level: Hashable
    field: str


def ref_kind(kind: str, lower: Any, upper: Any) -> Any:
    """Section 2, kind table, for an upper value that is set (not None)."""
    if kind in (STR, INT, BOOL):
        return upper  # "" replaces too: cleared; a switch's False replaces a True
    if kind == LIST:
        if len(upper) == 0:
            return ()  # cleared
        out: list[str] = [] if lower is MISSING else list(lower)
        for item in upper:
            if item not in out:
                out.append(item)
        return tuple(out)
    assert kind == DICT
    if len(upper) == 0:
        return {}  # cleared
    merged: dict[str, Any] = {} if lower is MISSING else dict(lower)
    for key, value in upper.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


@dataclass(frozen=True)
class Bound:
    """A scope's level, bound where it was entered (docs/precedence.md, second table).

    ``anchors``: per pair the scope sets (clearing aside), the use case name it is bound to -
    the one it names, or the one in force at entry when it gives an id / members but no name
    ("" for none). ``ids``: per pair it names, its id (its own, else the id in force at entry
    when it names the use case in force there, else a fresh one). ``unit``: when it names the
    use case in force at entry, that use case's members with the scope's own merged over them.
    """

    params: Mapping[str, Any]
    anchors: Mapping[str, str]
    ids: Mapping[str, Any]
    unit: Mapping[str, Any]


def ref_bind(entry: Mapping[str, Any], params: Mapping[str, Any], key: Hashable) -> Bound:
    """Bind a scope entered where ``entry`` is in force."""
    anchors: dict[str, str] = {}
    ids: dict[str, Any] = {}
    unit: dict[str, Any] = {}
    for name_f, id_f, members in PAIRS:
        name = params.get(name_f)
        in_force = entry.get(name_f) or ""
        if name is None:
            if id_f in params or any(m in params for m in members):
                anchors[name_f] = in_force  # attached to the use case in force here
        elif name == in_force:
            # The use case in force: its id (unless given), its members with the scope's.
            anchors[name_f] = name
            ids[id_f] = params.get(id_f) or entry.get(id_f) or Fresh(key, id_f)
            if any(m in entry for m in members):
                for m in members:
                    if m in params:
                        unit[m] = ref_kind(KINDS[m], entry.get(m, MISSING), params[m])
                    elif m in entry:
                        unit[m] = entry[m]
        elif name:
            anchors[name_f] = name  # a new use case
            ids[id_f] = params.get(id_f) or Fresh(key, id_f)
    return Bound(params, anchors, ids, unit)


def ref_merge(lower: Mapping[str, Any], level: Any, key: Hashable) -> dict[str, Any]:
    """One level (``level``: a scope's ``Bound``, or the parameters of a level applied where
    it is given - global, headers; known as ``key``) over ``lower``."""
    bound = level if isinstance(level, Bound) else None
    params: Mapping[str, Any] = level.params if bound else level
    out = dict(lower)
    for p in GENERIC:
        if p in params:
            out[p] = ref_kind(KINDS[p], lower.get(p, MISSING), params[p])
    for name_f, id_f, members in PAIRS:
        name = params.get(name_f)
        given_id = params.get(id_f)
        base: Mapping[str, Any]
        if name is None:
            if (
                bound
                and name_f in bound.anchors
                and (bound.anchors[name_f] != (lower.get(name_f) or ""))
            ):
                continue  # given for another use case than the lower's: says nothing here
            # Row "nothing" / row "id only": the lower's entity (an id-only "" follows the
            # string rule: the id is cleared).
            base = lower
            if given_id is not None:
                out[id_f] = given_id
        elif name == "":
            # Row 'name ""': the whole entity is cleared. (Assumption, contract silent: members
            # this same level gives apply over nothing - they are never emitted anyway.)
            for f in (name_f, id_f, *members):
                out.pop(f, None)
            out[name_f] = ""
            base = {}
        elif name == lower.get(name_f):
            # Row "the lower's name": lower's id kept unless this level gives one (an empty id
            # with a name counts as "not given"); a name in force always gets an id. A bound
            # scope: the id of the use case it was bound to.
            base = lower
            if bound:
                out[id_f] = bound.ids[id_f]
            else:
                out[id_f] = given_id or lower.get(id_f) or Fresh(key, id_f)
        else:
            # Row "another name" / "name and id": a new entity; its members start empty - or,
            # for a scope bound to the use case in force where it was entered, are that one's.
            for f in (name_f, id_f, *members):
                out.pop(f, None)
            out[name_f] = name
            out[id_f] = bound.ids[id_f] if bound else given_id or Fresh(key, id_f)
            base = {}
            carried = {m: v for m, v in bound.unit.items() if m in members} if bound else {}
            if carried:
                out.update(carried)
                continue
        for m in members:
            if m in params:
                out[m] = ref_kind(KINDS[m], base.get(m, MISSING), params[m])
    return out


def ref_fold(levels: Sequence[tuple[Hashable, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, level in levels:
        result = ref_merge(result, level, key)
    return result


def _method_order(
    glob: Mapping[str, Any], scopes: Sequence[tuple[Hashable, str, Any]]
) -> list[tuple[Hashable, Any]]:
    tracks = [(k, lv) for k, m, lv in scopes if m == "track"]
    contexts = [(k, lv) for k, m, lv in scopes if m == "track_context"]
    return [("global", glob), *tracks, *contexts]


def by_method(
    glob: Mapping[str, Any],
    stack: Sequence[tuple[str, Mapping[str, Any]]],
    keys: Optional[Sequence[Hashable]] = None,
) -> list[tuple[Hashable, Any]]:
    """Global, then every @track in nesting order, then every track_context in nesting order;
    each scope bound against what the scopes outside it resolve to.

    A scope's key is ``keys[i]``, by default its position in the nesting.
    """
    scopes: list[tuple[Hashable, str, Any]] = []
    for key, (method, params) in zip(keys if keys is not None else range(len(stack)), stack):
        entry = ref_fold(_method_order(glob, scopes))
        scopes.append((key, method, ref_bind(entry, params, key)))
    return _method_order(glob, scopes)


def is_cleared(value: Any) -> bool:
    return value is not False and (value == "" or value == () or value == {})


def ref_emitted(effective: Mapping[str, Any]) -> dict[str, Any]:
    """What is in force: no cleared values, no id/members without a name in force."""
    hidden: set[str] = set()
    for name_f, id_f, members in PAIRS:
        if not effective.get(name_f):
            hidden.update((name_f, id_f, *members))
    return {p: v for p, v in effective.items() if p not in hidden and not is_cleared(v)}


def ref_attributes(effective: Mapping[str, Any]) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    for p, value in ref_emitted(effective).items():
        if KINDS[p] == DICT:
            for key, item in value.items():
                attributes[f"{ATTRIBUTES[p]}.{key}"] = item
        elif KINDS[p] == LIST:
            attributes[ATTRIBUTES[p]] = list(value)
        else:
            attributes[ATTRIBUTES[p]] = value
    return attributes


def ref_headers(effective: Mapping[str, Any]) -> dict[str, Any]:
    """x-payi-* headers (the JSON ones parsed, so key order does not matter)."""
    headers: dict[str, Any] = {}
    for p, value in ref_emitted(effective).items():
        header = "x-payi-" + p.replace("_", "-")
        if KINDS[p] == LIST:
            headers[header] = ",".join(value)
        elif KINDS[p] == DICT:
            headers[header] = dict(value)
        elif KINDS[p] == BOOL:
            headers[header] = "true" if value else "false"
        else:
            headers[header] = value if isinstance(value, Fresh) else str(value)
    return headers


def public(effective: Mapping[str, Any]) -> dict[str, Any]:
    """The reference's get_context(): every parameter present, lists as lists."""
    return {p: list(v) if isinstance(v, tuple) else v for p, v in effective.items()}


# --------------------------------------------------------------------------------------------
# Comparing with generated ids
# --------------------------------------------------------------------------------------------


def is_uuid4(text: object) -> bool:
    try:
        return (
            isinstance(text, str) and uuid.UUID(text).version == 4 and str(uuid.UUID(text)) == text
        )
    except ValueError:
        return False


@dataclass
class Ids:
    """Learns which real UUID stands for each ``Fresh`` token, and checks it never changes
    and never stands for two tokens."""

    seen: dict[Fresh, str] = field(default_factory=dict)
    owners: dict[str, Fresh] = field(default_factory=dict)

    def resolve(self, token: Fresh, actual: object) -> object:
        if not is_uuid4(actual):
            return token  # shows up as a mismatch
        assert isinstance(actual, str)
        known = self.seen.setdefault(token, actual)
        owner = self.owners.setdefault(actual, token)
        assert known == actual, f"{token} was {known}, now {actual}"
        assert owner == token, f"{actual} stands for both {owner} and {token}"
        return actual

    def expect(self, expected: Mapping[str, Any], actual: Mapping[str, Any]) -> dict[str, Any]:
        """``expected`` with its tokens replaced by the ids seen in ``actual``."""
        return {
            k: self.resolve(v, actual.get(k)) if isinstance(v, Fresh) else v
            for k, v in expected.items()
        }


def resolve_with_levels(value: Any, levels: Mapping[Hashable, Level]) -> Any:
    if isinstance(value, Fresh):
        return levels[value.level].fresh_ids[value.field]
    return value


# --------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------

NAMES = st.sampled_from(["a", "b", "a", "b", ""])  # "" = clear; few names: same-name is common
IDS = st.sampled_from(["id1", "id2", "id1", "id2", ""])
STRINGS = st.sampled_from(["x", "y", ""])
VERSIONS = st.integers(min_value=0, max_value=3)
SWITCHES = st.booleans()
LISTS = st.lists(st.sampled_from(["l1", "l2", "l3", "l4"]), max_size=3).map(tuple)
DICTS = st.dictionaries(
    st.sampled_from(["k1", "k2", "k3"]),
    st.one_of(st.none(), st.sampled_from(["v1", "v2"])),
    max_size=3,
)

STRATEGY: dict[str, st.SearchStrategy[Any]] = {}
for _p, _kind in KINDS.items():
    if _p.endswith("_name") and _p in PAIR_FIELDS:
        STRATEGY[_p] = NAMES
    elif _p.endswith("_id") and _p in PAIR_FIELDS:
        STRATEGY[_p] = IDS
    else:
        STRATEGY[_p] = {STR: STRINGS, INT: VERSIONS, LIST: LISTS, DICT: DICTS, BOOL: SWITCHES}[
            _kind
        ]

# Every parameter optional (unset), else empty or a value.
PARAMS = st.fixed_dictionaries({}, optional=STRATEGY)
# Scopes and the global level: sparser, so that chains of scopes also inherit a lot.
# The parameters whose merge rules differ most are drawn more often.
_WEIGHTED = [
    *KINDS,
    "use_case_name",
    "use_case_name",
    "use_case_id",
    "experience_name",
    "limit_ids",
    "limit_ids",
    "request_tags",
    "user_id",
    "use_case_properties",
    "request_properties",
]
SPARSE = st.sets(st.sampled_from(_WEIGHTED), max_size=4).flatmap(
    lambda keys: st.fixed_dictionaries({k: STRATEGY[k] for k in sorted(keys)})
)
METHODS = st.sampled_from(["track", "track_context"])
STACKS = st.lists(st.tuples(METHODS, SPARSE), max_size=5)


def _vary(p: str, value: Any) -> st.SearchStrategy[Any]:
    """Another value of the same shape (a dict with the same keys, a list as long)."""
    if isinstance(value, dict) and value:
        return st.fixed_dictionaries({k: st.sampled_from(["v1", "v2", None]) for k in value})
    if isinstance(value, tuple) and value:
        return st.lists(
            st.sampled_from(["l1", "l2", "l3", "l4"]), min_size=len(value), max_size=len(value)
        ).map(tuple)
    return STRATEGY[p]


def _variations(base: dict[str, Any]) -> st.SearchStrategy[list[tuple[str, dict[str, Any]]]]:
    """Scopes that differ from ``base`` in one parameter, most often only in its value."""
    keys = sorted(base) or sorted(KINDS)
    one = st.one_of(
        st.sampled_from(keys).flatmap(
            lambda k: _vary(k, base.get(k)).map(lambda v: {**base, k: v})
        ),
        st.sampled_from(_WEIGHTED).flatmap(lambda k: STRATEGY[k].map(lambda v: {**base, k: v})),
    )
    return st.lists(st.tuples(METHODS, one), min_size=2, max_size=6)


SIBLINGS = SPARSE.flatmap(_variations)

FAST = settings(max_examples=200, deadline=None, database=None)
SCOPES = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# --------------------------------------------------------------------------------------------
# The engine against the reference
# --------------------------------------------------------------------------------------------


def expected_fresh_fields(params: Mapping[str, Any]) -> set[str]:
    return {id_f for name_f, id_f, _ in PAIRS if params.get(name_f) and not params.get(id_f)}


@FAST
@given(st.lists(PARAMS, max_size=6))
def test_engine_fold_equals_reference(stack: list[dict[str, Any]]) -> None:
    levels = {i: new_level(params) for i, params in enumerate(stack)}
    for i, params in enumerate(stack):
        assert set(levels[i].fresh_ids) == expected_fresh_fields(params)
        assert all(is_uuid4(v) for v in levels[i].fresh_ids.values())
    all_fresh = [v for level in levels.values() for v in level.fresh_ids.values()]
    assert len(set(all_fresh)) == len(all_fresh)

    engine = fold({}, list(levels.values()))
    reference = ref_fold(list(enumerate(stack)))
    expected = {k: resolve_with_levels(v, levels) for k, v in reference.items()}
    assert engine == expected
    # Re-folding the same levels gives the same ids (ids are made once per level).
    assert fold({}, list(levels.values())) == engine


@FAST
@given(PARAMS, st.lists(st.tuples(METHODS, PARAMS), max_size=5), PARAMS)
def test_engine_by_method_stack_with_headers_equals_reference(
    glob: dict[str, Any], stack: list[tuple[str, dict[str, Any]]], headers: dict[str, Any]
) -> None:
    """global < @track (nesting order) < track_context (nesting order) < headers; each
    scope bound where it is entered (the engine's own result for the scopes outside it)."""
    ordered = [*by_method(glob, stack), ("headers", headers)]
    levels: dict[Hashable, Level] = {"global": new_level(glob)}

    def engine_order(upto: int) -> list[Level]:
        scopes = [(m, levels[i]) for i, (m, _) in enumerate(stack[:upto])]
        return [
            levels["global"],
            *(lv for m, lv in scopes if m == "track"),
            *(lv for m, lv in scopes if m == "track_context"),
        ]

    for i, (_method, params) in enumerate(stack):
        levels[i] = new_level(params, entry=fold({}, engine_order(i)))
    levels["headers"] = new_level(headers)
    engine = fold({}, [*engine_order(len(stack)), levels["headers"]])
    expected = {k: resolve_with_levels(v, levels) for k, v in ref_fold(ordered).items()}
    assert engine == expected


@FAST
@given(st.lists(PARAMS, min_size=1, max_size=5), PARAMS)
def test_unset_inherits_and_merge_never_mutates(
    stack: list[dict[str, Any]], upper: dict[str, Any]
) -> None:
    lower = fold({}, [new_level(p) for p in stack])
    snapshot = json.dumps(lower, sort_keys=True, default=list)
    upper_snapshot = json.dumps(upper, sort_keys=True, default=list)
    result = merge(lower, new_level(upper))
    for p in GENERIC:
        if p not in upper:
            assert result.get(p, MISSING) == lower.get(p, MISSING), p
    for name_f, _id_f, members in PAIRS:
        if name_f not in upper:  # the same entity: untouched members are inherited
            for m in members:
                if m not in upper:
                    assert result.get(m, MISSING) == lower.get(m, MISSING), m
    assert merge(lower, new_level({})) == lower
    assert json.dumps(lower, sort_keys=True, default=list) == snapshot
    assert json.dumps(upper, sort_keys=True, default=list) == upper_snapshot


# Values tagged with the level that gave them, to see where a result came from.
def _tagged_level(k: int) -> st.SearchStrategy[dict[str, Any]]:
    own = st.sampled_from([f"L{k}a", f"L{k}b", "shared1", "shared2"])
    strategies: dict[str, st.SearchStrategy[Any]] = {}
    for p, kind in KINDS.items():
        if p in ("use_case_name", "experience_name"):
            strategies[p] = st.sampled_from(["a", "b", ""])
        elif kind == STR:
            strategies[p] = st.sampled_from([f"L{k}", ""])
        elif kind == INT:
            strategies[p] = st.just(k)
        elif kind == BOOL:
            strategies[p] = st.just(k % 2 == 0)
        elif kind == LIST:
            strategies[p] = st.lists(own, max_size=3).map(tuple)
        else:
            strategies[p] = st.dictionaries(
                st.sampled_from(["k1", "k2", "k3"]),
                st.one_of(st.none(), st.just(f"L{k}")),
                max_size=3,
            )
    return st.fixed_dictionaries({}, optional=strategies)


TAGGED_STACKS = st.integers(min_value=1, max_value=6).flatmap(
    lambda n: st.tuples(*(_tagged_level(k) for k in range(n)))
)


def _from_levels(value: Any, stack: Sequence[Mapping[str, Any]], since: int, p: str) -> bool:
    """Whether ``value`` (of parameter ``p``) is made only of what levels >= ``since`` gave."""
    given_values = [stack[j][p] for j in range(since, len(stack)) if p in stack[j]]
    kind = KINDS[p]
    if kind == LIST:
        return all(any(item in g for g in given_values) for item in value)
    if kind == DICT:
        return all(any(g.get(k) == v for g in given_values) for k, v in value.items())
    return value in given_values


@settings(max_examples=150, deadline=None, database=None)
@given(TAGGED_STACKS)
def test_lists_have_no_duplicates_and_cleared_values_stay_cleared(
    stack: tuple[dict[str, Any], ...],
) -> None:
    levels = [new_level(p) for p in stack]
    result = fold({}, levels)
    for p in ("limit_ids", "request_tags"):
        if p not in result:
            continue
        items = result[p]
        assert len(items) == len(set(items)), (p, items)
        # First-seen order over every level since the last one that cleared the list.
        last_clear = max((j for j, s in enumerate(stack) if s.get(p) == ()), default=-1)
        seen = [i for s in stack[last_clear + 1 :] for i in s.get(p, ())]
        assert list(items) == list(dict.fromkeys(seen)), (p, stack)
    for k, params in enumerate(stack):
        for p in GENERIC:
            if p in params and is_cleared(params[p]) and p in result:
                # Nothing from below level k comes back.
                assert _from_levels(result[p], stack, k, p), (p, k, result[p])
        for name_f, id_f, members in PAIRS:
            if params.get(name_f) != "":
                continue
            for m in members:
                if m in result:
                    assert _from_levels(result[m], stack, k, m), (m, k, result[m])
            if id_f in result:
                ids_above = {s[id_f] for s in stack[k:] if id_f in s}
                ids_above |= {lv.fresh_ids.get(id_f) for lv in levels[k + 1 :]}
                assert result[id_f] in ids_above, (id_f, k, result[id_f])


# --------------------------------------------------------------------------------------------
# Real scopes against the reference
# --------------------------------------------------------------------------------------------


@dataclass
class Chain:
    """A random chain of nested scopes, checked against the reference at every depth.

    Every scope is entered twice in a row over the same parent (the same ``track_context``
    object, the same decorated function): a first "probe" entry, checked and left, then the
    "main" entry that the deeper scopes nest in. The second entry over the same parent is
    where a cached merge would show if it were wrong, and a name-only scope must get a new id.
    """

    glob: dict[str, Any]
    stack: list[tuple[str, dict[str, Any]]]
    ids: Ids = field(default_factory=Ids)
    checks: int = 0

    def expected(self, depth: int, probe: bool = False) -> dict[str, Any]:
        # A level's key: (position, which entry); the innermost may be the probe entry.
        keys = [(i, "probe" if probe and i == depth - 1 else "main") for i in range(depth)]
        return ref_fold(by_method(self.glob, self.stack[:depth], keys))

    def check(self, depth: int, probe: bool = False) -> None:
        actual = dict(get_context())
        again = dict(get_context())
        assert actual == again  # stable: the same ids on every read in one scope
        expected = self.ids.expect(public(self.expected(depth, probe)), actual)
        assert actual == expected, (depth, probe, self.stack[:depth])
        self.checks += 1

    def span_name(self, depth: int, qualname: str) -> str:
        method, params = self.stack[depth]
        if params.get("use_case_step"):
            return str(params["use_case_step"])
        if method == "track":
            return qualname
        return str(params.get("use_case_name") or "payi.track_context")

    def check_spans(self, otel: Otel, qualname: str) -> None:
        spans = [
            s
            for s in otel.spans()
            if s.instrumentation_scope and s.instrumentation_scope.name == "payi_otel"
        ]
        assert len(spans) == 2 * len(self.stack)  # every scope's span ended, none left over
        children: dict[Optional[int], list[ReadableSpan]] = {}
        for span in spans:
            children.setdefault(span.parent.span_id if span.parent else None, []).append(span)
        parent_id = None
        for depth, (method, _params) in enumerate(self.stack):
            probe, main = sorted(children.pop(parent_id), key=lambda s: s.start_time or 0)
            for span, is_probe in ((probe, True), (main, False)):
                assert span.name == self.span_name(depth, qualname)
                assert span.attributes is not None
                assert span.attributes["payi.scope"] == method
                attrs = payi_attrs(span)
                expected = ref_attributes(self.expected(depth + 1, is_probe))
                assert attrs == self.ids.expect(expected, attrs), (depth, is_probe)
            assert probe.context is not None and main.context is not None
            assert probe.context.span_id not in children  # nothing nested in the probe
            parent_id = main.context.span_id
        assert children == {}


def run_sync(chain: Chain) -> str:
    qualname = ""

    def enter(depth: int) -> None:
        nonlocal qualname
        chain.check(depth)
        if depth == len(chain.stack):
            return
        method, params = chain.stack[depth]
        if method == "track":

            @track(**params)
            def step(main: bool) -> None:
                if main:
                    enter(depth + 1)
                chain.check(depth + 1, probe=not main)  # a child that ended left this one

            qualname = step.__qualname__
            step(False)
            chain.check(depth)
            step(True)
        else:
            scope = track_context(**params)
            with scope:
                chain.check(depth + 1, probe=True)
            chain.check(depth)
            with scope:
                enter(depth + 1)
                chain.check(depth + 1)
        chain.check(depth)

    enter(0)
    return qualname


async def run_async(chain: Chain) -> str:
    qualname = ""

    async def enter(depth: int) -> None:
        nonlocal qualname
        chain.check(depth)
        if depth == len(chain.stack):
            await asyncio.sleep(0)
            chain.check(depth)
            return
        method, params = chain.stack[depth]
        if method == "track":

            @track(**params)
            async def step(main: bool) -> None:
                await asyncio.sleep(0)
                if main:
                    await enter(depth + 1)
                chain.check(depth + 1, probe=not main)

            qualname = step.__qualname__
            await step(False)
            chain.check(depth)
            await step(True)
        else:
            scope = track_context(**params)
            async with scope:
                await asyncio.sleep(0)
                chain.check(depth + 1, probe=True)
            chain.check(depth)
            async with scope:
                await asyncio.sleep(0)
                await enter(depth + 1)
                chain.check(depth + 1)
        chain.check(depth)

    await enter(0)
    return qualname


@pytest.fixture
def global_level(
    instrument: Callable[..., PayiInstrumentor], otel: Otel
) -> Callable[[dict[str, Any]], PayiInstrumentor]:
    """Per example: instrument with ``config`` as the global level (no env, no default name)."""
    instrument(caller_file="<test>")  # env cleared; uninstrumented at the end of the test
    instrumentor = PayiInstrumentor()

    def set_global(config: dict[str, Any]) -> PayiInstrumentor:
        instrumentor.uninstrument()
        # Scope spans carrying the whole effective set, so check_spans can compare each one
        # with the reference fold (the default, "own", is tested in test_spanless.py).
        instrumentor.instrument(
            config=config,
            tracer_provider=otel.provider,
            caller_file="<test>",
            scope_span_attributes="effective",
        )
        return instrumentor

    return set_global


@SCOPES
@given(glob=SPARSE, stack=STACKS)
def test_real_scopes_sync_equal_reference(
    global_level: Callable[[dict[str, Any]], Any],
    otel: Otel,
    glob: dict[str, Any],
    stack: list[tuple[str, dict[str, Any]]],
) -> None:
    global_level(glob)
    otel.exporter.clear()
    chain = Chain(glob, stack)
    qualname = run_sync(chain)
    assert chain.checks == 5 * len(stack) + 1
    chain.check_spans(otel, qualname)


@SCOPES
@given(glob=SPARSE, stack=STACKS)
def test_real_scopes_async_equal_reference(
    global_level: Callable[[dict[str, Any]], Any],
    otel: Otel,
    glob: dict[str, Any],
    stack: list[tuple[str, dict[str, Any]]],
) -> None:
    global_level(glob)
    otel.exporter.clear()
    chain = Chain(glob, stack)
    qualname = asyncio.run(run_async(chain))
    chain.check_spans(otel, qualname)


@SCOPES
@given(
    glob=SPARSE,
    outer=st.lists(st.tuples(METHODS, SPARSE), max_size=2),
    siblings=SIBLINGS,
)
def test_sibling_scopes_over_one_parent_equal_reference(
    global_level: Callable[[dict[str, Any]], Any],
    glob: dict[str, Any],
    outer: list[tuple[str, dict[str, Any]]],
    siblings: list[tuple[str, dict[str, Any]]],
) -> None:
    """Different scopes entered one after another over the same parent (where a cache of
    merged parameters keyed by the scope's parameters would mix them up)."""
    global_level(glob)
    ids = Ids()

    def check(j: int) -> None:
        stack = [*outer, siblings[j]]
        keys = [*range(len(outer)), ("sibling", j)]
        expected = public(ref_fold(by_method(glob, stack, keys)))
        actual = dict(get_context())
        assert actual == ids.expect(expected, actual), (j, siblings[j])

    def inner() -> None:
        for j, (method, params) in enumerate(siblings):
            if method == "track":
                track(**params)(lambda j=j: check(j))()
            else:
                with track_context(**params):
                    check(j)

    def enter(depth: int) -> None:
        if depth == len(outer):
            inner()
            return
        method, params = outer[depth]
        if method == "track":
            track(**params)(lambda: enter(depth + 1))()
        else:
            with track_context(**params):
                enter(depth + 1)

    enter(0)


@SCOPES
@given(stack=STACKS, data=st.data())
def test_scope_reentered_gets_a_new_id_each_time_and_keeps_it_inside(
    global_level: Callable[[dict[str, Any]], Any],
    stack: list[tuple[str, dict[str, Any]]],
    data: st.DataObject,
) -> None:
    """A name-only scope entered again is a new scope (new id); inside, the id is stable."""
    global_level({})
    name = data.draw(st.sampled_from(["inner", "other"]), label="name")  # never an outer name
    ids: list[object] = []
    scope = track_context(use_case_name=name)

    def inner() -> None:
        for _ in range(2):
            with scope:
                first = get_context()["use_case_id"]
                assert get_context()["use_case_name"] == name
                assert get_context()["use_case_id"] == first
                ids.append(first)

    def enter(depth: int) -> None:
        if depth == len(stack):
            inner()
            return
        method, params = stack[depth]
        if method == "track":
            track(**params)(lambda: enter(depth + 1))()
        else:
            with track_context(**params):
                enter(depth + 1)

    enter(0)
    assert len(ids) == 2 and all(is_uuid4(i) for i in ids)
    assert ids[0] != ids[1]


# --------------------------------------------------------------------------------------------
# Real SDK calls: per-call headers over real scopes, checked on the wire
# --------------------------------------------------------------------------------------------


def header_text(p: str, value: Any, spaced: bool) -> str:
    """The wire format (docs/parameters.md) for a per-call header value."""
    kind = KINDS[p]
    if kind == LIST:
        return (", " if spaced else ",").join(value)
    if kind == DICT:
        return json.dumps(value) if value else ""
    return str(value)


def header_name(p: str, style: int) -> str:
    name = "x-payi-" + p.replace("_", "-")
    return [name, name.upper(), name.title()][style]


def normal_sent(headers: Mapping[str, str]) -> dict[str, Any]:
    return {k: json.loads(v) if k.endswith("-properties") else v for k, v in headers.items()}


@SCOPES
@given(
    stack=st.lists(st.tuples(METHODS, SPARSE), max_size=3),
    headers=SPARSE,
    styles=st.lists(st.integers(0, 2), min_size=15, max_size=15),
    spaced=st.booleans(),
)
def test_real_calls_send_what_the_reference_resolves(
    genai: GenAI,
    stack: list[tuple[str, dict[str, Any]]],
    headers: dict[str, Any],
    styles: list[int],
    spaced: bool,
) -> None:
    ids = Ids()
    extra = {
        header_name(p, styles[i]): header_text(p, v, spaced)
        for i, (p, v) in enumerate(sorted(headers.items()))
    }

    def call_and_check() -> None:
        scope = ref_fold(by_method({}, stack))
        ids.expect(public(scope), dict(get_context()))  # learn the scopes' ids
        genai.openai.chat.completions.create(**CHAT, extra_headers=extra)
        genai.openai.chat.completions.create(**CHAT)
        genai.openai.chat.completions.create(**CHAT)
        with_headers, plain, plain_again = (
            normal_sent(payi_headers(r)) for r in genai.server.requests[-3:]
        )
        per_call = ref_fold([*by_method({}, stack), ("headers", headers)])
        assert with_headers == ids.expect(ref_headers(per_call), with_headers)
        assert plain == ids.expect(ref_headers(scope), plain)
        assert plain_again == plain  # the scope's id is stable across calls
        assert dict(get_context()) == ids.expect(public(scope), dict(get_context()))

    def enter(depth: int) -> None:
        if depth == len(stack):
            call_and_check()
            return
        method, params = stack[depth]
        if method == "track":
            track(**params)(lambda: enter(depth + 1))()
        else:
            with track_context(**params):
                enter(depth + 1)

    enter(0)

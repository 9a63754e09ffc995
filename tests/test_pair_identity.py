"""A use case (experience) is a (name, id) pair bound where it was given: "method first"
re-applies the track_context scopes over the @track scopes entered inside them, and that must
move each pair as a unit (docs/precedence.md, "A use case is bound where it was given").

Checked in ``get_context()``, on the wire (a real OpenAI and a real Anthropic call in the
innermost scope, both dialects; the payi-proxy dialect has no experience header) and on the
GenAI spans (with and without the GenAI instrumentations), sync and async.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

import anthropic
import openai
import pytest
from fixtures_genai import CHAT, MESSAGE, PROXY_CARRIES, GenAI, attribution_headers
from fixtures_otel import payi_attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payi_otel import get_context, track, track_context
from payi_otel._model.parameters import PAIRS, REGISTRY

BY_NAME = {p.name: p for p in REGISTRY}
PAIR = {pair.name.rsplit("_", 1)[0]: pair for pair in PAIRS}  # "use_case", "experience"

#: In force outside the scopes under test, for both pairs: use case / experience "home", id
#: "home-id" - set by an outermost @track (the lowest scope level: as a global level would).
HOME_ID = "home-id"
HOME = {name: value for pair in PAIRS for name, value in ((pair.name, "home"), (pair.id, HOME_ID))}

# Expected-id tokens: the block's own id (seen inside it), and a fresh UUID4 never seen before.
BLOCK = "<the block's id>"
FRESH = "<a fresh id>"


def is_uuid4(text: object) -> bool:
    try:
        return isinstance(text, str) and uuid.UUID(text).version == 4
    except ValueError:
        return False


# --------------------------------------------------------------------------------------------
# Running one nesting, sync or async, with GenAI calls in the block and in the innermost @track
# --------------------------------------------------------------------------------------------


@dataclass
class Scope:
    method: str  # "track" | "track_context"
    params: dict[str, Any]
    probe: Optional[str] = None  # "block" / "inner": observed right after entry
    call: bool = True  # and a GenAI call of each SDK made there


@dataclass
class Seen:
    """What ``get_context()`` showed where each probe ran, and the calls made there."""

    contexts: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)  # the probe of each call, in order


def run_sync(surface: GenAI, scopes: list[Scope], headers: Mapping[str, str], seen: Seen) -> None:
    def probe(name: str) -> None:
        extra = dict(headers) if name == "inner" else {}
        surface.openai.chat.completions.create(**CHAT, extra_headers=extra)
        surface.anthropic.messages.create(**MESSAGE, extra_headers=extra)
        seen.calls += [name, name]

    def enter(depth: int) -> None:
        if depth == len(scopes):
            return
        scope = scopes[depth]

        def body() -> None:
            if scope.probe:
                seen.contexts[scope.probe] = dict(get_context())
            if scope.probe and scope.call:
                probe(scope.probe)
            enter(depth + 1)

        if scope.method == "track":
            track(**scope.params)(body)()
        else:
            with track_context(**scope.params):
                body()

    enter(0)


async def run_async(
    surface: GenAI, scopes: list[Scope], headers: Mapping[str, str], seen: Seen
) -> None:
    async def probe(name: str) -> None:
        extra = dict(headers) if name == "inner" else {}
        await surface.async_openai.chat.completions.create(**CHAT, extra_headers=extra)
        await surface.async_anthropic.messages.create(**MESSAGE, extra_headers=extra)
        seen.calls += [name, name]

    async def enter(depth: int) -> None:
        if depth == len(scopes):
            return
        scope = scopes[depth]

        async def body() -> None:
            if scope.probe:
                seen.contexts[scope.probe] = dict(get_context())
            if scope.probe and scope.call:
                await probe(scope.probe)
            await enter(depth + 1)

        if scope.method == "track":
            await track(**scope.params)(body)()
        else:
            async with track_context(**scope.params):
                await body()

    await enter(0)


async def run(
    mode: str, surface: GenAI, scopes: list[Scope], headers: Optional[Mapping[str, str]] = None
) -> tuple[Seen, list[dict[str, Any]]]:
    """Run the nesting; returns what was seen and, per call, the pair fields it carried on the
    wire (as x-payi-* headers) and on its GenAI span (``None`` without GenAI spans)."""
    seen = Seen()
    before = len(surface.server.requests)
    spans_before = len(surface.otel.genai_spans())
    if mode == "sync":
        run_sync(surface, scopes, headers or {}, seen)
    else:
        await run_async(surface, scopes, headers or {}, seen)
    requests = [
        r
        for r in surface.server.requests[before:]
        if r.headers.get("x-stainless-retry-count", "0") == "0"
    ]
    assert len(requests) == len(seen.calls)
    spans = sorted(surface.otel.genai_spans(), key=lambda s: s.start_time or 0)[spans_before:]
    if surface.genai_spans:
        assert len(spans) == len(seen.calls)
    return seen, [
        {
            "wire": attribution_headers(r, surface.dialect),
            "span": payi_attrs(spans[i]) if surface.genai_spans else None,
        }
        for i, r in enumerate(requests)
    ]


# --------------------------------------------------------------------------------------------
# Checking one pair where a probe ran
# --------------------------------------------------------------------------------------------


@dataclass
class Ids:
    """Resolves expected-id tokens: literal ids, the block's id, fresh ids (UUID4s that no
    other token stands for)."""

    block: Optional[str] = None
    used: set[str] = field(default_factory=lambda: {HOME_ID})

    def check(self, token: str, actual: object, where: str) -> None:
        if token == FRESH:
            assert is_uuid4(actual) and actual not in self.used and actual != self.block, (
                where,
                actual,
                self.used,
                self.block,
            )
            return
        expected = self.block if token == BLOCK else token
        assert actual == expected, (where, actual, expected)


def check_pair(
    pair_key: str,
    seen: Seen,
    calls: list[dict[str, Any]],
    surface: GenAI,
    probe: str,
    name: Optional[str],
    id_token: Optional[str],
    members: Mapping[str, Any],
    ids: Ids,
) -> None:
    """The pair (and its members) in force where ``probe`` ran: in get_context(), then the
    same on the wire of both calls made there and on their GenAI spans."""
    pair = PAIR[pair_key]
    ctx = seen.contexts[probe]
    if name is None:  # no use case in force: nothing of it is sent
        assert not ctx.get(pair.name), (probe, ctx)
    else:
        assert ctx.get(pair.name) == name, (probe, ctx)
        assert id_token is not None
        ids.check(id_token, ctx.get(pair.id), f"{probe} get_context")
        for member in pair.members:
            assert ctx.get(member) == members.get(member), (probe, member, ctx)
    for call, made_in in zip(calls, seen.calls):
        if made_in != probe:
            continue
        wire, span = call["wire"], call["span"]
        for f in pair.fields:
            param = BY_NAME[f]
            value = None if name is None else ctx.get(f)
            if value in ("", {}):
                value = None  # cleared: not sent
            sent = wire.get(param.header)
            if value is None or not (surface.dialect == "x-payi" or param.header in PROXY_CARRIES):
                assert sent is None, (probe, param.header, wire)
            elif isinstance(value, dict):
                assert json.loads(sent) == value, (probe, param.header, wire)
            else:
                assert sent == str(value), (probe, param.header, wire)
            if span is None:
                continue
            keyed = {
                k[len(param.attribute) + 1 :]: v
                for k, v in span.items()
                if k.startswith(param.attribute + ".")
            }
            if isinstance(value, dict):
                assert keyed == value, (probe, span)
            else:
                assert span.get(param.attribute) == value and not keyed, (probe, f, span)


# --------------------------------------------------------------------------------------------
# 1. The two reproductions
# --------------------------------------------------------------------------------------------

MODES = ["sync", "async"]


@pytest.mark.parametrize("pair_key", sorted(PAIR))
@pytest.mark.parametrize("mode", MODES)
async def test_a_track_naming_the_blocks_use_case_inside_the_block_keeps_the_blocks_id(
    surface: GenAI, mode: str, pair_key: str
) -> None:
    """``@track(use_case_name="flow")`` called in ``track_context(use_case_name="flow")``: one
    use case instance, the block's - not a second id for the @track's calls."""
    pair = PAIR[pair_key]
    seen, calls = await run(
        mode,
        surface,
        [
            Scope("track", HOME),
            Scope("track_context", {pair.name: "flow"}, probe="block"),
            Scope("track", {pair.name: "flow"}, probe="inner"),
        ],
    )
    ids = Ids()
    ids.check(FRESH, seen.contexts["block"][pair.id], "block")
    ids.block = seen.contexts["block"][pair.id]
    for probe in ("block", "inner"):
        check_pair(pair_key, seen, calls, surface, probe, "flow", BLOCK, {}, ids)


@pytest.mark.parametrize("pair_key", sorted(PAIR))
@pytest.mark.parametrize("mode", MODES)
async def test_an_id_given_in_a_block_never_names_a_differently_named_track_inside_it(
    surface: GenAI, mode: str, pair_key: str
) -> None:
    """``track_context(use_case_id="x")`` is the id of the use case in force there; a
    ``@track(use_case_name="billing")`` inside it is another use case, with its own fresh id."""
    pair = PAIR[pair_key]
    seen, calls = await run(
        mode,
        surface,
        [
            Scope("track", HOME),
            Scope("track_context", {pair.id: "x"}, probe="block"),
            Scope("track", {pair.name: "billing"}, probe="inner"),
        ],
    )
    ids = Ids(used={HOME_ID, "x"})
    check_pair(pair_key, seen, calls, surface, "block", "home", "x", {}, ids)
    check_pair(pair_key, seen, calls, surface, "inner", "billing", FRESH, {}, ids)


# --------------------------------------------------------------------------------------------
# 2. Every pair rule under re-application, both pairs, several nestings, sync and async
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """The block (a track_context) sets ``block``; a @track inside it sets ``track``; the
    @track's calls carry ``name`` with ``id_token`` and ``members``. Keys ``name`` / ``id`` stand
    for the pair's fields; ``outer`` is a @track around everything."""

    rule: str
    block: dict[str, Any]
    track: dict[str, Any]
    name: Optional[str]
    id_token: Optional[str]
    members: dict[str, Any] = field(default_factory=dict)
    outer: dict[str, Any] = field(default_factory=dict)
    use_case_only: bool = False

    def params(self, pair_key: str, given: Mapping[str, Any]) -> dict[str, Any]:
        pair = PAIR[pair_key]
        alias = {"name": pair.name, "id": pair.id}
        return {alias.get(k, k): v for k, v in given.items()}


ROWS = [
    # nothing: the @track's own pair, as it would be anywhere.
    Row("nothing", {}, {"name": "inner"}, "inner", FRESH),
    Row("nothing", {}, {"name": "home"}, "home", HOME_ID),
    # name "": the block says "no use case here", the @track's included.
    Row("name-cleared", {"name": ""}, {"name": "inner"}, None, None),
    # the name in force: bound to the use case in force (its id), which wins over the @track.
    Row("same-name", {"name": "home"}, {"name": "inner"}, "home", HOME_ID),
    Row("same-name", {"name": "home"}, {"name": "home", "id": "tid"}, "home", HOME_ID),
    # another name: a new use case, the block's; a @track naming it is that same instance.
    Row("another-name", {"name": "flow"}, {"name": "flow"}, "flow", BLOCK),
    Row("another-name", {"name": "flow"}, {"name": "inner"}, "flow", BLOCK),
    Row("another-name", {"name": "flow"}, {"name": ""}, "flow", BLOCK),
    Row("another-name", {"name": "flow"}, {"id": "y"}, "flow", BLOCK),
    # id only: attached to the use case in force where it was given, and to no other.
    Row("id-only", {"id": "x"}, {"name": "inner"}, "inner", FRESH),
    Row("id-only", {"id": "x"}, {"name": "inner", "id": "tid"}, "inner", "tid"),
    Row("id-only", {"id": "x"}, {"name": "home"}, "home", "x"),
    Row("id-only", {"id": "x"}, {}, "home", "x"),
    Row("id-only", {"id": "x"}, {"id": "y"}, "home", "x"),
    # name and id: the block's pair, whole.
    Row("name-and-id", {"name": "flow", "id": "fid"}, {"name": "flow"}, "flow", "fid"),
    Row("name-and-id", {"name": "flow", "id": "fid"}, {"name": "flow", "id": "tid"}, "flow", "fid"),
    Row("name-and-id", {"name": "flow", "id": "fid"}, {"name": "inner"}, "flow", "fid"),
    # version, step, properties belong to the use case they were given for.
    Row(
        "members-only",
        {"use_case_version": 7},
        {"name": "inner", "use_case_version": 2},
        "inner",
        FRESH,
        {"use_case_version": 2},
        use_case_only=True,
    ),
    Row(
        "members-only",
        {"use_case_version": 7},
        {"name": "home"},
        "home",
        HOME_ID,
        {"use_case_version": 7},
        use_case_only=True,
    ),
    Row(
        "members-only",
        {"use_case_step": "s"},
        {"name": "inner", "use_case_step": "ts"},
        "inner",
        FRESH,
        {"use_case_step": "ts"},
        use_case_only=True,
    ),
    Row(
        "members-only",
        {"use_case_properties": {"k": "b"}},
        {"name": "inner", "use_case_properties": {"t": "1"}},
        "inner",
        FRESH,
        {"use_case_properties": {"t": "1"}},
        use_case_only=True,
    ),
    Row(
        "members-with-name",
        {"name": "flow", "use_case_step": "s"},
        {"name": "flow", "use_case_step": "ts", "use_case_version": 4},
        "flow",
        BLOCK,
        {"use_case_step": "s", "use_case_version": 4},
        use_case_only=True,
    ),
    Row(
        "members-with-name",
        {"name": "flow", "use_case_step": "s"},
        {"name": "other"},
        "flow",
        BLOCK,
        {"use_case_step": "s"},
        use_case_only=True,
    ),
    # the use case in force moves with its members: an outer @track's version comes along.
    Row(
        "same-name-carries-members",
        {"name": "home"},
        {"name": "inner"},
        "home",
        HOME_ID,
        {"use_case_version": 3},
        outer={"use_case_version": 3},
        use_case_only=True,
    ),
]

CASES = [pytest.param(row, id=f"{row.rule}-{i}") for i, row in enumerate(ROWS)]


#: Where the block and the @track sit: the block's own probe on "C", the @track's on "T";
#: "t" / "c" are scopes that set no pair field (a user id) between them.
NESTINGS = ["C>T", "t>C>T", "C>t>c>T", "c>C>t>T"]


def nesting(order: str, row: Row, pair_key: str) -> list[Scope]:
    scopes = [Scope("track", HOME)]
    if row.outer:
        scopes.append(Scope("track", row.params(pair_key, row.outer)))
    for n, step in enumerate(order.split(">")):
        if step == "C":  # the block's own calls: see the reproductions above
            scopes.append(
                Scope("track_context", row.params(pair_key, row.block), "block", call=False)
            )
        elif step == "T":
            scopes.append(Scope("track", row.params(pair_key, row.track), "inner"))
        else:
            scopes.append(Scope("track" if step == "t" else "track_context", {"user_id": f"u{n}"}))
    return scopes


@pytest.mark.parametrize("row", CASES)
async def test_every_pair_rule_holds_when_the_block_is_reapplied_over_a_track_inside_it(
    surface: GenAI, row: Row
) -> None:
    """For the use case and the experience, each nesting, sync (``with``, a plain @track
    function) and async (``async with``, an ``async def`` @track function)."""
    pair_keys = ["use_case"] if row.use_case_only else sorted(PAIR)
    for pair_key, order, mode in ((p, o, m) for p in pair_keys for o in NESTINGS for m in MODES):
        seen, calls = await run(mode, surface, nesting(order, row, pair_key))
        ids = Ids(used={HOME_ID, "x", "y", "fid", "tid"})
        block_id = seen.contexts["block"].get(PAIR[pair_key].id)
        ids.block = block_id if isinstance(block_id, str) else None
        check_pair(
            pair_key, seen, calls, surface, "inner", row.name, row.id_token, row.members, ids
        )


# --------------------------------------------------------------------------------------------
# 3. The per-call headers on top (the highest level: applied where they are given)
# --------------------------------------------------------------------------------------------


def header(pair_key: str, which: str) -> str:
    return BY_NAME[getattr(PAIR[pair_key], which)].header


HEADER_ROWS = [
    # a header naming the use case in force for the call keeps its id (the block's)
    (
        "names-the-pair-in-force",
        {"name": "flow"},
        {"name": "inner"},
        {"name": "flow"},
        "flow",
        BLOCK,
    ),
    (
        "names-the-pair-in-force",
        {"name": "flow"},
        {"name": "flow"},
        {"name": "flow"},
        "flow",
        BLOCK,
    ),
    # an id-only header attaches to the name in force for that call
    ("id-only", {"id": "x"}, {"name": "inner"}, {"id": "h"}, "inner", "h"),
    ("id-only", {"name": "flow"}, {"name": "inner"}, {"id": "h"}, "flow", "h"),
    # another name: a new pair for the call
    ("another-name", {"name": "flow"}, {"name": "flow"}, {"name": "other"}, "other", FRESH),
    ("name-and-id", {"id": "x"}, {"name": "inner"}, {"name": "other", "id": "h"}, "other", "h"),
    ("name-cleared", {"name": "flow"}, {"name": "flow"}, {"name": ""}, None, None),
]


@pytest.mark.parametrize(
    ("rule", "block", "track_params", "headers", "name", "id_token"),
    HEADER_ROWS,
    ids=[f"{r[0]}-{i}" for i, r in enumerate(HEADER_ROWS)],
)
async def test_a_call_header_resolves_its_pair_against_the_pair_in_force_for_that_call(
    surface: GenAI,
    rule: str,
    block: dict[str, Any],
    track_params: dict[str, Any],
    headers: dict[str, str],
    name: Optional[str],
    id_token: Optional[str],
) -> None:
    """The header level over a block re-applied over a @track inside it, for the use case
    and the experience, sync and async."""
    for pair_key in sorted(PAIR):
        for mode in MODES:
            await check_header_row(
                surface, mode, pair_key, Row(rule, block, track_params, name, id_token), headers
            )


async def check_header_row(
    surface: GenAI, mode: str, pair_key: str, row: Row, headers: dict[str, str]
) -> None:
    name, id_token = row.name, row.id_token
    extra = {header(pair_key, k): v for k, v in headers.items()}
    scopes = nesting("C>t>T", row, pair_key)
    seen, calls = await run(mode, surface, scopes, extra)
    pair = PAIR[pair_key]
    ids = Ids(used={HOME_ID, "x", "h"})
    block_id = seen.contexts["block"].get(pair.id)
    ids.block = block_id if isinstance(block_id, str) else None
    inner_calls = [c for c, made_in in zip(calls, seen.calls) if made_in == "inner"]
    carried = surface.dialect == "x-payi" or header(pair_key, "name") in PROXY_CARRIES
    for call in inner_calls:
        wire, span = call["wire"], call["span"]
        sent = {"name": wire.get(header(pair_key, "name")), "id": wire.get(header(pair_key, "id"))}
        if span is not None:
            assert span.get(BY_NAME[pair.name].attribute) == name
            if name is None:
                assert BY_NAME[pair.id].attribute not in span
            else:
                assert id_token is not None
                ids.check(id_token, span.get(BY_NAME[pair.id].attribute), "span")
        if not carried:
            assert sent == {"name": None, "id": None}
            continue
        assert sent["name"] == name, wire
        if name is None:
            assert sent["id"] is None
        else:
            assert id_token is not None
            ids.check(id_token, sent["id"], "wire")
    if id_token == FRESH and carried:  # once per call: the two calls are two pairs
        ids_sent = {c["wire"][header(pair_key, "id")] for c in inner_calls}
        assert len(ids_sent) == 2


# --------------------------------------------------------------------------------------------
# 4. Random nestings: no pair is ever made of two use cases, and a @track naming the use case
#    in force keeps its id
# --------------------------------------------------------------------------------------------

NAMES = st.sampled_from(["home", "a", "b", ""])


def _level(k: int) -> st.SearchStrategy[dict[str, Any]]:
    """A scope's pair fields, each pair in one of the table's shapes (nothing, a name - the
    one in force outside, another, "" -, an id only, a name and an id). Explicit ids are the
    level's own (``<pair>-id<k>``), so an id seen with two names can only be the engine's."""

    def shapes(pair_key: str) -> st.SearchStrategy[dict[str, Any]]:
        pair, own_id = PAIR[pair_key], f"{pair_key}-id{k}"
        return st.sampled_from(
            [
                {},
                {pair.name: "home"},
                {pair.name: "a"},
                {pair.name: "b"},
                {pair.name: ""},
                {pair.id: own_id},
                {pair.id: own_id},
                {pair.name: "a", pair.id: own_id},
            ]
        )

    members = st.fixed_dictionaries(
        {}, optional={"use_case_version": st.just(k), "use_case_step": st.just(f"s{k}")}
    )
    return st.tuples(*(shapes(p) for p in sorted(PAIR)), members).map(
        lambda parts: {f: v for part in parts for f, v in part.items()}
    )


STACKS = st.integers(min_value=2, max_value=5).flatmap(
    lambda n: st.tuples(
        *(st.tuples(st.sampled_from(["track", "track_context"]), _level(k)) for k in range(n))
    )
)
HEADERS = st.fixed_dictionaries(
    {},
    optional={
        f"{pair_key}.{which}": (NAMES if which == "name" else st.just(f"{pair_key}-hid"))
        for pair_key in PAIR
        for which in ("name", "id")
    },
)


@settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(stack=STACKS, headers=HEADERS, use_async=st.booleans())
def test_every_pair_on_the_wire_was_made_by_one_level_for_random_nestings(
    genai: GenAI,
    stack: tuple[tuple[str, dict[str, Any]], ...],
    headers: dict[str, str],
    use_async: bool,
) -> None:
    observed: list[dict[str, Any]] = []  # get_context() before and inside every scope
    before_and_inside: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]] = []
    extra = {header(k.split(".")[0], k.split(".")[1]): v for k, v in headers.items()}
    stack = (("track", HOME), *stack)

    def note(method: str, params: dict[str, Any], before: dict[str, Any]) -> None:
        inside = dict(get_context())
        observed.extend((before, inside))
        before_and_inside.append((method, params, before, inside))

    seen = Seen()
    start = len(genai.server.requests)

    def enter_sync(depth: int) -> None:
        if depth == len(stack):
            seen.contexts["inner"] = dict(get_context())
            genai.openai.chat.completions.create(**CHAT, extra_headers=extra)
            genai.anthropic.messages.create(**MESSAGE, extra_headers=extra)
            return
        method, params = stack[depth]
        before = dict(get_context())

        def body() -> None:
            note(method, params, before)
            enter_sync(depth + 1)

        if method == "track":
            track(**params)(body)()
        else:
            with track_context(**params):
                body()

    async def enter_async(depth: int) -> None:
        if depth == len(stack):
            seen.contexts["inner"] = dict(get_context())
            # Clients of this example's event loop (asyncio.run makes one per example).
            async with openai.AsyncOpenAI(
                base_url=genai.server.openai_base_url, api_key="t", max_retries=0
            ) as oa:
                await oa.chat.completions.create(**CHAT, extra_headers=extra)
            async with anthropic.AsyncAnthropic(
                base_url=genai.server.anthropic_base_url, api_key="t", max_retries=0
            ) as an:
                await an.messages.create(**MESSAGE, extra_headers=extra)
            return
        method, params = stack[depth]
        before = dict(get_context())

        async def body() -> None:
            note(method, params, before)
            await enter_async(depth + 1)

        if method == "track":
            await track(**params)(body)()
        else:
            async with track_context(**params):
                await body()

    if use_async:
        asyncio.run(enter_async(0))
    else:
        enter_sync(0)
    wires = [attribution_headers(r, "x-payi") for r in genai.server.requests[start:]]
    assert len(wires) == 2

    for pair_key, pair in PAIR.items():
        name_h, id_h = BY_NAME[pair.name].header, BY_NAME[pair.id].header
        # Every (name, id) seen - in get_context() and on the wire - names one use case per id.
        names_of: dict[str, set[str]] = {}
        pairs = [(c.get(pair.name), c.get(pair.id)) for c in observed]
        pairs += [(w.get(name_h), w.get(id_h)) for w in wires]
        for name, id_ in pairs:
            if name and id_:
                names_of.setdefault(id_, set()).add(name)
        mixed = {i: n for i, n in names_of.items() if len(n) > 1}
        assert not mixed, (pair_key, mixed, stack, headers)
        # A @track naming the use case in force where it is entered keeps its id.
        for method, params, before, inside in before_and_inside:
            if (
                method == "track"
                and params.get(pair.name)
                and params[pair.name] == before.get(pair.name)
                and pair.id not in params
                and before.get(pair.id)
            ):
                assert inside.get(pair.name) == before[pair.name]
                assert inside.get(pair.id) == before[pair.id], (pair_key, stack)
        # The wire carries the innermost scope's pair where no header changes it.
        inner = seen.contexts["inner"]
        if f"{pair_key}.name" not in headers and f"{pair_key}.id" not in headers:
            for w in wires:
                assert w.get(name_h) == (inner.get(pair.name) or None)
                assert w.get(id_h) == (inner.get(pair.id) if inner.get(pair.name) else None)


# --------------------------------------------------------------------------------------------
# 5. The merge cache: one block, entered again and again, bound where it is entered each time
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pair_key", sorted(PAIR))
def test_one_block_entered_again_under_other_use_cases_is_bound_where_it_is_entered_each_time(
    genai: GenAI, pair_key: str
) -> None:
    """The same ``track_context(use_case_id="x")`` object, re-applied over the same @track
    (so over the same cached parameters), once entered inside it and once around it: where
    it was entered decides which use case ``x`` belongs to, on every entry (the first entry of
    a scope is merged directly, later ones come from the cache)."""
    pair = PAIR[pair_key]
    block = track_context(**{pair.id: "x"})
    seen: list[tuple[str, Any, Any]] = []

    @track(**{pair.name: "billing", pair.id: "bid"})
    def billing(inside: bool) -> None:
        if inside:
            with block:
                seen.append(
                    ("block inside billing", get_context()[pair.name], get_context()[pair.id])
                )
                genai.openai.chat.completions.create(**CHAT)
        else:
            seen.append(("billing inside block", get_context()[pair.name], get_context()[pair.id]))
            genai.openai.chat.completions.create(**CHAT)

    @track(**HOME)
    def app() -> None:
        for _ in range(3):
            billing(inside=True)
            with block:
                billing(inside=False)

    app()
    assert (
        seen
        == [("block inside billing", "billing", "x"), ("billing inside block", "billing", "bid")]
        * 3
    )
    sent = [
        (h.get(BY_NAME[pair.name].header), h.get(BY_NAME[pair.id].header)) for h in genai.sent()
    ]
    assert sent == [("billing", "x"), ("billing", "bid")] * 3

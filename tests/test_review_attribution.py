"""Adversarial review of issue 16: the per-call header level and the use case / experience
binding, attacked where a call could be billed to the wrong user or use case, or to nobody."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Hashable, Iterator
from typing import Any, Callable

import pytest
from fixtures_genai import CHAT, GenAI
from fixtures_otel import Otel
from hypothesis import assume, given
from hypothesis import strategies as st
from opentelemetry import baggage as otel_baggage
from opentelemetry import context as otel_context
from test_call_headers import SDK_MODES, Clients, send
from test_properties import (
    FAST,
    METHODS,
    PARAMS,
    SCOPES,
    SPARSE,
    STRATEGY,
    Ids,
    by_method,
    public,
    ref_fold,
)

from payi_otel import PayiInstrumentor, _settings, get_context, track, track_context
from payi_otel import _context as payi_state
from payi_otel._model.codec import format_value
from payi_otel._model.merge import combine, fold, new_level
from payi_otel._model.parameters import BAGGAGE_PREFIX, PAIRS, Pair

# A program: nested entries of scopes drawn from a small pool, so the same scope (the same
# track_context object, the same decorated function) is entered again under other
# surroundings - where the merge cache, keyed by the scope's parameters, is hit.
PROGRAMS = st.recursive(
    st.just(()),
    lambda inner: st.lists(st.tuples(st.integers(0, 3), inner), max_size=3).map(tuple),
    max_leaves=12,
)


def _uncached() -> dict[str, Any]:
    """The effective parameters in force, folded from the scope state's levels without the
    merge cache (every level merged directly)."""
    state = payi_state._state(None)
    glob = _settings.current.effective.params
    if state is None:
        return dict(glob)
    levels = [
        *([state.baggage] if state.baggage is not None else []),
        *state.tracks,
        *state.contexts,
    ]
    return fold(dict(glob), levels)


@pytest.fixture
def reinstrument(
    instrument: Callable[..., PayiInstrumentor], otel: Otel
) -> Callable[..., PayiInstrumentor]:
    """Per example: instrumented again with these options (no env, no default name)."""
    instrument(caller_file="<test>")  # env cleared; uninstrumented at the end of the test
    instrumentor = PayiInstrumentor()

    def again(**kwargs: Any) -> PayiInstrumentor:
        instrumentor.uninstrument()
        instrumentor.instrument(tracer_provider=otel.provider, caller_file="<test>", **kwargs)
        return instrumentor

    return again


#: Incoming baggage: what another process's scopes send (a name always with its id).
BAGGAGE = st.fixed_dictionaries(
    {},
    optional={
        "use_case_name": st.sampled_from(["a", "b"]),
        "use_case_step": st.sampled_from(["x", ""]),
        "experience_name": st.just("a"),
        "user_id": st.sampled_from(["x", ""]),
        "use_case_version": st.integers(0, 3),
    },
).map(lambda bag: {**bag, **{pair.id: "bag_" + pair.name for pair in PAIRS if bag.get(pair.name)}})


@SCOPES
@given(
    glob=SPARSE,
    bag=BAGGAGE,
    pool=st.lists(st.tuples(METHODS, SPARSE), min_size=4, max_size=4),
    program=PROGRAMS,
    mode=st.sampled_from(["spans", "spanless", "baggage", "generators"]),
)
def test_a_scope_entered_again_under_other_surroundings_resolves_as_if_never_cached(
    reinstrument: Callable[..., Any],
    glob: dict[str, Any],
    bag: dict[str, Any],
    pool: list[tuple[str, dict[str, Any]]],
    program: Any,
    mode: str,
) -> None:
    """The merge cache (``Effective.child``, keyed by a scope's parameters plus what of its
    binding changes the merge) hit by the same ``track_context`` object or decorated
    function entered under other use cases, ids, members and methods, nested at random: what
    is in force equals the levels folded without the cache, and the reference model of
    docs/precedence.md (each scope bound where it is entered) - in spanless mode, over an
    incoming baggage level, and for ``@track`` generators too."""
    reinstrument(config=glob, scope_spans=mode != "spanless", propagate_baggage=mode == "baggage")
    token = None
    if mode == "baggage":
        ctx = otel_context.get_current()
        for name, value in bag.items():
            ctx = otel_baggage.set_baggage(BAGGAGE_PREFIX + name, format_value(name, value), ctx)
        token = otel_context.attach(ctx)
        glob = ref_fold([("global", glob), ("baggage", bag)])
    ids = Ids()
    counter = itertools.count()
    contexts = [track_context(**params) for _, params in pool]
    stack: list[tuple[str, dict[str, Any]]] = []
    keys: list[Hashable] = []

    def check() -> None:
        actual = dict(get_context())
        state = payi_state._state(None)
        if state is not None:
            assert state.effective.params == _uncached()
        expected = public(ref_fold(by_method(glob, stack, keys)))
        assert actual == ids.expect(expected, actual), (stack, actual)

    def run(prog: Any) -> None:
        check()
        for index, sub in prog:
            method, params = pool[index]
            stack.append((method, params))
            keys.append(next(counter))
            if method == "track" and mode == "generators":

                @track(**params)
                def body(sub: Any = sub) -> Iterator[None]:
                    run(sub)
                    yield
                    check()

                assert list(body()) == [None]
            elif method == "track":
                track(**params)(lambda sub=sub: run(sub))()
            else:
                with contexts[index]:
                    run(sub)
            stack.pop()
            keys.pop()
            check()

    try:
        run(program)
    finally:
        if token is not None:
            otel_context.detach(token)


async def test_a_client_default_use_case_id_stays_with_a_call_naming_the_use_case_in_force(
    surface: GenAI,
) -> None:
    """A client's default use case id, step or version without a name attaches to the use
    case in force for the call (docs/precedence.md, "The per-call level"), so a call that
    names that same use case is still that one instance: it was sent with the block's own
    id instead (one block's calls split over two ids) and lost the client's step."""
    for sdk, is_async in SDK_MODES:
        clients = Clients(surface, sdk, is_async)
        client = clients.make(
            {"x-payi-use-case-id": "client_id", "X-Payi-Use-Case-Step": "client_step"}
        )
        with track_context(use_case_name="flow", use_case_version=3):
            await send(client, sdk)
            await send(client, sdk, extra_headers={"x-payi-use-case-name": "flow"})
            await send(
                client,
                sdk,
                extra_headers={"xProxy-UseCase-Name": "flow", "x-payi-use-case-version": "4"},
            )
            await send(client, sdk, extra_headers={"x-payi-use-case-name": "other"})
        await clients.close()
        plain, named, named_v4, other = surface.attribution()[-4:]
        expected = {
            "x-payi-use-case-name": "flow",
            "x-payi-use-case-id": "client_id",
            "x-payi-use-case-version": "3",
            "x-payi-use-case-step": "client_step",
        }
        assert plain == named == expected, (sdk, is_async)
        assert named_v4 == {**expected, "x-payi-use-case-version": "4"}, (sdk, is_async)
        # Another use case: the client's id and step were flow's, never other's.
        assert other["x-payi-use-case-name"] == "other"
        assert uuid.UUID(other["x-payi-use-case-id"]).version == 4
        assert set(other) == {"x-payi-use-case-name", "x-payi-use-case-id"}


@FAST
@given(st.lists(PARAMS, max_size=3), PARAMS, st.sampled_from(PAIRS), st.data())
def test_a_call_naming_the_use_case_its_client_leaves_in_force_changes_nothing(
    stack: list[dict[str, Any]],
    client: dict[str, Any],
    pair: Pair,
    data: st.DataObject,
) -> None:
    """Whatever the scopes and the client's default headers, a call whose own header names
    the use case (experience) that would be in force for it anyway sends what a call
    without that header sends: the same instance (its id), version, step and properties."""
    scopes = fold({}, [new_level(p) for p in stack])
    without = fold(scopes, combine([(client, frozenset())]))
    in_force = without.get(pair.name)
    # (An id cleared by "" is left out: a name given again there gets an id, by design.)
    assume(in_force and without.get(pair.id) != "")
    extra = data.draw(
        st.fixed_dictionaries({}, optional={m: STRATEGY[m] for m in pair.members}),
        label="members the call gives too",
    )
    call = {pair.name: in_force, **extra}
    named = fold(scopes, combine([(client, frozenset()), (call, frozenset())]))
    alone = fold(without, [new_level(extra)]) if extra else without
    given_ids = {scopes.get(pair.id), client.get(pair.id)}

    def shown(params: dict[str, Any]) -> dict[str, Any]:
        """The pair's fields; an id made for this call (once per call) as "fresh"."""
        fields = {k: v for k, v in params.items() if k in pair.fields}
        if pair.id in fields and fields[pair.id] not in given_ids:
            fields[pair.id] = "fresh"
        return fields

    assert shown(named) == shown(alone)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_a_scope_span_never_pairs_its_use_case_name_with_another_use_cases_id(
    genai: GenAI,
    is_async: bool,
) -> None:
    """A scope span shows what the scope set, plus the id of its use case (experience) when
    that is the one in force. A ``@track`` naming ``flow`` inside a block naming ``other``
    (the block wins: the calls go to ``other``) showed ``flow`` with ``other``'s id - a
    pair that never existed. Every span's (name, id) pairs must agree with the calls'."""

    @track(use_case_name="flow", use_case_version=2, experience_name="e_track")
    def inner() -> None:
        genai.openai.chat.completions.create(**CHAT)

    @track(use_case_name="flow", experience_name="e_track")
    async def inner_async() -> None:
        await genai.async_openai.chat.completions.create(**CHAT)

    with track_context(use_case_name="other", experience_name="e_block"):
        await inner_async() if is_async else inner()
        other_id = get_context()["use_case_id"]
    with track_context(use_case_name="flow"):  # the same name in force: its id is shown
        await inner_async() if is_async else inner()
        flow_id = get_context()["use_case_id"]
    names_of: dict[tuple[str, object], set[object]] = {}
    for span in genai.otel.spans():
        attributes = span.attributes or {}
        for role in ("use_case", "experience"):
            found = attributes.get(f"payi.{role}.id")
            if found is not None:
                names_of.setdefault((role, found), set()).add(attributes.get(f"payi.{role}.name"))
    assert names_of[("use_case", other_id)] == {"other"}
    assert names_of[("use_case", flow_id)] == {"flow"}
    assert all(len(names) == 1 for names in names_of.values()), names_of

"""Adversarial review of issue 16: the per-call header level and the use case / experience
binding, attacked where a call could be billed to the wrong user or use case, or to nobody."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Hashable
from typing import Any, Callable

from fixtures_genai import GenAI
from hypothesis import given
from hypothesis import strategies as st
from test_call_headers import SDK_MODES, Clients, send
from test_properties import (
    METHODS,
    SCOPES,
    SPARSE,
    Ids,
    by_method,
    global_level,
    public,
    ref_fold,
)

from payi_otel import _context as payi_state
from payi_otel import get_context, track, track_context
from payi_otel._merge import fold

__all__ = ["global_level"]  # the fixture, shared with test_properties

# A program: nested entries of scopes drawn from a small pool, so the same scope (the same
# track_context object, the same decorated function) is entered again under other
# surroundings - where the merge cache, keyed by the scope's parameters, is hit.
PROGRAMS = st.recursive(
    st.just(()),
    lambda inner: st.lists(st.tuples(st.integers(0, 3), inner), max_size=3).map(tuple),
    max_leaves=12,
)


def _uncached(params: dict[str, Any]) -> dict[str, Any]:
    """The effective parameters in force, folded from the scope state's levels without the
    merge cache (every level merged directly)."""
    state = payi_state._state(None)
    glob = payi_state.settings().effective.params
    if state is None:
        return dict(glob)
    levels = [*([state.baggage] if state.baggage else []), *state.tracks, *state.contexts]
    return fold(dict(glob), levels)


@SCOPES
@given(
    glob=SPARSE,
    pool=st.lists(st.tuples(METHODS, SPARSE), min_size=4, max_size=4),
    program=PROGRAMS,
)
def test_a_scope_entered_again_under_other_surroundings_resolves_as_if_never_cached(
    global_level: Callable[[dict[str, Any]], Any], glob: dict[str, Any],
    pool: list[tuple[str, dict[str, Any]]], program: Any,
) -> None:
    global_level(glob)
    ids = Ids()
    counter = itertools.count()
    contexts = [track_context(**params) for _, params in pool]
    stack: list[tuple[str, dict[str, Any]]] = []
    keys: list[Hashable] = []

    def check() -> None:
        actual = dict(get_context())
        state = payi_state._state(None)
        if state is not None:
            assert state.effective.params == _uncached({})
        expected = public(ref_fold(by_method(glob, stack, keys)))
        assert actual == ids.expect(expected, actual), (stack, actual)

    def run(prog: Any) -> None:
        check()
        for index, sub in prog:
            method, params = pool[index]
            stack.append((method, params))
            keys.append(next(counter))
            if method == "track":
                track(**params)(lambda sub=sub: run(sub))()
            else:
                with contexts[index]:
                    run(sub)
            stack.pop()
            keys.pop()
            check()

    run(program)


async def test_a_client_default_use_case_id_stays_with_a_call_naming_the_use_case_in_force(
    surface: GenAI,
) -> None:
    """A client's default use case id, step or version without a name attaches to the use
    case in force for the call (docs/precedence.md, "The per-call level"), so a call that
    names that same use case is still that one instance: it was sent with the block's own
    id instead (one block's calls split over two ids) and lost the client's step."""
    for sdk, is_async in SDK_MODES:
        clients = Clients(surface, sdk, is_async)
        client = clients.make({"x-payi-use-case-id": "client_id",
                               "X-Payi-Use-Case-Step": "client_step"})
        with track_context(use_case_name="flow", use_case_version=3):
            await send(client, sdk)
            await send(client, sdk, extra_headers={"x-payi-use-case-name": "flow"})
            await send(client, sdk, extra_headers={"xProxy-UseCase-Name": "flow",
                                                   "x-payi-use-case-version": "4"})
            await send(client, sdk, extra_headers={"x-payi-use-case-name": "other"})
        await clients.close()
        plain, named, named_v4, other = surface.attribution()[-4:]
        expected = {"x-payi-use-case-name": "flow", "x-payi-use-case-id": "client_id",
                    "x-payi-use-case-version": "3", "x-payi-use-case-step": "client_step"}
        assert plain == named == expected, (sdk, is_async)
        assert named_v4 == {**expected, "x-payi-use-case-version": "4"}, (sdk, is_async)
        # Another use case: the client's id and step were flow's, never other's.
        assert other["x-payi-use-case-name"] == "other"
        assert uuid.UUID(other["x-payi-use-case-id"]).version == 4
        assert set(other) == {"x-payi-use-case-name", "x-payi-use-case-id"}

"""Scope lifecycle: attribution never depends on tracing working, scopes left out of order
never come back, and @track follows what a call returns (awaitable, generator), not how the
function was declared."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
from collections.abc import Iterator
from typing import Any

import pytest
from fixtures_genai import CHAT, MESSAGE, GenAI
from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

from payi_otel import PayiInstrumentor, get_context, track, track_context


class _RaisingProcessor(SpanProcessor):
    def on_start(self, span: Any, parent_context: Any = None) -> None:
        raise RuntimeError("tracing is broken")


def test_a_scope_holds_when_its_span_cannot_start(genai: GenAI) -> None:
    genai.check_invariant = False
    broken = TracerProvider()
    broken.add_span_processor(_RaisingProcessor())
    payi = PayiInstrumentor()
    payi.uninstrument()
    payi.instrument(tracer_provider=broken, caller_file="<test>", genai_spans=False)
    try:
        with track_context(user_id="still_billed", limit_ids=["l"]):
            assert get_context()["user_id"] == "still_billed"
            genai.openai.chat.completions.create(**CHAT)

        @track(account_name="acme")
        def tracked() -> None:
            genai.openai.chat.completions.create(**CHAT)

        tracked()
    finally:
        payi.uninstrument()
        genai.reinstrument()
    assert genai.sent() == [
        {"x-payi-user-id": "still_billed", "x-payi-limit-ids": "l"},
        {"x-payi-account-name": "acme"},
    ]


def _holding(user: str) -> Iterator[object]:
    with track_context(user_id=user):
        yield get_context().get("user_id")
        yield get_context().get("user_id")


def test_generators_holding_scopes_advanced_in_turn_never_bring_an_exited_scope_back(
    no_global: Any,
) -> None:
    a, b = _holding("a"), _holding("b")
    assert next(a) == "a"
    assert next(b) == "b"
    a.close()  # a's scope ends while b's is the current one
    assert get_context().get("user_id") == "b"
    b.close()
    assert "user_id" not in get_context()
    span = trace.get_current_span()
    assert not span.get_span_context().is_valid or span.is_recording()


def test_exits_called_by_hand_out_of_order(no_global: Any) -> None:
    first, second = track_context(user_id="1"), track_context(account_name="2")
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert dict(get_context()) == {"account_name": "2"}
    second.__exit__(None, None, None)
    assert dict(get_context()) == {}
    span = trace.get_current_span()
    assert not span.get_span_context().is_valid or span.is_recording()


class _Agent:
    async def __call__(self) -> object:
        await asyncio.sleep(0)
        return get_context().get("user_id")


def _plain_decorator(fn: Any) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:  # no functools.wraps: not "async def" any more
        return fn(*args, **kwargs)

    return call


async def test_track_on_callables_that_return_awaitables(no_global: Any) -> None:
    agent = track(user_id="agent")(_Agent())

    @track(user_id="wrapped")
    @_plain_decorator
    async def wrapped() -> object:
        await asyncio.sleep(0)
        return get_context().get("user_id")

    assert await agent() == "agent"
    assert await wrapped() == "wrapped"
    assert "user_id" not in get_context()


@pytest.mark.parametrize("made", ["in another scope", "outside any scope"])
async def test_an_awaitable_tracked_runs_where_it_is_awaited(no_global: Any, made: str) -> None:
    """As a coroutine function's: an awaitable made by a tracked call (an object with ``async
    def __call__``, an async function behind a plain decorator) runs over the scopes of where
    it is awaited - not over those of where it was made, closed by then, nor outside every
    scope when made outside and gathered inside one (a review: billed to A, or to nobody)."""

    class Agent:
        async def __call__(self) -> object:
            await asyncio.sleep(0)
            return dict(get_context())

    @_plain_decorator
    async def helper() -> object:
        await asyncio.sleep(0)
        return dict(get_context())

    @track(use_case_step="native")
    async def native() -> object:
        await asyncio.sleep(0)
        return dict(get_context())

    agent = track(use_case_step="agent")(Agent())
    wrapped = track(use_case_step="helper")(helper)
    with track_context(user_id="A") if made == "in another scope" else contextlib.nullcontext():
        made_early = [native(), agent(), wrapped()]
    with track_context(user_id="B"):
        results = await asyncio.gather(*made_early)
    assert [(r.get("user_id"), r["use_case_step"]) for r in results] == [
        ("B", "native"),
        ("B", "agent"),
        ("B", "helper"),
    ]


def test_track_on_a_function_that_returns_a_generator(no_global: Any) -> None:
    def numbers() -> Iterator[object]:
        yield get_context().get("user_id")
        yield get_context().get("user_id")

    @track(user_id="gen")
    @functools.wraps(numbers)
    def make() -> Iterator[object]:
        return numbers()

    gen = make()
    assert "user_id" not in get_context()
    assert list(gen) == ["gen", "gen"]
    assert "user_id" not in get_context()


def test_many_properties_never_evict_the_essentials(genai: GenAI) -> None:
    """A span keeps 128 attributes and evicts the oldest: with 150 property keys the GenAI
    span still has gen_ai.request.model and payi.user_id, and the properties as one JSON
    attribute equal to the header."""
    import json

    properties = {f"k{i}": f"v{i}" for i in range(150)}
    with track_context(user_id="many", request_properties=properties):
        genai.openai.chat.completions.create(**CHAT)
    [span] = genai.otel.genai_spans()
    attributes = span.attributes or {}
    assert attributes["payi.user_id"] == "many"
    assert attributes["gen_ai.request.model"] == CHAT["model"]
    assert json.loads(str(attributes["payi.request.properties"])) == properties
    assert json.loads(genai.last()["x-payi-request-properties"]) == properties


def test_a_few_properties_are_attributes_of_their_own(genai: GenAI) -> None:
    with track_context(request_properties={"tier": "gold"}):
        genai.openai.chat.completions.create(**CHAT)
    [span] = genai.otel.genai_spans()
    assert (span.attributes or {})["payi.request.properties.tier"] == "gold"


def test_soak_100k_scopes_keep_the_merge_cache_bounded_for_the_whole_process(
    instrument: Any, monkeypatch: Any
) -> None:
    """100k scopes, user > account > category > a unique property per request (spanless, so
    the test keeps no 100k spans): the per-parent bound alone lets the cache grow with
    fan-out ** depth; the global bound holds it."""
    import gc

    from payi_otel._model import effective as _resolved

    instrument(caller_file="<test>", scope_spans=False)
    monkeypatch.setattr(_resolved, "GLOBAL_CACHE_SIZE", 500)
    for request in range(25_000):
        with track_context(user_id=f"user{request % 50}"):
            with track_context(account_name=f"account{request % 7}"):
                with track_context(request_tags=[f"category{request % 5}"]):
                    with track_context(request_properties={"request": str(request)}):
                        pass
    gc.collect()
    live = sum(isinstance(o, _resolved.Effective) for o in gc.get_objects())
    assert live <= 2 * 500 + 100, live


def _holder(index: int) -> Iterator[None]:
    with track_context(user_id=f"u{index}", limit_ids=[f"l{index}"]):
        while True:
            yield


def _seen_in_thread() -> dict[str, object]:
    import threading

    seen: dict[str, object] = {}
    thread = threading.Thread(target=lambda: seen.update(get_context()))
    thread.start()
    thread.join()
    return seen


async def _seen_in_task() -> dict[str, object]:
    async def read() -> dict[str, object]:
        return dict(get_context())

    return await asyncio.create_task(read())


class _Holders:
    """Generators that each hold a track_context, and the model: the open scopes merged in
    the order they were entered, nothing of a closed one."""

    def __init__(self) -> None:
        self.holders: dict[int, Iterator[None]] = {}
        self.open_order: list[int] = []

    def step(self, action: str, index: int) -> None:
        if action == "open" and index not in self.holders:
            self.holders[index] = _holder(index)
            next(self.holders[index])
            self.open_order.append(index)
        elif action == "close" and index in self.holders:
            self.holders.pop(index).close()  # type: ignore[attr-defined]
            self.open_order.remove(index)

    def expected(self) -> dict[str, object]:
        if not self.open_order:
            return {}
        return {
            "user_id": f"u{self.open_order[-1]}",
            "limit_ids": [f"l{i}" for i in self.open_order],
        }

    def check(self) -> None:
        """get_context() - here, in a new thread and in a new task - is the model's."""
        expected = self.expected()
        assert dict(get_context()) == expected
        assert _seen_in_thread() == expected
        assert asyncio.run(_seen_in_task()) == expected

    def close_all(self) -> None:
        for index in reversed(self.open_order):
            self.holders[index].close()  # type: ignore[attr-defined]


def test_random_interleavings_of_scopes_held_by_generators_match_the_model(
    no_global: Any,
) -> None:
    """Generators that each hold a track_context, entered and closed in random order: after
    every step, get_context() - here, in a new thread and in a new task - is the model's: the
    open scopes merged in the order they were entered, nothing of a closed one."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    steps = st.lists(st.tuples(st.sampled_from(["open", "close"]), st.integers(0, 4)), max_size=25)

    @settings(max_examples=60, deadline=None, database=None)
    @given(steps)
    def run(plan: list[tuple[str, int]]) -> None:
        model = _Holders()
        try:
            for action, index in plan:
                model.step(action, index)
                model.check()
        finally:
            model.close_all()
        assert dict(get_context()) == {}

    run()


def test_soak_keys_noted_once_count_against_the_bound_too(
    instrument: Any, monkeypatch: Any
) -> None:
    """Keys seen once are only noted, not cached - but noted they take memory as well."""
    import gc

    from payi_otel._model import effective as _resolved

    instrument(caller_file="<test>", scope_spans=False)
    monkeypatch.setattr(_resolved, "GLOBAL_CACHE_SIZE", 500)
    for request in range(20_000):
        with track_context(user_id=f"user{request % 50}"):
            with track_context(request_properties={"request": str(request)}):
                pass
    gc.collect()
    noted = sum(
        len(o._children or ()) for o in gc.get_objects() if isinstance(o, _resolved.Effective)
    )
    assert noted <= 2 * 500 + 100, noted


def test_span_attributes_read_back_as_the_parameters_either_way() -> None:
    """What the ingest exporter reads off a span is what the call sent, whether the
    properties are attributes of their own or (many keys) one JSON attribute."""
    from payi_otel._model.attributes import params_from_attributes
    from payi_otel._model.effective import Effective
    from payi_otel._model.merge import merge, new_level

    for keys in (3, 40):
        params = merge(
            {},
            new_level(
                {
                    "user_id": "u",
                    "limit_ids": ("a", "b"),
                    "use_case_name": "uc",
                    "use_case_version": 2,
                    "request_properties": {f"k{i}": f"v{i}" for i in range(keys)},
                }
            ),
        )
        read = params_from_attributes(Effective(params).attributes())
        assert read["request_properties"] == params["request_properties"]
        assert {k: read[k] for k in ("user_id", "limit_ids", "use_case_version")} == {
            "user_id": "u",
            "limit_ids": ("a", "b"),
            "use_case_version": 2,
        }


def _abandoned_stream(genai: GenAI, sdk: str) -> Any:
    """A stream read for one item and left open (the caller keeps it, as a local would)."""
    if sdk == "anthropic":
        stream: Any = genai.anthropic.messages.create(**MESSAGE, stream=True)
    else:
        stream = genai.openai.chat.completions.create(**CHAT, stream=True)
    next(iter(stream))
    return stream


@pytest.mark.timeout(600)  # each example collects garbage several times: slow on a busy machine
def test_random_interleavings_of_scopes_and_abandoned_streams_match_the_model(
    genai: GenAI,
) -> None:
    """As above, with GenAI streams (both SDKs, GenAI spans on) opened in whatever scopes are
    current, read for one item, left open, and dropped and collected at random points (the
    GenAI instrumentation's stream wrapper then finalizes and restores its context): after
    every step get_context() - here, in a new thread, in a new task - and the next call's
    headers are the model's."""
    import gc

    from hypothesis import given, settings
    from hypothesis import strategies as st

    genai.reinstrument(caller_file="<test>")  # no global level: the model is the open scopes
    step = st.one_of(
        st.tuples(st.sampled_from(["open", "close"]), st.integers(0, 3)),
        st.tuples(st.just("stream"), st.sampled_from(["anthropic", "openai"])),
        st.tuples(st.just("collect"), st.integers(0, 3)),
    )

    @settings(max_examples=40, deadline=None, database=None)
    @given(st.lists(step, max_size=14))
    def run(plan: list[tuple[str, Any]]) -> None:
        model = _Holders()
        streams: list[Any] = []
        try:
            for action, arg in plan:
                if action == "stream":
                    streams.append(_abandoned_stream(genai, arg))
                elif action == "collect" and streams:
                    del streams[arg % len(streams)]
                    gc.collect()
                    genai.anthropic.messages.create(**MESSAGE)
                    sent = genai.attribution()[-1].get("x-payi-user-id")
                    assert sent == model.expected().get("user_id"), plan
                else:
                    model.step(action, arg)
                model.check()
        finally:
            model.close_all()
            streams.clear()
            gc.collect()
        assert dict(get_context()) == {}

    run()


async def test_a_scope_left_by_a_consumer_stays_gone_however_many_are_left_after_it(
    genai: GenAI,
) -> None:
    """A long-lived task (a websocket connection's loop) leaves an async generator's
    ``async with track_context`` with ``break``: the scope is orphaned, gone from every
    context, the task's own included. It stays gone after hundreds of other tasks do the same
    (a review found the task's next call billed to it again once 256 newer ones had pushed
    it off a bounded list), and the list does not keep what no context holds any more."""

    from payi_otel import _context

    async def held(user: str) -> Any:
        async with track_context(user_id=user):
            yield 1
            yield 2

    async def leave(user: str) -> None:
        async for _ in held(user):
            break
        await asyncio.sleep(0)

    async def connection(go: asyncio.Event) -> tuple[Any, Any]:
        await leave("alice")
        await asyncio.sleep(0.01)
        await go.wait()
        await genai.async_openai.chat.completions.create(**CHAT)
        return get_context().get("user_id"), genai.server.requests[-1].headers.get("x-payi-user-id")

    go = asyncio.Event()
    task = asyncio.create_task(connection(go))
    await asyncio.sleep(0.05)
    others = 3 * _context.ORPHANED_MAX
    await asyncio.gather(*(leave(f"user-{i}") for i in range(others)))
    for _ in range(3):
        await asyncio.sleep(0.01)  # the loop's finalizers close the left generators
    go.set()
    assert await task == (None, None)
    # Past the bound, the list keeps only the scopes a live context still holds: once the
    # tasks are gone, the next orphan leaves it small again.
    del task
    gc.collect()
    await leave("last")
    for _ in range(3):
        await asyncio.sleep(0.01)
    orphaned = _context._orphaned
    assert orphaned is not None and len(orphaned.levels) < _context.ORPHANED_MAX


def test_a_with_scope_in_a_generator_resumed_in_fresh_contexts_ends_and_says_so(
    genai: GenAI, caplog: pytest.LogCaptureFixture
) -> None:
    """Starlette's ``iterate_in_threadpool`` (a ``StreamingResponse`` over a sync generator)
    resumes the generator in a fresh copy of the loop's context each time: a ``with
    track_context`` in it holds only until its first yield, and its exit finds no entry
    there. The scope ends anyway - its span too, gone from every context - with one
    WARNING that says to use ``@track`` (a review found the span never ended and the
    warning said nothing useful); ``@track`` on the same generator holds on every resume."""
    from starlette.concurrency import iterate_in_threadpool

    def body(user: str) -> Iterator[str]:
        with track_context(user_id=user, use_case_step="stream_answer"):
            genai.openai.chat.completions.create(**CHAT)
            yield "a"
            yield "b"

    @track(use_case_name="answers", use_case_step="tracked_answer")
    def tracked(user: str) -> Iterator[str]:
        with track_context(user_id=user):
            yield "a"
        genai.openai.chat.completions.create(**CHAT)
        yield "b"

    async def drain(gen: Iterator[str]) -> list[str]:
        return [chunk async for chunk in iterate_in_threadpool(gen)]

    with caplog.at_level("WARNING", "payi_otel"):
        assert asyncio.run(drain(body("carol"))) == ["a", "b"]
        assert asyncio.run(drain(tracked("dave"))) == ["a", "b"]
    assert caplog.text.count("exited in another context than it was entered in") == 1
    ended = [s.name for s in genai.otel.spans() if s.instrumentation_scope.name == "payi_otel"]
    assert "stream_answer" in ended
    first, second = genai.sent()
    assert first["x-payi-user-id"] == "carol"
    assert second["x-payi-use-case-step"] == "tracked_answer"
    assert "user_id" not in get_context()


def test_one_instance_entered_everywhere_keeps_nothing_and_ends_each_scope(
    genai: GenAI,
) -> None:
    """One ``track_context`` instance entered by concurrent threads keeps no entry of a scope
    that exited (a review found thousands kept, spans and all, by a racing update); entered by
    two overlapping generators resumed in fresh contexts, each exit ends its own scope."""
    import threading

    from starlette.concurrency import iterate_in_threadpool

    shared = track_context(user_id="shared", use_case_step="shared_step")

    def work() -> None:
        for _ in range(2_500):
            with shared:
                pass

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not shared._open

    genai.otel.exporter.clear()

    def body() -> Iterator[str]:
        with shared:
            yield "a"
            yield "b"

    async def both() -> None:
        async def drain() -> list[str]:
            return [chunk async for chunk in iterate_in_threadpool(body())]

        assert await asyncio.gather(drain(), drain()) == [["a", "b"], ["a", "b"]]

    asyncio.run(both())
    assert not shared._open
    ended = [s for s in genai.otel.spans() if s.name == "shared_step"]
    assert len(ended) == 2


@pytest.mark.parametrize("kind", [staticmethod, classmethod])
def test_track_over_a_static_or_class_method_is_refused_with_the_fix(kind: Any) -> None:
    """``@track`` stacked over ``@staticmethod`` was taken, and then the method, a plain
    function now, was called with the instance too: a TypeError at every call (a review).
    Both wrappers are refused when decorating, saying to put ``@track`` below them."""

    def f(x: int) -> int:
        return x

    with pytest.raises(TypeError, match="below @staticmethod / @classmethod"):
        track(use_case_step="s")(kind(f))

    class Holder:
        @kind  # type: ignore[misc]
        @track(use_case_step="s")
        def g(*args: Any) -> int:
            return len(args)

    assert Holder().g(1) == (1 if kind is staticmethod else 2)

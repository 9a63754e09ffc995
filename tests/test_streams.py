"""Streams left unfinished inside their scope (``break``, ``close()``, dropped and collected
later): no exited scope comes back on that thread or task - not even when the GenAI
instrumentation underneath restores its own context as the abandoned stream is freed - the
usage-only chunk payi_otel asks for is never seen by the caller, and each call is reported
exactly once with the usage its stream showed. Every stream surface of both SDKs, sync and
async, with and without GenAI spans, in both wire dialects (real SDKs, the local fake server).
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Callable, Optional

import pytest
from cloud_support import aread_in_style, read_in_style
from fixtures_genai import CHAT, MESSAGE, GenAI, async_genai_call, genai_call
from opentelemetry import context as otel_context
from opentelemetry import trace

from payi_otel import get_context, track, track_context
from payi_otel._providers import CallRecord, Usage
from payi_otel._providers._core import add_observer

INPUT: dict[str, Any] = {"model": "gpt-4o-mini", "input": "Hello there"}


@pytest.fixture(autouse=True)
def own_context() -> Iterator[None]:
    """Each test starts and ends in the context it was given (a test here may leave a late
    restored context current, as an application would)."""
    before = otel_context.get_current()
    yield
    otel_context.attach(before)


@pytest.fixture
def records(surface: GenAI) -> Iterator[list[CallRecord]]:
    """Every call of this test payi_otel reports (one per call: ``_core._Observation.finish``).
    A stream an earlier test left may be collected during this one: its report is not this
    test's (each test's global level has its own use case id)."""
    found: list[CallRecord] = []
    ours = get_context().get("use_case_id")

    def observe(record: CallRecord) -> None:
        if record.call.public().get("use_case_id") == ours:
            found.append(record)

    remove = add_observer(observe)
    yield found
    remove()


# --- the surfaces: how a caller opens a stream ------------------------------------------------
#
# ``open`` gives (stream, manager): the object the caller iterates, and the context manager
# it came from when the surface is one (``messages.stream()``, ``with_streaming_response``),
# entered by hand so that a style may leave it unexited.


@dataclass(frozen=True)
class Surface:
    name: str
    sdk: str
    open: Callable[[GenAI], tuple[Any, Any]]
    aopen: Callable[[GenAI], Any]
    #: Whether the stream reports usage to payi_otel (a raw chat stream is the caller's bytes:
    #: nothing is asked for on their behalf, so it has none).
    reports_usage: bool = True
    #: Whether the official GenAI instrumentation starts a span for this surface.
    genai_span: bool = True


def _entered(manager: Any) -> tuple[Any, Any]:
    return manager.__enter__(), manager


async def _aentered(manager: Any) -> tuple[Any, Any]:
    return await manager.__aenter__(), manager


def _parsed(manager: Any) -> tuple[Any, Any]:
    return manager.__enter__().parse(), manager


async def _aparsed(manager: Any) -> tuple[Any, Any]:
    return await (await manager.__aenter__()).parse(), manager


async def _plain(awaitable: Any) -> tuple[Any, Any]:
    return await awaitable, None


async def _araw(awaitable: Any) -> tuple[Any, Any]:
    response = await awaitable
    parsed = response.parse()
    return (await parsed if asyncio.iscoroutine(parsed) else parsed), None


SURFACES = [
    Surface(
        "openai-chat",
        "openai",
        lambda g: (g.openai.chat.completions.create(**CHAT, stream=True), None),
        lambda g: _plain(g.async_openai.chat.completions.create(**CHAT, stream=True)),
    ),
    Surface(
        "openai-chat-helper",
        "openai",
        lambda g: _entered(g.openai.chat.completions.stream(**CHAT)),
        lambda g: _aentered(g.async_openai.chat.completions.stream(**CHAT)),
        genai_span=False,
    ),
    Surface(
        "openai-responses",
        "openai",
        lambda g: (g.openai.responses.create(**INPUT, stream=True), None),
        lambda g: _plain(g.async_openai.responses.create(**INPUT, stream=True)),
    ),
    Surface(
        "openai-responses-helper",
        "openai",
        lambda g: _entered(g.openai.responses.stream(**INPUT)),
        lambda g: _aentered(g.async_openai.responses.stream(**INPUT)),
    ),
    Surface(
        "openai-chat-raw",
        "openai",
        lambda g: (
            g.openai.chat.completions.with_raw_response.create(**CHAT, stream=True).parse(),
            None,
        ),
        lambda g: _araw(
            g.async_openai.chat.completions.with_raw_response.create(**CHAT, stream=True)
        ),
        reports_usage=False,
    ),
    Surface(
        "openai-responses-streaming-response",
        "openai",
        lambda g: _parsed(g.openai.responses.with_streaming_response.create(**INPUT, stream=True)),
        lambda g: _aparsed(
            g.async_openai.responses.with_streaming_response.create(**INPUT, stream=True)
        ),
    ),
    Surface(
        "anthropic-messages",
        "anthropic",
        lambda g: (g.anthropic.messages.create(**MESSAGE, stream=True), None),
        lambda g: _plain(g.async_anthropic.messages.create(**MESSAGE, stream=True)),
    ),
    Surface(
        "anthropic-messages-helper",
        "anthropic",
        lambda g: _entered(g.anthropic.messages.stream(**MESSAGE)),
        lambda g: _aentered(g.async_anthropic.messages.stream(**MESSAGE)),
    ),
    Surface(
        "anthropic-raw",
        "anthropic",
        lambda g: (
            g.anthropic.messages.with_raw_response.create(**MESSAGE, stream=True).parse(),
            None,
        ),
        lambda g: _araw(
            g.async_anthropic.messages.with_raw_response.create(**MESSAGE, stream=True)
        ),
    ),
    Surface(
        "anthropic-streaming-response",
        "anthropic",
        lambda g: _parsed(
            g.anthropic.messages.with_streaming_response.create(**MESSAGE, stream=True)
        ),
        lambda g: _aparsed(
            g.async_anthropic.messages.with_streaming_response.create(**MESSAGE, stream=True)
        ),
    ),
]

#: exhaust: read to the end; break: leave the loop after the first item (then exit the
#: surface's ``with``, if any); close: one item, then ``close()``; drop: one item, then
#: nothing (the stream is collected later); with: ``with stream`` and break out early.
STYLES = ["exhaust", "break", "close", "drop", "with"]


def _cases() -> list[Any]:
    cases = []
    for surface in SURFACES:
        for style in STYLES:
            if style == "with" and surface.name.endswith(("helper", "streaming-response")):
                continue  # a surface that is a context manager: "break" is its early exit
            cases.append(pytest.param(surface, style, id=f"{surface.name}-{style}"))
    return cases


CASES = _cases()


def _consume(stream: Any, manager: Any, style: str) -> tuple[list[Any], list[Any]]:
    """Read ``stream`` in ``style``: the items the caller saw, and what the caller still
    holds (released only after the scope, as a caller's local variables would be)."""
    items, iterator = read_in_style(stream, style)
    if style == "drop":
        return items, [stream, iterator, manager]
    del iterator
    if manager is not None:
        manager.__exit__(None, None, None)
    return items, [stream, manager]


async def _aconsume(stream: Any, manager: Any, style: str) -> tuple[list[Any], list[Any]]:
    items, iterator = await aread_in_style(stream, style)
    if style == "drop":
        return items, [stream, iterator, manager]
    del iterator
    if manager is not None:
        await manager.__aexit__(None, None, None)
    return items, [stream, manager]


def _usage_only(item: Any) -> bool:
    """A chunk that carries only usage (no choices), bare or inside a helper's event."""
    chunk = getattr(item, "chunk", item)
    return getattr(chunk, "choices", None) == [] and getattr(chunk, "usage", None) is not None


def _check(
    genai: GenAI,
    surface: Surface,
    style: str,
    items: list[Any],
    records: list[CallRecord],
    full: Optional[Usage],
) -> None:
    """After the scope, the stream released and collected, and one call made."""
    assert "user_id" not in get_context()
    first, after = genai.attribution()
    assert first.get("x-payi-user-id") == "alice"
    assert "x-payi-user-id" not in after, after
    assert items and not any(_usage_only(item) for item in items)
    streamed = [r for r in records if r.streamed]
    assert len(streamed) == 1, streamed  # once: ended, closed or collected - never twice
    usage = streamed[0].usage
    if not surface.reports_usage:
        assert usage is None
    elif style == "exhaust":
        assert usage == full
    elif usage is not None:  # what the stream showed before it was left: never invented
        assert full is not None
        for name, value in usage.__dict__.items():
            assert value is None or value <= getattr(full, name), (name, usage, full)
    if not surface.genai_span:
        genai.check_invariant = False  # no GenAI span to compare its request with


#: The usage of each surface's call read to the end (the fake server's counts are
#: deterministic: measured once per surface, sync and async).
_FULL: dict[tuple[str, bool], Optional[Usage]] = {}


def _forget(genai: GenAI, records: list[CallRecord]) -> None:
    records.clear()
    genai.server.reset()
    genai.otel.exporter.clear()


def _full_usage(genai: GenAI, surface: Surface, records: list[CallRecord]) -> Optional[Usage]:
    """The usage of the same call read to the end, outside any scope."""
    if (surface.name, False) not in _FULL:
        stream, manager = surface.open(genai)
        _consume(stream, manager, "exhaust")
        (record,) = records
        _FULL[surface.name, False] = record.usage
        _forget(genai, records)
    return _FULL[surface.name, False]


async def _afull_usage(
    genai: GenAI, surface: Surface, records: list[CallRecord]
) -> Optional[Usage]:
    if (surface.name, True) not in _FULL:
        stream, manager = await surface.aopen(genai)
        await _aconsume(stream, manager, "exhaust")
        (record,) = records
        _FULL[surface.name, True] = record.usage
        _forget(genai, records)
    return _FULL[surface.name, True]


async def _collect() -> None:
    """Collect, and let the loop close the async generators collection left it (a helper's
    generator holds the stream's: two rounds)."""
    for _ in range(2):
        gc.collect()
        for _ in range(2):
            await asyncio.sleep(0)


@pytest.mark.parametrize(("surface_", "style"), CASES)
def test_a_stream_left_in_a_scope_never_brings_the_scope_back_and_reports_once(
    surface: GenAI, records: list[CallRecord], surface_: Surface, style: str
) -> None:
    full = _full_usage(surface, surface_, records)
    with track_context(user_id="alice"):
        stream, manager = surface_.open(surface)
        items, held = _consume(stream, manager, style)
        del stream, manager
    del held
    gc.collect()  # an instrumentation's wrapper, freed now, restores its own context
    genai_call(surface, surface_.sdk)
    _check(surface, surface_, style, items, records, full)


@pytest.mark.parametrize(("surface_", "style"), CASES)
async def test_an_async_stream_left_in_a_scope_never_brings_the_scope_back_to_its_task(
    surface: GenAI, records: list[CallRecord], surface_: Surface, style: str
) -> None:
    full = await _afull_usage(surface, surface_, records)
    async with track_context(user_id="alice"):
        stream, manager = await surface_.aopen(surface)
        items, held = await _aconsume(stream, manager, style)
        del stream, manager
    del held
    await _collect()
    await async_genai_call(surface, surface_.sdk)
    _check(surface, surface_, style, items, records, full)


def test_an_inner_scope_left_with_a_stream_is_gone_while_the_outer_one_holds(
    surface: GenAI,
) -> None:
    with track_context(account_name="outer"):
        with track_context(user_id="alice"):
            stream = surface.anthropic.messages.create(**MESSAGE, stream=True)
            next(iter(stream))
        del stream
        gc.collect()
        assert get_context().get("account_name") == "outer"
        assert "user_id" not in get_context()
        surface.anthropic.messages.create(**MESSAGE)
    surface.anthropic.messages.create(**MESSAGE)
    assert "account_name" not in get_context()
    _, inside, after = surface.attribution()
    assert (inside.get("x-payi-account-name"), inside.get("x-payi-user-id")) == ("outer", None)
    assert "x-payi-account-name" not in after and "x-payi-user-id" not in after


def test_a_thread_started_in_the_scope_keeps_it_after_its_creator_left_a_stream(
    surface: GenAI,
) -> None:
    """Exits are noted per thread and task: work handed off inside the scope keeps it."""
    go = threading.Event()
    seen: dict[str, object] = {}

    def later() -> None:
        go.wait(10)
        seen.update(get_context())
        surface.anthropic.messages.create(**MESSAGE)

    with track_context(user_id="alice"):
        worker = threading.Thread(target=later)
        worker.start()
        stream = surface.anthropic.messages.create(**MESSAGE, stream=True)
        next(iter(stream))
    del stream
    gc.collect()
    assert "user_id" not in get_context()
    go.set()
    worker.join(10)
    assert seen.get("user_id") == "alice"
    assert [a.get("x-payi-user-id") for a in surface.attribution()] == ["alice", "alice"]


async def test_a_task_started_in_the_scope_keeps_it_after_its_creator_left_a_stream(
    surface: GenAI,
) -> None:
    go = asyncio.Event()

    async def later() -> object:
        await go.wait()
        await surface.async_anthropic.messages.create(**MESSAGE)
        return get_context().get("user_id")

    async with track_context(user_id="alice"):
        task = asyncio.create_task(later())
        stream = await surface.async_anthropic.messages.create(**MESSAGE, stream=True)
        await stream.__aiter__().__anext__()
    del stream
    await _collect()
    assert "user_id" not in get_context()
    go.set()
    assert await task == "alice"
    assert [a.get("x-payi-user-id") for a in surface.attribution()] == ["alice", "alice"]


def test_a_scope_entered_after_a_stale_restore_is_not_the_child_of_an_ended_span(
    genai: GenAI,
) -> None:
    with track_context(user_id="alice"):
        stream = genai.anthropic.messages.create(**MESSAGE, stream=True)
        next(iter(stream))
    del stream
    gc.collect()
    with track_context(account_name="next"):
        pass
    (ended,) = [
        s
        for s in genai.otel.spans()
        if s.name == "payi.track_context" and (s.attributes or {}).get("payi.user_id") == "alice"
    ]
    (following,) = [
        s
        for s in genai.otel.spans()
        if s.name == "payi.track_context"
        and (s.attributes or {}).get("payi.account_name") == "next"
    ]
    assert ended.context is not None
    assert following.parent is None or following.parent.span_id != ended.context.span_id


def test_a_streaming_response_read_as_bytes_is_reported_once_without_usage(
    surface: GenAI,
    records: list[CallRecord],
) -> None:
    """payi_otel never parses the caller's raw body: no usage is invented."""
    with surface.anthropic.messages.with_streaming_response.create(
        **MESSAGE, stream=True
    ) as response:
        lines = list(response.iter_lines())
    gc.collect()
    assert any("message_delta" in line for line in lines)
    assert [(r.streamed, r.usage) for r in records] == [(False, None)]


class _Lingering:
    """What an instrumentation may do with a stream it hands back (genai-anthropic did, until
    payi_otel made util-genai's stream wrappers suspend): attach its span's context, and
    detach only when the stream object is freed - resetting the context to the one current
    when it attached."""

    def __init__(self, genai: GenAI) -> None:
        span = genai.otel.provider.get_tracer("test.lingering").start_span("lingering")
        self._token = otel_context.attach(trace.set_span_in_context(span))

    def __del__(self) -> None:
        otel_context.detach(self._token)


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
def test_a_context_another_library_restores_late_never_brings_an_exited_scope_back(
    surface: GenAI, sdk: str
) -> None:
    with track_context(account_name="outer"):
        with track_context(user_id="alice"):
            held = [_Lingering(surface)]
        genai_call(surface, sdk)
        held.clear()  # freed here: the context from inside alice's scope is current again
        assert get_context().get("account_name") == "outer"
        assert "user_id" not in get_context()
        genai_call(surface, sdk)
    genai_call(surface, sdk)
    assert not {"account_name", "user_id"} & set(get_context())
    span = trace.get_current_span()  # no ended scope span left current either
    assert not span.get_span_context().is_valid or span.is_recording()
    first, second, after = surface.attribution()
    assert (first.get("x-payi-account-name"), first.get("x-payi-user-id")) == ("outer", None)
    assert first == second
    assert not {"x-payi-account-name", "x-payi-user-id"} & set(after)


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
async def test_a_context_another_library_restores_late_never_brings_a_scope_back_to_its_task(
    surface: GenAI, sdk: str
) -> None:
    async with track_context(user_id="alice"):
        held = [_Lingering(surface)]
    held.clear()
    await _collect()
    assert "user_id" not in get_context()
    await async_genai_call(surface, sdk)
    assert "x-payi-user-id" not in surface.attribution()[-1]


def test_a_generator_scope_left_under_a_late_restored_context_is_seen_only_on_its_resumes(
    genai: GenAI,
) -> None:
    held: list[_Lingering] = []

    @track(user_id="gen")
    def numbers() -> Iterator[object]:
        held.append(_Lingering(genai))
        yield get_context().get("user_id")
        yield get_context().get("user_id")

    resumed = numbers()
    assert next(resumed) == "gen"
    held.clear()  # restores the context of the generator's first resume, here
    assert "user_id" not in get_context()
    assert next(resumed) == "gen"
    assert "user_id" not in get_context()
    resumed.close()
    assert "user_id" not in get_context()


def test_a_thread_started_after_a_late_restore_does_not_carry_the_exited_scope(
    surface: GenAI,
) -> None:
    """A thread shares nothing of its starter's contextvars: it is handed the context as
    its starter sees it."""
    seen: dict[str, object] = {}
    with track_context(user_id="alice"):
        held = [_Lingering(surface)]
    held.clear()  # the context from inside alice's scope is current again, here
    worker = threading.Thread(
        target=lambda: (seen.update(get_context()), genai_call(surface, "anthropic"))
    )
    worker.start()
    worker.join(10)
    assert "user_id" not in seen
    assert "x-payi-user-id" not in surface.attribution()[-1]


@pytest.mark.parametrize(
    "surface_",
    [
        s
        for s in SURFACES
        if s.name in ("openai-chat", "openai-responses", "anthropic-messages", "anthropic-raw")
    ],
    ids=lambda s: s.name,
)
def test_a_stream_freed_in_the_next_scope_never_takes_that_scope_away(
    surface: GenAI, surface_: Surface
) -> None:
    """A loop that keeps the last stream in a variable frees the previous one inside the
    next iteration's scope."""
    stream: Any = None
    for user in ("u1", "u2", "u3"):
        with track_context(user_id=user):
            stream, _ = surface_.open(surface)
            next(iter(stream))
            assert get_context().get("user_id") == user
            genai_call(surface, surface_.sdk)
    del stream
    gc.collect()
    assert "user_id" not in get_context()
    users = [a.get("x-payi-user-id") for a in surface.attribution()]
    assert users == ["u1", "u1", "u2", "u2", "u3", "u3"]


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
def test_a_raw_response_parsed_is_counted_once_with_its_usage(
    surface: GenAI, records: list[CallRecord], sdk: str
) -> None:
    """``with_raw_response`` without a stream: what ``parse()`` gives carries the usage."""
    if sdk == "openai":
        parsed: Any = surface.openai.chat.completions.with_raw_response.create(**CHAT).parse()
        expected = (parsed.usage.prompt_tokens, parsed.usage.completion_tokens)
    else:
        parsed = surface.anthropic.messages.with_raw_response.create(**MESSAGE).parse()
        expected = (parsed.usage.input_tokens, parsed.usage.output_tokens)
    gc.collect()
    (record,) = records
    assert record.usage is not None
    assert (record.usage.input_tokens, record.usage.output_tokens) == expected


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
async def test_an_async_raw_response_parsed_twice_gives_its_one_stream_both_times(
    surface: GenAI, sdk: str
) -> None:
    """``await raw.parse()`` twice gives the same stream, whoever wraps the raw response
    (genai-anthropic's proxy replays its memo through a fresh awaitable only when ``parse``
    is a coroutine function: make test-upstream caught it)."""
    with track_context(user_id="twice"):
        if sdk == "anthropic":
            create: Any = surface.async_anthropic.messages.with_streaming_response.create(
                **MESSAGE, stream=True
            )
        else:
            create = surface.async_openai.chat.completions.with_streaming_response.create(
                **CHAT, stream=True
            )
        async with create as raw:
            first = await raw.parse()
            assert await raw.parse() is first
            items = [item async for item in first]
    assert items
    assert [a.get("x-payi-user-id") for a in surface.attribution()] == ["twice"]

"""Where the context travels (README, "Where the context travels") and how scopes end."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

import pytest
from fixtures_otel import Otel, payi_attrs
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from payi_otel import get_context, track, track_context

pytestmark = pytest.mark.usefixtures("no_global")


def user() -> Optional[Any]:
    return get_context().get("user_id")


async def test_concurrent_asyncio_tasks_never_see_each_other() -> None:
    async def worker(i: int) -> list[Any]:
        seen = []
        async with track_context(user_id=f"user-{i}"):
            for _ in range(5):
                await asyncio.sleep(0)
                seen.append(user())
        seen.append(user())
        return seen

    results = await asyncio.gather(*(worker(i) for i in range(200)))
    for i, seen in enumerate(results):
        assert seen == [f"user-{i}"] * 5 + [None]


async def test_async_track_applies_across_await(otel: Otel) -> None:
    @track(user_id="async_user", use_case_step="async_step")
    async def work() -> Any:
        await asyncio.sleep(0.001)
        return user()

    assert await work() == "async_user"
    assert user() is None
    assert payi_attrs(otel.one("async_step")) == {"payi.user_id": "async_user"}


def test_thread_pool_executor_inherits_scope() -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        with track_context(user_id="pooled"):
            futures = [pool.submit(user) for _ in range(8)]
        outside = pool.submit(user)
        assert [f.result() for f in futures] == ["pooled"] * 8
        assert outside.result() is None


def test_thread_started_inside_scope_inherits_it() -> None:
    seen: list[Any] = []
    with track_context(user_id="threaded", limit_ids=["l"]):
        thread = threading.Thread(target=lambda: seen.append(dict(get_context())))
        thread.start()
    thread.join()
    assert seen == [{"user_id": "threaded", "limit_ids": ["l"]}]


def test_generator_body_runs_in_scope_on_every_resume_and_not_outside(otel: Otel) -> None:
    @track(user_id="gen_user", use_case_step="gen")
    def produce() -> Iterator[Any]:
        for _ in range(3):
            yield user()

    gen = produce()
    assert user() is None  # creating it enters nothing
    seen = []
    for item in gen:
        seen.append(item)
        assert user() is None  # the consumer, between resumes, is outside the scope
    assert seen == ["gen_user"] * 3
    span = otel.one("gen")
    assert payi_attrs(span) == {"payi.user_id": "gen_user"}


def test_generator_send_throw_and_close() -> None:
    @track(user_id="g")
    def echo() -> Iterator[Any]:
        received = None
        try:
            while True:
                received = yield (received, user())
        except KeyError:
            yield ("caught", user())

    gen = echo()
    assert next(gen) == (None, "g")
    assert gen.send("x") == ("x", "g")
    assert gen.throw(KeyError("k")) == ("caught", "g")
    gen.close()
    assert user() is None


def test_generator_uses_the_scope_of_its_caller() -> None:
    @track(limit_ids=["inner"])
    def produce() -> Iterator[Any]:
        yield get_context()["limit_ids"]

    with track_context(limit_ids=["outer"]):
        gen = produce()
    # Iterated outside the track_context: still runs in the scope it was called from.
    assert list(gen) == [["inner", "outer"]]


async def test_async_generator_resume_semantics(otel: Otel) -> None:
    @track(user_id="agen_user", use_case_step="agen")
    async def produce() -> AsyncIterator[Any]:
        for _ in range(3):
            await asyncio.sleep(0)
            yield user()

    seen = []
    async for item in produce():
        seen.append(item)
        assert user() is None
    assert seen == ["agen_user"] * 3
    assert len(otel.named("agen")) == 1


async def test_async_generator_aclose_ends_span(otel: Otel) -> None:
    @track(use_case_step="agen_closed")
    async def produce() -> AsyncIterator[int]:
        for i in range(10):
            yield i

    agen = produce()
    assert await agen.__anext__() == 0
    await agen.aclose()
    assert len(otel.named("agen_closed")) == 1


def test_exception_in_track_ends_scope_and_records_error(otel: Otel) -> None:
    @track(user_id="boom", use_case_step="failing")
    def fail() -> None:
        raise RuntimeError("bad thing")

    with track_context(user_id="outer"), pytest.raises(RuntimeError):
        fail()
    assert user() is None
    span = otel.one("failing")
    assert span.status.status_code is StatusCode.ERROR
    assert any(e.name == "exception" for e in span.events)
    assert span.end_time is not None


def test_exception_in_track_context_restores_outer(otel: Otel) -> None:
    with track_context(user_id="outer"):
        with pytest.raises(ValueError), track_context(user_id="inner", use_case_step="bad"):
            raise ValueError("x")
        assert user() == "outer"
        assert trace.get_current_span().name == "payi.track_context"  # type: ignore[attr-defined]
    span = otel.one("bad")
    assert span.status.status_code is StatusCode.ERROR


async def test_exception_in_async_track(otel: Otel) -> None:
    @track(use_case_step="async_fail")
    async def fail() -> None:
        await asyncio.sleep(0)
        raise KeyError("k")

    with pytest.raises(KeyError):
        await fail()
    assert otel.one("async_fail").status.status_code is StatusCode.ERROR


def test_exception_in_generator(otel: Otel) -> None:
    @track(use_case_step="gen_fail")
    def produce() -> Iterator[int]:
        yield 1
        raise OSError("io")

    with pytest.raises(OSError):
        list(produce())
    assert otel.one("gen_fail").status.status_code is StatusCode.ERROR


def test_scope_spans_are_internal_children_of_the_current_span(otel: Otel) -> None:
    tracer = otel.provider.get_tracer("test")
    with (
        tracer.start_as_current_span("request") as parent,
        track_context(use_case_name="uc"),
        track_context(use_case_step="step"),
    ):
        pass
    uc, step = otel.one("uc"), otel.one("step")
    assert uc.kind is SpanKind.INTERNAL and step.kind is SpanKind.INTERNAL
    assert uc.parent is not None and uc.parent.span_id == parent.get_span_context().span_id
    assert step.parent is not None and step.parent.span_id == uc.context.span_id
    assert uc.instrumentation_scope is not None
    assert uc.instrumentation_scope.name == "payi_otel"


def test_span_names(otel: Otel) -> None:
    @track()
    def plain() -> None:
        pass

    @track(use_case_step="named_step")
    def stepped() -> None:
        pass

    plain()
    stepped()
    with track_context(use_case_name="by_name"):
        pass
    with track_context(use_case_name="ignored", use_case_step="by_step"):
        pass
    with track_context(user_id="u"):
        pass
    names = {s.name for s in otel.spans()}
    assert names == {
        "test_span_names.<locals>.plain",
        "named_step",
        "by_name",
        "by_step",
        "payi.track_context",
    }


def test_track_keeps_function_metadata() -> None:
    @track()
    def documented(x: int) -> int:
        """Doc."""
        return x

    assert documented.__name__ == "documented" and documented.__doc__ == "Doc."
    assert documented(3) == 3


async def test_one_track_context_instance_shared_by_concurrent_tasks() -> None:
    admin = track_context(user_id="admin")

    async def handler(delay: float) -> Any:
        async with admin:
            await asyncio.sleep(delay)
            inside = user()
        return inside, user()

    results = await asyncio.gather(handler(0.02), handler(0.001), handler(0.01))
    assert results == [("admin", None)] * 3


def test_one_track_context_instance_shared_by_threads() -> None:
    admin = track_context(user_id="admin")
    barrier = threading.Barrier(2)
    results: list[Any] = []

    def handler(first: bool) -> None:
        with admin:
            barrier.wait()
            if first:
                barrier.wait()  # exit after the other thread
            inside = user()
            if not first:
                barrier.wait()
        results.append((inside, user()))

    threads = [threading.Thread(target=handler, args=(flag,)) for flag in (True, False)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [("admin", None)] * 2


def test_reentering_the_same_instance_nests() -> None:
    ctx = track_context(limit_ids=["x"])
    with ctx:
        with ctx:
            assert get_context()["limit_ids"] == ["x"]
        assert get_context()["limit_ids"] == ["x"]
    assert "limit_ids" not in get_context()

"""Concurrency under load: 2,000 asyncio tasks and 64 threads, each in its own scope, making
real SDK calls at the same time; no request and no GenAI span may carry another task's values.

Every call's prompt is a marker unique to (task, call). The fake server echoes it (checked on
the reply) and records it in the request body, so each recorded request is matched to the task
that sent it; each GenAI span is matched through a test span around the call (its parent),
which carries the same marker. The ``genai`` fixture then also checks that the spans' payi.*
attributes equal the headers of the requests, call by call.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx2
import openai
from fake_llm_server import RecordedRequest
from fixtures_genai import GenAI, payi_headers
from fixtures_otel import payi_attrs
from opentelemetry.sdk.trace import ReadableSpan

from payi_otel import get_context, track, track_context

TASKS = 2_000
TASK_CALLS = 1
THREADS = 64
THREAD_CALLS = 5
CONNECTIONS = 32  # connections (and so server threads) the asyncio client may open


def marker_of(request: RecordedRequest) -> str:
    return str(request.body["messages"][-1]["content"])


def chat(marker: str) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": marker}]}


class Expected:
    """What each marker's request and GenAI span must carry, filled in by the workers."""

    def __init__(self) -> None:
        self.headers: dict[str, dict[str, str]] = {}
        self.lock = threading.Lock()

    def add(self, marker: str, headers: dict[str, str]) -> None:
        with self.lock:
            assert marker not in self.headers
            self.headers[marker] = headers


def check_everything(genai: GenAI, expected: Expected, n_calls: int) -> None:
    requests = genai.server.requests
    assert len(requests) == n_calls
    by_marker: dict[str, dict[str, str]] = {}
    for request in requests:
        marker = marker_of(request)
        assert marker not in by_marker, f"{marker} sent twice"
        by_marker[marker] = payi_headers(request)
    assert set(by_marker) == set(expected.headers)
    wrong = {m: (h, expected.headers[m]) for m, h in by_marker.items() if h != expected.headers[m]}
    assert not wrong, f"{len(wrong)} requests with another task's values, e.g. " + repr(
        next(iter(wrong.items()))
    )

    spans = genai.otel.spans()
    markers = {
        s.context.span_id: str((s.attributes or {})["test.marker"])
        for s in spans
        if s.context and s.name == "stress.call"
    }
    genai_spans = genai.otel.genai_spans()
    assert len(genai_spans) == n_calls
    for span in genai_spans:
        assert span.parent is not None
        marker = markers[span.parent.span_id]
        assert headers_of(span) == expected.headers[marker], marker


def headers_of(span: ReadableSpan) -> dict[str, str]:
    """The few attributes this file uses, as the headers they stand for."""
    attrs = payi_attrs(span)
    names = {
        "payi.user_id": "x-payi-user-id",
        "payi.use_case.name": "x-payi-use-case-name",
        "payi.use_case.id": "x-payi-use-case-id",
        "payi.use_case.step": "x-payi-use-case-step",
        "payi.limit_ids": "x-payi-limit-ids",
        "payi.request_tags": "x-payi-request-tags",
    }
    assert set(attrs) <= set(names), attrs
    return {names[k]: ",".join(v) if isinstance(v, list) else str(v) for k, v in attrs.items()}


async def test_2000_asyncio_tasks_each_in_its_own_scope(genai: GenAI) -> None:
    tracer = genai.otel.provider.get_tracer("test.stress")
    client = openai.AsyncOpenAI(
        base_url=genai.server.openai_base_url,
        api_key="test",
        max_retries=0,
        timeout=60.0,
        http_client=openai.DefaultAsyncHttpxClient(
            limits=httpx2.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
        ),
    )
    expected = Expected()
    started = asyncio.Event()
    entered = 0

    @track(use_case_name="stress", limit_ids=["shared"])
    async def task(i: int) -> None:
        nonlocal entered
        async with track_context(user_id=f"user-{i}", request_tags=[f"t{i}"]):
            # Every task enters its scope before any call is made: 2,000 scopes in force.
            entered += 1
            if entered == TASKS:
                started.set()
            await started.wait()
            use_case_id = get_context()["use_case_id"]
            assert isinstance(use_case_id, str)
            for k in range(TASK_CALLS):
                marker = f"task-{i}-call-{k}-{uuid.uuid4().hex[:8]}"
                # Every other task also passes a per-call header of its own.
                extra = {"x-payi-request-tags": f"h{i}"} if i % 2 else {}
                expected.add(
                    marker,
                    {
                        "x-payi-use-case-name": "stress",
                        "x-payi-use-case-id": use_case_id,
                        "x-payi-limit-ids": "shared",
                        "x-payi-request-tags": f"t{i},h{i}" if i % 2 else f"t{i}",
                        "x-payi-user-id": f"user-{i}",
                    },
                )
                with tracer.start_as_current_span(
                    "stress.call", attributes={"test.marker": marker}
                ):
                    reply = await client.chat.completions.create(
                        **chat(marker), extra_headers=extra
                    )
                assert reply.choices[0].message.content == f"echo: {marker}"
                assert get_context()["user_id"] == f"user-{i}"
                assert get_context()["use_case_id"] == use_case_id
        assert "user_id" not in get_context()

    begin = time.perf_counter()
    async with client:
        await asyncio.gather(*(task(i) for i in range(TASKS)))
    elapsed = time.perf_counter() - begin
    n_calls = TASKS * TASK_CALLS
    print(
        f"\n{TASKS} asyncio tasks, {n_calls} calls in {elapsed:.1f}s "
        f"({n_calls / elapsed:.0f} calls/s)"
    )
    assert "user_id" not in get_context()
    check_everything(genai, expected, n_calls)


def test_64_threads_each_in_its_own_scope(genai: GenAI) -> None:
    tracer = genai.otel.provider.get_tracer("test.stress")
    client = genai.openai_client(timeout=60.0)
    expected = Expected()
    barrier = threading.Barrier(THREADS, timeout=30)

    def worker(i: int) -> None:
        with track_context(user_id=f"thread-{i}", use_case_name=f"uc-{i}", use_case_step="thread"):
            use_case_id = get_context()["use_case_id"]
            assert isinstance(use_case_id, str)
            barrier.wait()  # all 64 scopes are in force at once
            for k in range(THREAD_CALLS):
                marker = f"thread-{i}-call-{k}-{uuid.uuid4().hex[:8]}"
                expected.add(
                    marker,
                    {
                        "x-payi-use-case-name": f"uc-{i}",
                        "x-payi-use-case-id": use_case_id,
                        "x-payi-use-case-step": "thread",
                        "x-payi-user-id": f"thread-{i}",
                    },
                )
                with tracer.start_as_current_span(
                    "stress.call", attributes={"test.marker": marker}
                ):
                    reply = client.chat.completions.create(**chat(marker))
                assert reply.choices[0].message.content == f"echo: {marker}"
                assert get_context()["user_id"] == f"thread-{i}"
        assert "user_id" not in get_context()

    begin = time.perf_counter()
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        for future in [pool.submit(worker, i) for i in range(THREADS)]:
            future.result()
    elapsed = time.perf_counter() - begin
    n_calls = THREADS * THREAD_CALLS
    print(
        f"\n{THREADS} threads, {n_calls} calls in {elapsed:.1f}s ({n_calls / elapsed:.0f} calls/s)"
    )
    check_everything(genai, expected, n_calls)


async def test_one_track_context_object_shared_by_500_tasks_and_16_threads(
    genai: GenAI,
) -> None:
    """One ``track_context`` instance (e.g. a module-level constant) entered concurrently by
    many tasks and threads, exiting in any order: each exits its own entry, and is left in
    its own outer scope."""
    genai.check_invariant = False  # no GenAI calls here; scopes only
    shared = track_context(limit_ids=["shared"], use_case_step="shared_step")
    tasks, threads = 500, 16

    async def task(i: int) -> tuple[Any, Any, Any]:
        async with track_context(user_id=f"task-{i}"):
            async with shared:
                await asyncio.sleep(0.001 * ((i * 7) % 11))  # exits in a scrambled order
                inside = dict(get_context())
            after = dict(get_context())
        return inside, after, dict(get_context())

    barrier = threading.Barrier(threads, timeout=30)

    def thread(i: int) -> tuple[Any, Any, Any]:
        with track_context(user_id=f"thread-{i}"):
            with shared:
                barrier.wait()  # all threads inside the shared scope at once
                time.sleep(0.001 * ((i * 5) % 7))
                inside = dict(get_context())
            after = dict(get_context())
        return inside, after, dict(get_context())

    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        thread_results = [loop.run_in_executor(pool, thread, i) for i in range(threads)]
        task_results = await asyncio.gather(*(task(i) for i in range(tasks)))
        results = [*task_results, *await asyncio.gather(*thread_results)]
    users = [f"task-{i}" for i in range(tasks)] + [f"thread-{i}" for i in range(threads)]
    for user, (inside, after, outside) in zip(users, results):
        assert inside == {"user_id": user, "limit_ids": ["shared"], "use_case_step": "shared_step"}
        assert after == {"user_id": user}
        assert outside == {}
    shared_spans = genai.otel.named("shared_step")
    assert len(shared_spans) == tasks + threads
    parents = {s.parent.span_id for s in shared_spans if s.parent}
    assert len(parents) == tasks + threads  # each entry's span is a child of its own scope

"""Failure policy (docs/failure-policy.md) under faults: an OTLP endpoint that is down, an LLM
server answering 500 or resetting connections, and bugs forced inside the instrumentation.

The app's calls must not be slowed beyond the exporter's own timeout budget, scopes and spans
must close and restore the outer context whatever the SDK raises, the exceptions the app sees
must be the SDK's own, and an internal failure must leave the call unchanged, logged once on
the ``payi_otel`` logger.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable, Optional

import anthropic
import openai
import pytest
from fixtures_genai import CHAT, MESSAGE, GenAI, payi_headers
from fixtures_otel import Otel, payi_attrs
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import StatusCode
from otlp_receiver import OTLPReceiver

from payi_otel import PayiInstrumentor, get_context, track, track_context
from payi_otel._model.effective import Effective
from payi_otel._providers import _core as payi_hooks

# --------------------------------------------------------------------------------------------
# Open spans: a processor that knows which spans started and have not ended
# --------------------------------------------------------------------------------------------


class OpenSpans(SpanProcessor):
    def __init__(self) -> None:
        self.open: dict[int, str] = {}
        self.started = 0
        self.lock = threading.Lock()

    def on_start(self, span: Span, parent_context: Optional[otel_context.Context] = None) -> None:
        with self.lock:
            self.started += 1
            self.open[span.context.span_id] = span.name

    def on_end(self, span: ReadableSpan) -> None:
        with self.lock:
            if span.context is not None:
                self.open.pop(span.context.span_id, None)

    def reset(self) -> None:
        with self.lock:
            self.open.clear()
            self.started = 0


_OPEN_SPANS: Optional[OpenSpans] = None


@pytest.fixture
def open_spans(otel: Otel) -> OpenSpans:
    global _OPEN_SPANS
    if _OPEN_SPANS is None:  # once per session: processors cannot be removed from a provider
        _OPEN_SPANS = OpenSpans()
        otel.provider.add_span_processor(_OPEN_SPANS)
    _OPEN_SPANS.reset()
    return _OPEN_SPANS


def payi_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "payi_otel"]


# --------------------------------------------------------------------------------------------
# (a) The OTLP endpoint is down (or failing)
# --------------------------------------------------------------------------------------------

EXPORT_TIMEOUT = 1.0  # seconds: the exporter's whole budget for one export


@pytest.fixture
def payi_on(
    instrument: Callable[..., PayiInstrumentor],
) -> Iterator[Callable[[TracerProvider], PayiInstrumentor]]:
    """``payi_on(provider)``: payi_otel + openai-v2 GenAI spans on another provider."""
    instrument(caller_file="<test>")  # PAYI_* env cleared; uninstrumented after the test
    instrumentor = PayiInstrumentor()

    def on(provider: TracerProvider) -> PayiInstrumentor:
        instrumentor.uninstrument()
        instrumentor.instrument(tracer_provider=provider, caller_file="<test>", genai_spans=True)
        return instrumentor

    yield on
    instrumentor.uninstrument()


@pytest.mark.parametrize("failure", ["up", "down", "503"])
def test_otlp_endpoint_down_does_not_slow_or_break_calls(
    payi_on: Callable[[TracerProvider], PayiInstrumentor],
    llm_server: Any,
    caplog: pytest.LogCaptureFixture,
    failure: str,
) -> None:
    receiver = OTLPReceiver().start()
    endpoint = receiver.traces_endpoint
    if failure == "down":
        receiver.stop()  # nothing listens on the port any more
    elif failure == "503":
        receiver.fail_with(503)  # a collector that answers, with errors, until it times out
    provider = TracerProvider()
    processor = BatchSpanProcessor(
        OTLPSpanExporter(endpoint=endpoint, timeout=EXPORT_TIMEOUT),
        schedule_delay_millis=20,  # export (and fail) while the calls are being made
    )
    provider.add_span_processor(processor)
    payi_on(provider)
    client = openai.OpenAI(base_url=llm_server.openai_base_url, api_key="test", max_retries=0)

    latencies: list[float] = []
    begin = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="payi_otel"):
        for i in range(30):
            with track_context(user_id=f"u{i}", use_case_name="exporter_down"):
                t0 = time.perf_counter()
                reply = client.chat.completions.create(**CHAT)
                latencies.append(time.perf_counter() - t0)
                assert reply.choices[0].message.content == "echo: Hello"
            time.sleep(0.04)  # the calls span ~1.5 s: several failing exports meanwhile
    elapsed = time.perf_counter() - begin

    t0 = time.perf_counter()
    provider.shutdown()  # flushes: the remaining exports fail too, within the budget each
    shutdown = time.perf_counter() - t0
    received = receiver.spans
    receiver.stop()

    print(
        f"\nOTLP {failure}: {len(latencies)} calls in {elapsed:.2f}s; call latency median "
        f"{statistics.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms "
        f"(export timeout {EXPORT_TIMEOUT:.0f} s); provider.shutdown() {shutdown:.2f}s"
    )
    # Every request went out, with its own headers.
    assert [payi_headers(r)["x-payi-user-id"] for r in llm_server.requests] == [
        f"u{i}" for i in range(30)
    ]
    # Generous: the exports run on the batch processor's thread, never on the calls'.
    assert max(latencies) < EXPORT_TIMEOUT
    assert statistics.median(latencies) < EXPORT_TIMEOUT / 4
    assert payi_records(caplog) == []  # the exporter's problem is not payi_otel's to log
    if failure == "503":
        assert receiver.requests, "the exporter should have tried"
    if failure == "up":  # the control: the same spans do arrive, attributed
        genai_users = sorted(
            str(s.attributes["payi.user_id"])
            for s in received
            if "gen_ai.operation.name" in s.attributes
        )
        assert genai_users == sorted(f"u{i}" for i in range(30))
    else:
        assert received == []


# --------------------------------------------------------------------------------------------
# (b) The LLM server answers 500 or resets the connection
# --------------------------------------------------------------------------------------------

ERRORS = {
    ("openai", "500"): openai.InternalServerError,
    ("openai", "reset"): openai.APIConnectionError,
    ("anthropic", "500"): anthropic.InternalServerError,
    ("anthropic", "reset"): anthropic.APIConnectionError,
}


def _call(genai: GenAI, sdk: str, retries: int, is_async: bool) -> Callable[[], Any]:
    if sdk == "openai":
        if is_async:
            client: Any = openai.AsyncOpenAI(
                base_url=genai.server.openai_base_url, api_key="test", max_retries=retries
            )
        else:
            client = genai.openai_client(max_retries=retries)
        return lambda: client.chat.completions.create(**CHAT)
    if is_async:
        client = anthropic.AsyncAnthropic(
            base_url=genai.server.anthropic_base_url, api_key="test", max_retries=retries
        )
    else:
        client = genai.anthropic_client(max_retries=retries)
    return lambda: client.messages.create(**MESSAGE)


async def _run(fn: Callable[[], Any]) -> Any:
    result = fn()
    return await result if asyncio.iscoroutine(result) else result


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("retries", [0, 1])
@pytest.mark.parametrize("mode", ["500", "reset"])
@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
async def test_server_failures_close_scopes_and_spans_and_raise_the_sdk_error(
    genai: GenAI,
    open_spans: OpenSpans,
    sdk: str,
    mode: str,
    retries: int,
    is_async: bool,
) -> None:
    error = ERRORS[(sdk, mode)]
    call = _call(genai, sdk, retries, is_async)
    tracer = genai.otel.provider.get_tracer("test.faults")
    genai.server.fail_next(retries + 1, mode=mode)  # every attempt fails

    @track(use_case_name="faulty", use_case_step="tracked_step", limit_ids=["l"])
    async def tracked() -> Any:
        with track_context(user_id="inner", use_case_step="inner_step"):
            return await _run(call)

    with track_context(user_id="outer", account_name="acme"):
        outer_context = dict(get_context())
        with tracer.start_as_current_span("outer_span") as outer_span:
            with pytest.raises(error) as info:
                await tracked()
            assert type(info.value) is error  # the SDK's own exception, not a wrapper
            # The context after the scopes is the outer one again.
            assert dict(get_context()) == outer_context
            assert trace.get_current_span() is outer_span
        # Nothing left behind: the next call carries the outer values only.
        reply = await _run(call)
    assert reply is not None
    assert "user_id" not in get_context()
    assert open_spans.open == {}, f"spans left open: {open_spans.open}"

    attempts = genai.server.requests[:-1]
    assert len(attempts) == retries + 1
    sent = [payi_headers(r) for r in attempts]
    assert all(s == sent[0] for s in sent)  # retries resend the very same headers
    assert sent[0]["x-payi-user-id"] == "inner"
    assert sent[0]["x-payi-use-case-step"] == "inner_step"
    assert payi_headers(genai.server.requests[-1]) == {
        "x-payi-user-id": "outer",
        "x-payi-account-name": "acme",
    }

    for name in ("tracked_step", "inner_step"):
        span = genai.otel.one(name)
        assert span.status.status_code is StatusCode.ERROR
        assert any(
            e.name == "exception"
            and str((e.attributes or {}).get("exception.type", "")).endswith(error.__name__)
            for e in span.events
        ), name
    assert payi_attrs(genai.otel.one("inner_step"))["payi.user_id"] == "inner"
    if sdk == "openai":  # openai-v2 GenAI spans: the failed call's ended with an error
        failed, ok = sorted(genai.otel.genai_spans(), key=lambda s: s.start_time or 0)
        assert failed.status.status_code is StatusCode.ERROR
        assert payi_attrs(failed)["payi.user_id"] == "inner"
        assert ok.status.status_code is not StatusCode.ERROR


async def test_failure_in_one_task_leaves_other_tasks_scopes_alone(
    genai: GenAI, open_spans: OpenSpans
) -> None:
    """Failures interleaved with successes across tasks: each task keeps its own scope."""

    async def worker(i: int) -> tuple[str, Any]:
        async with track_context(user_id=f"w{i}"):
            try:
                await genai.async_openai.chat.completions.create(**CHAT)
                outcome = "ok"
            except (openai.InternalServerError, openai.APIConnectionError) as exc:
                outcome = type(exc).__name__
            return outcome, get_context().get("user_id")

    genai.server.fail_next(5, mode="500")
    genai.server.fail_next(5, mode="reset")
    results = await asyncio.gather(*(worker(i) for i in range(30)))
    assert [user for _, user in results] == [f"w{i}" for i in range(30)]
    outcomes = [o for o, _ in results]
    assert outcomes.count("InternalServerError") == 5
    assert outcomes.count("APIConnectionError") == 5
    assert "user_id" not in get_context()
    assert open_spans.open == {}
    users = sorted(payi_headers(r)["x-payi-user-id"] for r in genai.server.requests)
    assert users == sorted(f"w{i}" for i in range(30))


# --------------------------------------------------------------------------------------------
# (c) A bug inside the instrumentation
# --------------------------------------------------------------------------------------------


def _broken(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("forced bug inside payi_otel")


HOOK_TARGETS: dict[str, tuple[Any, str]] = {
    # The resolved parameters cannot be turned into headers.
    "Effective.headers": (Effective, "headers"),
    # The GenAI span cannot be given the call's attributes.
    "hooks.apply_call_attributes": (payi_hooks, "apply_call_attributes"),
    # The per-call headers cannot be parsed (an unexpected error, not the caller's mistake).
    "hooks.parse_headers": (payi_hooks, "parse_headers"),
}


@pytest.mark.parametrize("target", sorted(HOOK_TARGETS))
async def test_a_bug_in_the_request_hook_sends_the_call_unchanged(
    genai: GenAI,
    internal_errors_contained: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    target: str,
) -> None:
    genai.check_invariant = False  # headers are not stamped, so spans and headers differ
    owner, attribute = HOOK_TARGETS[target]
    monkeypatch.setattr(owner, attribute, _broken)
    written = {"x-payi-user-id": "as_written", "X-Payi-Limit-Ids": "a, b", "x-other": "kept"}
    with caplog.at_level(logging.WARNING, logger="payi_otel"):
        with track_context(user_id="scope_user", account_name="scope_account"):
            for _ in range(3):
                reply = genai.openai.chat.completions.create(**CHAT, extra_headers=written)
                assert reply.choices[0].message.content == "echo: Hello"
                areply = await genai.async_openai.chat.completions.create(
                    **CHAT, extra_headers=written
                )
                assert areply.choices[0].message.content == "echo: Hello"
            assert get_context()["user_id"] == "scope_user"
    assert len(genai.server.requests) == 6
    for request in genai.server.requests:
        # Unchanged: the caller's headers exactly as written, nothing resolved or added.
        assert payi_headers(request) == {"x-payi-user-id": "as_written", "x-payi-limit-ids": "a, b"}
        assert request.headers["x-other"] == "kept"
    records = payi_records(caplog)
    assert len(records) == 1, [r.getMessage() for r in records]  # once, not once per call
    assert records[0].exc_info is not None
    assert "forced bug" in str(records[0].exc_info[1])


def test_a_bug_in_the_span_processor_leaves_the_call_and_its_headers_alone(
    genai: GenAI,
    internal_errors_contained: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr("payi_otel._spans.call_effective", _broken)
    with caplog.at_level(logging.WARNING, logger="payi_otel"):
        with track_context(user_id="u", limit_ids=["l"]):
            for _ in range(3):
                reply = genai.openai.chat.completions.create(**CHAT)
                assert reply.choices[0].message.content == "echo: Hello"
    assert genai.sent() == [{"x-payi-user-id": "u", "x-payi-limit-ids": "l"}] * 3
    # The request hook still gives the GenAI spans the call's values (the fixture checks
    # span == headers after the test).
    assert [a["payi.user_id"] for a in genai.span_attrs()] == ["u"] * 3
    records = payi_records(caplog)
    assert len(records) == 1
    assert "span processor failed" in records[0].getMessage()


def test_a_bug_entering_a_scope_never_breaks_the_app(
    genai: GenAI,
    internal_errors_contained: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """FIXED (src/payi_otel/scope.py, failure policy of docs/failure-policy.md).

    An unexpected error while a scope is entered (here forced in ``state.enter_scope``; in
    the wild e.g. a tracer provider whose ``start_span`` raises, or a bug in the state code)
    propagates out of ``with track_context(...)`` / the ``@track`` wrapper into the app, so
    the app's block or function never runs. The contract says such a problem is logged once
    and never raised into the app. Reproduction::

        monkeypatch.setattr("payi_otel._context.enter_scope", broken)
        with track_context(user_id="u"):   # RuntimeError raised here
            client.chat.completions.create(...)
    """
    genai.check_invariant = False
    monkeypatch.setattr("payi_otel._context.enter_scope", _broken)

    @track(user_id="t")
    def tracked() -> str:
        reply = genai.openai.chat.completions.create(**CHAT)
        return reply.choices[0].message.content or ""

    with caplog.at_level(logging.WARNING, logger="payi_otel"):
        with track_context(user_id="u"):
            reply = genai.openai.chat.completions.create(**CHAT)
        assert reply.choices[0].message.content == "echo: Hello"
        assert tracked() == "echo: Hello"
    assert len(genai.server.requests) == 2
    assert len(payi_records(caplog)) == 1

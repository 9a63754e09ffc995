"""Usage and cost of every GenAI call: on its span and as metrics by attribution, priced by
genai-prices (real OTel SDK, real openai/anthropic SDKs, the local fake server)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections import defaultdict
from typing import Any, Optional

import pytest
from fixtures_genai import CHAT, MESSAGE, GenAI, answered_openai, mock_openai
from fixtures_otel import Metrics
from genai_prices import Usage, calc_price
from opentelemetry.sdk.trace import ReadableSpan

from payi_otel import track_context

CACHE = {"cached_tokens": 6, "cache_write_tokens": 4, "reasoning_tokens": 3}
WITH_CACHE = {"x-fake-usage": json.dumps(CACHE)}
MINI: dict[str, Any] = {**CHAT, "model": "gpt-4o-mini"}


@pytest.fixture
def metrics(genai: GenAI) -> Metrics:
    found = Metrics()
    genai.reinstrument(
        {"use_case_name": "support", "limit_ids": ["monthly"]}, meter_provider=found.provider
    )
    return found


def cost_span(genai: GenAI) -> ReadableSpan:
    spans = genai.otel.genai_spans()
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


def fresh(genai: GenAI) -> None:
    """Forget the spans and requests so far (the invariant is checked on what follows)."""
    genai.otel.exporter.clear()
    genai.server.reset()


def usage_of(span: ReadableSpan) -> dict[str, Any]:
    return {
        k: v
        for k, v in (span.attributes or {}).items()
        if k.startswith("gen_ai.usage.") or k.startswith("payi_otel.cost.")
    }


def expected(model: str, provider: str, **usage: int) -> Any:
    return calc_price(Usage(**usage), model_ref=model, provider_id=provider)


def assert_priced(span: ReadableSpan, price: Any) -> None:
    attributes = span.attributes or {}
    assert attributes["payi_otel.cost.input"] == pytest.approx(float(price.input_price))
    assert attributes["payi_otel.cost.output"] == pytest.approx(float(price.output_price))
    assert attributes["payi_otel.cost.total"] == pytest.approx(float(price.total_price))
    assert attributes["payi_otel.cost.currency"] == "USD"


def test_openai_chat_usage_and_cost_on_the_genai_span(genai: GenAI, metrics: Metrics) -> None:
    reply = genai.openai.chat.completions.create(**MINI, extra_headers=WITH_CACHE)
    assert reply.usage is not None
    prompt, completion = reply.usage.prompt_tokens, reply.usage.completion_tokens
    span = cost_span(genai)
    attributes = span.attributes or {}
    assert attributes["gen_ai.usage.input_tokens"] == prompt
    assert attributes["gen_ai.usage.output_tokens"] == completion
    assert attributes["gen_ai.usage.cache_read.input_tokens"] == 6
    assert attributes["gen_ai.usage.reasoning.output_tokens"] == 3
    # Cache-aware: 6 of the input tokens at the cached price.
    price = expected(
        "gpt-4o-mini", "openai", input_tokens=prompt, cache_read_tokens=6, output_tokens=completion
    )
    assert (
        price.total_price
        < expected(
            "gpt-4o-mini", "openai", input_tokens=prompt, output_tokens=completion
        ).total_price
    )
    assert_priced(span, price)
    assert attributes["payi_otel.cost.provider"] == "openai"
    assert attributes["payi_otel.cost.model"] == "gpt-4o-mini"


def test_anthropic_cache_reads_and_writes_are_priced(genai: GenAI, metrics: Metrics) -> None:
    message = genai.anthropic.messages.create(**MESSAGE, extra_headers=WITH_CACHE)
    uncached = message.usage.input_tokens
    span = cost_span(genai)
    attributes = span.attributes or {}
    # Semantic conventions: input counts every input token, cache reads and writes included.
    assert attributes["gen_ai.usage.input_tokens"] == uncached + 6 + 4
    assert attributes["gen_ai.usage.cache_read.input_tokens"] == 6
    assert attributes["gen_ai.usage.cache_creation.input_tokens"] == 4
    assert_priced(
        span,
        expected(
            "claude-haiku-4-5",
            "anthropic",
            input_tokens=uncached + 10,
            cache_read_tokens=6,
            cache_write_tokens=4,
            output_tokens=message.usage.output_tokens,
        ),
    )


def test_openai_stream_agrees_with_the_plain_call_and_hides_the_usage_chunk(
    genai: GenAI, metrics: Metrics
) -> None:
    genai.openai.chat.completions.create(**MINI, extra_headers=WITH_CACHE)
    plain = usage_of(cost_span(genai))
    fresh(genai)
    chunks = list(
        genai.openai.chat.completions.create(**MINI, extra_headers=WITH_CACHE, stream=True)
    )
    assert chunks and all(c.choices and c.usage is None for c in chunks)
    assert usage_of(cost_span(genai)) == plain
    sent = genai.server.requests[-1].body
    assert sent["stream_options"] == {"include_usage": True}


def test_a_caller_who_asked_for_stream_usage_still_gets_it(genai: GenAI, metrics: Metrics) -> None:
    chunks = list(
        genai.openai.chat.completions.create(
            **MINI, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (cost_span(genai).attributes or {})["gen_ai.usage.output_tokens"] == (
        chunks[-1].usage.completion_tokens
    )


def test_raw_streaming_responses_are_sent_as_given(genai: GenAI, metrics: Metrics) -> None:
    with genai.openai.chat.completions.with_streaming_response.create(
        **MINI, stream=True
    ) as response:
        text = "".join(response.iter_text())
    assert '"usage"' not in text
    assert "stream_options" not in genai.server.requests[-1].body
    genai.check_invariant = False  # no usage: the span is whatever the instrumentation made


async def test_async_streams_agree_with_plain_calls(genai: GenAI, metrics: Metrics) -> None:
    await genai.async_openai.chat.completions.create(**MINI, extra_headers=WITH_CACHE)
    await genai.async_anthropic.messages.create(**MESSAGE, extra_headers=WITH_CACHE)
    plain = sorted((s.name, tuple(sorted(usage_of(s).items()))) for s in genai.otel.genai_spans())
    fresh(genai)
    stream = await genai.async_openai.chat.completions.create(
        **MINI, extra_headers=WITH_CACHE, stream=True
    )
    assert all([c.choices async for c in stream])
    async with genai.async_anthropic.messages.stream(
        **MESSAGE, extra_headers=WITH_CACHE
    ) as messages:
        async for _ in messages.text_stream:
            pass
    streamed = sorted(
        (s.name, tuple(sorted(usage_of(s).items()))) for s in genai.otel.genai_spans()
    )
    assert streamed == plain
    assert all(dict(u).get("payi_otel.cost.total") for _, u in streamed)


def test_sync_anthropic_stream_agrees_with_the_plain_call(genai: GenAI, metrics: Metrics) -> None:
    genai.anthropic.messages.create(**MESSAGE, extra_headers=WITH_CACHE)
    plain = usage_of(cost_span(genai))
    fresh(genai)
    for _ in genai.anthropic.messages.create(**MESSAGE, extra_headers=WITH_CACHE, stream=True):
        pass
    assert usage_of(cost_span(genai)) == plain


def test_price_as_resource_and_category_change_the_price(genai: GenAI, metrics: Metrics) -> None:
    with track_context(price_as_resource="gpt-4o"):
        reply = genai.openai.chat.completions.create(**MINI)
    assert reply.usage is not None
    tokens = {
        "input_tokens": reply.usage.prompt_tokens,
        "output_tokens": reply.usage.completion_tokens,
    }
    span = cost_span(genai)
    assert_priced(span, expected("gpt-4o", "openai", **tokens))
    assert (span.attributes or {})["payi_otel.cost.model"] == "gpt-4o"
    assert (
        expected("gpt-4o", "openai", **tokens).total_price
        != expected("gpt-4o-mini", "openai", **tokens).total_price
    )
    fresh(genai)
    genai.openai.chat.completions.create(
        **MINI,
        extra_headers={
            "x-payi-price-as-category": "system.anthropic",
            "x-payi-price-as-resource": "claude-sonnet-4-6",
        },
    )
    span = cost_span(genai)
    assert_priced(span, expected("claude-sonnet-4-6", "anthropic", **tokens))
    assert (span.attributes or {})["payi_otel.cost.provider"] == "anthropic"


def test_an_unknown_model_gets_usage_without_cost_and_one_debug_line(
    genai: GenAI, metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    # The suite re-raises payi_otel's internal errors: none may happen on this path.
    caplog.set_level(logging.DEBUG, logger="payi_otel")
    for _ in range(3):
        genai.openai.chat.completions.create(**{**CHAT, "model": "my-own-model-7"})
    spans = genai.otel.genai_spans()
    assert len(spans) == 3
    for span in spans:
        usage = usage_of(span)
        assert usage["gen_ai.usage.input_tokens"] > 0
        assert not [k for k in usage if k.startswith("payi_otel.cost.")]
    lines = [r for r in caplog.records if "my-own-model-7" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.DEBUG
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert metrics.points("payi.genai.cost") == []
    assert (
        metrics.sum_by(
            "payi.genai.tokens", "gen_ai.request.model", **{"payi_otel.token.type": "input"}
        )["my-own-model-7"]
        > 0
    )


def test_metrics_by_attribution_across_threads(genai: GenAI, metrics: Metrics) -> None:
    users = [("alice", "acme"), ("bob", "acme"), ("carol", "globex")]
    calls_each = 5

    def work(user: str, account: str) -> None:
        with track_context(user_id=user, account_name=account, use_case_step="answer"):
            for _ in range(calls_each):
                genai.openai.chat.completions.create(**MINI, extra_headers=WITH_CACHE)

    threads = [threading.Thread(target=work, args=u) for u in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    spans = genai.otel.genai_spans()
    assert len(spans) == len(users) * calls_each
    per_account: dict[str, float] = defaultdict(float)
    for span in spans:
        attributes = span.attributes or {}
        per_account[str(attributes["payi.account_name"])] += float(
            attributes["payi_otel.cost.total"]
        )  # type: ignore[arg-type]
    assert metrics.sum_by("payi.genai.cost", "payi.account_name") == pytest.approx(
        dict(per_account)
    )
    attributes, _ = metrics.points("payi.genai.cost")[0]
    assert attributes == {
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini",
        "payi.use_case.name": "support",
        "payi.use_case.step": "answer",
        "payi.account_name": attributes["payi.account_name"],
        "payi.limit_ids": "monthly",
    }
    # user_id is not a dimension unless asked for (cardinality).
    assert all("payi.user_id" not in a for a, _ in metrics.points("payi.genai.tokens"))
    cached = metrics.sum_by(
        "payi.genai.tokens", "payi.account_name", **{"payi_otel.token.type": "cache_read"}
    )
    assert cached == {"acme": 2 * calls_each * 6, "globex": calls_each * 6}


async def test_metrics_per_user_when_opted_in_across_asyncio_tasks(
    genai: GenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    metrics = Metrics()
    monkeypatch.setenv("PAYI_METRICS_USER_ID", "true")
    genai.reinstrument({"use_case_name": "digest"}, meter_provider=metrics.provider)

    async def user(name: str, calls: int) -> None:
        with track_context(user_id=name, account_name="acme"):
            for _ in range(calls):
                await genai.async_anthropic.messages.create(**MESSAGE)

    await asyncio.gather(*(user(f"user-{i}", i + 1) for i in range(4)))
    one = genai.otel.genai_spans()[0].attributes or {}
    per_call = float(one["payi_otel.cost.total"])  # type: ignore[arg-type]
    by_user = metrics.sum_by("payi.genai.cost", "payi.user_id")
    assert by_user == pytest.approx({f"user-{i}": per_call * (i + 1) for i in range(4)})
    outputs = metrics.sum_by(
        "payi.genai.tokens", "payi.user_id", **{"payi_otel.token.type": "output"}
    )
    assert outputs["user-3"] == 4 * one["gen_ai.usage.output_tokens"]  # type: ignore[operator]


def test_without_genai_prices_calls_get_usage_and_one_warning(
    genai: GenAI, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """As on Python < 3.11, where genai-prices is not installed."""
    import sys

    monkeypatch.setitem(sys.modules, "genai_prices", None)  # import raises ImportError
    metrics = Metrics()
    genai.reinstrument(meter_provider=metrics.provider)
    for _ in range(2):
        genai.openai.chat.completions.create(**MINI)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name == "payi_otel"]
    assert len(warnings) == 1 and "genai-prices is not installed" in warnings[0].getMessage()
    for span in genai.otel.genai_spans():
        usage = usage_of(span)
        assert usage["gen_ai.usage.input_tokens"] > 0
        assert not [k for k in usage if k.startswith("payi_otel.cost.")]
    assert metrics.points("payi.genai.cost") == []
    assert metrics.sum_by("payi.genai.tokens", "payi_otel.token.type")["input"] > 0


@pytest.mark.parametrize("operation", ["invoke_agent", "execute_tool", "invoke_workflow"])
def test_no_usage_on_an_agent_span_when_no_inference_span_is_made(
    genai: GenAI, operation: str
) -> None:
    """With GenAI spans off, the span current at a call can be an agent framework's (its
    ``gen_ai.*`` attributes make it a GenAI span): the call's usage is no agent's - on it, a
    backend summing ``gen_ai.usage.*`` would count it twice. The metrics still count it."""
    found = Metrics()
    genai.reinstrument(meter_provider=found.provider, genai_spans=False)
    tracer = genai.otel.provider.get_tracer("agents")
    with tracer.start_as_current_span(
        f"{operation} helper", attributes={"gen_ai.operation.name": operation}
    ):
        genai.openai.chat.completions.create(**MINI)
    (agent,) = [s for s in genai.otel.exporter.get_finished_spans() if s.name.startswith(operation)]
    assert usage_of(agent) == {}
    assert sum(v for _, v in found.points("payi.genai.tokens")) > 0


def test_instrumenting_again_on_the_same_meter_provider_keeps_reporting(genai: GenAI) -> None:
    """An SDK meter gives back the counters it has when asked again, without the new
    callbacks (``_published``): after ``uninstrument()`` and instrumenting again on the same
    provider (a configuration reload), later calls still reach the metrics, and the earlier
    sums stay (cumulative counters never go down)."""
    metrics = Metrics()
    genai.reinstrument({"use_case_name": "first"}, meter_provider=metrics.provider)
    genai.openai.chat.completions.create(**MINI)
    first = metrics.sum_by("payi.genai.tokens", "payi.use_case.name")
    assert set(first) == {"first"}
    genai.reinstrument({"use_case_name": "second"}, meter_provider=metrics.provider)
    for _ in range(3):
        genai.openai.chat.completions.create(**MINI)
    assert metrics.sum_by("payi.genai.tokens", "payi.use_case.name") == {
        "first": first["first"],
        "second": 3 * first["first"],
    }
    # The same attribution again: one series, summed across the instrumentations.
    genai.reinstrument({"use_case_name": "second"}, meter_provider=metrics.provider)
    genai.openai.chat.completions.create(**MINI)
    by_use_case = metrics.sum_by("payi.genai.cost", "payi.use_case.name")
    assert by_use_case["second"] == pytest.approx(4 * by_use_case["first"])
    assert len(metrics.points("payi.genai.cost")) == 2


def test_a_price_by_the_time_of_day_is_the_calls_own_when_priced_later(
    genai: GenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call no GenAI span waits for is priced with its batch (``_deferred``), later: a
    price that depends on the time of day (DeepSeek's off-peak hours) is read at the call's
    start, not when the batch is done."""
    from datetime import datetime, timedelta, timezone

    import genai_prices.data_snapshot
    import genai_prices.types

    metrics = Metrics()
    genai.reinstrument(meter_provider=metrics.provider, genai_spans=False)
    deepseek = {**CHAT, "model": "deepseek-chat"}
    as_deepseek = {"x-payi-price-as-category": "system.deepseek"}
    genai.openai.chat.completions.create(**deepseek, extra_headers=as_deepseek)  # priced at once
    before = metrics.total("payi.genai.cost")
    started = datetime.now(timezone.utc)
    reply = genai.openai.chat.completions.create(**deepseek, extra_headers=as_deepseek)
    assert reply.usage is not None
    usage = Usage(
        input_tokens=reply.usage.prompt_tokens, output_tokens=reply.usage.completion_tokens
    )

    def price(at: datetime) -> float:
        found = calc_price(
            usage, model_ref="deepseek-chat", provider_id="deepseek", genai_request_timestamp=at
        )
        return float(found.total_price)

    # genai-prices' clock, hours on: in the other price period when the batch is done
    # (whatever the time of day the test runs at: the first of 6, 12, 18 hours on that is).
    shifted = [started + timedelta(hours=h) for h in (6, 12, 18)]
    later = next(at for at in shifted if price(at) != price(started))

    class Clock(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return later if tz is None else later.astimezone(tz)

    monkeypatch.setattr(genai_prices.types, "datetime", Clock)
    monkeypatch.setattr(genai_prices.data_snapshot, "datetime", Clock)
    assert metrics.total("payi.genai.cost") - before == pytest.approx(price(started))


@pytest.mark.parametrize(
    "prices",
    [None, [{"model": "gpt-4o-mini", "input": "0.1", "output": "0.4", "cache_read": "0.025"}]],
    ids=["genai-prices", "user-price"],
)
def test_a_usage_genai_prices_refuses_keeps_its_tokens_without_cost(
    genai: GenAI, caplog: pytest.LogCaptureFixture, prices: Optional[list[dict[str, str]]]
) -> None:
    """A reply whose cache reads exceed its input (a gateway's inconsistent usage): genai-
    prices refuses to price it, so the call gets its usage without cost - in the metrics and
    its scope's totals too - and one WARNING says so. A user's price refuses it alike (a
    review: it priced it below zero, and drove the cost counter down)."""
    client = answered_openai(
        "hi",
        {
            "prompt_tokens": 10,
            "completion_tokens": 20,
            "total_tokens": 30,
            "prompt_tokens_details": {"cached_tokens": 50},
        },
    )
    metrics = Metrics()
    genai.reinstrument(meter_provider=metrics.provider, scope_totals=True, prices=prices)
    genai.check_invariant = False  # (its calls are answered in process, not by the server)
    caplog.set_level(logging.WARNING, logger="payi_otel")
    for _ in range(2):
        with track_context(use_case_step="odd"):
            client.chat.completions.create(**MINI)
    tokens = metrics.sum_by("payi.genai.tokens", "payi_otel.token.type")
    assert tokens == {"input": 20, "output": 40, "cache_read": 100}
    assert metrics.points("payi.genai.cost") == []
    for span in genai.otel.genai_spans():
        assert not [k for k in usage_of(span) if k.startswith("payi_otel.cost.")]
    scopes = [s for s in genai.otel.exporter.get_finished_spans() if s.name == "odd"]
    assert [(s.attributes or {}).get("payi_otel.scope.usage.input_tokens") for s in scopes] == [
        10,
        10,
    ]
    refused = [r for r in caplog.records if "cannot be priced" in r.getMessage()]
    assert len(refused) == 1 and refused[0].levelno == logging.WARNING


def test_a_stored_prompt_is_priced_and_a_retrieved_response_is_not_counted_again(
    genai: GenAI,
) -> None:
    """``responses.create(prompt={"id": ...})`` names no model (the stored prompt does): it
    is a generation, priced by its reply's model (a review found it counted free);
    ``responses.retrieve`` of it reports the same usage again and is not counted."""
    import httpx2

    reply = {
        "id": "resp_1",
        "object": "response",
        "created_at": 1,
        "status": "completed",
        "model": "gpt-4o-mini-2024-07-18",
        "output": [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": 1000,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 500,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 1500,
        },
    }
    seen: list[tuple[str, Any]] = []

    def answer(request: Any) -> Any:
        seen.append((request.method, json.loads(request.content or b"null")))
        return httpx2.Response(200, json=reply)

    metrics = Metrics()
    genai.reinstrument(meter_provider=metrics.provider)
    genai.check_invariant = False  # the mock is not the fake server
    client = mock_openai(answer)
    with track_context(user_id="alice"):
        client.responses.create(prompt={"id": "pmpt_1", "version": "2"}, input="hi")
    assert seen[0][0] == "POST" and "model" not in seen[0][1]
    want = calc_price(
        Usage(input_tokens=1000, output_tokens=500), model_ref="gpt-4o-mini", provider_id="openai"
    )
    assert metrics.total("payi.genai.cost") == pytest.approx(float(want.total_price))
    with track_context(user_id="bob"):
        client.responses.retrieve("resp_1")
    assert seen[1][0] == "GET"
    assert metrics.total("payi.genai.cost") == pytest.approx(float(want.total_price))
    assert metrics.total("payi.genai.tokens") == 1500

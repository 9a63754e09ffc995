"""Metric dimensions users choose (``metric_properties``, capped) and what one scope cost
(``scope_totals``: on the scope span at its end, each call counted once, nested scopes each
their own subtree): real OTel SDK, real openai / anthropic SDKs, the local fake server."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from fixtures_genai import CHAT, MESSAGE, GenAI
from fixtures_otel import Metrics
from opentelemetry.sdk.trace import ReadableSpan

import payi_otel._cost as cost
from payi_otel import ParameterTypeError, ParameterValueError, payi_instrument, track, track_context

MINI: dict[str, Any] = {**CHAT, "model": "gpt-4o-mini"}
TENANT = "payi.request.properties.tenant"


@pytest.fixture
def metrics(genai: GenAI) -> Metrics:
    found = Metrics()
    genai.reinstrument(
        {"use_case_name": "support"},
        meter_provider=found.provider,
        metric_properties=["tenant", "feature"],
        scope_totals=True,
    )
    return found


def genai_cost(spans: list[ReadableSpan]) -> float:
    return sum(float((s.attributes or {})["payi_otel.cost.total"]) for s in spans)  # type: ignore[arg-type]


def test_request_properties_as_metric_dimensions(genai: GenAI, metrics: Metrics) -> None:
    for tenant, calls in (("t1", 1), ("t2", 2)):
        with track_context(request_properties={"tenant": tenant, "other": "x"}):
            for _ in range(calls):
                genai.openai.chat.completions.create(**MINI)
    genai.openai.chat.completions.create(**MINI)  # no tenant: no dimension
    per_call = genai_cost(genai.otel.genai_spans()[:1])
    assert metrics.sum_by("payi.genai.cost", TENANT) == pytest.approx(
        {"t1": per_call, "t2": 2 * per_call, None: per_call}
    )
    keys = {k for a, _ in metrics.points("payi.genai.tokens") for k in a}
    assert "payi.request.properties.other" not in keys  # only the keys named
    assert "payi.request.properties.feature" not in keys  # never set: no attribute


def test_a_property_past_its_cap_is_counted_as_other(
    genai: GenAI, metrics: Metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cost, "MAX_PROPERTY_VALUES", 2)
    for tenant in ("t1", "t2", "t3", "t4", "t1"):
        with track_context(request_properties={"tenant": tenant}):
            genai.openai.chat.completions.create(**MINI)
    calls = metrics.sum_by("payi.genai.tokens", TENANT, **{"payi_otel.token.type": "output"})
    per_call = calls["t2"]
    assert calls == {"t1": 2 * per_call, "t2": per_call, cost.OTHER: 2 * per_call}


def test_series_past_the_limit_go_to_one_overflow_series(
    genai: GenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cost, "MAX_SERIES", 3)
    metrics = Metrics()
    genai.reinstrument(meter_provider=metrics.provider, metrics_user_id=True)
    for user in range(6):
        with track_context(user_id=f"user-{user}"):
            genai.openai.chat.completions.create(**MINI)
    points = metrics.points("payi.genai.cost")
    overflow = [v for a, v in points if a == {"otel.metric.overflow": True}]
    assert len(points) == 4 and len(overflow) == 1
    assert sum(v for _, v in points) == pytest.approx(genai_cost(genai.otel.genai_spans()))
    assert overflow[0] == pytest.approx(3 * sum(v for _, v in points) / 6)


@pytest.mark.parametrize(
    ("keys", "error"),
    [("tenant", ParameterTypeError), ([""], ParameterValueError), ([3], ParameterValueError)],
)
def test_bad_metric_properties_are_refused(instrument: Any, keys: Any, error: type) -> None:
    with pytest.raises(error, match="metric_properties"):
        payi_instrument(metric_properties=keys)


def test_metric_properties_from_the_environment(
    genai: GenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYI_METRIC_PROPERTIES", "tenant, feature")
    monkeypatch.setenv("PAYI_SCOPE_TOTALS", "true")
    metrics = Metrics()
    genai.reinstrument(meter_provider=metrics.provider)
    with track_context(use_case_step="s", request_properties={"feature": "search"}):
        genai.openai.chat.completions.create(**MINI)
    assert list(metrics.sum_by("payi.genai.cost", "payi.request.properties.feature")) == ["search"]
    assert (scope(genai, "s").attributes or {})["payi_otel.scope.calls"] == 1


# --- scope totals ----------------------------------------------------------------------------


def scope(genai: GenAI, step: str) -> ReadableSpan:
    (span,) = [
        s
        for s in genai.otel.exporter.get_finished_spans()
        if (s.attributes or {}).get("payi.use_case.step") == step
        and s.instrumentation_scope is not None
        and s.instrumentation_scope.name == "payi_otel"
    ]
    return span


def totals(span: ReadableSpan) -> dict[str, Any]:
    return {
        k[len("payi_otel.scope.") :]: v
        for k, v in (span.attributes or {}).items()
        if k.startswith("payi_otel.scope.")
    }


def expected(spans: list[ReadableSpan]) -> dict[str, Any]:
    """What a scope's totals must be: the sums over the GenAI spans of its calls."""
    attributes = [s.attributes or {} for s in spans]
    return {
        "calls": len(spans),
        "usage.input_tokens": sum(a["gen_ai.usage.input_tokens"] for a in attributes),
        "usage.output_tokens": sum(a["gen_ai.usage.output_tokens"] for a in attributes),
        "cost.total": pytest.approx(genai_cost(spans), rel=1e-12),
        "cost.currency": "USD",
    }


def within(genai: GenAI, span: ReadableSpan) -> list[ReadableSpan]:
    """The GenAI spans under a scope span (its trace, started and ended inside it)."""
    return [
        s
        for s in genai.otel.genai_spans()
        if s.context.trace_id == span.context.trace_id
        and s.start_time >= span.start_time  # type: ignore[operator]
        and s.end_time <= span.end_time  # type: ignore[operator]
    ]


def test_nested_scopes_each_get_their_subtree_counted_once(genai: GenAI, metrics: Metrics) -> None:
    @track(use_case_step="inner")
    def inner() -> None:
        genai.openai.chat.completions.create(**MINI)
        genai.anthropic.messages.create(**MESSAGE)

    with track_context(use_case_step="outer"):
        genai.openai.chat.completions.create(**MINI)
        inner()
        with track_context(use_case_step="empty"):
            pass
    outer, inner_span = scope(genai, "outer"), scope(genai, "inner")
    assert totals(inner_span) == expected(within(genai, inner_span))
    assert totals(outer) == expected(within(genai, outer))
    assert totals(outer)["calls"] == 3 and totals(inner_span)["calls"] == 2
    assert totals(scope(genai, "empty")) == {}  # no call: no totals
    # The GenAI usage attributes are never rolled up under gen_ai.usage.*.
    assert not [k for k in outer.attributes or {} if k.startswith("gen_ai.")]
    assert sum(v for _, v in metrics.points("payi.genai.cost")) == pytest.approx(
        totals(outer)["cost.total"]
    )


def test_threads_async_tasks_and_streams_count_in_their_scope(
    genai: GenAI, metrics: Metrics
) -> None:
    def work() -> None:
        genai.openai.chat.completions.create(**MINI)

    async def tasks() -> None:
        await asyncio.gather(
            genai.async_openai.chat.completions.create(**MINI),
            genai.async_anthropic.messages.create(**MESSAGE),
        )

    with track_context(use_case_step="fan-out"):
        threads = [threading.Thread(target=work) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        asyncio.run(tasks())
        for _ in genai.openai.chat.completions.create(**MINI, stream=True):
            pass
        with genai.anthropic.messages.stream(**MESSAGE) as stream:
            for _ in stream.text_stream:
                pass
    span = scope(genai, "fan-out")
    assert totals(span) == expected(genai.otel.genai_spans())
    assert totals(span)["calls"] == 7


def test_a_stream_read_after_its_scope_ended_adds_nothing_to_it(
    genai: GenAI, metrics: Metrics
) -> None:
    with track_context(use_case_step="left"):
        stream = genai.openai.chat.completions.create(**MINI, stream=True)
    for _ in stream:
        pass
    assert totals(scope(genai, "left")) == {}
    assert len(genai.otel.genai_spans()) == 1


def test_off_by_default_and_spanless_scopes_have_no_totals(genai: GenAI) -> None:
    genai.reinstrument({"use_case_name": "support"})
    with track_context(use_case_step="plain"):
        genai.openai.chat.completions.create(**MINI)
    assert totals(scope(genai, "plain")) == {}
    genai.reinstrument({"use_case_name": "support"}, scope_spans=False, scope_totals=True)
    with track_context(use_case_step="spanless"):
        genai.openai.chat.completions.create(**MINI)  # nothing to put totals on; no error
    assert len(genai.otel.genai_spans()) == 2


def test_a_scope_entered_with_totals_off_never_takes_its_outer_scopes_totals(
    genai: GenAI,
) -> None:
    genai.reinstrument({"use_case_name": "support"}, scope_totals=True)
    with track_context(use_case_step="outer"):
        genai.reinstrument({"use_case_name": "support"}, scope_totals=False)
        with track_context(use_case_step="inner"):
            genai.openai.chat.completions.create(**MINI)
    assert totals(scope(genai, "inner")) == {}
    assert totals(scope(genai, "outer"))["calls"] == 1

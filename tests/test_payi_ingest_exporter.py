"""PayiIngestExporter: what it sends (one record per GenAI call), and its faults - Pay-i down,
500s, slow answers, a full queue - with the app's calls unaffected, memory bounded and drops
counted. Local servers only (fake LLM, fake Pay-i). ``pytest -s`` prints the figures."""

from __future__ import annotations

import logging
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fake_payi_server import FakePayiServer
from fixtures_genai import CHAT, MESSAGE, GenAI
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult

from payi_otel import PayiIngestExporter, track_context


@pytest.fixture
def fake_payi() -> Iterator[FakePayiServer]:
    with FakePayiServer() as server:
        yield server


def exporter_for(base_url: str, **kwargs: Any) -> PayiIngestExporter:
    return PayiIngestExporter(api_key="test-key", base_url=base_url, **kwargs)


def attach(genai: GenAI, exporter: PayiIngestExporter, **kwargs: Any) -> BatchSpanProcessor:
    processor = BatchSpanProcessor(exporter, **kwargs)
    genai.otel.provider.add_span_processor(processor)
    return processor


def timed_calls(genai: GenAI, n: int) -> list[float]:
    """``n`` chat calls under a scope; each call's duration in seconds."""
    durations = []
    with track_context(user_id="alice", limit_ids=["l1"]):
        for _ in range(n):
            started = time.perf_counter()
            reply = genai.openai.chat.completions.create(**CHAT)
            durations.append(time.perf_counter() - started)
            assert reply.choices[0].message.content == "echo: Hello"
    return durations


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def report(name: str, durations: list[float], stats: Any, **extra: Any) -> None:
    print(
        f"\n[{name}] calls={len(durations)} max_call_ms={max(durations) * 1000:.1f} "
        f"stats={dict(stats)} {extra}"
    )


# --- what is sent --------------------------------------------------------------------------


def test_one_record_per_call_with_units_status_and_attribution(
    genai: GenAI, fake_payi: FakePayiServer
) -> None:
    exporter = exporter_for(fake_payi.base_url)
    processor = attach(genai, exporter)
    with track_context(
        use_case_name="bot",
        user_id="alice",
        request_properties={"k": "v"},
        price_as_resource="claude-x",
    ):
        genai.anthropic.messages.create(**MESSAGE)  # two nested GenAI spans: one record
        stream = genai.openai.chat.completions.create(
            **CHAT, stream=True, stream_options={"include_usage": True}
        )
        for _ in stream:
            pass
    processor.force_flush()
    records = [r.body for r in fake_payi.ingested()]
    assert len(records) == 2, records
    anthropic_record, openai_record = records
    assert anthropic_record["category"] == "system.anthropic"
    assert anthropic_record["resource"] == "claude-x"  # price_as_resource wins, as in Pay-i
    assert anthropic_record["http_status_code"] == 200
    assert anthropic_record["properties"] == {"k": "v"}
    assert openai_record["category"] == "system.openai"
    assert openai_record["units"]["text"]["output"] > 0
    assert isinstance(openai_record["time_to_first_token_ms"], int)
    headers = fake_payi.ingested()[0].headers
    assert headers["xproxy-user-id"] == "alice" and headers["xproxy-usecase-name"] == "bot"
    assert headers["xproxy-api-key"] == "test-key"
    # Skipped: the scope's span, and the outer of anthropic's two nested GenAI spans.
    assert exporter.stats() == {"exported": 2, "failed": 0, "dropped": 0, "skipped": 2}


def test_without_the_payi_package_a_warning_names_the_pip_command(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "payi", None)  # import payi -> ImportError
    with caplog.at_level(logging.WARNING, logger="payi_otel"):
        exporter = PayiIngestExporter()
    assert "pip install 'payi-otel[payi]'" in caplog.text
    assert exporter.export([]) is SpanExportResult.SUCCESS


def test_without_an_api_key_nothing_breaks(
    genai: GenAI, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("PAYI_API_KEY", raising=False)
    exporter = PayiIngestExporter(base_url=closed_port_url())
    processor = attach(genai, exporter)
    with caplog.at_level(logging.WARNING, logger="payi_otel"):
        timed_calls(genai, 2)
        processor.force_flush()
    assert "cannot create Pay-i's client" in caplog.text
    assert exporter.stats()["dropped"] == 2


# --- faults ---------------------------------------------------------------------------------


def test_pay_i_down(genai: GenAI) -> None:
    exporter = exporter_for(closed_port_url(), max_retries=1)
    processor = attach(genai, exporter, schedule_delay_millis=50)
    durations = timed_calls(genai, 20)
    processor.force_flush()
    stats = exporter.stats()
    report("pay-i down", durations, stats)
    assert max(durations) < 1.0
    assert stats["exported"] == 0
    assert stats["failed"] + stats["dropped"] == 20
    assert stats["failed"] >= 1


def test_pay_i_answers_500(genai: GenAI, fake_payi: FakePayiServer) -> None:
    fake_payi.status = 500
    exporter = exporter_for(fake_payi.base_url, max_retries=2)
    processor = attach(genai, exporter, max_export_batch_size=10, schedule_delay_millis=10_000)
    durations = timed_calls(genai, 10)
    processor.force_flush()
    stats = exporter.stats()
    report("500s", durations, stats, attempts=len(fake_payi.ingested()))
    # One batch: the first record tried 3 times (2 retries with backoff), the rest dropped.
    assert len(fake_payi.ingested()) == 3
    assert stats == {"exported": 0, "failed": 1, "dropped": 9, "skipped": 1}
    fake_payi.status = 200  # Pay-i back: the next batch goes through
    timed_calls(genai, 2)
    processor.force_flush()
    assert exporter.stats()["exported"] == 2


def test_pay_i_slow(genai: GenAI, fake_payi: FakePayiServer) -> None:
    fake_payi.delay = 1.0
    exporter = exporter_for(fake_payi.base_url, max_retries=0, timeout=0.2)
    processor = attach(genai, exporter, schedule_delay_millis=50)
    durations = timed_calls(genai, 10)
    processor.force_flush()
    stats = exporter.stats()
    report("slow", durations, stats)
    assert max(durations) < 1.0  # the app never waits for Pay-i
    assert stats["exported"] == 0 and stats["failed"] + stats["dropped"] == 10


def test_a_full_queue_drops_and_counts_and_stays_bounded(
    genai: GenAI, fake_payi: FakePayiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The SDK's BatchSpanProcessor counts its queue-full drops in a metric, when asked to.
    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
    fake_payi.delay = 0.2
    reader = InMemoryMetricReader()
    exporter = exporter_for(fake_payi.base_url, max_retries=0, timeout=5)
    processor = attach(
        genai,
        exporter,
        max_queue_size=16,
        max_export_batch_size=4,
        schedule_delay_millis=10,
        meter_provider=MeterProvider([reader]),
    )
    queue = processor._batch_processor._queue  # the SDK's bounded deque
    durations = timed_calls(genai, 120)
    assert queue.maxlen == 16 and len(queue) <= 16
    processor.force_flush()
    stats = exporter.stats()
    queue_full = 0
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == "otel.sdk.processor.span.processed":
                    queue_full += sum(
                        p.value
                        for p in metric.data.data_points
                        if (p.attributes or {}).get("error.type") == "queue_full"
                    )
    report("full queue", durations, stats, queue_full_drops=queue_full)
    assert max(durations) < 1.0
    assert queue_full > 0
    # Every GenAI span is accounted for (the scope's span is one more, skipped or dropped).
    handled = stats["exported"] + stats["failed"] + stats["dropped"] + queue_full
    assert handled - (1 - stats["skipped"]) == 120

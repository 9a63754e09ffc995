"""What the Pay-i ingest tests share (issue 19): the fake Pay-i server (one per module),
exporters pointed at it, and span processors added to the session's tracer provider taken
off again after the test (the provider has no API for it)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Callable

import pytest
from fake_payi_server import FakePayiServer
from fixtures_genai import GenAI
from opentelemetry.sdk.trace import SpanProcessor

from payi_otel import PayiIngestExporter


@pytest.fixture(scope="module")
def fake_payi_module() -> Iterator[FakePayiServer]:
    with FakePayiServer() as server:
        yield server


@pytest.fixture
def payi(fake_payi_module: FakePayiServer) -> FakePayiServer:
    """The module's fake Pay-i, reset (no request, no fault)."""
    fake_payi_module.reset()
    return fake_payi_module


def exporter_for(base_url: str, **kwargs: Any) -> PayiIngestExporter:
    """An exporter to ``base_url`` (short backoffs: the tests' outages last a second)."""
    kwargs.setdefault("backoff", 0.05)
    kwargs.setdefault("max_backoff", 0.2)
    return PayiIngestExporter(api_key="test-key", base_url=base_url, **kwargs)


@pytest.fixture
def add_processor(genai: GenAI) -> Iterator[Callable[[SpanProcessor], None]]:
    """``add_processor(p)``: ``p`` on the session's tracer provider for this test only."""
    active = genai.otel.provider._active_span_processor
    before = active._span_processors
    added: list[SpanProcessor] = []

    def add(processor: SpanProcessor) -> None:
        added.append(processor)
        genai.otel.provider.add_span_processor(processor)

    yield add
    with active._lock:
        active._span_processors = before
    for processor in added:
        processor.shutdown()

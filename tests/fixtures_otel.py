"""OpenTelemetry fixtures: one real SDK TracerProvider with an in-memory exporter per session,
and a fixture that instruments payi_otel with a given global config for one test."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Callable, Optional

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from payi_otel import PayiInstrumentor
from payi_otel._log import reset_log_once


@dataclass
class Otel:
    provider: TracerProvider
    exporter: InMemorySpanExporter

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, (name, [s.name for s in self.spans()])
        return found[0]

    def all_genai_spans(self) -> list[ReadableSpan]:
        return [s for s in self.spans() if is_genai(s.attributes)]

    def genai_ancestor(
        self, span: ReadableSpan, by_id: Optional[GenAIIndex] = None
    ) -> Optional[ReadableSpan]:
        """The outermost GenAI span above ``span``, if any."""
        if by_id is None:
            by_id = self._genai_by_id()
        found = None
        child = span
        while child.parent is not None:
            # Ids are not unique across hypothesis examples (it seeds ``random``): the parent
            # is the span with that id that was open when the child started (a stream left
            # unfinished can end its inner span after the outer one).
            parents = [
                p
                for p in by_id.get((child.parent.trace_id, child.parent.span_id), ())
                if (p.start_time or 0) <= (child.start_time or 0) <= (p.end_time or 0)
            ]
            if not parents:
                break
            found = child = parents[0]
        return found

    def genai_spans(self) -> list[ReadableSpan]:
        """One GenAI span per call: the outermost. A GenAI span inside another is the same
        call (the anthropic SDK's own call span under genai-anthropic's span)."""
        by_id = self._genai_by_id()
        return [s for s in self.all_genai_spans() if self.genai_ancestor(s, by_id) is None]

    def _genai_by_id(self) -> GenAIIndex:
        index: GenAIIndex = {}
        for span in self.all_genai_spans():
            if span.context is not None:
                key = (span.context.trace_id, span.context.span_id)
                index.setdefault(key, []).append(span)
        return index


GenAIIndex = dict[tuple[int, int], list[ReadableSpan]]


def is_genai(attributes: Optional[Mapping[str, Any]]) -> bool:
    """Whether a finished span with these attributes is a GenAI span: it has a ``gen_ai.*``
    attribute. The tests' one test of it, for SDK spans, spans received over OTLP and the
    console exporter's JSON alike."""
    return any(key.startswith("gen_ai.") for key in attributes or ())


def payi_attrs(span: ReadableSpan) -> dict[str, Any]:
    """The span's payi.* attributes (sequences as lists)."""
    result: dict[str, Any] = {}
    for key, value in (span.attributes or {}).items():
        if key.startswith("payi.") and key != "payi.scope":
            result[key] = list(value) if isinstance(value, tuple) else value
    return result


_PROVIDER: Optional[TracerProvider] = None
_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="session")
def otel_session() -> Otel:
    global _PROVIDER
    if _PROVIDER is None:
        _PROVIDER = TracerProvider()
        _PROVIDER.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(_PROVIDER)
    return Otel(_PROVIDER, _EXPORTER)


@pytest.fixture
def otel(otel_session: Otel) -> Iterator[Otel]:
    otel_session.exporter.clear()
    yield otel_session
    otel_session.exporter.clear()


@pytest.fixture
def instrument(
    otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., PayiInstrumentor]]:
    """``instrument(config, **kwargs)``: PayiInstrumentor on the test provider; undone after.

    ``PAYI_*`` variables from the outer environment are removed first; the default use case
    name comes from ``caller_file`` (``"app.py"`` unless a test passes another).
    """
    import os

    for key in list(os.environ):
        if key.startswith("PAYI_"):
            monkeypatch.delenv(key)
    reset_log_once()
    instrumentor = PayiInstrumentor()
    instrumentor.uninstrument()

    def do(config: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> PayiInstrumentor:
        kwargs.setdefault("caller_file", "/srv/app.py")
        instrumentor.instrument(config=config, tracer_provider=otel.provider, **kwargs)
        return instrumentor

    yield do
    instrumentor.uninstrument()
    reset_log_once()


@pytest.fixture
def no_global(instrument: Callable[..., PayiInstrumentor]) -> PayiInstrumentor:
    """Instrumented with an empty global context (no default use case name)."""
    return instrument(caller_file="<test>")


class Metrics:
    """An in-memory metric reader and the ``MeterProvider`` payi_otel records on."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])

    def points(self, name: str) -> list[tuple[dict[str, Any], float]]:
        data = self.reader.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found += [
                            (dict(p.attributes or {}), p.value) for p in metric.data.data_points
                        ]
        return found

    def total(self, name: str, **where: Any) -> float:
        return sum(v for a, v in self.points(name) if all(a.get(k) == w for k, w in where.items()))

    def by(self, name: str, key: str) -> dict[Any, float]:
        sums: dict[Any, float] = defaultdict(float)
        for attributes, value in self.points(name):
            sums[attributes.get(key)] += value
        return dict(sums)

    def sum_by(self, name: str, key: str, **where: Any) -> dict[Any, float]:
        sums: dict[Any, float] = defaultdict(float)
        for attributes, value in self.points(name):
            if all(attributes.get(k) == v for k, v in where.items()):
                sums[attributes.get(key)] += value
        return dict(sums)

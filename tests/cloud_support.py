"""What the tests of issue 18's Azure OpenAI, Anthropic cloud clients and model mappings share
(tests/test_azure_openai.py, tests/test_anthropic_cloud.py, tests/test_model_mappings.py):
payi_otel reinstrumented in a surface mode with a metrics reader and a call recorder, the
Pay-i ingest records of the GenAI spans (``PayiIngestExporter`` with a capturing client),
and the ways a caller consumes a stream."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable, Optional

from fixtures_genai import GenAI
from fixtures_otel import Metrics
from genai_prices import Usage as PricesUsage
from genai_prices import calc_price
from opentelemetry.sdk.trace import ReadableSpan

from payi_otel import PayiIngestExporter, get_context
from payi_otel._providers import CallRecord, Usage
from payi_otel._providers._core import add_observer


@dataclass
class Mode:
    """payi_otel as a surface test runs it: GenAI spans on or off, the dialect, its metrics and
    every call it reports."""

    genai: GenAI
    spans: bool
    dialect: str
    metrics: Metrics = field(default_factory=Metrics)
    records: list[CallRecord] = field(default_factory=list)

    def start(self, config: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> Mode:
        self.metrics = Metrics()
        self.records.clear()
        self.genai.reinstrument(
            config,
            genai_spans=self.spans,
            header_dialect=self.dialect,
            meter_provider=self.metrics.provider,
            **kwargs,
        )
        # A stream an earlier test left may be collected during this one: its report is not
        # this test's (each instrument's global level has a use case id of its own).
        ours = get_context().get("use_case_id")

        def observe(record: CallRecord) -> None:
            if record.call.public().get("use_case_id") == ours:
                self.records.append(record)

        add_observer(observe)  # undone with the settings by the next instrument
        return self

    def forget(self) -> None:
        """Forget the calls so far (the server keeps its Azure deployments)."""
        self.records.clear()
        deployments = dict(self.genai.server.azure_deployments)
        self.genai.server.reset()
        self.genai.server.azure_deployments.update(deployments)
        self.genai.otel.exporter.clear()

    def record(self) -> CallRecord:
        assert len(self.records) == 1, self.records
        return self.records[0]


#: (genai_spans, header_dialect): a pairwise cover of ``fixtures_genai.SURFACE_MODES`` (GenAI
#: spans on and off, each dialect) for the long surface matrices: the stamping is the same
#: request hook on every surface, what a surface changes is its span (on / off).
PAIRWISE_MODES = [(True, "x-payi"), (False, "payi-proxy")]
MODE_IDS = {
    (True, "x-payi"): "spans-x-payi",
    (False, "x-payi"): "nospans-x-payi",
    (True, "payi-proxy"): "spans-payi-proxy",
    (False, "payi-proxy"): "nospans-payi-proxy",
}


def price(model: str, provider: str, usage: Usage) -> Any:
    """genai-prices' price of ``usage`` (a ``CallRecord``'s: input counts cache reads and
    writes) for ``model`` of ``provider``."""
    counts = {
        name: getattr(usage, name)
        for name in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
        if getattr(usage, name) is not None
    }
    return calc_price(PricesUsage(**counts), model_ref=model, provider_id=provider)


def assert_cost_on(span: ReadableSpan, expected: Any) -> None:
    attributes = span.attributes or {}
    assert attributes["payi_otel.cost.total"] == float(expected.total_price), attributes
    assert attributes["payi_otel.cost.provider"] == expected.provider.id
    assert attributes["payi_otel.cost.model"] == expected.model.id


def ingested(spans: list[ReadableSpan]) -> list[dict[str, Any]]:
    """The ``ingest.units`` records ``PayiIngestExporter`` makes of ``spans`` (in end order,
    as a span processor hands them over), with a client that keeps them."""
    sent: list[dict[str, Any]] = []
    client = SimpleNamespace(ingest=SimpleNamespace(units=lambda **kw: sent.append(kw)))
    exporter = PayiIngestExporter(client=client)
    exporter.export(sorted(spans, key=lambda s: s.end_time or 0))
    exporter.force_flush()  # issue 19: records are sent by the exporter's queue
    return sent


# --- the ways a caller consumes a stream -----------------------------------------------------

#: exhaust: read to the end; break: leave the loop after the first item; close: one item, then
#: ``close()``; drop: one item, then nothing (collected later); with: ``with stream`` and break.
STYLES = ("exhaust", "break", "close", "drop", "with")


def read_in_style(stream: Any, style: str) -> tuple[list[Any], Any]:
    """Read ``stream`` in ``style`` (``exhaust``; ``with``: one item inside ``with``; any
    other: one item from its iterator, then ``close()`` for ``close``): the items the caller
    saw, and the iterator it still holds (None when it holds none)."""
    items: list[Any] = []
    if style == "exhaust":
        return list(stream), None
    if style == "with":
        with stream as entered:
            for item in entered:
                items.append(item)
                break
        return items, None
    iterator = iter(stream)
    items.append(next(iterator))
    if style == "close":
        stream.close()
    return items, iterator


async def aread_in_style(stream: Any, style: str) -> tuple[list[Any], Any]:
    """The async counterpart of :func:`read_in_style`."""
    items: list[Any] = []
    if style == "exhaust":
        return [item async for item in stream], None
    if style == "with":
        async with stream as entered:
            async for item in entered:
                items.append(item)
                break
        return items, None
    iterator = stream.__aiter__()
    items.append(await iterator.__anext__())
    if style == "close":
        await stream.close()
    return items, iterator


def consume(open_stream: Callable[[], Any], style: str) -> list[Any]:
    """Open a stream and read it in ``style``; the items the caller saw. The stream is
    released and collected before this returns (a dropped one reports then)."""
    stream = open_stream()
    items, iterator = read_in_style(stream, style)
    del iterator
    del stream
    gc.collect()
    return items


async def aconsume(open_stream: Callable[[], Awaitable[Any]], style: str) -> list[Any]:
    """The async counterpart of :func:`consume`."""
    stream = await open_stream()
    items, iterator = await aread_in_style(stream, style)
    del iterator
    del stream
    for _ in range(2):  # and let the loop close the async generators collection left it
        gc.collect()
        for _ in range(2):
            await asyncio.sleep(0)
    return items


def assert_partial(usage: Optional[Usage], full: Optional[Usage]) -> None:
    """A stream left early reports what it showed, never more than the whole stream."""
    if usage is None:
        return
    assert full is not None
    for name, value in usage.__dict__.items():
        assert value is None or value <= getattr(full, name), (name, usage, full)

"""The per-call cost of the cost path (``payi_otel._cost``): ``python benchmarks/bench_cost.py``.

One process, payi_otel instrumented with GenAI spans on an SDK ``TracerProvider`` (spans
dropped) and an SDK ``MeterProvider`` (an ``InMemoryMetricReader``). The same chat
completion is timed with the cost observer registered and with no observer at all (the hook
then skips observing entirely), interleaved over many repetitions; the figure is the median
of the paired per-repetition ratios with a ~95% confidence interval (``bench_timing``).

Two transports: the local fake server over loopback (a whole call), and an in-process mock
transport (the client's CPU only, where the observer's share is largest).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import httpx2
import openai
from bench_timing import Variant, loop, measure
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))

from fake_llm_server import FakeLLMServer  # noqa: E402

from payi_otel import (  # noqa: E402
    PayiInstrumentor,
    _settings,
    track_context,
)

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "How much does this call cost?"}]


class Drop(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def mock_client(server: FakeLLMServer) -> openai.OpenAI:
    """A client answered in-process with a completion recorded once from the fake server."""
    recorder = openai.OpenAI(base_url=server.openai_base_url, api_key="x", max_retries=0)
    body = recorder.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=MESSAGES,  # type: ignore[arg-type]
    ).http_response.content
    recorder.close()

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=body, headers={"content-type": "application/json"})

    return openai.OpenAI(
        base_url="http://mock.invalid/v1",
        api_key="x",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(answer)),
    )


def main(argv: Sequence[str] = ()) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=41)
    args = parser.parse_args(argv)

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(Drop()))
    reader = InMemoryMetricReader()
    payi = PayiInstrumentor()
    payi.instrument(
        config={"use_case_name": "bench", "limit_ids": ["monthly"]},
        tracer_provider=tracer_provider,
        caller_file="bench_cost.py",
        meter_provider=MeterProvider(metric_readers=[reader]),
    )
    observers = _settings.current.observers
    assert observers, "the instrumentor registered no cost observer"

    def variant(name: str, client: openai.OpenAI, active: tuple[object, ...]) -> Variant:
        def call() -> None:
            client.chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]

        timed = loop(call)

        def run(n: int) -> int:
            _settings.install(replace(_settings.current, observers=active))  # type: ignore[arg-type]
            return timed(n)

        return Variant(name, run)

    print(
        f"cost path per call: with the cost observer vs no observer "
        f"({args.repetitions} interleaved repetitions, median of paired ratios, ~95% CI)"
    )
    with FakeLLMServer() as server, track_context(user_id="u1", account_name="acme"):
        for where, client in (
            (
                "loopback fake server",
                openai.OpenAI(base_url=server.openai_base_url, api_key="x", max_retries=0),
            ),
            ("in-process mock transport", mock_client(server)),
        ):
            result = measure(
                [variant("none", client, ()), variant("cost", client, observers)],
                repetitions=args.repetitions,
            )
            low, high = result.ratio_ci("cost", "none")
            print(
                f"  {where:26} {result.median_us('none'):8.1f} us -> "
                f"{result.median_us('cost'):8.1f} us  ratio {result.ratio('cost', 'none'):.3f} "
                f"[{low:.3f}-{high:.3f}]  +{result.delta_us('cost', 'none'):.1f} us "
                f"(n={result.n} calls per batch)"
            )
            client.close()
    _settings.install(replace(_settings.current, observers=observers))
    points = sum(
        len(m.data.data_points)
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    )
    print(f"  ({points} metric data points recorded)")
    payi.uninstrument()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

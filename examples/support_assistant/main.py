"""See payi_otel at work: a support assistant making real OpenAI SDK calls, then its traces,
the ``x-payi-*`` headers every call sent, and what each user and use case step cost (from the
token and cost metrics).

    make demo                      # or: python examples/support_assistant/main.py

Needs no network, API key or Docker: the calls go to a fake OpenAI server started in-process
(``examples/fake_llm_server.py``). Environment:

* ``PAYI_DEMO_BASE_URL``: an OpenAI-compatible base URL to call instead (e.g. a fake server
  started on its own); the key is ``OPENAI_API_KEY``, else ``"demo"``. The headers table needs
  the in-process server, so it is skipped then.
* ``OTEL_SERVICE_NAME``: the ``service.name`` of the spans (default ``payi-otel-demo``).
* ``OTEL_EXPORTER_OTLP_ENDPOINT``: also export the spans over OTLP/HTTP to this base URL
  (e.g. ``http://localhost:4318``, the collector of ``docker compose up``).
* ``PAYI_DEMO_TRACES_JSON``: also write what the demo produced to this file, as JSON: every
  trace's id and spans, each GenAI span's request headers, the check verdict and the OTLP
  export counts (``make e2e`` compares it with what Jaeger received).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
for _path in (HERE, HERE.parent):  # this example's modules, and examples/fake_llm_server.py
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from assistant import (  # noqa: E402
    DIGEST_ACCOUNTS,
    TICKETS,
    Clouds,
    admin_replay,
    handle_ticket,
    nightly_digest,
)
from costs import print_costs  # noqa: E402
from fake_llm_server import FakeLLMServer  # noqa: E402
from openai import OpenAI  # noqa: E402
from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.resources import SERVICE_NAME, Resource  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import (  # noqa: E402
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from report import (  # noqa: E402
    context_attributes,
    is_genai,
    match_calls,
    number_calls,
    print_check,
    print_headers,
    print_traces,
    traces_record,
)

from payi_otel import get_context, payi_instrument  # noqa: E402

DEFAULT_SERVICE_NAME = "payi-otel-demo"

#: The global level: every call is for this use case and counts against the monthly budget.
PAYI_CONFIG: dict[str, object] = {
    "use_case_name": "support_assistant",
    "use_case_version": 2,
    "limit_ids": ["monthly_budget"],
}


class ExportCounter(SpanExporter):
    """Wraps an exporter to count the spans it delivered and the ones it could not."""

    def __init__(self, exporter: SpanExporter) -> None:
        self.exporter = exporter
        self.delivered = 0
        self.failed = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.exporter.export(spans)
        if result is SpanExportResult.SUCCESS:
            self.delivered += len(spans)
        else:
            self.failed += len(spans)
        return result

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)


def setup_tracing() -> tuple[TracerProvider, InMemorySpanExporter, Optional[ExportCounter]]:
    """A tracer provider keeping every span in memory (for the printout) and, when
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, also exporting them over OTLP/HTTP."""
    service_name = os.environ.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    otlp: Optional[ExportCounter] = None
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        otlp = ExportCounter(OTLPSpanExporter())  # endpoint, headers, timeout: from the env
        provider.add_span_processor(BatchSpanProcessor(otlp))
    trace.set_tracer_provider(provider)
    return provider, memory, otlp


def gateway_clients(server: FakeLLMServer) -> Clouds:
    """Gemini and Bedrock clients pointed at the company's LLM gateway (the fake server):
    a gateway reads the x-payi-* headers, so payi_otel sends them there (never to
    generativelanguage.googleapis.com or bedrock-runtime.*.amazonaws.com)."""
    import boto3
    from google import genai
    from google.genai import types

    gemini = genai.Client(
        api_key="demo", http_options=types.HttpOptions(base_url=server.google_genai_base_url)
    )
    bedrock = boto3.client(
        "bedrock-runtime",
        endpoint_url=server.bedrock_endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="demo",
        aws_secret_access_key="demo",
    )
    return Clouds(gemini=gemini, bedrock=bedrock)


def run_app(base_url: str, api_key: str, clouds: Optional[Clouds] = None) -> None:
    """The application's work: the tickets, an admin replay, the nightly digests."""
    with OpenAI(base_url=base_url, api_key=api_key) as client:
        for ticket in TICKETS:
            handle_ticket(client, ticket, clouds or Clouds())
        admin_replay(client, TICKETS[0])
    asyncio.run(nightly_digest(base_url, DIGEST_ACCOUNTS))


def main() -> int:
    provider, memory, otlp = setup_tracing()
    # The cost view reads payi_otel's token and cost metrics; user ids are a dimension here
    # (opt-in: one series per user).
    metrics = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[metrics])
    payi_instrument(
        config=PAYI_CONFIG,
        tracer_provider=provider,
        meter_provider=meter_provider,
        metrics_user_id=True,
    )
    global_attributes = context_attributes(get_context())  # outside any scope: the global level

    server: Optional[FakeLLMServer] = None
    base_url = os.environ.get("PAYI_DEMO_BASE_URL") or ""
    api_key = "demo"
    if base_url:
        api_key = os.environ.get("OPENAI_API_KEY") or api_key
    else:
        server = FakeLLMServer(latency=0.02, stream_delay=0.002).start()
        base_url = server.openai_base_url
    clouds = gateway_clients(server) if server is not None else Clouds()
    print(f"payi_otel demo: support assistant -> OpenAI API at {base_url}")
    if server is not None:
        print(f"  and Gemini and AWS Bedrock through the LLM gateway at {server.base_url}")
    try:
        run_app(base_url, api_key, clouds)
    finally:
        if server is not None:
            server.stop()
    spans = memory.get_finished_spans()
    calls = sum(1 for span in spans if is_genai(span))
    streamed = ", ".join(t.id for t in TICKETS if t.stream)
    escalated = ", ".join(f"{t.id} to {t.escalate_to}" for t in TICKETS if t.escalate_to)
    print(
        f"ran {len(TICKETS)} tickets (streamed: {streamed}; escalated: {escalated}), "
        f"1 admin replay with limit_ids=[], {len(DIGEST_ACCOUNTS)} concurrent digests: "
        f"{calls} LLM calls"
    )

    pairs, unmatched = match_calls(spans, server.requests if server else [])
    requests, numbers = number_calls(pairs, unmatched)
    print("\n=== Traces " + "=" * 68)
    print_traces(spans, numbers, global_attributes)

    print("\n=== x-payi-* headers sent, one line per request " + "=" * 31)
    ok = True
    if server is None:
        print("(not recorded: PAYI_DEMO_BASE_URL points at another server)")
    else:
        print_headers(requests)
        print()
        ok = print_check(pairs, unmatched)

    print("\n=== Cost, from the payi.genai.* metrics " + "=" * 40)
    print_costs(metrics)

    provider.shutdown()  # flushes the OTLP exporter, if any
    if otlp is not None:
        print(
            f"\nOTLP/HTTP export to {os.environ['OTEL_EXPORTER_OTLP_ENDPOINT']} "
            f"(service.name={provider.resource.attributes.get(SERVICE_NAME)}): "
            f"{otlp.delivered} spans delivered, {otlp.failed} failed"
        )
        if otlp.failed:
            print("(is a collector listening there? `docker compose up` starts one on :4318)")
    record_path = os.environ.get("PAYI_DEMO_TRACES_JSON")
    if record_path:
        record = {
            "service_name": provider.resource.attributes.get(SERVICE_NAME),
            "headers_recorded": server is not None,
            "check_ok": ok,
            "otlp_delivered": otlp.delivered if otlp else 0,
            "otlp_failed": otlp.failed if otlp else 0,
            "traces": traces_record(spans, pairs),
        }
        Path(record_path).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # the output was piped into `head` or a pager that quit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)

"""A fresh program for ``test_on_import``: ``payi_instrument()`` before the SDK is imported,
then one call through it to the fake server. Prints one JSON line.

``python on_import_child.py <sdk> <urls JSON> <how>``: ``sdk`` is openai, anthropic, bedrock
or google; ``how`` is ``main`` (the SDK imported in the main thread), ``thread`` (in a worker
thread, as a lazily loaded plugin does), ``own-genai`` (the program turns the SDK's GenAI
instrumentation on itself after ``payi_instrument()``, which imports the SDK) or
``uninstrumented`` (payi_otel uninstrumented before the import).
"""

from __future__ import annotations

import importlib
import json
import sys
import threading
from typing import Any, Dict, List

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from payi_otel import PayiInstrumentor, payi_instrument, track_context

#: What payi_instrument() imported before: every one of these (those installed) at once.
HEAVY = (
    "openai",
    "anthropic",
    "botocore",
    "boto3",
    "google.genai",
    "agents",
    "langchain_core",
    "httpx",
    "httpx2",
    "requests",
    "starlette",
    "flask",
    "opentelemetry.instrumentation.genai",
    "opentelemetry.instrumentation.google_genai",
    "opentelemetry.instrumentation.openai_v2",
)


def call(sdk: str, urls: Dict[str, str]) -> None:
    if sdk == "openai":
        import openai

        client: Any = openai.OpenAI(base_url=urls["openai"], api_key="test", max_retries=0)
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}]
        )
    elif sdk == "anthropic":
        import anthropic

        client = anthropic.Anthropic(base_url=urls["anthropic"], api_key="test", max_retries=0)
        client.messages.create(
            model="claude-haiku-4-5", max_tokens=64, messages=[{"role": "user", "content": "Hi"}]
        )
    elif sdk == "bedrock":
        import boto3
        import botocore.config

        client = boto3.client(
            "bedrock-runtime",
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
            endpoint_url=urls["bedrock"],
            config=botocore.config.Config(retries={"total_max_attempts": 1}),
        )
        client.converse(
            modelId="us.anthropic.claude-3-5-haiku-20241022-v1:0",
            messages=[{"role": "user", "content": [{"text": "Hi"}]}],
        )
    else:
        from google import genai
        from google.genai import types

        client = genai.Client(
            api_key="test", http_options=types.HttpOptions(base_url=urls["google"])
        )
        client.models.generate_content(model="gemini-2.5-flash", contents="Hi")


def own_genai(sdk: str) -> None:
    """Turn the SDK's first installed GenAI instrumentation on, as a program does."""
    from payi_otel import _genai

    name = {"bedrock": "botocore", "google": "google.genai"}.get(sdk, sdk)
    family = next(f for f in _genai.FAMILIES if f.sdk == name)
    for inst in family.instrumentations:
        try:
            module = importlib.import_module(inst.module)
        except ImportError:
            continue
        getattr(module, inst.instrumentor)().instrument(tracer_provider=TRACER)
        return
    raise SystemExit(f"no GenAI instrumentation of {sdk} is installed")


def main() -> None:
    sdk, urls, how = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    payi_instrument({"use_case_name": "lazy"}, tracer_provider=TRACER, meter_provider=METERS)
    imported = [name for name in HEAVY if name in sys.modules]
    if how == "uninstrumented":
        PayiInstrumentor().uninstrument()
    elif how == "own-genai":
        own_genai(sdk)
    errors: List[BaseException] = []

    def run() -> None:
        try:
            with track_context(user_id="lazy-user"):
                call(sdk, urls)
        except BaseException as exc:  # reported below
            errors.append(exc)

    if how == "thread":
        worker = threading.Thread(target=run)
        worker.start()
        worker.join()
    else:
        run()
    if errors:
        raise errors[0]
    spans = [
        {
            "name": span.name,
            "user": (span.attributes or {}).get("payi.user_id"),
            "genai": any(key.startswith("gen_ai.") for key in (span.attributes or {})),
        }
        for span in EXPORTER.get_finished_spans()
    ]
    data = METER_READER.get_metrics_data()
    metrics = sorted(
        {
            metric.name
            for resource in (data.resource_metrics if data else ())
            for scope in resource.scope_metrics
            for metric in scope.metrics
        }
    )
    print(json.dumps({"imported_by_instrument": imported, "spans": spans, "metrics": metrics}))


EXPORTER = InMemorySpanExporter()
TRACER = TracerProvider()
TRACER.add_span_processor(SimpleSpanProcessor(EXPORTER))
METER_READER = InMemoryMetricReader()
METERS = MeterProvider(metric_readers=[METER_READER])

if __name__ == "__main__":
    main()

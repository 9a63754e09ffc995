"""Runs a few scoped calls to AWS Bedrock (``boto3``) or Google GenAI (``google-genai``) with
Pay-i's SDK (``payi``) or with payi_otel, in a process of its own, in ingest mode: the
attribution goes to ``PAYI_BASE_URL``'s ``/api/v1/ingest`` (tests/test_payi_side_by_side.py
does the same for openai, in both modes, over every seed scenario).

    python payi_side_by_side_providers.py {payi|payi_otel} PROVIDER LLM_BASE_URL PAYI_BASE_URL ...

PROVIDER: ``bedrock`` or ``google``; several run at once as tests/payi_side_by_side.py's
``main`` does (one process forked per provider).
"""

from __future__ import annotations

import sys
from typing import Any, Callable

from payi_side_by_side import main


def client_and_call(provider: str, llm_base_url: str) -> Callable[[], None]:
    """A client made after instrumenting (Pay-i's SDK wraps client creation), and one call."""
    if provider == "bedrock":
        import boto3

        client: Any = boto3.client(
            "bedrock-runtime",
            endpoint_url=llm_base_url,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )

        def call() -> None:
            client.converse(
                modelId="us.anthropic.claude-3-5-haiku-20241022-v1:0",
                messages=[{"role": "user", "content": [{"text": "Hello"}]}],
            )

        return call
    from google import genai
    from google.genai import types

    gemini = genai.Client(api_key="test", http_options=types.HttpOptions(base_url=llm_base_url))

    def generate() -> None:
        gemini.models.generate_content(model="gemini-2.5-flash", contents="Hello")

    return generate


def run(impl: str, provider: str, llm_base_url: str) -> list[str]:
    """The scoped calls in this process; their labels."""
    if impl == "payi":
        from payi.lib.instrument import payi_instrument, track, track_context

        payi_instrument()
        finish: Callable[[], object] = dict  # it ingests inline
    else:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        from payi_otel import PayiIngestExporter, payi_instrument, track, track_context

        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(BatchSpanProcessor(PayiIngestExporter()))
        payi_instrument(tracer_provider=tracer_provider, header_hosts=[])
        finish = tracer_provider.shutdown
    call = client_and_call(provider, llm_base_url)
    labels: list[str] = []

    @track(use_case_name="support", limit_ids=["monthly"])
    def answer() -> None:
        with track_context(user_id="alice", account_name="acme"):
            labels.append("scoped")
            call()
        with track_context(request_properties={"team": "core"}, limit_ids=["daily"]):
            labels.append("properties")
            call()

    answer()
    finish()
    return labels


if __name__ == "__main__":
    main(run, ("boto3", "google.genai"), *sys.argv[1:])

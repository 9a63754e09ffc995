"""AWS Bedrock through aiobotocore (botocore's async client): every operation payi_otel reads,
awaited and streamed with ``async for``, attributed on the wire and on its GenAI span, priced,
per task; and aiobotocore imported after ``payi_instrument()`` (real aiobotocore and
genai-bedrock against the fake server's SigV4-checked Bedrock routes)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.session import get_session
from fixtures_genai import BEDROCK_MODEL, GenAI, attribution_headers, claude_body
from fixtures_otel import Metrics
from genai_prices import Usage, calc_price

from payi_otel import track_context

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = [{"role": "user", "content": [{"text": "Hello"}]}]


@asynccontextmanager
async def aio_bedrock(genai: GenAI) -> AsyncIterator[Any]:
    session = get_session()
    async with session.create_client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=genai.server.bedrock_endpoint_url,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    ) as client:
        yield client


async def call(client: Any, operation: str, **kwargs: Any) -> dict[str, int]:
    """One call of ``operation``, read to its end; the usage it reported."""
    if operation == "converse":
        reply = await client.converse(modelId=BEDROCK_MODEL, messages=MESSAGES, **kwargs)
        return {"input": reply["usage"]["inputTokens"], "output": reply["usage"]["outputTokens"]}
    if operation == "converse_stream":
        reply = await client.converse_stream(modelId=BEDROCK_MODEL, messages=MESSAGES, **kwargs)
        events = [event async for event in reply["stream"]]
        usage = events[-1]["metadata"]["usage"]
        return {"input": usage["inputTokens"], "output": usage["outputTokens"]}
    if operation == "invoke_model":
        reply = await client.invoke_model(modelId=BEDROCK_MODEL, body=claude_body(), **kwargs)
        body = json.loads(await reply["body"].read())
        return {"input": body["usage"]["input_tokens"], "output": body["usage"]["output_tokens"]}
    reply = await client.invoke_model_with_response_stream(
        modelId=BEDROCK_MODEL, body=claude_body(), **kwargs
    )
    chunks = [json.loads(event["chunk"]["bytes"]) async for event in reply["body"]]
    metrics = chunks[-1]["amazon-bedrock-invocationMetrics"]
    return {"input": metrics["inputTokenCount"], "output": metrics["outputTokenCount"]}


OPERATIONS = ["converse", "converse_stream", "invoke_model", "invoke_model_with_response_stream"]


@pytest.mark.parametrize("operation", OPERATIONS)
async def test_every_operation_is_attributed_on_the_wire_and_the_span_and_priced(
    genai: GenAI, operation: str
) -> None:
    metrics = Metrics()
    genai.reinstrument(meter_provider=metrics.provider)
    async with aio_bedrock(genai) as client:
        with track_context(user_id="alice", limit_ids=["scope"]):
            usage = await call(
                client,
                operation,
                extra_headers={"x-payi-limit-ids": "per_call", "x-gateway-key": "k1"},
            )
    (request,) = genai.server.requests
    sent = attribution_headers(request)
    assert sent["x-payi-user-id"] == "alice"
    assert sent["x-payi-limit-ids"] == "scope,per_call"
    assert request.headers["x-gateway-key"] == "k1"  # the caller's own header, as given
    (span,) = genai.otel.genai_spans()
    attributes = span.attributes or {}
    assert attributes["payi.user_id"] == "alice"
    want = calc_price(
        Usage(input_tokens=usage["input"], output_tokens=usage["output"]),
        model_ref=BEDROCK_MODEL,
        provider_id="aws",
    )
    assert attributes["payi_otel.cost.total"] == float(want.total_price)
    assert metrics.total("payi.genai.cost") == pytest.approx(float(want.total_price))
    assert set(metrics.by("payi.genai.cost", "gen_ai.provider.name")) == {"aws.bedrock"}


async def test_concurrent_tasks_each_send_their_own_user(genai: GenAI) -> None:
    users = [f"user-{n}" for n in range(8)]

    async def one(client: Any, user: str, operation: str) -> None:
        with track_context(user_id=user):
            await asyncio.sleep(0)
            await call(client, operation)

    async with aio_bedrock(genai) as client:
        await asyncio.gather(*(one(client, u, OPERATIONS[n % 4]) for n, u in enumerate(users)))
    sent = sorted(attribution_headers(r)["x-payi-user-id"] for r in genai.server.requests)
    assert sent == sorted(users)


async def test_no_headers_where_the_policy_refuses_and_still_priced(genai: GenAI) -> None:
    metrics = Metrics()
    genai.reinstrument(meter_provider=metrics.provider, header_hosts=[])
    genai.check_invariant = False  # no headers to compare the span with
    async with aio_bedrock(genai) as client:
        with track_context(user_id="alice"):
            await call(client, "converse")
    assert attribution_headers(genai.server.requests[0]) == {}
    assert metrics.total("payi.genai.cost") > 0


@pytest.mark.parametrize("sdk", ["aiobotocore", "boto3"])
def test_imported_after_payi_instrument_quietly_gets_genai_spans(sdk: str, tmp_path: Path) -> None:
    """aiobotocore installed: genai-bedrock instrumenting (on botocore's import) imports
    aiobotocore's client, which reads ``botocore.client`` before the import system has bound
    it: it failed with "circular import" and one WARNING, and Bedrock calls had no GenAI span
    (boto3's too). Now quiet, with spans."""
    script = tmp_path / "app.py"
    script.write_text(
        textwrap.dedent(
            f"""
            from opentelemetry import trace
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import SimpleSpanProcessor
            from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
                InMemorySpanExporter,
            )
            exporter = InMemorySpanExporter()
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            trace.set_tracer_provider(provider)
            import payi_otel
            payi_otel.payi_instrument()
            if {sdk!r} == "boto3":
                import boto3
                import botocore.client
                print(hasattr(botocore.client.BaseClient._make_api_call, "__wrapped__"))
            else:
                import aiobotocore.client
                print(hasattr(aiobotocore.client.AioBaseClient._make_api_call, "__wrapped__"))
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.strip() == "True"  # wrapped: genai-bedrock's (and payi_otel's)


def test_genai_bedrock_is_turned_on_without_boto3_only() -> None:
    """genai-bedrock declares boto3, imports none of it, and patches aiobotocore too: an
    aiobotocore user (no boto3) gets its GenAI spans, silently (``tests_install``: the
    ``pip install payi-otel aiobotocore`` case); a boto3 out of its range is still refused."""
    from opentelemetry.instrumentation.dependencies import DependencyConflict

    from payi_otel._genai import _forced
    from payi_otel._providers.bedrock import BedrockProvider

    (inst,) = BedrockProvider.instrumentations
    assert _forced(inst, DependencyConflict("boto3 >= 1.40.46, < 2", None)) == ""
    assert _forced(inst, DependencyConflict("boto3 >= 1.40.46, < 2", "boto3 1.30.0")) is None


@pytest.mark.parametrize("operation", ["converse_stream", "invoke_model_with_response_stream"])
@pytest.mark.parametrize("how", ["close", "async-with"])
async def test_a_stream_closed_as_aiobotocore_closes_it_is_reported(
    genai: GenAI, operation: str, how: str
) -> None:
    """``AioEventStream.close()`` is synchronous: so is the observed stream's (a review found
    ``stream.close()`` a coroutine that never ran - no record, the GenAI span never ended -
    and genai-bedrock's ``async with`` failing on exit)."""
    metrics = Metrics()
    genai.reinstrument(meter_provider=metrics.provider)
    async with aio_bedrock(genai) as client:
        with track_context(user_id="alice"):
            if operation == "converse_stream":
                reply = await client.converse_stream(modelId=BEDROCK_MODEL, messages=MESSAGES)
                stream = reply["stream"]
            else:
                reply = await client.invoke_model_with_response_stream(
                    modelId=BEDROCK_MODEL, body=claude_body()
                )
                stream = reply["body"]
            if how == "close":
                async for _ in stream:
                    break
                assert stream.close() is None
            else:
                async with stream as events:
                    async for _ in events:
                        pass
    (span,) = genai.otel.genai_spans()  # ended
    assert (span.attributes or {})["payi.user_id"] == "alice"
    # Read to its end: counted with its usage; left early: its usage never came (none).
    counted = set(metrics.by("payi.genai.tokens", "gen_ai.provider.name"))
    assert counted == ({"aws.bedrock"} if how == "async-with" else set())

"""The openai SDK's own cloud providers: ``openai.OpenAI(provider=openai.providers.bedrock(...))``
(OpenAI-compatible models on Amazon Bedrock: ``openai.gpt-oss-120b-1:0``) and
``openai.providers.vertex(...)`` (on Google Vertex AI). Their calls are the cloud's: Pay-i's
category, genai-prices' provider and the metrics' ``gen_ai.provider.name`` say Bedrock /
Vertex, not OpenAI (a review found them unpriced and filed under OpenAI). Real openai SDK,
its real provider runtime, answered in process."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import openai
import pytest
from fake_payi_server import FakePayiServer
from fixtures_genai import GenAI
from fixtures_otel import Metrics
from genai_prices import Usage, calc_price
from ingest_support import exporter_for, fake_payi_module, payi

from payi_otel import track_context

__all__ = ["fake_payi_module", "payi"]  # fixtures

GATEWAY = "http://gateway.local"
CLOUDS: dict[str, dict[str, Any]] = {
    "bedrock": {
        "provider": lambda is_async: openai.providers.bedrock(
            region="us-east-1", base_url=f"{GATEWAY}/openai/v1", api_key="k"
        ),
        "model": "openai.gpt-oss-120b-1:0",
        "category": "system.aws.bedrock",
        "resource": "openai.gpt-oss-120b-1:0",
        "price_id": "aws",
        "genai_name": "aws.bedrock",
    },
    "vertex": {
        "provider": lambda is_async: openai.providers.vertex(
            base_url=f"{GATEWAY}/v1/projects/p/locations/us-central1/publishers/openai/v1",
            token_provider=(lambda: "t") if not is_async else _async_token,
        ),
        "model": "gpt-oss-120b-maas",
        "category": "system.google.vertex",
        "resource": "google.gpt-oss-120b-maas",  # (the category's names: google.<model>)
        "price_id": None,  # genai-prices has no price for it: usage without cost
        "genai_name": "gcp.vertex_ai",
    },
}


async def _async_token() -> str:
    return "t"


def answer(request: Any) -> Any:
    model = json.loads(request.content)["model"]
    return httpx2.Response(
        200,
        json={
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "hi"},
                }
            ],
            "usage": {"prompt_tokens": 1_000, "completion_tokens": 100, "total_tokens": 1_100},
        },
    )


def client_for(cloud: str, is_async: bool = False) -> Any:
    provider = CLOUDS[cloud]["provider"](is_async)
    transport = httpx2.MockTransport(answer)
    if is_async:
        return openai.AsyncOpenAI(
            provider=provider, http_client=httpx2.AsyncClient(transport=transport)
        )
    return openai.OpenAI(provider=provider, http_client=httpx2.Client(transport=transport))


@pytest.mark.parametrize("is_async", [False, True])
@pytest.mark.parametrize("cloud", sorted(CLOUDS))
async def test_priced_and_counted_as_the_cloud(genai: GenAI, cloud: str, is_async: bool) -> None:
    metrics = Metrics()
    genai.reinstrument(meter_provider=metrics.provider)
    genai.check_invariant = False  # answered in process
    facts = CLOUDS[cloud]
    client = client_for(cloud, is_async)
    call = {"model": facts["model"], "messages": [{"role": "user", "content": "Hello"}]}
    with track_context(user_id="alice"):
        if is_async:
            await client.chat.completions.create(**call)
        else:
            client.chat.completions.create(**call)
    tokens = metrics.by("payi.genai.tokens", "gen_ai.provider.name")
    assert set(tokens) == {facts["genai_name"]}
    if facts["price_id"] is None:
        assert metrics.points("payi.genai.cost") == []
        return
    want = calc_price(
        Usage(input_tokens=1_000, output_tokens=100),
        model_ref=facts["model"],
        provider_id=facts["price_id"],
    )
    assert metrics.total("payi.genai.cost") == pytest.approx(float(want.total_price))


@pytest.mark.parametrize("cloud", sorted(CLOUDS))
def test_pay_i_gets_the_clouds_category(genai: GenAI, payi: FakePayiServer, cloud: str) -> None:
    exporter = exporter_for(payi.base_url)
    genai.reinstrument(ingest=exporter)
    genai.check_invariant = False
    facts = CLOUDS[cloud]
    client_for(cloud).chat.completions.create(
        model=facts["model"], messages=[{"role": "user", "content": "Hello"}]
    )
    assert exporter.force_flush()
    (record,) = payi.ingested()
    assert record.body["category"] == facts["category"]
    assert record.body["resource"] == facts["resource"]


def test_a_plain_client_beside_them_stays_openai(genai: GenAI) -> None:
    """The service is the client's: a plain ``OpenAI`` client of the same process (and the
    same relative URL and model) is still OpenAI's."""
    metrics = Metrics()
    genai.reinstrument(meter_provider=metrics.provider)
    genai.check_invariant = False
    call = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}
    for _ in range(2):
        client_for("bedrock").chat.completions.create(**call)
        openai.OpenAI(
            base_url=f"{GATEWAY}/openai/v1",
            api_key="k",
            http_client=httpx2.Client(transport=httpx2.MockTransport(answer)),
        ).chat.completions.create(**call)
    tokens = metrics.by("payi.genai.tokens", "gen_ai.provider.name")
    assert set(tokens) == {"aws.bedrock", "openai"}
    assert tokens["aws.bedrock"] == tokens["openai"]


@pytest.mark.parametrize("bedrock_first", [True, False])
def test_a_plain_client_on_the_same_base_url_object_is_its_own(
    genai: GenAI, bedrock_first: bool
) -> None:
    """``OpenAI(base_url=bedrock_client.base_url)`` shares the URL object the common call's
    plan is keyed by: each client's calls are still its own service's (a review found the
    first caller's service given to both)."""
    metrics = Metrics()
    genai.reinstrument(meter_provider=metrics.provider)
    genai.check_invariant = False
    bedrock = client_for("bedrock")
    plain = openai.OpenAI(
        base_url=bedrock.base_url,
        api_key="k",
        http_client=httpx2.Client(transport=httpx2.MockTransport(answer)),
    )
    call = {"model": "openai.gpt-oss-120b-1:0", "messages": [{"role": "user", "content": "Hi"}]}
    for client in (bedrock, plain) if bedrock_first else (plain, bedrock):
        for _ in range(2):
            client.chat.completions.create(**call)
    tokens = metrics.by("payi.genai.tokens", "gen_ai.provider.name")
    assert tokens == {"aws.bedrock": 2 * 1_100, "openai": 2 * 1_100}

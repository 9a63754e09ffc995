"""API calls that name a model but whose cost is not theirs - token counting, moderation,
batch and fine-tuning jobs, Imagen and Veo predictions - are stamped like every call (a
gateway or Pay-i's proxy reads who made them) but never priced nor sent to Pay-i as a
billed request (a review found each filed as one with 0 tokens, inflating request counts).
Real SDKs, the fake server or in-process answers, the fake Pay-i."""

from __future__ import annotations

import warnings
from typing import Any

import anthropic
import httpx2
import pytest
from fake_payi_server import FakePayiServer
from fixtures_genai import MESSAGE, GenAI, attribution_headers, google_client, mock_openai
from ingest_support import exporter_for, fake_payi_module, payi

from payi_otel import PayiIngestExporter, track_context

__all__ = ["fake_payi_module", "payi"]  # fixtures


@pytest.fixture
def exporter(genai: GenAI, payi: FakePayiServer) -> PayiIngestExporter:
    found = exporter_for(payi.base_url)
    genai.reinstrument(ingest=found)
    return found


def openai_answer(seen: list[Any]) -> Any:
    def answer(request: Any) -> Any:
        seen.append(request)
        path = request.url.path
        if path.endswith("/moderations"):
            return httpx2.Response(
                200, json={"id": "modr-1", "model": "omni-moderation-latest", "results": []}
            )
        if path.endswith("/input_tokens"):
            return httpx2.Response(200, json={"object": "response.input_tokens", "input_tokens": 7})
        return httpx2.Response(
            200,
            json={
                "id": "batch_1",
                "object": "batch",
                "endpoint": "/v1/chat/completions",
                "input_file_id": "file-1",
                "completion_window": "24h",
                "status": "validating",
                "created_at": 1,
            },
        )

    return answer


def test_openai_moderation_token_count_and_batch_are_stamped_not_billed(
    genai: GenAI, exporter: PayiIngestExporter, payi: FakePayiServer
) -> None:
    genai.check_invariant = False  # answered in process
    seen: list[Any] = []
    client = mock_openai(openai_answer(seen))
    with track_context(user_id="alice"):
        client.moderations.create(model="omni-moderation-latest", input="hi")
        client.responses.input_tokens.count(model="gpt-4o", input="hi")
        client.batches.create(
            input_file_id="file-1", endpoint="/v1/chat/completions", completion_window="24h"
        )
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
    assert [r.headers.get("x-payi-user-id") for r in seen] == ["alice"] * 4
    assert exporter.force_flush()
    # Only the chat completion is a billed request (its mock answer is a batch: no usage).
    assert [r.body["resource"] for r in payi.ingested()] == ["gpt-4o-mini"]


@pytest.mark.parametrize("beta", [False, True])
def test_anthropic_count_tokens_is_stamped_not_billed(
    genai: GenAI, exporter: PayiIngestExporter, payi: FakePayiServer, beta: bool
) -> None:
    client = anthropic.Anthropic(
        base_url=genai.server.anthropic_base_url, api_key="test", max_retries=0
    )
    messages = client.beta.messages if beta else client.messages
    with track_context(user_id="alice"):
        counted = messages.count_tokens(model=MESSAGE["model"], messages=MESSAGE["messages"])
        client.messages.create(**MESSAGE)
    assert counted.input_tokens > 0
    sent = [attribution_headers(r).get("x-payi-user-id") for r in genai.server.requests]
    assert sent == ["alice", "alice"]
    assert exporter.force_flush()
    assert [r.body["resource"] for r in payi.ingested()] == [MESSAGE["model"]]


@pytest.mark.parametrize("method", ["generate_images", "generate_videos"])
def test_imagen_and_veo_are_stamped_not_billed(
    genai: GenAI, exporter: PayiIngestExporter, payi: FakePayiServer, method: str
) -> None:
    """Imagen and Veo calls go through none of the token entry points: stamped now (a
    gateway bills them per image or second), never a token-priced record."""
    genai.check_invariant = False  # the fake server answers these 404, with no GenAI span
    client = google_client(genai, "vertex")  # (Imagen: Vertex AI only, in google-genai 2.x)
    with warnings.catch_warnings(), track_context(user_id="alice"):
        warnings.simplefilter("ignore")  # (google-genai deprecates generate_images)
        with pytest.raises(Exception):  # noqa: B017 (the fake server's 404)
            getattr(client.models, method)(model="imagen-4.0-generate-001", prompt="a cat")
    (request,) = genai.server.requests
    assert request.path.endswith((":predict", ":predictLongRunning"))
    assert attribution_headers(request).get("x-payi-user-id") == "alice"
    assert exporter.force_flush()
    assert payi.ingested() == []

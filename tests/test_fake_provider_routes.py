"""The fake server's Bedrock, Gemini / Vertex AI, Azure OpenAI and Claude-on-Vertex routes
(examples/fake_llm_server.py), each driven by the real SDK: boto3 with SigV4 signing,
google-genai, openai's Azure clients, anthropic's Bedrock and Vertex clients."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any, Callable
from urllib.parse import unquote

import anthropic
import boto3
import botocore.config
import botocore.eventstream
import botocore.exceptions
import google.oauth2.credentials
import openai
import pytest
from fake_llm_server import FakeLLMServer, RecordedRequest, _event_stream_message
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

CLAUDE_ID = "anthropic.claude-3-5-haiku-20241022-v1:0"
CLAUDE_PROFILE = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
CLAUDE_PROFILE_ARN = (
    "arn:aws:bedrock:us-east-1:123456789012:inference-profile/"
    "us.anthropic.claude-3-5-haiku-20241022-v1:0"
)
NOVA = "us.amazon.nova-lite-v1:0"
GEMINI = "gemini-2.5-flash"
VERTEX_CLAUDE = "claude-3-5-haiku@20241022"
VERTEX_PATH = "/v1beta1/projects/proj/locations/us-central1/publishers/google/models/"
EVENT_STREAM = "application/vnd.amazon.eventstream"
USER_TEXT = "hello there"
NO_RETRIES = botocore.config.Config(retries={"total_max_attempts": 1})


def _user(text: str = USER_TEXT) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"text": text}]}]


def _claude_body(text: str = USER_TEXT) -> str:
    return json.dumps(
        {
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": 64,
            "messages": [{"role": "user", "content": text}],
        }
    )


def _only_request(server: FakeLLMServer) -> RecordedRequest:
    (request,) = server.requests
    return request


@pytest.fixture
def make_bedrock(llm_server: FakeLLMServer) -> Iterator[Callable[..., Any]]:
    """A factory of boto3 ``bedrock-runtime`` clients on the fake server (SigV4 with
    ``key_id``/``secret``, no retries unless ``config`` says otherwise), closed afterwards."""
    clients: list[Any] = []

    def make(
        key_id: str = "test", secret: str = "test", config: botocore.config.Config = NO_RETRIES
    ) -> Any:
        client = boto3.client(
            "bedrock-runtime",
            endpoint_url=llm_server.bedrock_endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            config=config,
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def bedrock(make_bedrock: Callable[..., Any]) -> Any:
    return make_bedrock()


def _assert_sigv4(request: RecordedRequest, service: str = "bedrock") -> None:
    authorization = request.headers["authorization"]
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=test/")
    assert f"/us-east-1/{service}/aws4_request" in authorization
    assert "x-amz-date" in request.headers


# -- AWS Bedrock: Converse -------------------------------------------------------------------


@pytest.mark.parametrize("model_id", [CLAUDE_ID, CLAUDE_PROFILE, CLAUDE_PROFILE_ARN, NOVA])
def test_converse(bedrock: Any, llm_server: FakeLLMServer, model_id: str) -> None:
    response = bedrock.converse(
        modelId=model_id,
        messages=_user(),
        system=[{"text": "be brief"}],
        requestMetadata={"use_case": "support"},
    )

    assert response["output"]["message"] == {
        "role": "assistant",
        "content": [{"text": "echo: hello there"}],
    }
    assert response["stopReason"] == "end_turn"
    assert response["usage"] == {"inputTokens": 4, "outputTokens": 4, "totalTokens": 8}
    request = _only_request(llm_server)
    assert request.method == "POST"
    assert unquote(request.path) == f"/model/{model_id}/converse"
    assert "%3A" in request.path  # botocore percent-encodes the model id's ':' (and '/')
    assert request.body["messages"] == _user()
    assert request.body["requestMetadata"] == {"use_case": "support"}
    _assert_sigv4(request)


def test_converse_stream(bedrock: Any, llm_server: FakeLLMServer) -> None:
    response = bedrock.converse_stream(modelId=CLAUDE_PROFILE_ARN, messages=_user())
    headers = response["ResponseMetadata"]["HTTPHeaders"]
    events = list(response["stream"])

    assert headers["content-type"] == EVENT_STREAM
    assert [next(iter(event)) for event in events] == [
        "messageStart",
        "contentBlockDelta",
        "contentBlockDelta",
        "contentBlockDelta",
        "contentBlockStop",
        "messageStop",
        "metadata",
    ]
    assert events[0]["messageStart"] == {"role": "assistant"}
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events[1:4])
    assert text == "echo: hello there"
    assert events[5]["messageStop"] == {"stopReason": "end_turn"}
    assert events[6]["metadata"]["usage"] == {
        "inputTokens": 2,
        "outputTokens": 4,
        "totalTokens": 6,
    }
    request = _only_request(llm_server)
    assert unquote(request.path) == f"/model/{CLAUDE_PROFILE_ARN}/converse-stream"


def test_converse_cache_and_reasoning_usage(bedrock: Any) -> None:
    usage = {"cached_tokens": 6, "cache_write_tokens": 4, "reasoning_tokens": 3}
    bedrock.meta.events.register(
        "before-sign.bedrock-runtime.*",
        lambda request, **_: request.headers.add_header("x-fake-usage", json.dumps(usage)),
    )

    plain = bedrock.converse(modelId=CLAUDE_PROFILE, messages=_user())
    streamed = bedrock.converse_stream(modelId=CLAUDE_PROFILE, messages=_user())
    metadata = [e["metadata"] for e in streamed["stream"] if "metadata" in e]

    expected = {
        "inputTokens": 2,
        "outputTokens": 7,
        "cacheReadInputTokens": 6,
        "cacheWriteInputTokens": 4,
        "cacheDetails": [{"ttl": "5m", "inputTokens": 4}],  # (the writes by TTL)
        "totalTokens": 19,
    }
    assert plain["usage"] == expected
    assert metadata[0]["usage"] == expected


def test_converse_without_messages_is_a_validation_error(bedrock: Any) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        bedrock.converse(modelId=CLAUDE_PROFILE, messages=[])

    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


# -- AWS Bedrock: InvokeModel ----------------------------------------------------------------


@pytest.mark.parametrize("model_id", [CLAUDE_ID, CLAUDE_PROFILE, CLAUDE_PROFILE_ARN])
def test_invoke_model_claude(bedrock: Any, llm_server: FakeLLMServer, model_id: str) -> None:
    response = bedrock.invoke_model(modelId=model_id, body=_claude_body())
    body = json.loads(response["body"].read())
    headers = response["ResponseMetadata"]["HTTPHeaders"]

    assert body["content"] == [{"type": "text", "text": "echo: hello there"}]
    assert body["model"] == "claude-3-5-haiku-20241022"
    assert body["id"].startswith("msg_bdrk_")
    assert body["usage"]["input_tokens"] == 2
    assert body["usage"]["output_tokens"] == 4
    assert headers["x-amzn-bedrock-input-token-count"] == "2"
    assert headers["x-amzn-bedrock-output-token-count"] == "4"
    assert response["contentType"] == "application/json"
    request = _only_request(llm_server)
    assert unquote(request.path) == f"/model/{model_id}/invoke"
    assert request.body["anthropic_version"] == "bedrock-2023-05-31"
    _assert_sigv4(request)


def test_invoke_model_with_response_stream_claude(bedrock: Any, llm_server: FakeLLMServer) -> None:
    response = bedrock.invoke_model_with_response_stream(
        modelId=CLAUDE_PROFILE, body=_claude_body()
    )
    chunks = [json.loads(event["chunk"]["bytes"]) for event in response["body"]]

    assert response["contentType"] == "application/json"
    assert response["ResponseMetadata"]["HTTPHeaders"]["content-type"] == EVENT_STREAM
    assert [c["type"] for c in chunks][:2] == ["message_start", "content_block_start"]
    assert chunks[-1]["type"] == "message_stop"
    text = "".join(c["delta"]["text"] for c in chunks if c["type"] == "content_block_delta")
    assert text == "echo: hello there"
    assert chunks[-1]["amazon-bedrock-invocationMetrics"] == {
        "inputTokenCount": 2,
        "outputTokenCount": 4,
        "invocationLatency": 12,
        "firstByteLatency": 8,
    }
    request = _only_request(llm_server)
    assert unquote(request.path) == f"/model/{CLAUDE_PROFILE}/invoke-with-response-stream"


def test_invoke_model_claude_cache_usage(bedrock: Any) -> None:
    usage = {"cached_tokens": 6, "cache_write_tokens": 4}
    bedrock.meta.events.register(
        "before-sign.bedrock-runtime.*",
        lambda request, **_: request.headers.add_header("x-fake-usage", json.dumps(usage)),
    )

    response = bedrock.invoke_model(modelId=CLAUDE_PROFILE, body=_claude_body())
    body = json.loads(response["body"].read())
    headers = response["ResponseMetadata"]["HTTPHeaders"]
    streamed = bedrock.invoke_model_with_response_stream(
        modelId=CLAUDE_PROFILE, body=_claude_body()
    )
    last = [json.loads(event["chunk"]["bytes"]) for event in streamed["body"]][-1]

    assert body["usage"]["cache_read_input_tokens"] == 6
    assert body["usage"]["cache_creation_input_tokens"] == 4
    assert headers["x-amzn-bedrock-cache-read-input-token-count"] == "6"
    assert headers["x-amzn-bedrock-cache-write-input-token-count"] == "4"
    metrics = last["amazon-bedrock-invocationMetrics"]
    assert (metrics["cacheReadInputTokenCount"], metrics["cacheWriteInputTokenCount"]) == (6, 4)


def test_invoke_model_nova(bedrock: Any) -> None:
    body = json.dumps({"schemaVersion": "messages-v1", "messages": _user()})

    plain = json.loads(bedrock.invoke_model(modelId=NOVA, body=body)["body"].read())
    streamed = bedrock.invoke_model_with_response_stream(modelId=NOVA, body=body)
    chunks = [json.loads(event["chunk"]["bytes"]) for event in streamed["body"]]

    assert plain["output"]["message"]["content"] == [{"text": "echo: hello there"}]
    assert plain["usage"] == {"inputTokens": 2, "outputTokens": 4, "totalTokens": 6}
    text = "".join(c["contentBlockDelta"]["delta"]["text"] for c in chunks[1:-3])
    assert text == "echo: hello there"
    assert chunks[-1]["metadata"]["usage"]["outputTokens"] == 4
    assert chunks[-1]["amazon-bedrock-invocationMetrics"]["inputTokenCount"] == 2


def test_invoke_model_llama(bedrock: Any) -> None:
    model_id = "meta.llama3-1-8b-instruct-v1:0"
    body = json.dumps({"prompt": USER_TEXT, "max_gen_len": 64})

    plain = json.loads(bedrock.invoke_model(modelId=model_id, body=body)["body"].read())
    streamed = bedrock.invoke_model_with_response_stream(modelId=model_id, body=body)
    chunks = [json.loads(event["chunk"]["bytes"]) for event in streamed["body"]]

    assert plain == {
        "generation": "echo: hello there",
        "prompt_token_count": 2,
        "generation_token_count": 4,
        "stop_reason": "stop",
    }
    assert "".join(c["generation"] for c in chunks) == "echo: hello there"
    assert chunks[0]["prompt_token_count"] == 2
    assert chunks[-1]["stop_reason"] == "stop"
    assert chunks[-1]["amazon-bedrock-invocationMetrics"]["outputTokenCount"] == 4


def test_invoke_model_titan_embeddings(bedrock: Any) -> None:
    response = bedrock.invoke_model(
        modelId="amazon.titan-embed-text-v2:0",
        body=json.dumps({"inputText": USER_TEXT, "dimensions": 4}),
    )
    body = json.loads(response["body"].read())

    assert len(body["embedding"]) == 4
    assert body["inputTextTokenCount"] == 2
    assert response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-bedrock-input-token-count"] == "2"


def test_invoke_model_claude_without_anthropic_version_is_rejected(bedrock: Any) -> None:
    body = json.dumps({"max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]})

    with pytest.raises(botocore.exceptions.ClientError) as caught:
        bedrock.invoke_model(modelId=CLAUDE_PROFILE, body=body)

    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert "anthropic_version" in caught.value.response["Error"]["Message"]


# -- AWS Bedrock: signing, errors, the event-stream encoding ---------------------------------


def test_headers_added_before_or_after_signing_verify(
    make_bedrock: Callable[..., Any], llm_server: FakeLLMServer
) -> None:
    """A header added in before-sign is signed; one added in before-send (after signing) is not
    part of the signature, and the request verifies either way, as at AWS."""
    client = make_bedrock()
    client.meta.events.register(
        "before-sign.bedrock-runtime.Converse",
        lambda request, **_: request.headers.add_header("x-payi-use-case-name", "signed"),
    )
    client.meta.events.register(
        "before-send.bedrock-runtime.Converse",
        lambda request, **_: request.headers.__setitem__("x-payi-user-id", "unsigned"),
    )

    client.converse(modelId=CLAUDE_PROFILE, messages=_user())

    request = _only_request(llm_server)
    signed = request.headers["authorization"].split("SignedHeaders=")[1].split(",")[0]
    assert "x-payi-use-case-name" in signed.split(";")
    assert "x-payi-user-id" not in signed.split(";")
    assert request.headers["x-payi-use-case-name"] == "signed"
    assert request.headers["x-payi-user-id"] == "unsigned"


def test_a_signed_header_changed_after_signing_is_rejected(
    make_bedrock: Callable[..., Any], llm_server: FakeLLMServer
) -> None:
    client = make_bedrock()
    client.meta.events.register(
        "before-sign.bedrock-runtime.Converse",
        lambda request, **_: request.headers.add_header("x-payi-use-case-name", "signed"),
    )
    client.meta.events.register(
        "before-send.bedrock-runtime.Converse",
        lambda request, **_: request.headers.__setitem__("x-payi-use-case-name", "changed"),
    )

    with pytest.raises(botocore.exceptions.ClientError) as caught:
        client.converse(modelId=CLAUDE_PROFILE, messages=_user())

    assert caught.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_a_wrong_secret_is_rejected_and_unknown_keys_pass(
    make_bedrock: Callable[..., Any],
) -> None:
    wrong = make_bedrock(secret="not-the-secret")
    unknown = make_bedrock(key_id="AKIDUNKNOWN", secret="anything")

    with pytest.raises(botocore.exceptions.ClientError) as caught:
        wrong.converse(modelId=CLAUDE_PROFILE, messages=_user())
    response = unknown.converse(modelId=CLAUDE_PROFILE, messages=_user())

    assert caught.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert response["stopReason"] == "end_turn"


def test_an_unsigned_request_is_rejected(
    make_bedrock: Callable[..., Any], llm_server: FakeLLMServer
) -> None:
    config = NO_RETRIES.merge(botocore.config.Config(signature_version=botocore.UNSIGNED))
    client = make_bedrock(config=config)

    with pytest.raises(botocore.exceptions.ClientError) as caught:
        client.converse(modelId=CLAUDE_PROFILE, messages=_user())

    assert caught.value.response["Error"]["Code"] == "MissingAuthenticationTokenException"
    assert "authorization" not in _only_request(llm_server).headers


@pytest.mark.parametrize(
    ("mode", "code"), [("429", "ThrottlingException"), ("500", "InternalServerException")]
)
def test_injected_failures_take_bedrock_shape(
    bedrock: Any, llm_server: FakeLLMServer, mode: str, code: str
) -> None:
    llm_server.fail_next(1, mode)

    with pytest.raises(botocore.exceptions.ClientError) as caught:
        bedrock.converse(modelId=CLAUDE_PROFILE, messages=_user())

    assert caught.value.response["Error"]["Code"] == code
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == int(mode)


def test_botocore_retries_and_signs_again_after_an_injected_503(
    make_bedrock: Callable[..., Any], llm_server: FakeLLMServer
) -> None:
    retries = {"mode": "standard", "total_max_attempts": 2}
    client = make_bedrock(config=botocore.config.Config(retries=retries))
    llm_server.fail_next(1, "503")

    response = client.converse(modelId=CLAUDE_PROFILE, messages=_user())

    assert response["ResponseMetadata"]["RetryAttempts"] == 1
    assert len(llm_server.requests) == 2


def test_event_stream_frames_carry_real_crcs() -> None:
    frame = _event_stream_message({":event-type": "chunk"}, b'{"bytes":"eA=="}')
    buffer = botocore.eventstream.EventStreamBuffer()
    buffer.add_data(frame)
    (message,) = list(buffer)
    assert message.headers == {":event-type": "chunk"}
    assert message.payload == b'{"bytes":"eA=="}'

    corrupted = botocore.eventstream.EventStreamBuffer()
    corrupted.add_data(frame[:-5] + bytes([frame[-5] ^ 1]) + frame[-4:])
    with pytest.raises(botocore.eventstream.ChecksumMismatch):
        list(corrupted)


# -- Anthropic on Bedrock --------------------------------------------------------------------


def _claude_on_bedrock_kwargs(server: FakeLLMServer) -> dict[str, Any]:
    return {
        "base_url": server.bedrock_endpoint_url,
        "aws_region": "us-east-1",
        "aws_access_key": "test",
        "aws_secret_key": "test",
        "max_retries": 0,
    }


def _assert_claude_on_bedrock_request(request: RecordedRequest, operation: str) -> None:
    assert unquote(request.path) == f"/model/{CLAUDE_PROFILE}/{operation}"
    assert "anthropic_version" in request.body  # the SDK's own API version
    assert "model" not in request.body and "stream" not in request.body
    _assert_sigv4(request)


def test_anthropic_bedrock(llm_server: FakeLLMServer) -> None:
    with anthropic.AnthropicBedrock(**_claude_on_bedrock_kwargs(llm_server)) as client:
        message = client.messages.create(
            model=CLAUDE_PROFILE, max_tokens=64, messages=[{"role": "user", "content": USER_TEXT}]
        )
        _assert_claude_on_bedrock_request(_only_request(llm_server), "invoke")
        llm_server.reset()
        with client.messages.stream(
            model=CLAUDE_PROFILE, max_tokens=64, messages=[{"role": "user", "content": USER_TEXT}]
        ) as stream:
            streamed = "".join(stream.text_stream)
            final = stream.get_final_message()
        _assert_claude_on_bedrock_request(_only_request(llm_server), "invoke-with-response-stream")

    assert message.content[0].text == "echo: hello there"
    assert message.model == "claude-3-5-haiku-20241022"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (2, 4)
    assert streamed == "echo: hello there"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (2, 4)


async def test_async_anthropic_bedrock(llm_server: FakeLLMServer) -> None:
    async with anthropic.AsyncAnthropicBedrock(**_claude_on_bedrock_kwargs(llm_server)) as client:
        message = await client.messages.create(
            model=CLAUDE_PROFILE, max_tokens=64, messages=[{"role": "user", "content": USER_TEXT}]
        )
        stream = await client.messages.create(
            model=CLAUDE_PROFILE,
            max_tokens=64,
            messages=[{"role": "user", "content": USER_TEXT}],
            stream=True,
        )
        events = [event async for event in stream]

    assert message.content[0].text == "echo: hello there"
    deltas = [e.delta.text for e in events if e.type == "content_block_delta"]
    assert "".join(deltas) == "echo: hello there"
    plain, streamed = llm_server.requests
    _assert_claude_on_bedrock_request(plain, "invoke")
    _assert_claude_on_bedrock_request(streamed, "invoke-with-response-stream")


def test_anthropic_bedrock_with_an_api_key(llm_server: FakeLLMServer) -> None:
    with anthropic.AnthropicBedrock(
        base_url=llm_server.bedrock_endpoint_url,
        aws_region="us-east-1",
        api_key="bedrock-api-key",
        max_retries=0,
    ) as client:
        message = client.messages.create(
            model=CLAUDE_PROFILE, max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        )

    assert message.content[0].text == "echo: hi"
    assert _only_request(llm_server).headers["authorization"] == "Bearer bedrock-api-key"


# -- Google: Gemini API ----------------------------------------------------------------------


def _http_options(server: FakeLLMServer) -> genai_types.HttpOptions:
    return genai_types.HttpOptions(base_url=server.google_genai_base_url)


@pytest.fixture
def gemini(llm_server: FakeLLMServer) -> Iterator[genai.Client]:
    with genai.Client(api_key="test", http_options=_http_options(llm_server)) as client:
        yield client


@pytest.fixture
def vertex(llm_server: FakeLLMServer) -> Iterator[genai.Client]:
    credentials = google.oauth2.credentials.Credentials(token="vertex-token")
    with genai.Client(
        vertexai=True,
        project="proj",
        location="us-central1",
        credentials=credentials,
        http_options=_http_options(llm_server),
    ) as client:
        yield client


def _per_call_headers(headers: dict[str, str]) -> genai_types.GenerateContentConfig:
    return genai_types.GenerateContentConfig(http_options=genai_types.HttpOptions(headers=headers))


def test_gemini_generate_content(gemini: genai.Client, llm_server: FakeLLMServer) -> None:
    response = gemini.models.generate_content(
        model=GEMINI, contents=USER_TEXT, config=_per_call_headers({"x-payi-user-id": "u1"})
    )

    assert response.text == "echo: hello there"
    assert response.model_version == GEMINI
    usage = response.usage_metadata
    assert usage is not None
    assert (usage.prompt_token_count, usage.candidates_token_count) == (2, 4)
    assert usage.total_token_count == 6
    assert usage.cached_content_token_count is None and usage.thoughts_token_count is None
    request = _only_request(llm_server)
    assert request.path == f"/v1beta/models/{GEMINI}:generateContent"
    assert request.body["contents"] == [{"parts": [{"text": USER_TEXT}], "role": "user"}]
    assert request.headers["x-goog-api-key"] == "test"
    assert request.headers["x-payi-user-id"] == "u1"


def test_gemini_generate_content_stream(gemini: genai.Client, llm_server: FakeLLMServer) -> None:
    chunks = list(gemini.models.generate_content_stream(model=GEMINI, contents=USER_TEXT))

    assert "".join(chunk.text or "" for chunk in chunks) == "echo: hello there"
    last = chunks[-1].usage_metadata
    assert last is not None
    assert (last.prompt_token_count, last.candidates_token_count) == (2, 4)
    assert chunks[-1].candidates[0].finish_reason == genai_types.FinishReason.STOP
    request = _only_request(llm_server)
    assert request.path == f"/v1beta/models/{GEMINI}:streamGenerateContent"
    assert request.query == "alt=sse"


async def test_gemini_async(gemini: genai.Client, llm_server: FakeLLMServer) -> None:
    response = await gemini.aio.models.generate_content(model=GEMINI, contents=USER_TEXT)
    stream = await gemini.aio.models.generate_content_stream(model=GEMINI, contents=USER_TEXT)
    chunks = [chunk async for chunk in stream]

    assert response.text == "echo: hello there"
    assert "".join(chunk.text or "" for chunk in chunks) == "echo: hello there"
    assert chunks[-1].usage_metadata.total_token_count == 6
    plain, streamed = llm_server.requests
    assert plain.path.endswith(":generateContent")
    assert (streamed.path.endswith(":streamGenerateContent"), streamed.query) == (True, "alt=sse")


def test_gemini_cache_and_thoughts_usage(gemini: genai.Client) -> None:
    usage = {"cached_tokens": 6, "reasoning_tokens": 3}
    config = _per_call_headers({"x-fake-usage": json.dumps(usage)})

    response = gemini.models.generate_content(model=GEMINI, contents=USER_TEXT, config=config)

    metadata = response.usage_metadata
    assert metadata is not None
    assert metadata.prompt_token_count == 8  # cached tokens are inside the prompt count
    assert metadata.cached_content_token_count == 6
    assert metadata.candidates_token_count == 4  # thoughts are outside the candidates count
    assert metadata.thoughts_token_count == 3
    assert metadata.total_token_count == 15


def test_gemini_count_tokens(gemini: genai.Client, llm_server: FakeLLMServer) -> None:
    counted = gemini.models.count_tokens(model=GEMINI, contents="one two three")

    assert counted.total_tokens == 3
    assert _only_request(llm_server).path == f"/v1beta/models/{GEMINI}:countTokens"


def test_gemini_injected_failure_takes_google_shape(
    gemini: genai.Client, llm_server: FakeLLMServer
) -> None:
    llm_server.fail_next(1, "429")

    with pytest.raises(genai_errors.ClientError) as caught:
        gemini.models.generate_content(model=GEMINI, contents=USER_TEXT)

    assert (caught.value.code, caught.value.status) == (429, "RESOURCE_EXHAUSTED")


# -- Google: Vertex AI -----------------------------------------------------------------------


def test_vertex_generate_content(vertex: genai.Client, llm_server: FakeLLMServer) -> None:
    config = genai_types.GenerateContentConfig(labels={"payi_use_case": "support"})

    response = vertex.models.generate_content(model=GEMINI, contents=USER_TEXT, config=config)
    chunks = list(vertex.models.generate_content_stream(model=GEMINI, contents=USER_TEXT))

    assert response.text == "echo: hello there"
    usage = response.usage_metadata
    assert usage is not None and usage.total_token_count == 6
    assert usage.traffic_type == genai_types.TrafficType.ON_DEMAND
    assert "".join(chunk.text or "" for chunk in chunks) == "echo: hello there"
    plain, streamed = llm_server.requests
    assert plain.path == f"{VERTEX_PATH}{GEMINI}:generateContent"
    assert plain.headers["authorization"] == "Bearer vertex-token"
    assert plain.body["labels"] == {"payi_use_case": "support"}
    assert streamed.path == f"{VERTEX_PATH}{GEMINI}:streamGenerateContent"
    assert streamed.query == "alt=sse"


async def test_vertex_async(vertex: genai.Client, llm_server: FakeLLMServer) -> None:
    response = await vertex.aio.models.generate_content(model=GEMINI, contents=USER_TEXT)
    stream = await vertex.aio.models.generate_content_stream(model=GEMINI, contents=USER_TEXT)
    chunks = [chunk async for chunk in stream]

    assert response.text == "echo: hello there"
    assert "".join(chunk.text or "" for chunk in chunks) == "echo: hello there"
    assert [r.path for r in llm_server.requests] == [
        f"{VERTEX_PATH}{GEMINI}:generateContent",
        f"{VERTEX_PATH}{GEMINI}:streamGenerateContent",
    ]


def test_vertex_with_an_api_key(llm_server: FakeLLMServer) -> None:
    with genai.Client(
        vertexai=True, api_key="express-key", http_options=_http_options(llm_server)
    ) as client:
        response = client.models.generate_content(model=GEMINI, contents=USER_TEXT)

    assert response.text == "echo: hello there"
    request = _only_request(llm_server)
    assert request.path == f"/v1beta1/publishers/google/models/{GEMINI}:generateContent"
    assert request.headers["x-goog-api-key"] == "express-key"


# -- Azure OpenAI ----------------------------------------------------------------------------

AZURE_API_VERSION = "2024-10-21"
AZURE_DEPLOYMENTS = {
    "prod-chat": "gpt-4o-2024-08-06",
    "embedder": "text-embedding-3-small",
    "gpt-4o": "gpt-4o-2024-08-06",
}


def _azure_kwargs(server: FakeLLMServer) -> dict[str, Any]:
    server.azure_deployments.update(AZURE_DEPLOYMENTS)  # the llm_server fixture forgets them
    return {
        "azure_endpoint": server.azure_endpoint,
        "api_key": "azure-key",
        "api_version": AZURE_API_VERSION,
        "max_retries": 0,
    }


@pytest.fixture
def azure(llm_server: FakeLLMServer) -> Iterator[openai.AzureOpenAI]:
    with openai.AzureOpenAI(**_azure_kwargs(llm_server)) as client:
        yield client


@pytest.fixture
async def async_azure(llm_server: FakeLLMServer) -> AsyncIterator[openai.AsyncAzureOpenAI]:
    async with openai.AsyncAzureOpenAI(**_azure_kwargs(llm_server)) as client:
        yield client


def _assert_azure_request(request: RecordedRequest, path: str) -> None:
    assert request.path == path
    assert request.query == f"api-version={AZURE_API_VERSION}"
    assert request.headers["api-key"] == "azure-key"


def test_azure_chat_completion(azure: openai.AzureOpenAI, llm_server: FakeLLMServer) -> None:
    raw = azure.chat.completions.with_raw_response.create(
        model="prod-chat", messages=[{"role": "user", "content": USER_TEXT}]
    )
    completion = raw.parse()

    assert completion.choices[0].message.content == "echo: hello there"
    assert completion.model == "gpt-4o-2024-08-06"  # the deployment's model, not its name
    assert completion.usage is not None and completion.usage.total_tokens == 6
    assert completion.model_dump()["prompt_filter_results"][0]["prompt_index"] == 0
    assert raw.headers["x-ms-deployment-name"] == "prod-chat"
    assert "apim-request-id" in raw.headers
    request = _only_request(llm_server)
    _assert_azure_request(request, "/openai/deployments/prod-chat/chat/completions")
    assert request.body["model"] == "prod-chat"


def test_azure_chat_completion_stream(azure: openai.AzureOpenAI) -> None:
    chunks = list(
        azure.chat.completions.create(
            model="prod-chat",
            messages=[{"role": "user", "content": USER_TEXT}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    assert chunks[0].choices == [] and chunks[0].model == ""  # Azure's content filter chunk
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hello there"
    assert {c.model for c in chunks[1:]} == {"gpt-4o-2024-08-06"}
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 6


async def test_azure_async(async_azure: openai.AsyncAzureOpenAI, llm_server: FakeLLMServer) -> None:
    completion = await async_azure.chat.completions.create(
        model="prod-chat", messages=[{"role": "user", "content": USER_TEXT}]
    )
    stream = await async_azure.chat.completions.create(
        model="prod-chat", messages=[{"role": "user", "content": USER_TEXT}], stream=True
    )
    chunks = [chunk async for chunk in stream]

    assert completion.choices[0].message.content == "echo: hello there"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hello there"
    for request in llm_server.requests:
        _assert_azure_request(request, "/openai/deployments/prod-chat/chat/completions")


def test_azure_embeddings_and_responses(
    azure: openai.AzureOpenAI, llm_server: FakeLLMServer
) -> None:
    embedding = azure.embeddings.create(model="embedder", input=USER_TEXT)
    response = azure.responses.create(model="prod-chat", input=USER_TEXT)

    assert embedding.model == "text-embedding-3-small"
    assert embedding.usage.prompt_tokens == 2
    assert response.output_text == "echo: hello there"
    assert response.model == "gpt-4o-2024-08-06"
    embeddings_request, responses_request = llm_server.requests
    _assert_azure_request(embeddings_request, "/openai/deployments/embedder/embeddings")
    _assert_azure_request(responses_request, "/openai/responses")


def test_azure_v1_api(llm_server: FakeLLMServer) -> None:
    llm_server.azure_deployments.update(AZURE_DEPLOYMENTS)
    with openai.OpenAI(
        base_url=f"{llm_server.azure_endpoint}/openai/v1/", api_key="azure-key", max_retries=0
    ) as client:
        completion = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": USER_TEXT}]
        )

    assert completion.model == "gpt-4o-2024-08-06"
    request = _only_request(llm_server)
    assert (request.path, request.query) == ("/openai/v1/chat/completions", "")


def test_azure_unknown_deployment_is_not_found(azure: openai.AzureOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        azure.chat.completions.create(
            model="no-such-deployment", messages=[{"role": "user", "content": USER_TEXT}]
        )

    assert caught.value.code == "DeploymentNotFound"


def test_azure_without_api_version_is_not_found(llm_server: FakeLLMServer) -> None:
    llm_server.azure_deployments.update(AZURE_DEPLOYMENTS)
    with openai.OpenAI(
        base_url=f"{llm_server.azure_endpoint}/openai/deployments/prod-chat",
        api_key="azure-key",
        max_retries=0,
    ) as client:
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(
                model="prod-chat", messages=[{"role": "user", "content": USER_TEXT}]
            )


# -- Anthropic on Vertex AI ------------------------------------------------------------------

CLAUDE_VERTEX_PATH = "/v1/projects/proj/locations/us-east5/publishers/anthropic/models/"


def _claude_on_vertex_kwargs(server: FakeLLMServer) -> dict[str, Any]:
    return {
        "base_url": server.anthropic_vertex_base_url,
        "region": "us-east5",
        "project_id": "proj",
        "access_token": "vertex-token",
        "max_retries": 0,
    }


def _assert_claude_on_vertex_request(request: RecordedRequest, method: str) -> None:
    assert request.path == f"{CLAUDE_VERTEX_PATH}{VERTEX_CLAUDE}:{method}"
    assert request.headers["authorization"] == "Bearer vertex-token"
    assert "anthropic_version" in request.body
    assert "model" not in request.body


def test_anthropic_vertex(llm_server: FakeLLMServer) -> None:
    with anthropic.AnthropicVertex(**_claude_on_vertex_kwargs(llm_server)) as client:
        message = client.messages.create(
            model=VERTEX_CLAUDE, max_tokens=64, messages=[{"role": "user", "content": USER_TEXT}]
        )
        with client.messages.stream(
            model=VERTEX_CLAUDE, max_tokens=64, messages=[{"role": "user", "content": USER_TEXT}]
        ) as stream:
            streamed = "".join(stream.text_stream)
            final = stream.get_final_message()
        counted = client.messages.count_tokens(
            model=VERTEX_CLAUDE, messages=[{"role": "user", "content": "one two three"}]
        )

    assert message.content[0].text == "echo: hello there"
    assert message.id.startswith("msg_vrtx_")
    assert (message.usage.input_tokens, message.usage.output_tokens) == (2, 4)
    assert streamed == "echo: hello there"
    assert final.usage.output_tokens == 4
    assert counted.input_tokens == 3
    plain, streamed_request, count_request = llm_server.requests
    _assert_claude_on_vertex_request(plain, "rawPredict")
    _assert_claude_on_vertex_request(streamed_request, "streamRawPredict")
    assert streamed_request.body["stream"] is True
    assert count_request.path == f"{CLAUDE_VERTEX_PATH}count-tokens:rawPredict"


async def test_async_anthropic_vertex(llm_server: FakeLLMServer) -> None:
    async with anthropic.AsyncAnthropicVertex(**_claude_on_vertex_kwargs(llm_server)) as client:
        message = await client.messages.create(
            model=VERTEX_CLAUDE, max_tokens=64, messages=[{"role": "user", "content": USER_TEXT}]
        )
        async with client.messages.stream(
            model=VERTEX_CLAUDE, max_tokens=64, messages=[{"role": "user", "content": USER_TEXT}]
        ) as stream:
            streamed = "".join([text async for text in stream.text_stream])

    assert message.content[0].text == "echo: hello there"
    assert streamed == "echo: hello there"
    plain, streamed_request = llm_server.requests
    _assert_claude_on_vertex_request(plain, "rawPredict")
    _assert_claude_on_vertex_request(streamed_request, "streamRawPredict")


def test_anthropic_vertex_without_v1_in_the_base_url(llm_server: FakeLLMServer) -> None:
    kwargs = {**_claude_on_vertex_kwargs(llm_server), "base_url": llm_server.base_url}
    with anthropic.AnthropicVertex(**kwargs) as client:
        message = client.messages.create(
            model=VERTEX_CLAUDE, max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        )

    assert message.content[0].text == "echo: hi"
    assert _only_request(llm_server).path.startswith("/projects/proj/locations/us-east5/")


# -- Routing ---------------------------------------------------------------------------------


def test_a_route_with_path_parameters_answers_405_to_another_method(
    llm_server: FakeLLMServer,
) -> None:
    import urllib.error
    import urllib.request

    url = f"{llm_server.base_url}/v1beta/models/{GEMINI}:generateContent"
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(url, timeout=5)

    assert caught.value.code == 405
    assert json.loads(caught.value.read())["error"]["code"] == 405


def test_concurrent_async_gemini_calls(llm_server: FakeLLMServer) -> None:
    async def main() -> list[str]:
        with genai.Client(api_key="test", http_options=_http_options(llm_server)) as client:
            calls = [
                client.aio.models.generate_content(model=GEMINI, contents=f"call {i}")
                for i in range(8)
            ]
            return [r.text or "" for r in await asyncio.gather(*calls)]

    texts = asyncio.run(main())

    assert sorted(texts) == sorted(f"echo: call {i}" for i in range(8))
    assert len(llm_server.requests) == 8

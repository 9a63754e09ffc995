"""The fake LLM server (examples/fake_llm_server.py) against the real openai / anthropic SDKs."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

import anthropic
import fake_llm_server
import openai
import pytest
from fake_llm_server import FakeLLMServer, RecordedRequest

GPT = "gpt-4o-mini"
CLAUDE = "claude-haiku-4-5"


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture
def oai(llm_server: FakeLLMServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=llm_server.openai_base_url, api_key="test", max_retries=0
    ) as client:
        yield client


@pytest.fixture
def claude(llm_server: FakeLLMServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        base_url=llm_server.anthropic_base_url, api_key="test", max_retries=0
    ) as client:
        yield client


@pytest.fixture
async def async_oai(llm_server: FakeLLMServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=llm_server.openai_base_url, api_key="test", max_retries=0
    ) as client:
        yield client


@pytest.fixture
async def async_claude(llm_server: FakeLLMServer) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=llm_server.anthropic_base_url, api_key="test", max_retries=0
    ) as client:
        yield client


# -- OpenAI ----------------------------------------------------------------------------------


def test_chat_completion(oai: openai.OpenAI, llm_server: FakeLLMServer) -> None:
    completion = oai.chat.completions.create(model=GPT, messages=_user("hello there"))

    assert completion.choices[0].message.content == "echo: hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == GPT
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 2
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    (request,) = llm_server.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.body == {"model": GPT, "messages": _user("hello there")}
    assert request.headers["authorization"] == "Bearer test"


def test_chat_completion_with_content_parts_and_n(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(
        model=GPT,
        n=2,
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "parts work"}]},
        ],
    )
    assert [c.message.content for c in completion.choices] == ["echo: parts work"] * 2
    assert [c.index for c in completion.choices] == [0, 1]


async def test_chat_completion_async(
    async_oai: openai.AsyncOpenAI, llm_server: FakeLLMServer
) -> None:
    completion = await async_oai.chat.completions.create(model=GPT, messages=_user("async"))

    assert completion.choices[0].message.content == "echo: async"
    assert llm_server.requests[0].headers["x-stainless-async"].startswith("async")


def test_chat_completion_stream_with_usage(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model=GPT,
        messages=_user("stream me please"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: stream me please"
    assert len([c for c in chunks if c.choices]) > 3  # really streamed in pieces
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    *rest, last = chunks
    assert last.choices == []
    assert last.usage is not None and last.usage.completion_tokens > 0
    assert all(c.usage is None for c in rest)


def test_chat_completion_stream_without_usage(oai: openai.OpenAI) -> None:
    chunks = list(oai.chat.completions.create(model=GPT, messages=_user("x"), stream=True))

    assert all(c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "echo: x"


def test_chat_completion_stream_helper(oai: openai.OpenAI) -> None:
    with oai.chat.completions.stream(model=GPT, messages=_user("helper")) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "echo: helper"


async def test_chat_completion_stream_async(async_oai: openai.AsyncOpenAI) -> None:
    stream = await async_oai.chat.completions.create(
        model=GPT, messages=_user("async stream"), stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "echo: async stream"


def test_legacy_completion(oai: openai.OpenAI, llm_server: FakeLLMServer) -> None:
    completion = oai.completions.create(model="gpt-3.5-turbo-instruct", prompt="say hi")

    assert completion.choices[0].text == "echo: say hi"
    assert completion.usage is not None and completion.usage.prompt_tokens == 2
    assert llm_server.requests[0].path == "/v1/completions"

    stream = oai.completions.create(
        model="gpt-3.5-turbo-instruct",
        prompt="stream it",
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "echo: stream it"
    assert chunks[-1].usage is not None


def test_embeddings_default_base64_float_and_dimensions(
    oai: openai.OpenAI, llm_server: FakeLLMServer
) -> None:
    default = oai.embeddings.create(model="text-embedding-3-small", input="abc")
    # The SDK asks for base64 on the wire when no format is given, and decodes it.
    assert llm_server.requests[-1].body["encoding_format"] == "base64"
    vector = default.data[0].embedding
    assert len(vector) == 8 and all(isinstance(v, float) for v in vector)
    assert abs(sum(v * v for v in vector) - 1.0) < 1e-5

    floats = oai.embeddings.create(
        model="text-embedding-3-small", input=["abc", "def"], encoding_format="float"
    )
    assert [d.index for d in floats.data] == [0, 1]
    assert floats.data[0].embedding == vector  # deterministic, whatever the encoding
    assert floats.data[1].embedding != vector
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == 2

    small = oai.embeddings.create(model="text-embedding-3-small", input="abc", dimensions=4)
    assert len(small.data[0].embedding) == 4


def test_responses_create(oai: openai.OpenAI, llm_server: FakeLLMServer) -> None:
    response = oai.responses.create(model=GPT, input="resp hi", instructions="be nice")

    assert response.output_text == "echo: resp hi"
    assert response.status == "completed"
    assert response.usage is not None
    assert response.usage.input_tokens == 4
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert llm_server.requests[0].path == "/v1/responses"


def test_responses_create_with_message_items(oai: openai.OpenAI) -> None:
    response = oai.responses.create(
        model=GPT,
        input=[
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "input_text", "text": "second"}]},
        ],
    )
    assert response.output_text == "echo: second"


def test_responses_create_stream(oai: openai.OpenAI) -> None:
    events = list(oai.responses.create(model=GPT, input="raw events", stream=True))
    types = [e.type for e in events]

    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    assert "response.output_item.done" in types
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == "echo: raw events"
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.usage is not None


def test_responses_stream_helper(oai: openai.OpenAI) -> None:
    with oai.responses.stream(model=GPT, input="streamed") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == "echo: streamed"
    assert final.output_text == "echo: streamed"
    assert final.usage is not None and final.usage.output_tokens > 0


async def test_responses_stream_helper_async(async_oai: openai.AsyncOpenAI) -> None:
    async with async_oai.responses.stream(model=GPT, input="async resp") as stream:
        final = await stream.get_final_response()
    assert final.output_text == "echo: async resp"


def test_openai_models_list(oai: openai.OpenAI) -> None:
    assert GPT in [m.id for m in oai.models.list()]


def test_openai_with_raw_response(oai: openai.OpenAI) -> None:
    raw = oai.chat.completions.with_raw_response.create(model=GPT, messages=_user("raw"))

    assert raw.status_code == 200
    assert raw.headers["content-type"] == "application/json"
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.parse().choices[0].message.content == "echo: raw"


# -- Anthropic -------------------------------------------------------------------------------


def test_anthropic_messages_create(claude: anthropic.Anthropic, llm_server: FakeLLMServer) -> None:
    message = claude.messages.create(
        model=CLAUDE, max_tokens=64, system="be nice", messages=_user("hey there")
    )

    assert message.content[0].type == "text"
    assert message.content[0].text == "echo: hey there"
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == 4
    assert message.usage.output_tokens == 4
    (request,) = llm_server.requests
    assert (request.method, request.path) == ("POST", "/v1/messages")
    assert "anthropic-version" in request.headers
    assert request.body["system"] == "be nice"


def test_anthropic_messages_create_stream(claude: anthropic.Anthropic) -> None:
    events = list(
        claude.messages.create(model=CLAUDE, max_tokens=64, messages=_user("raw"), stream=True)
    )
    types = [e.type for e in events]

    assert types[0] == "message_start"
    assert types[-2:] == ["message_delta", "message_stop"]
    text = "".join(
        e.delta.text
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "text_delta"
    )
    assert text == "echo: raw"


def test_anthropic_messages_stream_helper(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model=CLAUDE,
        max_tokens=64,
        messages=[{"role": "user", "content": [{"type": "text", "text": "block text"}]}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()

    assert text == "echo: block text"
    assert final.content[0].type == "text"
    assert final.content[0].text == "echo: block text"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 4


async def test_anthropic_async(async_claude: anthropic.AsyncAnthropic) -> None:
    message = await async_claude.messages.create(
        model=CLAUDE, max_tokens=64, messages=_user("async")
    )
    assert message.content[0].type == "text" and message.content[0].text == "echo: async"

    async with async_claude.messages.stream(
        model=CLAUDE, max_tokens=64, messages=_user("async stream")
    ) as stream:
        final = await stream.get_final_message()
    assert final.content[0].type == "text" and final.content[0].text == "echo: async stream"


def test_anthropic_count_tokens_and_models(claude: anthropic.Anthropic) -> None:
    count = claude.messages.count_tokens(model=CLAUDE, messages=_user("a b c"))
    assert count.input_tokens == 3
    assert CLAUDE in [m.id for m in claude.models.list()]


def test_anthropic_with_raw_response(claude: anthropic.Anthropic) -> None:
    raw = claude.messages.with_raw_response.create(
        model=CLAUDE, max_tokens=64, messages=_user("raw")
    )
    assert raw.headers["request-id"].startswith("req_")
    message = raw.parse()
    assert message.content[0].type == "text" and message.content[0].text == "echo: raw"


# -- Recording -------------------------------------------------------------------------------


def test_request_headers_are_recorded(
    oai: openai.OpenAI, claude: anthropic.Anthropic, llm_server: FakeLLMServer
) -> None:
    oai.chat.completions.create(model=GPT, messages=_user("h"), extra_headers={"x-test": "1"})
    claude.messages.create(
        model=CLAUDE, max_tokens=8, messages=_user("h"), extra_headers={"X-Test": "2"}
    )

    first, second = llm_server.requests
    assert first.headers["x-test"] == "1"
    assert second.headers["x-test"] == "2"
    for request, value in ((first, "1"), (second, "2")):
        assert [v for k, v in request.raw_headers if k.lower() == "x-test"] == [value]
        assert all(name == name.lower() for name in request.headers)
    assert isinstance(first, RecordedRequest)


def test_reset_clears_requests_and_failures(oai: openai.OpenAI, llm_server: FakeLLMServer) -> None:
    oai.models.list()
    llm_server.fail_next(3)
    llm_server.reset()

    assert llm_server.requests == []
    assert llm_server.pending_failures == 0
    oai.models.list()  # no failure left over
    assert llm_server.requests[0].method == "GET" and llm_server.requests[0].body is None


def test_concurrent_requests_are_all_recorded(
    oai: openai.OpenAI, llm_server: FakeLLMServer
) -> None:
    def call(i: int) -> str | None:
        reply = oai.chat.completions.create(model=GPT, messages=_user(f"n{i}"))
        return reply.choices[0].message.content

    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = list(pool.map(call, range(24)))

    assert replies == [f"echo: n{i}" for i in range(24)]
    assert sorted(r.body["messages"][0]["content"] for r in llm_server.requests) == sorted(
        f"n{i}" for i in range(24)
    )


# -- Failure injection -----------------------------------------------------------------------


def _same_but_retry_count(first: RecordedRequest, second: RecordedRequest) -> None:
    assert first.headers["x-stainless-retry-count"] == "0"
    assert second.headers["x-stainless-retry-count"] == "1"
    # Same idempotency key (when the SDK sends one) and otherwise identical requests.
    assert first.headers.get("idempotency-key") == second.headers.get("idempotency-key")
    ignored = {"x-stainless-retry-count"}
    assert {k: v for k, v in first.headers.items() if k not in ignored} == {
        k: v for k, v in second.headers.items() if k not in ignored
    }
    assert first.body == second.body


def test_fail_next_500_is_retried(oai: openai.OpenAI, llm_server: FakeLLMServer) -> None:
    llm_server.fail_next(1)
    completion = oai.with_options(max_retries=2).chat.completions.create(
        model=GPT, messages=_user("retry")
    )

    assert completion.choices[0].message.content == "echo: retry"
    assert len(llm_server.requests) == 2
    _same_but_retry_count(*llm_server.requests)


def test_fail_next_500_anthropic_is_retried(
    claude: anthropic.Anthropic, llm_server: FakeLLMServer
) -> None:
    llm_server.fail_next(1)
    message = claude.with_options(max_retries=2).messages.create(
        model=CLAUDE, max_tokens=8, messages=_user("retry")
    )

    assert message.content[0].type == "text" and message.content[0].text == "echo: retry"
    assert len(llm_server.requests) == 2
    _same_but_retry_count(*llm_server.requests)


def test_fail_next_without_retries_raises_status_errors(
    oai: openai.OpenAI, claude: anthropic.Anthropic, llm_server: FakeLLMServer
) -> None:
    llm_server.fail_next(1, "500")
    with pytest.raises(openai.InternalServerError) as oai_500:
        oai.chat.completions.create(model=GPT, messages=_user("x"))
    assert oai_500.value.status_code == 500

    llm_server.fail_next(1, "429")
    with pytest.raises(openai.RateLimitError):
        oai.chat.completions.create(model=GPT, messages=_user("x"))

    llm_server.fail_next(2, "429")
    with pytest.raises(anthropic.RateLimitError) as claude_429:
        claude.messages.create(model=CLAUDE, max_tokens=8, messages=_user("x"))
    assert claude_429.value.body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "Injected failure (HTTP 429)."},
    }
    with pytest.raises(anthropic.RateLimitError):
        claude.messages.create(model=CLAUDE, max_tokens=8, messages=_user("x"), stream=True)

    assert len(llm_server.requests) == 4  # failed requests are recorded too
    assert oai.chat.completions.create(model=GPT, messages=_user("x")).choices


def test_fail_next_reset_gives_connection_errors(
    oai: openai.OpenAI, claude: anthropic.Anthropic, llm_server: FakeLLMServer
) -> None:
    llm_server.fail_next(1, "reset")
    with pytest.raises(openai.APIConnectionError):
        oai.chat.completions.create(model=GPT, messages=_user("x"))

    llm_server.fail_next(1, "reset")
    with pytest.raises(anthropic.APIConnectionError):
        claude.messages.create(model=CLAUDE, max_tokens=8, messages=_user("x"))

    assert len(llm_server.requests) == 2
    # The server carries on; the clients open new connections.
    assert oai.chat.completions.create(model=GPT, messages=_user("ok")).choices
    assert claude.messages.create(model=CLAUDE, max_tokens=8, messages=_user("ok")).content


async def test_fail_next_reset_async_then_retry_succeeds(
    async_oai: openai.AsyncOpenAI, llm_server: FakeLLMServer
) -> None:
    llm_server.fail_next(1, "reset")
    with pytest.raises(openai.APIConnectionError):
        await async_oai.chat.completions.create(model=GPT, messages=_user("x"))

    llm_server.fail_next(1, "reset")
    completion = await async_oai.with_options(max_retries=1).chat.completions.create(
        model=GPT, messages=_user("again")
    )
    assert completion.choices[0].message.content == "echo: again"
    assert len(llm_server.requests) == 3  # 1 reset, then 1 reset + 1 successful retry


def test_fail_next_rejects_unknown_modes(llm_server: FakeLLMServer) -> None:
    with pytest.raises(ValueError):
        llm_server.fail_next(1, "teapot")
    with pytest.raises(ValueError):
        llm_server.fail_next(1, "200")


def test_latency(oai: openai.OpenAI, llm_server: FakeLLMServer) -> None:
    llm_server.latency = 0.1
    try:
        start = time.perf_counter()
        oai.models.list()
        assert time.perf_counter() - start >= 0.1
    finally:
        llm_server.latency = 0.0


# -- HTTP edges and lifecycle ----------------------------------------------------------------


def test_unknown_path_is_a_json_404(
    oai: openai.OpenAI, claude: anthropic.Anthropic, llm_server: FakeLLMServer
) -> None:
    with pytest.raises(openai.NotFoundError) as oai_404:
        oai.post("/nope", cast_to=object, body={})
    assert oai_404.value.body == {
        "message": "Unknown request URL: POST /v1/nope",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    with pytest.raises(anthropic.NotFoundError):
        claude.get("/v1/nope", cast_to=object)

    request = urllib.request.Request(
        f"{llm_server.base_url}/v1/chat/completions", data=b"{not json", method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as bad_json:
        urllib.request.urlopen(request, timeout=5)
    assert bad_json.value.code == 400
    assert [r.path for r in llm_server.requests] == [
        "/v1/nope",
        "/v1/nope",
        "/v1/chat/completions",
    ]


def test_stop_closes_keep_alive_connections_and_frees_the_port() -> None:
    server = FakeLLMServer().start()
    port = server.port
    with openai.OpenAI(base_url=server.openai_base_url, api_key="test", max_retries=0) as client:
        client.models.list()  # leaves a keep-alive connection open
        start = time.perf_counter()
        server.stop()
        assert time.perf_counter() - start < 1.0
        with pytest.raises(openai.APIConnectionError):
            client.models.list()

    with FakeLLMServer(port=port) as again:  # same port, straight away
        assert again.base_url == f"http://127.0.0.1:{port}"
        with openai.OpenAI(base_url=again.openai_base_url, api_key="test") as client:
            assert client.models.list().data


def test_runs_standalone() -> None:
    process = subprocess.Popen(
        [sys.executable, fake_llm_server.__file__, "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        base_url = line.rsplit(" ", 1)[-1].strip()
        assert base_url.startswith("http://127.0.0.1:")
        with openai.OpenAI(base_url=f"{base_url}/v1", api_key="test") as client:
            completion = client.chat.completions.create(model=GPT, messages=_user("solo"))
        assert completion.choices[0].message.content == "echo: solo"
    finally:
        process.terminate()
        assert process.wait(timeout=5) == 0
        if process.stdout is not None:
            process.stdout.close()

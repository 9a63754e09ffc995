"""GenAI calls through the real openai / anthropic SDKs to a local server: headers stamped,
GenAI spans attributed, per-call headers resolved, failures contained.

The ``genai`` fixture checks after each test that every GenAI span's payi.* attributes equal
the x-payi-* headers its call sent.
"""

from __future__ import annotations

import logging
import urllib.request
import uuid
from typing import Any

import anthropic
import openai
import pytest
from fixtures_genai import CHAT, MESSAGE, GenAI, payi_headers
from opentelemetry.instrumentation.genai.openai import OpenAIInstrumentor

from payi_otel import PayiInstrumentor, track, track_context

# --- every SDK surface -----------------------------------------------------------------------


def test_openai_chat_sync_carries_scope(genai: GenAI) -> None:
    @track(use_case_name="support", use_case_version=3, limit_ids=["l1"])
    def handle() -> str:
        with track_context(
            user_id="alice",
            account_name="acme",
            use_case_step="answer",
            request_properties={"tier": "gold"},
        ):
            reply = genai.openai.chat.completions.create(**CHAT)
        return reply.choices[0].message.content or ""

    assert handle() == "echo: Hello"
    sent = genai.last()
    assert sent["x-payi-use-case-name"] == "support"
    assert uuid.UUID(sent["x-payi-use-case-id"]).version == 4
    assert sent["x-payi-use-case-version"] == "3"
    assert sent["x-payi-use-case-step"] == "answer"
    assert sent["x-payi-limit-ids"] == "l1"
    assert sent["x-payi-user-id"] == "alice"
    assert sent["x-payi-account-name"] == "acme"
    assert sent["x-payi-request-properties"] == '{"tier":"gold"}'
    [attrs] = genai.span_attrs()
    assert attrs["payi.use_case.step"] == "answer"
    assert attrs["payi.request.properties.tier"] == "gold"


async def test_openai_chat_async(genai: GenAI) -> None:
    async with track_context(user_id="bob", limit_ids=["a"]):
        reply = await genai.async_openai.chat.completions.create(**CHAT)
    assert reply.choices[0].message.content == "echo: Hello"
    assert genai.last() == {"x-payi-user-id": "bob", "x-payi-limit-ids": "a"}


def test_openai_chat_streaming_sync(genai: GenAI) -> None:
    with track_context(user_id="streamer"):
        stream = genai.openai.chat.completions.create(
            **CHAT, stream=True, stream_options={"include_usage": True}
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "echo: Hello"
    assert genai.last() == {"x-payi-user-id": "streamer"}


def test_stream_consumed_outside_its_scope_was_stamped_when_called(genai: GenAI) -> None:
    # Without openai-v2: its GenAI-util invocation attaches a context when a stream starts
    # and detaches it when the stream ends, which restores the creating scope's context if
    # the stream is consumed outside it (an upstream behaviour, see the README).
    OpenAIInstrumentor().uninstrument()
    genai.check_invariant = False
    with track_context(user_id="streamer"):
        stream = genai.openai.chat.completions.create(**CHAT, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "echo: Hello"
    assert genai.last() == {"x-payi-user-id": "streamer"}
    from payi_otel import get_context

    assert "user_id" not in get_context()


async def test_openai_chat_streaming_async(genai: GenAI) -> None:
    async with track_context(user_id="astreamer"):
        stream = await genai.async_openai.chat.completions.create(**CHAT, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "echo: Hello"
    assert genai.last() == {"x-payi-user-id": "astreamer"}


def test_openai_embeddings(genai: GenAI) -> None:
    with track_context(request_tags=["embed"]):
        result = genai.openai.embeddings.create(model="text-embedding-3-small", input="hi")
    assert len(result.data) == 1
    assert genai.last() == {"x-payi-request-tags": "embed"}


def test_openai_legacy_completions(genai: GenAI) -> None:
    with track_context(user_id="r"), genai.genai_span("openai", "text_completion"):
        completion = genai.openai.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say")
    assert completion.choices[0].text
    assert genai.sent() == [{"x-payi-user-id": "r"}]


def test_openai_responses(genai: GenAI) -> None:
    if not hasattr(genai.openai, "responses"):
        genai.check_invariant = False
        pytest.skip("this openai release has no Responses API")
    with track_context(user_id="r"):
        response = genai.openai.responses.create(model="gpt-4o", input="Hi there")
        with genai.openai.responses.stream(model="gpt-4o", input="Stream me") as stream:
            final = stream.get_final_response()
    assert "Hi there" in response.output_text
    assert "Stream me" in final.output_text
    assert genai.sent() == [{"x-payi-user-id": "r"}] * 2


def test_openai_with_raw_response(genai: GenAI) -> None:
    with track_context(account_name="raw"):
        raw = genai.openai.chat.completions.with_raw_response.create(**CHAT)
    assert raw.parse().choices[0].message.content == "echo: Hello"
    assert genai.last() == {"x-payi-account-name": "raw"}


def test_openai_with_streaming_response(genai: GenAI) -> None:
    raw = genai.openai.chat.completions.with_streaming_response
    with track_context(account_name="streamed_raw"), raw.create(**CHAT) as response:
        assert response.parse().choices[0].message.content == "echo: Hello"
    assert genai.last() == {"x-payi-account-name": "streamed_raw"}


def test_anthropic_messages_sync(genai: GenAI) -> None:
    with track_context(user_id="claude_user", limit_ids=["x"]), genai.anthropic_span():
        message = genai.anthropic.messages.create(**MESSAGE)
    assert message.content[0].text == "echo: Hello"  # type: ignore[union-attr]
    assert genai.last() == {"x-payi-user-id": "claude_user", "x-payi-limit-ids": "x"}


async def test_anthropic_messages_async_and_stream(genai: GenAI) -> None:
    async with track_context(user_id="async_claude"):
        with genai.anthropic_span():
            message = await genai.async_anthropic.messages.create(**MESSAGE)
        with genai.anthropic_span():
            async with genai.async_anthropic.messages.stream(**MESSAGE) as stream:
                final = await stream.get_final_message()
    assert message.content[0].text == final.content[0].text == "echo: Hello"  # type: ignore[union-attr]
    assert genai.sent() == [{"x-payi-user-id": "async_claude"}] * 2


def test_anthropic_stream_helper_and_stream_true(genai: GenAI) -> None:
    with track_context(use_case_name="claude_uc"):
        with genai.anthropic_span(), genai.anthropic.messages.stream(**MESSAGE) as stream:
            text = "".join(stream.text_stream)
        with genai.anthropic_span():
            events = list(genai.anthropic.messages.create(**MESSAGE, stream=True))
    assert text == "echo: Hello"
    assert events[-1].type == "message_stop"
    first, second = genai.sent()
    assert first["x-payi-use-case-name"] == second["x-payi-use-case-name"] == "claude_uc"
    assert first["x-payi-use-case-id"] == second["x-payi-use-case-id"]


def test_azure_openai_client_is_stamped(genai: GenAI) -> None:
    genai.server.azure_deployments["gpt-4"] = "gpt-4-0613"  # CHAT's model, as a deployment
    client = openai.AzureOpenAI(
        azure_endpoint=genai.server.base_url,
        api_key="k",
        api_version="2024-06-01",
        max_retries=0,
    )
    with track_context(user_id="azure_user"):
        reply = client.chat.completions.create(**CHAT)
    assert reply.model == "gpt-4-0613"
    assert genai.server.requests[-1].path.startswith("/openai/deployments/")
    assert payi_headers(genai.server.requests[-1]) == {"x-payi-user-id": "azure_user"}


# --- per-call headers ------------------------------------------------------------------------


def test_default_headers_and_extra_headers_resolve_over_scopes(genai: GenAI) -> None:
    client = genai.openai_client(
        default_headers={
            "X-Payi-User-Id": "default_header_user",
            "x-payi-limit-ids": "dh",
        }
    )
    with track_context(user_id="scope_user", limit_ids=["scope"]):
        client.chat.completions.create(**CHAT)
        client.chat.completions.create(**CHAT, extra_headers={"x-payi-user-id": "extra"})
        client.chat.completions.create(**CHAT, extra_headers={"X-PAYI-LIMIT-IDS": ""})
    assert genai.sent() == [
        {"x-payi-user-id": "default_header_user", "x-payi-limit-ids": "scope,dh"},
        {"x-payi-user-id": "extra", "x-payi-limit-ids": "scope,dh"},
        {"x-payi-user-id": "default_header_user"},
    ]
    for request in genai.server.requests:  # exactly one header per name, whatever the case
        names = [k.lower() for k, _ in request.raw_headers if k.lower().startswith("x-payi-")]
        assert len(names) == len(set(names))


def test_header_name_only_gets_fresh_id_once_per_call(genai: GenAI) -> None:
    with track_context(use_case_name="scope_uc", use_case_id="scope_id", use_case_version=2):
        genai.openai.chat.completions.create(
            **CHAT, extra_headers={"x-payi-use-case-name": "header_uc"}
        )
        genai.openai.chat.completions.create(
            **CHAT, extra_headers={"x-payi-use-case-id": "header_id"}
        )
        genai.openai.chat.completions.create(
            **CHAT, extra_headers={"x-payi-use-case-name": "scope_uc", "x-payi-use-case-step": "s"}
        )
    new, id_only, same = genai.sent()
    assert new["x-payi-use-case-name"] == "header_uc"
    assert uuid.UUID(new["x-payi-use-case-id"]).version == 4
    assert "x-payi-use-case-version" not in new  # a new use case starts without the version
    assert id_only == {
        "x-payi-use-case-name": "scope_uc",
        "x-payi-use-case-id": "header_id",
        "x-payi-use-case-version": "2",
    }
    assert same == {
        "x-payi-use-case-name": "scope_uc",
        "x-payi-use-case-id": "scope_id",
        "x-payi-use-case-version": "2",
        "x-payi-use-case-step": "s",
    }


def test_property_headers_merge_as_json(genai: GenAI) -> None:
    with track_context(request_properties={"a": "1", "b": "2"}):
        genai.openai.chat.completions.create(
            **CHAT, extra_headers={"x-payi-request-properties": '{"b": null, "c": "3"}'}
        )
        genai.openai.chat.completions.create(
            **CHAT, extra_headers={"x-payi-request-properties": ""}
        )
    first, second = genai.sent()
    assert first == {"x-payi-request-properties": '{"a":"1","c":"3"}'}
    assert second == {}


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("x-payi-use-case-version", "five"),
        ("x-payi-use-case-properties", "{not json"),
        ("x-payi-request-properties", '{"k": 1}'),
        ("x-payi-request-properties", '["a"]'),
    ],
)
def test_unparseable_header_raises_before_sending(genai: GenAI, header: str, value: str) -> None:
    genai.check_invariant = False  # nothing is sent
    with pytest.raises(ValueError, match=header):
        genai.openai.chat.completions.create(**CHAT, extra_headers={header: value})
    with pytest.raises(ValueError, match=header):
        genai.anthropic.messages.create(**MESSAGE, extra_headers={header: value})
    assert genai.server.requests == []


def test_non_str_header_value_is_a_type_error(genai: GenAI) -> None:
    genai.check_invariant = False  # nothing is sent
    with pytest.raises(TypeError, match="x-payi-use-case-version"):
        genai.openai.chat.completions.create(**CHAT, extra_headers={"x-payi-use-case-version": 5})  # type: ignore[dict-item]
    assert genai.server.requests == []


def test_non_ascii_is_percent_encoded_on_the_wire_and_kept_on_spans(genai: GenAI) -> None:
    with track_context(user_id="José", request_properties={"city": "Zürich"}):
        genai.openai.chat.completions.create(**CHAT)
    sent = genai.last()
    assert sent["x-payi-user-id"] == "Jos%C3%A9"
    assert sent["x-payi-request-properties"] == '{"city":"Z\\u00fcrich"}'
    [attrs] = genai.span_attrs()
    assert attrs["payi.user_id"] == "José"
    assert attrs["payi.request.properties.city"] == "Zürich"


def test_retries_resend_the_same_headers(genai: GenAI) -> None:
    genai.server.fail_next(2, mode="500")
    client = genai.openai_client(max_retries=3)
    with track_context(use_case_name="retried", user_id="u"):
        reply = client.chat.completions.create(
            **CHAT, extra_headers={"x-payi-experience-name": "exp"}
        )
    assert reply.choices[0].message.content == "echo: Hello"
    # openai < 1.40 does not send x-stainless-retry-count: attempts cannot be told apart.
    genai.check_invariant = "x-stainless-retry-count" in genai.server.requests[0].headers
    attempts = [payi_headers(r) for r in genai.server.requests]
    assert len(attempts) == 3
    assert attempts[0] == attempts[1] == attempts[2]
    assert attempts[0]["x-payi-use-case-name"] == "retried"
    assert uuid.UUID(attempts[0]["x-payi-experience-id"]).version == 4


def test_anthropic_retries_resend_the_same_headers(genai: GenAI) -> None:
    genai.server.fail_next(1, mode="reset")
    client = genai.anthropic_client(max_retries=2)
    with track_context(use_case_name="claude_retry"), genai.anthropic_span():
        client.messages.create(**MESSAGE)
    attempts = [payi_headers(r) for r in genai.server.requests]
    assert len(attempts) == 2 and attempts[0] == attempts[1]


def test_headers_are_never_stamped_on_other_http_traffic(genai: GenAI) -> None:
    genai.check_invariant = False
    with track_context(user_id="private"):
        urllib.request.urlopen(genai.server.openai_base_url + "/models", timeout=5).read()
    assert payi_headers(genai.server.requests[-1]) == {}


# --- failure policy, instrumentation order, uninstrument ---------------------------------------


def test_internal_error_never_breaks_the_call(
    genai: GenAI,
    internal_errors_contained: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    genai.check_invariant = False

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("bug inside payi_otel")

    monkeypatch.setattr("payi_otel._providers._core.call_basis", broken)
    with caplog.at_level(logging.WARNING, logger="payi_otel"), track_context(user_id="u"):
        for _ in range(3):
            reply = genai.openai.chat.completions.create(
                **CHAT, extra_headers={"x-payi-user-id": "as_written", "x-other": "kept"}
            )
            assert reply.choices[0].message.content == "echo: Hello"
        with genai.anthropic_span():
            genai.anthropic.messages.create(**MESSAGE)
    # Sent unchanged: the caller's own headers exactly as written.
    assert [payi_headers(r) for r in genai.server.requests[:3]] == [
        {"x-payi-user-id": "as_written"}
    ] * 3
    assert all(r.headers["x-other"] == "kept" for r in genai.server.requests[:3])
    records = [r for r in caplog.records if r.name == "payi_otel"]
    assert len(records) == 2  # once per SDK, not once per call
    assert "request hook failed" in records[0].getMessage()


def test_processor_failure_never_breaks_the_call(
    genai: GenAI, internal_errors_contained: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    genai.check_invariant = False

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("processor bug")

    monkeypatch.setattr("payi_otel._spans.call_effective", broken)
    reply = genai.openai.chat.completions.create(**CHAT)
    assert reply.choices[0].message.content == "echo: Hello"


@pytest.mark.parametrize("openai_v2_first", [True, False])
def test_works_whichever_is_instrumented_first(genai: GenAI, openai_v2_first: bool) -> None:
    payi = PayiInstrumentor()
    payi.uninstrument()
    v2 = OpenAIInstrumentor()
    assert not v2.is_instrumented_by_opentelemetry
    try:
        if openai_v2_first:
            v2.instrument(tracer_provider=genai.otel.provider)
            payi.instrument(tracer_provider=genai.otel.provider, caller_file="<test>")
        else:
            payi.instrument(tracer_provider=genai.otel.provider, caller_file="<test>")
            v2.instrument(tracer_provider=genai.otel.provider)
        with track_context(user_id="ordered"):
            genai.openai.chat.completions.create(**CHAT, extra_headers={"x-payi-limit-ids": "l"})
    finally:
        v2.uninstrument()
    assert genai.last() == {"x-payi-user-id": "ordered", "x-payi-limit-ids": "l"}
    assert genai.span_attrs() == [{"payi.user_id": "ordered", "payi.limit_ids": ["l"]}]


def test_without_openai_v2_headers_still_go_out(genai: GenAI) -> None:
    OpenAIInstrumentor().uninstrument()
    with track_context(user_id="no_spans"):
        genai.openai.chat.completions.create(**CHAT)
    assert genai.last() == {"x-payi-user-id": "no_spans"}
    assert genai.otel.genai_spans() == []
    genai.check_invariant = False


def test_uninstrument_restores_every_patched_function(genai: GenAI) -> None:
    genai.check_invariant = False
    patched = [
        openai._base_client.SyncAPIClient.request,
        openai._base_client.AsyncAPIClient.request,
        anthropic._base_client.SyncAPIClient.request,
        anthropic._base_client.AsyncAPIClient.request,
    ]
    assert all(hasattr(f, "__wrapped__") for f in patched)
    PayiInstrumentor().uninstrument()
    for cls in (
        openai._base_client.SyncAPIClient,
        openai._base_client.AsyncAPIClient,
        anthropic._base_client.SyncAPIClient,
        anthropic._base_client.AsyncAPIClient,
    ):
        assert not hasattr(cls.request, "__wrapped__")
    with track_context(user_id="after"):
        genai.openai.chat.completions.create(**CHAT)
    assert genai.last() == {}

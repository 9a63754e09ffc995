"""Azure OpenAI (``openai.AzureOpenAI`` / ``AsyncAzureOpenAI``): every surface the openai path
has - chat, responses, embeddings, sync and async, streams every way (Azure's first chunk is
``choices: []`` with only ``prompt_filter_results``), raw and streaming responses,
``with_options``, the client's default headers - attributed over scopes with the call's own
headers, in both dialects, with and without GenAI spans; the span marked
``payi_otel.category = system.azureopenai`` and priced as Azure (genai-prices ``azure``, by the
model the reply names), usage and cost in the metrics, ingested as ``system.azureopenai``;
Azure's public hosts get no headers by default; uninstrument restores the client. Real
``openai`` SDK, real OpenTelemetry SDK, real genai-openai instrumentation, the local fake
server's Azure routes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Callable

import httpx2
import openai
import pytest
from cloud_support import (
    MODE_IDS,
    PAIRWISE_MODES,
    STYLES,
    Mode,
    aconsume,
    assert_cost_on,
    assert_partial,
    consume,
    ingested,
    price,
)
from fixtures_genai import (
    AZURE_API_VERSION,
    AZURE_CHAT,
    AZURE_DEPLOYMENT,
    AZURE_DEPLOYMENTS,
    AZURE_EMBEDDER,
    AZURE_MODEL,
    GenAI,
    azure_client,
)
from fixtures_server import to_local

from payi_otel import PayiInstrumentor, track_context
from payi_otel._destinations import sends_to
from payi_otel._providers import Usage

AZURE = "system.azureopenai"
INPUT: dict[str, Any] = {"model": AZURE_DEPLOYMENT, "input": "Hello there"}
EMBED: dict[str, Any] = {"model": AZURE_EMBEDDER, "input": "Hello there"}
#: The caller's per-call attribution (the SDK's idiom: ``extra_headers``).
CALL_HEADERS = {"x-payi-account-name": "acct-7", "xProxy-Limit-IDs": "call_limit"}


@pytest.fixture(params=PAIRWISE_MODES, ids=lambda m: MODE_IDS[m])
def mode(request: pytest.FixtureRequest, genai: GenAI) -> Mode:
    """payi_otel with and without GenAI spans, in each dialect (``PAIRWISE_MODES``)."""
    spans, dialect = request.param
    return Mode(genai, spans, dialect).start()


@pytest.fixture
def client(genai: GenAI) -> Any:
    with azure_client(genai) as made:
        yield made


# --- the surfaces ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Surface:
    name: str
    #: One call through a sync client, read to the end; returns what the caller saw.
    run: Callable[[Any, dict[str, str]], Any]
    #: The same through an async client.
    arun: Callable[[Any, dict[str, str]], Awaitable[Any]]
    path: str
    #: The model the reply names (what the call is priced as).
    model: str = AZURE_MODEL
    #: The deployment the call names.
    deployment: str = AZURE_DEPLOYMENT
    #: Whether genai-openai starts a GenAI span for it.
    genai_span: bool = True
    #: Whether the call reports usage (a raw stream read as bytes is the caller's: none).
    reports_usage: bool = True


CHAT_PATH = f"/openai/deployments/{AZURE_DEPLOYMENT}/chat/completions"


def _stream(stream: Any) -> list[Any]:
    with stream as entered:
        return list(entered)


async def _astream(stream: Any) -> list[Any]:
    async with stream as entered:
        return [item async for item in entered]


async def _alist(awaitable: Awaitable[Any]) -> list[Any]:
    return [item async for item in await awaitable]


async def _araw(awaitable: Awaitable[Any]) -> Any:
    parsed = (await awaitable).parse()  # a legacy raw response parses without awaiting
    return await parsed if asyncio.iscoroutine(parsed) else parsed


async def _araw_stream(awaitable: Awaitable[Any]) -> list[Any]:
    return [item async for item in await _araw(awaitable)]


async def _astreaming(manager: Any) -> list[Any]:
    async with manager as response:
        return [item async for item in await response.parse()]


def _streaming(manager: Any) -> list[Any]:
    with manager as response:
        return list(response.parse())


SURFACES = [
    Surface(
        "chat",
        lambda c, h: c.chat.completions.create(**AZURE_CHAT, extra_headers=h),
        lambda c, h: c.chat.completions.create(**AZURE_CHAT, extra_headers=h),
        CHAT_PATH,
    ),
    Surface(
        "chat-stream",
        lambda c, h: list(c.chat.completions.create(**AZURE_CHAT, stream=True, extra_headers=h)),
        lambda c, h: _alist(c.chat.completions.create(**AZURE_CHAT, stream=True, extra_headers=h)),
        CHAT_PATH,
    ),
    Surface(
        "chat-stream-usage-asked",
        lambda c, h: list(
            c.chat.completions.create(
                **AZURE_CHAT,
                stream=True,
                stream_options={"include_usage": True},
                extra_headers=h,
            )
        ),
        lambda c, h: _alist(
            c.chat.completions.create(
                **AZURE_CHAT,
                stream=True,
                stream_options={"include_usage": True},
                extra_headers=h,
            )
        ),
        CHAT_PATH,
    ),
    Surface(
        "chat-helper",
        lambda c, h: _stream(c.chat.completions.stream(**AZURE_CHAT, extra_headers=h)),
        lambda c, h: _astream(c.chat.completions.stream(**AZURE_CHAT, extra_headers=h)),
        CHAT_PATH,
    ),
    Surface(
        "chat-raw",
        lambda c, h: c.chat.completions.with_raw_response.create(
            **AZURE_CHAT, extra_headers=h
        ).parse(),
        lambda c, h: _araw(
            c.chat.completions.with_raw_response.create(**AZURE_CHAT, extra_headers=h)
        ),
        CHAT_PATH,
    ),
    Surface(
        "chat-raw-stream",
        lambda c, h: list(
            c.chat.completions.with_raw_response.create(
                **AZURE_CHAT, stream=True, extra_headers=h
            ).parse()
        ),
        lambda c, h: _araw_stream(
            c.chat.completions.with_raw_response.create(**AZURE_CHAT, stream=True, extra_headers=h)
        ),
        CHAT_PATH,
        reports_usage=False,
    ),
    Surface(
        "chat-with-options",
        lambda c, h: c.with_options(timeout=30, max_retries=0).chat.completions.create(
            **AZURE_CHAT, extra_headers=h
        ),
        lambda c, h: c.with_options(timeout=30, max_retries=0).chat.completions.create(
            **AZURE_CHAT, extra_headers=h
        ),
        CHAT_PATH,
    ),
    Surface(
        "responses",
        lambda c, h: c.responses.create(**INPUT, extra_headers=h),
        lambda c, h: c.responses.create(**INPUT, extra_headers=h),
        "/openai/responses",
    ),
    Surface(
        "responses-stream",
        lambda c, h: list(c.responses.create(**INPUT, stream=True, extra_headers=h)),
        lambda c, h: _alist(c.responses.create(**INPUT, stream=True, extra_headers=h)),
        "/openai/responses",
    ),
    Surface(
        "responses-helper",
        lambda c, h: _stream(c.responses.stream(**INPUT, extra_headers=h)),
        lambda c, h: _astream(c.responses.stream(**INPUT, extra_headers=h)),
        "/openai/responses",
    ),
    Surface(
        "responses-streaming-response",
        lambda c, h: _streaming(
            c.responses.with_streaming_response.create(**INPUT, stream=True, extra_headers=h)
        ),
        lambda c, h: _astreaming(
            c.responses.with_streaming_response.create(**INPUT, stream=True, extra_headers=h)
        ),
        "/openai/responses",
    ),
    Surface(
        "embeddings",
        lambda c, h: c.embeddings.create(**EMBED, extra_headers=h),
        lambda c, h: c.embeddings.create(**EMBED, extra_headers=h),
        f"/openai/deployments/{AZURE_EMBEDDER}/embeddings",
        model="text-embedding-3-small",
        deployment=AZURE_EMBEDDER,
    ),
]


def _check_surface(mode: Mode, surface: Surface) -> None:
    """One call made in ``track_context(user_id="alice", limit_ids=["scope_limit"])`` with
    :data:`CALL_HEADERS`: attributed, observed as an Azure call, priced as Azure."""
    genai = mode.genai
    (request,) = genai.server.requests
    assert request.path == surface.path
    assert request.query == f"api-version={AZURE_API_VERSION}"
    assert request.headers["api-key"] == "azure-key"
    sent = genai.attribution()[-1]
    assert sent["x-payi-user-id"] == "alice"
    assert sent["x-payi-account-name"] == "acct-7"
    assert sent["x-payi-limit-ids"] == "scope_limit,call_limit"

    record = mode.record()
    assert record.provider == "openai"
    assert record.service is not None and record.service.category == AZURE
    assert record.request_model == surface.deployment  # the deployment, as sent
    assert record.call.params["user_id"] == "alice"
    if not surface.reports_usage:
        assert record.usage is None
        genai.check_invariant = False  # no usage: the span is whatever genai-openai made
        return
    assert record.usage is not None and record.usage.input_tokens
    assert record.response_model == surface.model
    expected = price(surface.model, "azure", record.usage)
    cost = mode.metrics.by("payi.genai.cost", "gen_ai.provider.name")
    assert cost == {"azure.ai.openai": pytest.approx(float(expected.total_price))}
    tokens = mode.metrics.total("payi.genai.tokens", **{"payi_otel.token.type": "input"})
    assert tokens == record.usage.input_tokens

    spans = genai.otel.genai_spans()
    if not (mode.spans and surface.genai_span):
        genai.check_invariant = False  # no GenAI span for this call
        assert not [s for s in spans if "payi_otel.cost.total" in (s.attributes or {})]
        return
    (span,) = spans
    attributes = span.attributes or {}
    assert attributes["payi_otel.category"] == AZURE  # genai-openai names it "openai"
    assert attributes["gen_ai.request.model"] == surface.deployment
    assert attributes["payi.user_id"] == "alice"
    assert_cost_on(span, expected)
    (record_in,) = ingested(genai.otel.spans())
    assert record_in["category"] == AZURE
    assert record_in["resource"] == surface.deployment  # the deployment, as Pay-i's SDK sends it
    assert record_in["user_id"] == "alice" and record_in["account_name"] == "acct-7"


@pytest.mark.parametrize("surface", SURFACES, ids=lambda s: s.name)
def test_every_sync_surface_is_attributed_and_priced_as_azure(
    mode: Mode, client: Any, surface: Surface
) -> None:
    with track_context(user_id="alice", limit_ids=["scope_limit"]):
        seen = surface.run(client, CALL_HEADERS)
    assert seen
    _check_surface(mode, surface)


@pytest.mark.parametrize("surface", SURFACES, ids=lambda s: s.name)
async def test_every_async_surface_is_attributed_and_priced_as_azure(
    mode: Mode, surface: Surface
) -> None:
    async with azure_client(mode.genai, is_async=True) as client:
        async with track_context(user_id="alice", limit_ids=["scope_limit"]):
            seen = await surface.arun(client, CALL_HEADERS)
    assert seen
    _check_surface(mode, surface)


# --- streams, every way a caller leaves one ---------------------------------------------------


def _is_filter_chunk(item: Any) -> bool:
    """Azure's first chunk: no choices, no model, only the prompt's content filter results."""
    return item.choices == [] and item.model == "" and getattr(item, "usage", None) is None


def _usage_only(item: Any) -> bool:
    return item.choices == [] and getattr(item, "usage", None) is not None


def _full_usage(mode: Mode, client: Any) -> Usage:
    """The usage of the same call made plainly (the fake server's counts are the same)."""
    client.chat.completions.create(**AZURE_CHAT)
    usage = mode.record().usage
    assert usage is not None
    mode.forget()
    return usage


def _check_stream(mode: Mode, items: list[Any], style: str, full: Usage) -> None:
    assert _is_filter_chunk(items[0])  # the caller sees Azure's first chunk as Azure sent it
    assert not any(_usage_only(item) for item in items)  # never the chunk payi_otel asked for
    assert mode.genai.server.requests[-1].body["stream_options"] == {"include_usage": True}
    assert mode.genai.attribution()[-1]["x-payi-user-id"] == "alice"
    record = mode.record()  # reported once: ended, closed or collected
    assert record.streamed and record.service is not None and record.service.category == AZURE
    if style == "exhaust":
        assert record.usage == full
        assert record.response_model == AZURE_MODEL
    else:
        assert_partial(record.usage, full)


@pytest.mark.parametrize("style", STYLES)
def test_a_chat_stream_left_every_way_reports_once_and_hides_only_the_asked_usage(
    mode: Mode, client: Any, style: str
) -> None:
    full = _full_usage(mode, client)
    with track_context(user_id="alice"):
        items = consume(lambda: client.chat.completions.create(**AZURE_CHAT, stream=True), style)
    _check_stream(mode, items, style, full)


@pytest.mark.parametrize("style", STYLES)
async def test_an_async_chat_stream_left_every_way_reports_once_and_hides_only_the_asked_usage(
    mode: Mode, style: str
) -> None:
    async with azure_client(mode.genai, is_async=True) as client:
        full = _full_usage(mode, azure_client(mode.genai))
        async with track_context(user_id="alice"):
            items = await aconsume(
                lambda: client.chat.completions.create(**AZURE_CHAT, stream=True), style
            )
    _check_stream(mode, items, style, full)


def test_azures_empty_first_chunk_is_not_taken_for_the_usage_chunk(mode: Mode, client: Any) -> None:
    """Both chunks have ``choices: []``: the first (content filter results) is the caller's,
    the last (usage) is hidden only when payi_otel asked for it."""
    asked_by_us = list(client.chat.completions.create(**AZURE_CHAT, stream=True))
    ours = mode.record().usage
    mode.forget()
    asked_by_caller = list(
        client.chat.completions.create(
            **AZURE_CHAT, stream=True, stream_options={"include_usage": True}
        )
    )
    assert _is_filter_chunk(asked_by_us[0]) and _is_filter_chunk(asked_by_caller[0])
    assert not _usage_only(asked_by_us[-1])
    assert _usage_only(asked_by_caller[-1])
    assert len(asked_by_caller) == len(asked_by_us) + 1
    assert mode.record().usage == ours is not None
    assert ours.input_tokens == asked_by_caller[-1].usage.prompt_tokens


# --- headers: client defaults, with_options, the public hosts ---------------------------------


def test_client_defaults_with_options_and_the_call_are_one_level(mode: Mode) -> None:
    client = azure_client(
        mode.genai, default_headers={"x-payi-user-id": "client_user", "x-payi-limit-ids": "c"}
    )
    copied = client.with_options(default_headers={"X-Payi-User-Id": "options_user"})
    with track_context(limit_ids=["scope"], use_case_name="uc"):
        copied.chat.completions.create(**AZURE_CHAT)
        copied.chat.completions.create(
            **AZURE_CHAT, extra_headers={"xProxy-User-ID": "call_user", "x-payi-limit-ids": "k"}
        )
    first, second = mode.genai.attribution()
    assert first["x-payi-user-id"] == "options_user"
    assert first["x-payi-limit-ids"] == "scope,c"
    assert second["x-payi-user-id"] == "call_user"
    assert second["x-payi-limit-ids"] == "scope,c,k"
    assert first["x-payi-use-case-name"] == second["x-payi-use-case-name"] == "uc"


@pytest.mark.parametrize(
    "host",
    [
        "my-res.openai.azure.com",
        "my-res.services.ai.azure.com",
        "my-res.cognitiveservices.azure.com",
        # Azure Government and Azure China (found by a review sending alice's id there).
        "my-res.openai.azure.us",
        "my-res.openai.azure.cn",
        "my-res.cognitiveservices.azure.us",
    ],
)
def test_azures_public_hosts_get_no_headers_unless_allowed(genai: GenAI, host: str) -> None:
    genai.check_invariant = False  # the spans carry what the refused requests do not
    genai.server.azure_deployments.update(AZURE_DEPLOYMENTS)

    def posing() -> Any:
        return openai.AzureOpenAI(
            azure_endpoint=f"https://{host}",
            api_key="azure-key",
            api_version=AZURE_API_VERSION,
            max_retries=0,
            http_client=httpx2.Client(transport=to_local(genai.server, httpx2)),
        )

    with track_context(user_id="alice"):
        posing().chat.completions.create(**AZURE_CHAT)
    assert genai.server.requests[-1].headers["host"] == host
    assert genai.sent()[-1] == {}
    (span,) = genai.otel.genai_spans()
    assert (span.attributes or {})["payi.user_id"] == "alice"
    assert (span.attributes or {})["payi_otel.category"] == AZURE
    genai.reinstrument(header_hosts=[host])
    with track_context(user_id="alice"):
        posing().chat.completions.create(**AZURE_CHAT)
    assert genai.sent()[-1]["x-payi-user-id"] == "alice"


def test_openais_regional_hosts_and_azures_other_endpoints_are_refused(genai: GenAI) -> None:
    """``OpenAI(data_residency="eu")`` calls ``eu.api.openai.com`` (a review found the
    user's id and account sent there), and Azure's regional and serverless endpoints."""
    genai.check_invariant = False
    client = openai.OpenAI(
        api_key="k",
        max_retries=0,
        data_residency="eu",
        http_client=httpx2.Client(transport=to_local(genai.server, httpx2)),
    )
    with track_context(user_id="alice", account_name="acme"):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    assert genai.server.requests[-1].headers["host"] == "eu.api.openai.com"
    assert genai.sent()[-1] == {}
    for region in ("us", "eu", "au", "in", "ae", "jp"):
        assert not sends_to(f"https://{region}.api.openai.com/v1"), region
    for url in (
        "https://eastus.api.cognitive.microsoft.com/openai",
        "https://my-llama.eastus2.models.ai.azure.com/v1",
    ):
        assert not sends_to(url), url
    assert sends_to("https://openai-gateway.corp.example/v1")


def test_an_openai_client_on_azures_v1_api_is_told_by_its_host(genai: GenAI) -> None:
    """Azure's v1 API takes the plain ``OpenAI`` client: its host says it is Azure."""
    genai.server.azure_deployments.update(AZURE_DEPLOYMENTS)
    mode = Mode(genai, True, "x-payi").start(header_hosts=["*.openai.azure.com"])
    client = openai.OpenAI(
        base_url="https://my-res.openai.azure.com/openai/v1/",
        api_key="azure-key",
        max_retries=0,
        http_client=httpx2.Client(transport=to_local(genai.server, httpx2)),
    )
    with track_context(user_id="alice"):
        client.chat.completions.create(**AZURE_CHAT)
    assert genai.server.requests[-1].path == "/openai/v1/chat/completions"
    assert genai.sent()[-1]["x-payi-user-id"] == "alice"
    record = mode.record()
    assert record.service is not None and record.service.category == AZURE
    assert record.usage is not None
    (span,) = genai.otel.genai_spans()
    assert_cost_on(span, price(AZURE_MODEL, "azure", record.usage))
    assert ingested(genai.otel.spans())[0]["category"] == AZURE


# --- uninstrument -----------------------------------------------------------------------------


def test_uninstrument_leaves_the_azure_client_as_it_was(genai: GenAI, client: Any) -> None:
    genai.reinstrument(model_mappings=[{"model": AZURE_DEPLOYMENT, "price_as_resource": "gpt-4o"}])
    with track_context(user_id="alice"):
        client.chat.completions.create(**AZURE_CHAT)
    assert genai.sent()[-1]["x-payi-price-as-resource"] == "gpt-4o"
    PayiInstrumentor().uninstrument()
    genai.check_invariant = False  # no GenAI span after uninstrument
    genai.otel.exporter.clear()
    with track_context(user_id="alice"):
        reply = client.chat.completions.create(**AZURE_CHAT, stream=True)
        chunks = list(reply)
    assert genai.sent()[-1] == {}
    assert "stream_options" not in genai.server.requests[-1].body
    assert type(reply).__name__ == "Stream"  # the SDK's own, no proxy
    assert _is_filter_chunk(chunks[0])
    assert genai.otel.genai_spans() == []

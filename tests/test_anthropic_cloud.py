"""Claude through the Anthropic cloud clients: ``anthropic.AnthropicBedrock`` /
``AsyncAnthropicBedrock`` (SigV4-signed, ``/model/{id}/invoke``) and ``AnthropicVertex`` /
``AsyncAnthropicVertex`` (``.../publishers/anthropic/models/{model}:rawPredict``), every
surface - messages, streams every way, the stream helper, raw and streaming responses,
``with_options``, beta messages - attributed as Anthropic calls are, priced as the cloud they
run on (Bedrock: genai-prices ``aws`` by the model id as passed; Vertex: ``google`` by its
``claude-...@date`` id), usage and cost in the metrics, ingested as ``system.aws.bedrock`` /
``system.google.vertex`` with Pay-i's resource names, the clouds' public hosts refused by
default, and what a SigV4 signature over the attribution headers means for a gateway.

GenAI spans: genai-anthropic wraps the SDK's ``Messages`` resources, which these clients use,
so it instruments them too (its span says ``gen_ai.provider.name = anthropic``: payi_otel adds
``payi_otel.category``); the anthropic SDK's own call span (anthropic >= 2, scope
``com.anthropic.sdk.python.bedrock`` / ``.vertex``) names the cloud (``aws.bedrock`` /
``gcp.vertex_ai``). Both carry the same ``payi.*``. Real SDKs, the local fake server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import unquote

import anthropic
import httpx2
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
    BEDROCK_CLAUDE,
    MESSAGE,
    VERTEX_CLAUDE,
    GenAI,
    anthropic_bedrock_client,
    anthropic_vertex_client,
)
from fixtures_server import to_local

from payi_otel import PayiInstrumentor, track_context
from payi_otel._providers import Usage

CALL_HEADERS = {"x-payi-account-name": "acct-7", "xProxy-Limit-IDs": "call_limit"}


@dataclass(frozen=True)
class Cloud:
    name: str
    make: Callable[..., Any]
    model: str
    category: str
    #: genai-prices' provider id, and the model it prices the call as.
    price_id: str
    priced_as: str
    #: The GenAI provider name of the anthropic SDK's own span.
    genai_name: str
    #: Pay-i's resource name of the call (ingest).
    resource: str
    #: The request path of a plain call and of a streamed one.
    path: str
    stream_path: str
    #: The model the reply names.
    reply_model: str


BEDROCK = Cloud(
    "bedrock",
    anthropic_bedrock_client,
    BEDROCK_CLAUDE,
    "system.aws.bedrock",
    "aws",
    BEDROCK_CLAUDE,  # the id as passed (an inference profile), not the reply's model
    "aws.bedrock",
    BEDROCK_CLAUDE,
    f"/model/{BEDROCK_CLAUDE}/invoke",
    f"/model/{BEDROCK_CLAUDE}/invoke-with-response-stream",
    "claude-3-5-haiku-20241022",
)
VERTEX_PATH = f"/v1/projects/proj/locations/us-east5/publishers/anthropic/models/{VERTEX_CLAUDE}"
VERTEX = Cloud(
    "vertex",
    anthropic_vertex_client,
    VERTEX_CLAUDE,
    "system.google.vertex",
    "google",
    VERTEX_CLAUDE,
    "gcp.vertex_ai",
    f"anthropic.{VERTEX_CLAUDE}",  # as Pay-i's SDK names Claude on Vertex
    f"{VERTEX_PATH}:rawPredict",
    f"{VERTEX_PATH}:streamRawPredict",
    VERTEX_CLAUDE,
)
CLOUDS = [BEDROCK, VERTEX]


@pytest.fixture(params=PAIRWISE_MODES, ids=lambda m: MODE_IDS[m])
def mode(request: pytest.FixtureRequest, genai: GenAI) -> Mode:
    """payi_otel with and without GenAI spans, in each dialect (``PAIRWISE_MODES``)."""
    spans, dialect = request.param
    return Mode(genai, spans, dialect).start()


def _message(cloud: Cloud) -> dict[str, Any]:
    return {**MESSAGE, "model": cloud.model}


# --- the surfaces ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Surface:
    name: str
    run: Callable[[Any, dict[str, Any], dict[str, str]], Any]
    arun: Callable[[Any, dict[str, Any], dict[str, str]], Awaitable[Any]]
    streamed: bool = False
    #: Whether the cost reaches genai-anthropic's span. Not for ``with_raw_response`` (as with
    #: the plain ``Anthropic`` client): that span has ended when the caller parses the
    #: response, where the usage is read; the metrics have the cost either way.
    span_cost: bool = True
    #: Whether genai-anthropic instruments it (not the clouds' own beta ``Messages``
    #: resources, ``anthropic.lib.bedrock._beta_messages`` / ``lib.vertex``: the anthropic
    #: SDK's own span is then the call's only GenAI span).
    instrumented: bool = True


def _helper(manager: Any) -> Any:
    with manager as stream:
        "".join(stream.text_stream)
        return stream.get_final_message()


async def _ahelper(manager: Any) -> Any:
    async with manager as stream:
        async for _ in stream.text_stream:
            pass
        return await stream.get_final_message()


async def _alist(awaitable: Awaitable[Any]) -> list[Any]:
    return [item async for item in await awaitable]


async def _araw(awaitable: Awaitable[Any]) -> Any:
    parsed = (await awaitable).parse()
    return await parsed if asyncio.iscoroutine(parsed) else parsed


def _streaming(manager: Any) -> list[Any]:
    with manager as response:
        return list(response.parse())


async def _astreaming(manager: Any) -> list[Any]:
    async with manager as response:
        return [item async for item in await response.parse()]


SURFACES = [
    Surface(
        "create",
        lambda c, m, h: c.messages.create(**m, extra_headers=h),
        lambda c, m, h: c.messages.create(**m, extra_headers=h),
    ),
    Surface(
        "create-stream",
        lambda c, m, h: list(c.messages.create(**m, stream=True, extra_headers=h)),
        lambda c, m, h: _alist(c.messages.create(**m, stream=True, extra_headers=h)),
        streamed=True,
    ),
    Surface(
        "stream-helper",
        lambda c, m, h: _helper(c.messages.stream(**m, extra_headers=h)),
        lambda c, m, h: _ahelper(c.messages.stream(**m, extra_headers=h)),
        streamed=True,
    ),
    Surface(
        "raw",
        lambda c, m, h: c.messages.with_raw_response.create(**m, extra_headers=h).parse(),
        lambda c, m, h: _araw(c.messages.with_raw_response.create(**m, extra_headers=h)),
        span_cost=False,
    ),
    Surface(
        "streaming-response",
        lambda c, m, h: _streaming(
            c.messages.with_streaming_response.create(**m, stream=True, extra_headers=h)
        ),
        lambda c, m, h: _astreaming(
            c.messages.with_streaming_response.create(**m, stream=True, extra_headers=h)
        ),
        streamed=True,
    ),
    Surface(
        "with-options",
        lambda c, m, h: c.with_options(timeout=30).messages.create(**m, extra_headers=h),
        lambda c, m, h: c.with_options(timeout=30).messages.create(**m, extra_headers=h),
    ),
    Surface(
        "beta",
        lambda c, m, h: c.beta.messages.create(**m, extra_headers=h),
        lambda c, m, h: c.beta.messages.create(**m, extra_headers=h),
        instrumented=False,
    ),
]

CASES = [
    pytest.param(cloud, surface, id=f"{cloud.name}-{surface.name}")
    for cloud in CLOUDS
    for surface in SURFACES
]


def _check_request(cloud: Cloud, mode: Mode, streamed: bool) -> None:
    (request,) = mode.genai.server.requests
    assert unquote(request.path) == (cloud.stream_path if streamed else cloud.path)
    if cloud is BEDROCK:
        # Verified by the server (403 otherwise); the stamped headers are among those signed.
        signed = request.headers["authorization"].split("SignedHeaders=")[1].split(",")[0]
        stamped = [name for name in request.headers if name.startswith(("x-payi-", "xproxy-"))]
        assert stamped and set(stamped) <= set(signed.split(";"))
    else:
        assert request.headers["authorization"] == "Bearer vertex-token"


def _check_surface(cloud: Cloud, surface: Surface, mode: Mode) -> None:
    genai = mode.genai
    _check_request(cloud, mode, surface.streamed)
    sent = genai.attribution()[-1]
    assert sent["x-payi-user-id"] == "alice"
    assert sent["x-payi-account-name"] == "acct-7"
    assert sent["x-payi-limit-ids"] == "scope_limit,call_limit"

    record = mode.record()
    assert record.provider == "anthropic"
    assert record.service is not None and record.service.category == cloud.category
    assert record.request_model == cloud.model
    assert record.response_model == cloud.reply_model
    assert record.usage is not None and record.usage.input_tokens and record.usage.output_tokens
    expected = price(cloud.priced_as, cloud.price_id, record.usage)
    cost = mode.metrics.by("payi.genai.cost", "gen_ai.provider.name")
    assert cost == {cloud.genai_name: pytest.approx(float(expected.total_price))}

    spans = genai.otel.all_genai_spans()
    native = [s for s in spans if s.instrumentation_scope.name.startswith("com.anthropic.sdk")]
    assert len(native) == 1  # the anthropic SDK's own span names the cloud
    assert (native[0].attributes or {})["gen_ai.provider.name"] == cloud.genai_name
    assert (native[0].attributes or {})["payi.user_id"] == "alice"
    if mode.spans and surface.instrumented:
        (outer,) = genai.otel.genai_spans()
        attributes = outer.attributes or {}
        assert outer.instrumentation_scope.name == "opentelemetry.instrumentation.genai.anthropic"
        assert attributes["gen_ai.provider.name"] == "anthropic"  # genai-anthropic's name
        assert attributes["payi_otel.category"] == cloud.category
        if surface.span_cost:
            assert_cost_on(outer, expected)
    (record_in,) = ingested(genai.otel.spans())  # one per call: the inner span
    assert record_in["category"] == cloud.category
    assert record_in["resource"] == cloud.resource
    assert record_in["user_id"] == "alice" and record_in["account_name"] == "acct-7"
    assert record_in["units"]["text"]["input"] == record.usage.input_tokens


@pytest.mark.parametrize(("cloud", "surface"), CASES)
def test_every_sync_surface_is_attributed_and_priced_as_its_cloud(
    mode: Mode, cloud: Cloud, surface: Surface
) -> None:
    with (
        cloud.make(mode.genai) as client,
        track_context(user_id="alice", limit_ids=["scope_limit"]),
    ):
        assert surface.run(client, _message(cloud), CALL_HEADERS)
    _check_surface(cloud, surface, mode)


@pytest.mark.parametrize(("cloud", "surface"), CASES)
async def test_every_async_surface_is_attributed_and_priced_as_its_cloud(
    mode: Mode, cloud: Cloud, surface: Surface
) -> None:
    async with cloud.make(mode.genai, is_async=True) as client:
        async with track_context(user_id="alice", limit_ids=["scope_limit"]):
            assert await surface.arun(client, _message(cloud), CALL_HEADERS)
    _check_surface(cloud, surface, mode)


BEDROCK_IDS = [
    "anthropic.claude-3-5-haiku-20241022-v1:0",
    "us.anthropic.claude-3-5-haiku-20241022-v1:0",
    "global.anthropic.claude-sonnet-4-5-20250929-v1:0",  # global profiles have their own price
    "arn:aws:bedrock:us-east-1:123456789012:inference-profile/"
    "eu.anthropic.claude-3-5-haiku-20241022-v1:0",
]


@pytest.mark.parametrize("model_id", BEDROCK_IDS)
def test_bedrock_prices_the_model_id_as_passed(genai: GenAI, model_id: str) -> None:
    mode = Mode(genai, True, "x-payi").start()
    with anthropic_bedrock_client(genai) as client:
        client.messages.create(**{**MESSAGE, "model": model_id})
    record = mode.record()
    assert record.usage is not None and record.request_model == model_id
    (outer,) = genai.otel.genai_spans()
    assert_cost_on(outer, price(model_id, "aws", record.usage))


def test_vertex_count_tokens_is_attributed_and_not_priced(mode: Mode) -> None:
    with anthropic_vertex_client(mode.genai) as client, track_context(user_id="alice"):
        counted = client.messages.count_tokens(
            model=VERTEX_CLAUDE, messages=[{"role": "user", "content": "one two three"}]
        )
    assert counted.input_tokens == 3
    assert mode.genai.attribution()[-1]["x-payi-user-id"] == "alice"
    record = mode.record()
    assert record.service is not None and record.service.category == VERTEX.category
    assert record.usage is None
    assert mode.metrics.points("payi.genai.cost") == []


def test_anthropic_bedrock_mantle_is_a_bedrock_call(genai: GenAI) -> None:
    """``AnthropicBedrockMantle`` (Anthropic's API on Bedrock's ``bedrock-mantle`` hosts, which
    get no headers by default): filed and priced as Bedrock, as Pay-i's SDK files it."""
    mode = Mode(genai, True, "x-payi").start()
    model = "anthropic.claude-3-5-haiku-20241022-v1:0"

    def mantle(base_url: str, **kwargs: Any) -> Any:
        return anthropic.AnthropicBedrockMantle(
            base_url=base_url, aws_region="us-east-1", api_key="k", max_retries=0, **kwargs
        )

    with mantle(genai.server.base_url) as client, track_context(user_id="alice"):
        client.messages.create(**{**MESSAGE, "model": model})
    assert genai.sent()[-1]["x-payi-user-id"] == "alice"
    record = mode.record()
    assert record.service is not None and record.service.category == BEDROCK.category
    assert record.usage is not None
    expected = price(model, "aws", record.usage)
    assert mode.metrics.total("payi.genai.cost") == pytest.approx(float(expected.total_price))
    genai.check_invariant = False  # the next request carries no headers, its span does
    http_client = httpx2.Client(transport=to_local(genai.server, httpx2))
    host = "https://bedrock-mantle.us-east-1.api.aws"  # the fake routes /v1/messages
    with mantle(host, http_client=http_client) as client, track_context(user_id="alice"):
        client.messages.create(**{**MESSAGE, "model": model})
    assert genai.sent()[-1] == {}


# --- streams, every way a caller leaves one ---------------------------------------------------


def _full_usage(cloud: Cloud, mode: Mode, client: Any) -> Usage:
    client.messages.create(**_message(cloud))
    usage = mode.record().usage
    assert usage is not None
    mode.forget()
    return usage


def _check_stream(cloud: Cloud, mode: Mode, items: list[Any], style: str, full: Usage) -> None:
    assert items[0].type == "message_start"
    _check_request(cloud, mode, streamed=True)
    assert mode.genai.attribution()[-1]["x-payi-user-id"] == "alice"
    record = mode.record()  # reported once: ended, closed or collected
    assert record.streamed and record.service is not None
    assert record.service.category == cloud.category
    if style == "exhaust":
        assert record.usage == full
    else:
        assert_partial(record.usage, full)


STREAM_CASES = [
    pytest.param(cloud, style, id=f"{cloud.name}-{style}") for cloud in CLOUDS for style in STYLES
]


@pytest.mark.parametrize(("cloud", "style"), STREAM_CASES)
def test_a_stream_left_every_way_reports_once(mode: Mode, cloud: Cloud, style: str) -> None:
    with cloud.make(mode.genai) as client:
        full = _full_usage(cloud, mode, client)
        with track_context(user_id="alice"):
            items = consume(lambda: client.messages.create(**_message(cloud), stream=True), style)
    _check_stream(cloud, mode, items, style, full)


@pytest.mark.parametrize(("cloud", "style"), STREAM_CASES)
async def test_an_async_stream_left_every_way_reports_once(
    mode: Mode, cloud: Cloud, style: str
) -> None:
    with cloud.make(mode.genai) as sync_client:
        full = _full_usage(cloud, mode, sync_client)
    async with cloud.make(mode.genai, is_async=True) as client:
        async with track_context(user_id="alice"):
            items = await aconsume(
                lambda: client.messages.create(**_message(cloud), stream=True), style
            )
    _check_stream(cloud, mode, items, style, full)


# --- where attribution goes -------------------------------------------------------------------


def _posing(genai: GenAI, cloud: Cloud, base_url: str, **kwargs: Any) -> Any:
    transport = kwargs.pop("transport", None) or to_local(genai.server, httpx2)
    return cloud.make(genai, base_url=base_url, http_client=httpx2.Client(transport=transport))


PUBLIC = [
    pytest.param(BEDROCK, "https://bedrock-runtime.us-east-1.amazonaws.com", id="bedrock"),
    pytest.param(VERTEX, "https://us-east5-aiplatform.googleapis.com/v1", id="vertex-regional"),
    pytest.param(VERTEX, "https://aiplatform.googleapis.com/v1", id="vertex-global"),
]


@pytest.mark.parametrize(("cloud", "base_url"), PUBLIC)
def test_the_clouds_public_hosts_get_no_headers_unless_allowed(
    genai: GenAI, cloud: Cloud, base_url: str
) -> None:
    genai.check_invariant = False  # the spans carry what the refused requests do not
    host = base_url.split("/")[2]
    with _posing(genai, cloud, base_url) as client, track_context(user_id="alice"):
        client.messages.create(**_message(cloud))
    assert genai.server.requests[-1].headers["host"] == host
    assert genai.sent()[-1] == {}  # and the Bedrock signature holds without them
    assert (genai.otel.genai_spans()[0].attributes or {})["payi.user_id"] == "alice"
    genai.reinstrument(header_hosts=[host])
    with _posing(genai, cloud, base_url) as client, track_context(user_id="alice"):
        client.messages.create(**_message(cloud))
    assert genai.sent()[-1]["x-payi-user-id"] == "alice"


@pytest.mark.parametrize("platform", ["aws", "google-cloud"])
def test_anthropics_own_api_on_aws_and_google_cloud_gets_no_headers_at_its_hosts(
    genai: GenAI, platform: str
) -> None:
    """``AnthropicAWS`` / ``AnthropicGoogleCloud`` (Anthropic's API served on AWS and Google
    Cloud) at their default hosts: nobody there reads Pay-i's headers (a review found the
    user's id and account sent to both)."""
    genai.check_invariant = False  # the span carries what the refused request does not
    http = httpx2.Client(transport=to_local(genai.server, httpx2))
    if platform == "aws":
        client: Any = anthropic.AnthropicAWS(
            aws_region="us-east-1",
            aws_access_key="t",
            aws_secret_key="t",
            workspace_id="ws",
            http_client=http,
            max_retries=0,
        )
        host = "aws-external-anthropic.us-east-1.api.aws"
    else:
        client = anthropic.AnthropicGoogleCloud(
            project="p",
            location="us",
            token_provider=lambda: "tok",
            workspace_id="ws",
            http_client=http,
            max_retries=0,
        )
        host = "claude.googleapis.com"
    with track_context(user_id="alice", account_name="acme"):
        if platform == "aws":
            client.messages.create(**MESSAGE)
        else:  # the fake has no route for Google Cloud's path: its 404, the request seen
            with pytest.raises(anthropic.NotFoundError):
                client.messages.create(**MESSAGE)
    assert genai.server.requests[-1].headers["host"] == host
    assert genai.sent()[-1] == {}
    assert (genai.otel.genai_spans()[0].attributes or {})["payi.user_id"] == "alice"


class _StrippingGateway(httpx2.BaseTransport):  # type: ignore[misc]
    """A gateway that drops the attribution headers before it forwards the request."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def handle_request(self, request: Any) -> Any:
        for name in [n for n in request.headers if n.lower().startswith("x-payi-")]:
            del request.headers[name]
        return self.inner.handle_request(request)


def test_a_gateway_that_strips_signed_attribution_headers_breaks_the_bedrock_signature(
    genai: GenAI,
) -> None:
    """``AnthropicBedrock`` signs (SigV4) after the request hook stamped it: the attribution
    headers are signed, so a gateway must forward them unchanged (AWS ignores them) or sign
    the request again; one that strips them gets AWS's 403. (boto3's ``bedrock-runtime`` is
    stamped after signing instead.)"""
    genai.check_invariant = False
    transport = _StrippingGateway(to_local(genai.server, httpx2))
    with (
        _posing(genai, BEDROCK, "https://gateway.example.com", transport=transport) as client,
        track_context(user_id="alice"),
    ):
        with pytest.raises(anthropic.PermissionDeniedError, match="signature"):
            client.messages.create(**_message(BEDROCK))
        # Forwarded unchanged, the same request verifies.
        with _posing(genai, BEDROCK, "https://gateway.example.com") as forwarding:
            forwarding.messages.create(**_message(BEDROCK))
    assert genai.sent()[-1]["x-payi-user-id"] == "alice"


# --- uninstrument -----------------------------------------------------------------------------


@pytest.mark.parametrize("cloud", CLOUDS, ids=lambda c: c.name)
def test_uninstrument_leaves_the_cloud_clients_as_they_were(genai: GenAI, cloud: Cloud) -> None:
    with cloud.make(genai) as client:
        with track_context(user_id="alice"):
            client.messages.create(**_message(cloud))
        assert genai.sent()[-1]["x-payi-user-id"] == "alice"
        PayiInstrumentor().uninstrument()
        genai.check_invariant = False  # the SDK's own spans, without payi.*
        genai.otel.exporter.clear()
        with track_context(user_id="alice"):
            stream = client.messages.create(**_message(cloud), stream=True)
            events = list(stream)
    assert genai.sent()[-1] == {}
    assert type(stream).__module__.split(".")[0] == "anthropic"  # the SDK's own, no proxy
    assert events[-1].type == "message_stop"
    for span in genai.otel.all_genai_spans():
        assert not [k for k in span.attributes or {} if k.startswith(("payi.", "payi_otel."))]

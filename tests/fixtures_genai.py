"""GenAI fixtures: payi_otel + openai-v2 instrumented on the test provider, real SDK clients
pointed at the local fake server, and the invariant checked after every test that uses them:
the payi.* attributes of every GenAI span equal the x-payi-* headers its call sent."""

from __future__ import annotations

import base64
import importlib.util
import json
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Optional
from urllib.parse import quote

import anthropic
import openai
import pytest
from fake_llm_server import FakeLLMServer, RecordedRequest
from fixtures_otel import Otel, payi_attrs
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from payi_otel import PayiInstrumentor
from payi_otel._model.dialects import PAYI_PROXY
from payi_otel._model.parameters import REGISTRY, Kind

# Names from the one parameter registry (never a second table of them).
ATTRIBUTE_TO_HEADER = {p.attribute: p.header for p in REGISTRY if p.kind is not Kind.DICT}
PROPERTY_ATTRIBUTES = {p.attribute + ".": p.header for p in REGISTRY if p.kind is Kind.DICT}
JSON_HEADERS = set(PROPERTY_ATTRIBUTES.values())


def _wire(text: str) -> str:
    plain = text.isascii() and text.isprintable() and text == text.strip(" ") and text
    return (
        text
        if plain
        else quote(text, safe="".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%"))
    )


def headers_from_span(span: ReadableSpan) -> dict[str, str]:
    """The x-payi-* headers a GenAI span's attributes say were sent."""
    headers: dict[str, str] = {}
    props: dict[str, dict[str, str]] = {}
    for key, value in (span.attributes or {}).items():
        if key in ATTRIBUTE_TO_HEADER:
            if isinstance(value, (tuple, list)):
                text = ",".join(str(v) for v in value)
            elif isinstance(value, bool):  # a switch, as the codec writes it
                text = "true" if value else "false"
            else:
                text = str(value)
            headers[ATTRIBUTE_TO_HEADER[key]] = _wire(text)
            continue
        for prefix, header in PROPERTY_ATTRIBUTES.items():
            if key == prefix[:-1]:  # many keys: the dict as one attribute, its JSON text
                props.setdefault(header, {}).update(json.loads(str(value)))
            elif key.startswith(prefix):
                props.setdefault(header, {})[key[len(prefix) :]] = str(value)
    for header, mapping in props.items():
        headers[header] = json.dumps(mapping, separators=(",", ":"), ensure_ascii=True)
    return headers


def payi_headers(request: RecordedRequest) -> dict[str, str]:
    return {k: v for k, v in request.headers.items() if k.startswith("x-payi-")}


#: Pay-i's proxy-dialect header name (lower-cased) -> the parameter, from the registry.
_BY_PAYI_HEADER = {p.payi_header.lower(): p for p in REGISTRY if p.payi_header}
#: The x-payi-* headers the payi-proxy dialect carries (it has no name for the others).
PROXY_CARRIES = frozenset(p.header for p in _BY_PAYI_HEADER.values())
#: Its presence-only switches: x-payi-* header -> the text of the value its presence means.
_PRESENCE = {
    p.header: "true" if PAYI_PROXY.presence[p.name] else "false"
    for p in REGISTRY
    if p.name in PAYI_PROXY.presence
}


def attribution_headers(request: RecordedRequest, dialect: str = "x-payi") -> dict[str, str]:
    """The attribution a request carried in ``dialect``, written as x-payi-* headers (the
    payi-proxy dialect's base64 JSON decoded), so either dialect compares with a span."""
    if dialect == "x-payi":
        return payi_headers(request)
    found: dict[str, str] = {}
    for key, value in request.headers.items():
        param = _BY_PAYI_HEADER.get(key.lower())
        if param is not None and param.header in _PRESENCE:
            found[param.header] = _PRESENCE[param.header]
        elif param is not None:
            found[param.header] = (
                base64.b64decode(value).decode("ascii") if param.kind is Kind.DICT else value
            )
    return found


def _normal(headers: Mapping[str, str]) -> frozenset[tuple[str, Any]]:
    items = []
    for key, value in headers.items():
        if key in JSON_HEADERS:
            items.append((key, tuple(sorted(json.loads(value).items()))))
        else:
            items.append((key, value))
    return frozenset(items)


def first_attempts(server: FakeLLMServer) -> list[RecordedRequest]:
    return [
        r
        for r in server.requests
        if r.headers.get("x-stainless-retry-count", "0") == "0"
        # botocore numbers its attempts: "amz-sdk-request: [ttl=...; ]attempt=2; max=3"
        # (older botocore: "attempt=1" alone when it makes one).
        and _ATTEMPT.search(r.headers.get("amz-sdk-request", "") + ";") is None
    ]


#: A botocore attempt after the first (``amz-sdk-request``'s ``attempt=`` other than 1).
_ATTEMPT = re.compile(r"attempt=(?!1;)\d+")


def assert_spans_match_requests(otel: Otel, server: FakeLLMServer, dialect: str = "x-payi") -> None:
    spans = otel.genai_spans()
    requests = first_attempts(server)
    assert len(spans) == len(requests), ([s.name for s in spans], [r.path for r in requests])

    def from_span(span: ReadableSpan) -> dict[str, str]:
        headers = headers_from_span(span)
        if dialect == "x-payi":
            return headers
        return {
            k: v
            for k, v in headers.items()
            if k in PROXY_CARRIES and _PRESENCE.get(k, v) == v  # a switch's other value: none
        }

    assert Counter(_normal(from_span(s)) for s in spans) == Counter(
        _normal(attribution_headers(r, dialect)) for r in requests
    )
    by_id = otel._genai_by_id()
    for inner in otel.all_genai_spans():
        outer = otel.genai_ancestor(inner, by_id)
        if outer is not None:
            assert payi_attrs(inner) == payi_attrs(outer), (inner.name, outer.name)


@dataclass
class GenAI:
    otel: Otel
    server: FakeLLMServer
    openai: openai.OpenAI
    async_openai: openai.AsyncOpenAI
    anthropic: anthropic.Anthropic
    async_anthropic: anthropic.AsyncAnthropic
    check_invariant: bool = True
    #: The wire dialect in force (``reinstrument(header_dialect=...)``).
    dialect: str = "x-payi"
    #: Whether the official GenAI instrumentations are on (``reinstrument(genai_spans=...)``).
    genai_spans: bool = True

    def openai_client(self, **kwargs: Any) -> openai.OpenAI:
        kwargs.setdefault("max_retries", 0)
        return openai.OpenAI(base_url=self.server.openai_base_url, api_key="test", **kwargs)

    def anthropic_client(self, **kwargs: Any) -> anthropic.Anthropic:
        kwargs.setdefault("max_retries", 0)
        return anthropic.Anthropic(
            base_url=self.server.anthropic_base_url, api_key="test", **kwargs
        )

    @contextmanager
    def genai_span(self, system: str = "anthropic", operation: str = "chat") -> Iterator[Any]:
        """A GenAI span, as any GenAI instrumentation would start around a call."""
        tracer = self.otel.provider.get_tracer("test.genai")
        with tracer.start_as_current_span(
            f"{operation} {system}",
            kind=SpanKind.CLIENT,
            attributes={"gen_ai.operation.name": operation, "gen_ai.provider.name": system},
        ) as span:
            yield span

    def anthropic_span(self) -> Any:
        """Around an anthropic call: nothing when the SDK starts its own GenAI call span
        (anthropic 2.x), else a GenAI span as an instrumentation would start."""
        if importlib.util.find_spec("anthropic._tracing") is not None:
            return nullcontext()
        return self.genai_span()

    def reinstrument(self, config: Any = None, **kwargs: Any) -> None:
        """payi_otel again with another global level (default use case: ``app``)."""
        payi = PayiInstrumentor()
        payi.uninstrument()
        kwargs.setdefault("caller_file", "/srv/app.py")
        kwargs.setdefault("genai_spans", True)
        self.dialect = kwargs.get("header_dialect", "x-payi")
        self.genai_spans = kwargs["genai_spans"]
        if not self.genai_spans:
            self.check_invariant = False  # no GenAI span to compare each request with
        payi.instrument(config=config, tracer_provider=self.otel.provider, **kwargs)

    def attribution(self) -> list[dict[str, str]]:
        """The attribution of every first attempt, in order, as x-payi-* headers whatever
        the dialect (:func:`attribution_headers`)."""
        return [attribution_headers(r, self.dialect) for r in first_attempts(self.server)]

    def sent(self) -> list[dict[str, str]]:
        """x-payi-* headers of every first attempt, in order."""
        return [payi_headers(r) for r in first_attempts(self.server)]

    def last(self) -> dict[str, str]:
        sent = self.sent()
        assert sent, "no request reached the server"
        return sent[-1]

    def span_attrs(self) -> list[dict[str, Any]]:
        from fixtures_otel import payi_attrs

        spans = sorted(self.otel.genai_spans(), key=lambda s: s.start_time or 0)
        return [payi_attrs(s) for s in spans]


@pytest.fixture
def genai(
    instrument: Callable[..., PayiInstrumentor], otel: Otel, llm_server: FakeLLMServer
) -> Iterator[GenAI]:
    """payi_otel (empty global level) + openai-v2 on the test provider, and SDK clients."""
    instrument(caller_file="<test>", genai_spans=True)
    base = llm_server.openai_base_url
    env = GenAI(
        otel=otel,
        server=llm_server,
        openai=openai.OpenAI(base_url=base, api_key="test", max_retries=0),
        async_openai=openai.AsyncOpenAI(base_url=base, api_key="test", max_retries=0),
        anthropic=anthropic.Anthropic(
            base_url=llm_server.anthropic_base_url, api_key="test", max_retries=0
        ),
        async_anthropic=anthropic.AsyncAnthropic(
            base_url=llm_server.anthropic_base_url, api_key="test", max_retries=0
        ),
    )
    yield env
    if env.check_invariant:
        assert_spans_match_requests(otel, llm_server, env.dialect)


#: (genai_spans, header_dialect): every surface test runs under each.
SURFACE_MODES = [(True, "x-payi"), (False, "x-payi"), (True, "payi-proxy"), (False, "payi-proxy")]


@pytest.fixture(params=SURFACE_MODES, ids=lambda m: f"{'spans' if m[0] else 'nospans'}-{m[1]}")
def surface(request: pytest.FixtureRequest, genai: GenAI) -> GenAI:
    """``genai`` under each mode: with and without the official GenAI instrumentations, in
    both wire dialects. Headers read with ``surface.attribution()``; with GenAI spans on,
    every span is checked against its request in the dialect in force."""
    spans, dialect = request.param
    genai.reinstrument(genai_spans=spans, header_dialect=dialect)
    return genai


CHAT: dict[str, Any] = {"model": "gpt-4", "messages": [{"role": "user", "content": "Hello"}]}
MESSAGE: dict[str, Any] = {
    "model": "claude-haiku-4-5",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "Hello"}],
}


def genai_call(genai: GenAI, sdk: str) -> None:
    """One real GenAI call through ``sdk`` ("openai" / "anthropic"), in whatever scope is
    current."""
    if sdk == "openai":
        genai.openai.chat.completions.create(**CHAT)
    else:
        genai.anthropic.messages.create(**MESSAGE)


async def async_genai_call(genai: GenAI, sdk: str) -> None:
    """One real GenAI call through ``sdk``'s async client."""
    if sdk == "openai":
        await genai.async_openai.chat.completions.create(**CHAT)
    else:
        await genai.async_anthropic.messages.create(**MESSAGE)


# === Bedrock (issue 18): boto3 bedrock-runtime on the fake server ==========================

#: A cross-region inference profile: what most Bedrock users pass as ``modelId``.
BEDROCK_MODEL = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
BEDROCK_NO_RETRIES = {"total_max_attempts": 1}


def bedrock_client(
    genai: GenAI, *, retries: Optional[Mapping[str, Any]] = None, **kwargs: Any
) -> Any:
    """A boto3 ``bedrock-runtime`` client on the fake server (real SigV4 with the fake's
    ``test`` key, which it verifies; no retries unless ``retries`` says otherwise)."""
    import boto3
    import botocore.config

    kwargs.setdefault("endpoint_url", genai.server.bedrock_endpoint_url)
    config = botocore.config.Config(retries=dict(retries or BEDROCK_NO_RETRIES))
    return boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=config,
        **kwargs,
    )


_BEDROCK_CLIENTS: dict[str, Any] = {}


def shared_bedrock(genai: GenAI) -> Any:
    """One client per fake server for tests that only call it (never register handlers on it)."""
    url = genai.server.bedrock_endpoint_url
    client = _BEDROCK_CLIENTS.get(url)
    if client is None:
        client = _BEDROCK_CLIENTS[url] = bedrock_client(genai)
    return client


def bedrock_messages(text: str = "Hello") -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"text": text}]}]


def claude_body(text: str = "Hello") -> str:
    """An InvokeModel body for Claude on Bedrock."""
    return json.dumps(
        {
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": 64,
            "messages": [{"role": "user", "content": text}],
        }
    )


def _converse(client: Any, model: str, **kwargs: Any) -> Any:
    return client.converse(modelId=model, messages=bedrock_messages(), **kwargs)


def _converse_stream(client: Any, model: str, **kwargs: Any) -> Any:
    response = client.converse_stream(modelId=model, messages=bedrock_messages(), **kwargs)
    return list(response["stream"])


def _invoke_model(client: Any, model: str, **kwargs: Any) -> Any:
    response = client.invoke_model(modelId=model, body=claude_body(), **kwargs)
    return json.loads(response["body"].read())


def _invoke_model_stream(client: Any, model: str, **kwargs: Any) -> Any:
    response = client.invoke_model_with_response_stream(modelId=model, body=claude_body(), **kwargs)
    return [json.loads(event["chunk"]["bytes"]) for event in response["body"]]


#: Every Bedrock runtime operation payi_otel reads, each consumed fully (streams to the end,
#: InvokeModel's body read): ``BEDROCK_OPERATIONS[name](client, model, **call_kwargs)``.
BEDROCK_OPERATIONS: dict[str, Callable[..., Any]] = {
    "converse": _converse,
    "converse_stream": _converse_stream,
    "invoke_model": _invoke_model,
    "invoke_model_with_response_stream": _invoke_model_stream,
}


def bedrock_call(
    genai: GenAI,
    operation: str = "converse",
    extra_headers: Optional[Mapping[str, str]] = None,
    model: str = BEDROCK_MODEL,
) -> Any:
    """One Bedrock call through the shared client, with ``extra_headers`` when given."""
    kwargs = {} if extra_headers is None else {"extra_headers": dict(extra_headers)}
    return BEDROCK_OPERATIONS[operation](shared_bedrock(genai), model, **kwargs)


# === google-genai (issue 18) =================================================================
# Clients of the real google-genai SDK on the fake server's Gemini API and Vertex AI routes,
# and one call in the SDK's own per-call idiom (``config.http_options.headers``).

import ssl  # noqa: E402

import google.oauth2.credentials  # noqa: E402
from google import genai as google_genai  # noqa: E402
from google.genai import types as google_types  # noqa: E402

GEMINI = "gemini-2.5-flash"
#: The backends of one ``genai.Client``: the Gemini API (an API key) and Vertex AI (a project,
#: a location and OAuth credentials whose token never expires, so never refreshed: offline).
GOOGLE_BACKENDS = ("gemini", "vertex")
#: One SSL context for every test client (the SDK makes two per client otherwise, ~50 ms).
_SSL = ssl.create_default_context()


def google_client(
    genai: GenAI,
    backend: str = "gemini",
    *,
    headers: Optional[Mapping[str, str]] = None,
    base_url: Optional[str] = None,
    **http: Any,
) -> google_genai.Client:
    """A ``genai.Client`` on the fake server (``backend`` "gemini" or "vertex"), with the
    client-level ``headers`` (``HttpOptions(headers=...)``)."""
    http.setdefault("client_args", {"verify": _SSL})
    http.setdefault("async_client_args", {"verify": _SSL, "ssl": _SSL})
    options = google_types.HttpOptions(
        base_url=genai.server.google_genai_base_url if base_url is None else base_url,
        headers=dict(headers) if headers is not None else None,
        **http,
    )
    if backend == "vertex":
        return google_genai.Client(
            vertexai=True,
            project="proj",
            location="us-central1",
            credentials=google.oauth2.credentials.Credentials(token="vertex-token"),
            http_options=options,
        )
    return google_genai.Client(api_key="test", http_options=options)


def google_config(
    headers: Optional[Mapping[str, str]] = None, **fields: Any
) -> Optional[google_types.GenerateContentConfig]:
    """A ``GenerateContentConfig`` with the call's own ``headers`` (the per-call idiom)."""
    if headers is not None:
        fields["http_options"] = google_types.HttpOptions(headers=dict(headers))
    return google_types.GenerateContentConfig(**fields) if fields else None


def google_call(
    genai: GenAI,
    headers: Optional[Mapping[str, str]] = None,
    prompt: str = "Hello",
    backend: str = "gemini",
) -> str:
    """One ``generate_content`` with the call's own attribution ``headers``; its text."""
    client = google_client(genai, backend)
    response = client.models.generate_content(
        model=GEMINI, contents=prompt, config=google_config(headers)
    )
    return response.text or ""


async def async_google_call(
    genai: GenAI,
    headers: Optional[Mapping[str, str]] = None,
    prompt: str = "Hello",
    backend: str = "gemini",
) -> str:
    client = google_client(genai, backend)
    response = await client.aio.models.generate_content(
        model=GEMINI, contents=prompt, config=google_config(headers)
    )
    return response.text or ""


# ============================================================================================
# --- issue 18: Azure OpenAI and the Anthropic cloud clients (helper "azure") -----------------
# ============================================================================================
#
# Real ``openai.AzureOpenAI`` / ``AsyncAzureOpenAI`` and ``anthropic.AnthropicBedrock`` /
# ``AnthropicVertex`` (+ async) clients on the fake server's Azure, Bedrock (SigV4 checked)
# and Vertex routes (examples/fake_llm_server.py; tests/test_fake_provider_routes.py).

AZURE_API_VERSION = "2024-10-21"
#: The deployment the Azure calls name, and the model its replies name.
AZURE_DEPLOYMENT = "prod-chat"
AZURE_MODEL = "gpt-4o-2024-08-06"
AZURE_EMBEDDER = "embedder"
AZURE_DEPLOYMENTS = {AZURE_DEPLOYMENT: AZURE_MODEL, AZURE_EMBEDDER: "text-embedding-3-small"}
AZURE_CHAT: dict[str, Any] = {**CHAT, "model": AZURE_DEPLOYMENT}
#: Claude on Bedrock, as passed (a cross-region inference profile), and on Vertex AI.
BEDROCK_CLAUDE = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
VERTEX_CLAUDE = "claude-3-5-haiku@20241022"
BEDROCK_MESSAGE: dict[str, Any] = {**MESSAGE, "model": BEDROCK_CLAUDE}
VERTEX_MESSAGE: dict[str, Any] = {**MESSAGE, "model": VERTEX_CLAUDE}


def azure_client(genai: GenAI, is_async: bool = False, **kwargs: Any) -> Any:
    """An ``AzureOpenAI`` (or ``AsyncAzureOpenAI``) client on the fake server, its
    deployments registered (the ``llm_server`` fixture forgets them)."""
    genai.server.azure_deployments.update(AZURE_DEPLOYMENTS)
    kwargs.setdefault("max_retries", 0)
    cls = openai.AsyncAzureOpenAI if is_async else openai.AzureOpenAI
    return cls(
        azure_endpoint=genai.server.azure_endpoint,
        api_key="azure-key",
        api_version=AZURE_API_VERSION,
        **kwargs,
    )


def anthropic_bedrock_client(genai: GenAI, is_async: bool = False, **kwargs: Any) -> Any:
    """An ``AnthropicBedrock`` (or async) client on the fake server, SigV4-signing with the
    key the server verifies."""
    kwargs.setdefault("max_retries", 0)
    kwargs.setdefault("base_url", genai.server.bedrock_endpoint_url)
    cls = anthropic.AsyncAnthropicBedrock if is_async else anthropic.AnthropicBedrock
    return cls(aws_region="us-east-1", aws_access_key="test", aws_secret_key="test", **kwargs)


def anthropic_vertex_client(genai: GenAI, is_async: bool = False, **kwargs: Any) -> Any:
    """An ``AnthropicVertex`` (or async) client on the fake server."""
    kwargs.setdefault("max_retries", 0)
    kwargs.setdefault("base_url", genai.server.anthropic_vertex_base_url)
    cls = anthropic.AsyncAnthropicVertex if is_async else anthropic.AnthropicVertex
    return cls(region="us-east5", project_id="proj", access_token="vertex-token", **kwargs)


#: Sync clients are reused for the session (their server is the session's): making one costs
#: ~20 ms.
_CLOUD_CLIENTS: dict[tuple[str, str], Any] = {}


def _cloud_client(genai: GenAI, kind: str) -> Any:
    key = (genai.server.base_url, kind)
    client = _CLOUD_CLIENTS.get(key)
    if client is None:
        make = {
            "azure_openai": azure_client,
            "anthropic_bedrock": anthropic_bedrock_client,
            "anthropic_vertex": anthropic_vertex_client,
        }[kind]
        client = _CLOUD_CLIENTS[key] = make(genai)
    if kind == "azure_openai":
        genai.server.azure_deployments.update(AZURE_DEPLOYMENTS)
    return client


def _azure_call(
    genai: GenAI, headers: Optional[Mapping[str, str]] = None, prompt: str = "Hello"
) -> str:
    chat = {**AZURE_CHAT, "messages": [{"role": "user", "content": prompt}]}
    reply = _cloud_client(genai, "azure_openai").chat.completions.create(
        **chat, extra_headers=headers
    )
    return str(reply.choices[0].message.content or "")


def _claude_call(kind: str, message: dict[str, Any]) -> Callable[..., str]:
    def call(
        genai: GenAI, headers: Optional[Mapping[str, str]] = None, prompt: str = "Hello"
    ) -> str:
        sent = {**message, "messages": [{"role": "user", "content": prompt}]}
        with genai.anthropic_span():
            reply = _cloud_client(genai, kind).messages.create(**sent, extra_headers=headers)
        return str(reply.content[0].text)

    return call


# --- end of issue 18: Azure OpenAI and the Anthropic cloud clients ---------------------------


# === provider-parametrized calls (issue 18: each provider's helper adds its entry) ============
# One entry per provider surface (openai, anthropic, Azure OpenAI, AnthropicBedrock,
# AnthropicVertex, Bedrock, google-genai): tests/test_genai_seeds.py runs the seeds'
# precedence scenarios over them.


def _openai_call(
    genai: GenAI, headers: Optional[Mapping[str, str]] = None, prompt: str = "Hello"
) -> str:
    extra = {"extra_headers": dict(headers)} if headers is not None else {}
    response = genai.openai.chat.completions.create(
        model=CHAT["model"], messages=[{"role": "user", "content": prompt}], **extra
    )
    return response.choices[0].message.content or ""


def _anthropic_call(
    genai: GenAI, headers: Optional[Mapping[str, str]] = None, prompt: str = "Hello"
) -> str:
    message = {**MESSAGE, "messages": [{"role": "user", "content": prompt}]}
    with genai.anthropic_span():
        reply = genai.anthropic.messages.create(**message, extra_headers=headers)
    return str(reply.content[0].text)


def _bedrock_call(
    genai: GenAI, headers: Optional[Mapping[str, str]] = None, prompt: str = "Hello"
) -> str:
    extra = {"extra_headers": dict(headers)} if headers is not None else {}
    response = shared_bedrock(genai).converse(
        modelId=BEDROCK_MODEL, messages=bedrock_messages(prompt), **extra
    )
    return str(response["output"]["message"]["content"][0]["text"])


#: Provider -> one GenAI call with the caller's per-call attribution headers (None: none) in
#: that SDK's own idiom, and the prompt; returns the reply's text.
CALLS_WITH_HEADERS: dict[str, Callable[..., str]] = {
    "openai": _openai_call,
    "anthropic": _anthropic_call,
    "azure_openai": _azure_call,
    "anthropic_bedrock": _claude_call("anthropic_bedrock", BEDROCK_MESSAGE),
    "anthropic_vertex": _claude_call("anthropic_vertex", VERTEX_MESSAGE),
    "bedrock": _bedrock_call,
    "google.genai": google_call,
}


@pytest.fixture(params=sorted(CALLS_WITH_HEADERS))
def call_with_headers(request: pytest.FixtureRequest, genai: GenAI) -> Callable[..., str]:
    """``call_with_headers(headers=None, prompt="Hello")``: one call through each provider."""
    call = CALLS_WITH_HEADERS[request.param]
    return lambda headers=None, prompt="Hello": call(genai, headers, prompt)


def mock_openai(answer: Callable[[Any], Any], is_async: bool = False) -> Any:
    """An ``OpenAI`` (or ``AsyncOpenAI``) client whose requests ``answer(request)`` answers
    in process (``httpx2.MockTransport``): for a reply the fake server does not make. Its
    host is a gateway's (attribution headers go there); no retries."""
    import httpx2

    transport = httpx2.MockTransport(answer)
    common: dict[str, Any] = {"base_url": "http://gateway.local/v1", "api_key": "k"}
    if is_async:
        return openai.AsyncOpenAI(
            **common, max_retries=0, http_client=httpx2.AsyncClient(transport=transport)
        )
    return openai.OpenAI(**common, max_retries=0, http_client=httpx2.Client(transport=transport))


def answered_openai(
    content: str, usage: Mapping[str, Any], finish_reason: str = "stop"
) -> openai.OpenAI:
    """:func:`mock_openai` answering every chat completion with one ``content`` choice,
    ``finish_reason`` and ``usage``."""
    import httpx2

    message = {"role": "assistant", "content": content}
    choice = {"index": 0, "message": message, "finish_reason": finish_reason}
    reply = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [choice],
        "usage": dict(usage),
    }
    client: openai.OpenAI = mock_openai(lambda _: httpx2.Response(200, json=reply))
    return client

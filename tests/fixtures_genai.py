"""GenAI fixtures: payi_otel + openai-v2 instrumented on the test provider, real SDK clients
pointed at the local fake server, and the invariant checked after every test that uses them:
the payi.* attributes of every GenAI span equal the x-payi-* headers its call sent."""

from __future__ import annotations

import base64
import importlib.util
import json
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


def attribution_headers(request: RecordedRequest, dialect: str = "x-payi") -> dict[str, str]:
    """The attribution a request carried in ``dialect``, written as x-payi-* headers (the
    payi-proxy dialect's base64 JSON decoded), so either dialect compares with a span."""
    if dialect == "x-payi":
        return payi_headers(request)
    found: dict[str, str] = {}
    for key, value in request.headers.items():
        param = _BY_PAYI_HEADER.get(key.lower())
        if param is not None:
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
    return [r for r in server.requests if r.headers.get("x-stainless-retry-count", "0") == "0"]


def assert_spans_match_requests(otel: Otel, server: FakeLLMServer, dialect: str = "x-payi") -> None:
    spans = otel.genai_spans()
    requests = first_attempts(server)
    assert len(spans) == len(requests), ([s.name for s in spans], [r.path for r in requests])

    def from_span(span: ReadableSpan) -> dict[str, str]:
        headers = headers_from_span(span)
        if dialect == "x-payi":
            return headers
        return {k: v for k, v in headers.items() if k in PROXY_CARRIES}

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


# --- provider-parametrized calls (issue 18): the seeds' scenarios run over each ---------------
#
# ``SEED_CALLS[provider](genai, headers, prompt)``: one chat call through that provider's
# client, in whatever scope is current, with the caller's per-call attribution ``headers``
# (None: none) in the SDK's own idiom; returns the reply's text. tests/test_genai_seeds.py runs
# every precedence scenario over each entry. Each provider's section adds its entries.

SeedCall = Callable[[GenAI, Optional[Mapping[str, str]], str], str]


def _openai_seed(genai: GenAI, headers: Optional[Mapping[str, str]], prompt: str) -> str:
    chat = {**CHAT, "messages": [{"role": "user", "content": prompt}]}
    reply = genai.openai.chat.completions.create(**chat, extra_headers=headers)
    return reply.choices[0].message.content or ""


def _anthropic_seed(genai: GenAI, headers: Optional[Mapping[str, str]], prompt: str) -> str:
    message = {**MESSAGE, "messages": [{"role": "user", "content": prompt}]}
    with genai.anthropic_span():
        reply = genai.anthropic.messages.create(**message, extra_headers=headers)
    return str(reply.content[0].text)


SEED_CALLS: dict[str, SeedCall] = {"openai": _openai_seed, "anthropic": _anthropic_seed}


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


def _azure_seed(genai: GenAI, headers: Optional[Mapping[str, str]], prompt: str) -> str:
    chat = {**AZURE_CHAT, "messages": [{"role": "user", "content": prompt}]}
    reply = _cloud_client(genai, "azure_openai").chat.completions.create(
        **chat, extra_headers=headers
    )
    return str(reply.choices[0].message.content or "")


def _claude_seed(kind: str, message: dict[str, Any]) -> SeedCall:
    def call(genai: GenAI, headers: Optional[Mapping[str, str]], prompt: str) -> str:
        sent = {**message, "messages": [{"role": "user", "content": prompt}]}
        with genai.anthropic_span():
            reply = _cloud_client(genai, kind).messages.create(**sent, extra_headers=headers)
        return str(reply.content[0].text)

    return call


SEED_CALLS.update(
    {
        "azure_openai": _azure_seed,
        "anthropic_bedrock": _claude_seed("anthropic_bedrock", BEDROCK_MESSAGE),
        "anthropic_vertex": _claude_seed("anthropic_vertex", VERTEX_MESSAGE),
    }
)

# --- end of issue 18: Azure OpenAI and the Anthropic cloud clients ---------------------------

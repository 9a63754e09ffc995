"""Issue 20: what the request hook remembers between calls changes nothing a call sends.

The per-call path remembers (docs/performance.md, "The cost path"):

* a call's absolute URL, per client base URL object and relative URL, when the client joins
  them with the SDK's own ``_prepare_url`` (``_stainless``): a client's base URL set again, a
  client made by ``with_options``, a client with its own ``_prepare_url`` (Azure) each get
  their own URL;
* the cost observer: the last parameter set's metric dimensions (``_cost.UsageMetrics``);
* the wire policy's verdict per URL (``_destinations.sends_to``), for the policy in force and
  the registered providers' hosts: new settings (``header_hosts``) or a provider registered
  later decide again.

Each test sends real calls through the real SDKs to the local fake server and reads what the
server received, against what the policy itself (``WirePolicy.sends_to``) and the SDK's own
``_prepare_url`` say.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, ClassVar, List, Optional, Type

import httpx
import openai
import pydantic
import pytest
import wrapt
from fake_llm_server import FakeLLMServer
from fixtures_genai import AZURE_CHAT, CHAT, GenAI, azure_client
from fixtures_otel import Metrics
from fixtures_server import to_local

import payi_otel._cost as cost
from payi_otel import _settings, track_context
from payi_otel._destinations import sends_to
from payi_otel._model.wire_policy import WirePolicy
from payi_otel._providers import PROVIDERS, CallRecord, Provider, Service

GATEWAY = "llm-gateway.corp.example"
OTHER = "gateway-2.corp.example"
PUBLIC = "https://api.openai.com/v1"
MINI: dict[str, Any] = {**CHAT, "model": "gpt-4o-mini"}
TENANT = "payi.request.properties.tenant"


def local(cls: Type[Any], base_url: str, server: FakeLLMServer) -> Any:
    """A sync openai client of class ``cls`` naming ``base_url``, served locally."""
    return cls(
        base_url=base_url,
        api_key="test",
        max_retries=0,
        http_client=httpx.Client(transport=to_local(server)),
    )


def posing(server: FakeLLMServer, base_url: str, is_async: bool = False) -> Any:
    """An openai client whose URLs name ``base_url``'s host, its requests served locally."""
    if is_async:
        return openai.AsyncOpenAI(
            base_url=base_url,
            api_key="test",
            max_retries=0,
            http_client=httpx.AsyncClient(transport=to_local(server, is_async=True)),
        )
    return openai.OpenAI(
        base_url=base_url,
        api_key="test",
        max_retries=0,
        http_client=httpx.Client(transport=to_local(server)),
    )


@pytest.fixture
def records(genai: GenAI) -> Iterator[List[CallRecord]]:
    found: List[CallRecord] = []
    remove = _settings.add_observer(found.append)
    yield found
    remove()


def sent_user(server: FakeLLMServer) -> Any:
    return server.requests[-1].headers.get("x-payi-user-id")


def call(client: Any, **kwargs: Any) -> None:
    client.chat.completions.create(**CHAT, **kwargs)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_a_base_url_set_again_is_followed(
    genai: GenAI, records: List[CallRecord], is_async: bool
) -> None:
    genai.check_invariant = False  # the public host's requests carry no headers by policy
    client = posing(genai.server, f"https://{GATEWAY}/v1", is_async)
    sent: List[Any] = []

    async def calls() -> None:
        with track_context(user_id="alice"):
            for base_url in (None, PUBLIC, f"https://{OTHER}/v1"):
                if base_url is not None:
                    client.base_url = base_url  # the SDK's setter: a new base URL object
                result = client.chat.completions.create(**CHAT)
                if is_async:
                    await result
                sent.append(sent_user(genai.server))

    asyncio.run(calls())
    assert sent == ["alice", None, "alice"]  # none to a provider's public host
    assert [r.request.url for r in records if r.request is not None] == [
        f"https://{GATEWAY}/v1/chat/completions",
        f"{PUBLIC}/chat/completions",
        f"https://{OTHER}/v1/chat/completions",
    ]
    assert [r.headers["host"] for r in genai.server.requests] == [GATEWAY, "api.openai.com", OTHER]


def test_with_options_gets_its_own_url(genai: GenAI, records: List[CallRecord]) -> None:
    genai.check_invariant = False
    client = posing(genai.server, f"https://{GATEWAY}/v1")
    public = client.with_options(base_url=PUBLIC)
    with track_context(user_id="bob"):
        for first, second in ((client, public), (public, client)):
            call(first)
            call(second)
    assert [sent_user(genai.server)] == ["bob"]  # the last call: the gateway client's
    sent = [r.headers.get("x-payi-user-id") for r in genai.server.requests]
    assert sent == ["bob", None, None, "bob"]
    urls = [r.request.url for r in records if r.request is not None]
    gateway, public_url = f"https://{GATEWAY}/v1/chat/completions", f"{PUBLIC}/chat/completions"
    assert urls == [gateway, public_url, public_url, gateway]


def test_a_client_joining_urls_its_own_way_is_asked_every_call(
    genai: GenAI, records: List[CallRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Azure OpenAI's ``_prepare_url`` reads the client's deployment and endpoint too, not
    only its base URL: the hook asks it at every call (nothing remembered)."""
    client = azure_client(genai)
    own = type(client)._prepare_url
    asked: List[str] = []

    def counting(self: Any, url: str) -> Any:
        asked.append(url)
        return own(self, url)

    monkeypatch.setattr(type(client), "_prepare_url", counting)
    with track_context(user_id="carol"):
        for _ in range(3):
            client.chat.completions.create(**AZURE_CHAT)
    # The hook reads "/chat/completions" before the SDK moves it under the deployment.
    assert asked.count("/chat/completions") == 3
    urls = [r.request.url for r in records if r.request is not None]
    assert urls == [str(own(client, "/chat/completions"))] * 3
    assert [r.headers.get("x-payi-user-id") for r in genai.server.requests] == ["carol"] * 3


def test_a_client_whose_base_url_property_says_otherwise_is_read_by_it(
    genai: GenAI, records: List[CallRecord]
) -> None:
    """The hook reads a client's ``_base_url`` where its class's ``base_url`` property gave
    exactly that (issue 20: openai's property imports inside). A client class whose property
    says another URL - here one it picks per call, as the SDK's ``_prepare_url`` reads it -
    is read by the property every call: a URL remembered under the unchanged ``_base_url``
    would send the gateway's headers to the provider's public host."""
    genai.check_invariant = False  # the public host's requests carry no headers by policy

    class Routed(openai.OpenAI):
        target = f"https://{GATEWAY}/v1/"

        @property  # type: ignore[override]
        def base_url(self) -> httpx.URL:
            return httpx.URL(self.target)

    client = local(Routed, f"https://{OTHER}/v1", genai.server)
    with track_context(user_id="dora"):
        for target in (f"https://{GATEWAY}/v1/", f"{PUBLIC}/", f"https://{GATEWAY}/v1/"):
            client.target = target
            call(client)
    assert [r.headers["host"] for r in genai.server.requests] == [
        GATEWAY,
        "api.openai.com",
        GATEWAY,
    ]
    assert [r.headers.get("x-payi-user-id") for r in genai.server.requests] == [
        "dora",
        None,
        "dora",
    ]
    urls = [r.request.url for r in records if r.request is not None]
    gateway = f"https://{GATEWAY}/v1/chat/completions"
    assert urls == [gateway, f"{PUBLIC}/chat/completions", gateway]


@pytest.mark.parametrize("first", [PUBLIC, f"https://{GATEWAY}/v1"], ids=["public", "gateway"])
def test_the_module_level_client_follows_openai_base_url(
    genai: GenAI, monkeypatch: pytest.MonkeyPatch, first: str
) -> None:
    """openai's module-level client (``openai.chat.completions.create``) gives the module's
    ``openai.base_url`` when set, its own otherwise: its property is read every call. Set
    after a first call, the new base URL decides what is sent - the gateway gets the headers,
    the provider's public host never does."""
    genai.check_invariant = False  # the public host's requests carry no headers by policy
    second = f"https://{GATEWAY}/v1/" if first == PUBLIC else f"{PUBLIC}/"
    monkeypatch.setenv("OPENAI_BASE_URL", first)
    monkeypatch.setattr(openai, "_client", None)  # the module's client, made again
    monkeypatch.setattr(openai, "base_url", None)
    monkeypatch.setattr(openai, "api_key", "test")
    monkeypatch.setattr(openai, "max_retries", 0)
    monkeypatch.setattr(openai, "http_client", httpx.Client(transport=to_local(genai.server)))
    with track_context(user_id="erin"):
        openai.chat.completions.create(**CHAT)
        openai.base_url = second
        openai.chat.completions.create(**CHAT)
    hosts = [r.headers["host"] for r in genai.server.requests]
    users = [r.headers.get("x-payi-user-id") for r in genai.server.requests]
    if first == PUBLIC:
        assert hosts == ["api.openai.com", GATEWAY] and users == [None, "erin"]
    else:
        assert hosts == [GATEWAY, "api.openai.com"] and users == ["erin", None]


def test_new_settings_decide_again(genai: GenAI) -> None:
    genai.check_invariant = False
    client = posing(genai.server, PUBLIC)
    with track_context(user_id="dave"):
        call(client)
        assert sent_user(genai.server) is None
    genai.reinstrument(header_hosts=["api.openai.com"])
    with track_context(user_id="dave"):
        call(client)
        assert sent_user(genai.server) == "dave"
    genai.reinstrument()
    with track_context(user_id="dave"):
        call(client)
        assert sent_user(genai.server) is None


def test_a_provider_registered_later_decides_again(
    genai: GenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default policy refuses every registered provider's public hosts: registering one
    that names the gateway's host makes its calls go without headers, from the next call."""
    genai.check_invariant = False
    client = posing(genai.server, f"https://{GATEWAY}/v1")

    class Gateway(Provider):
        name = "issue20-gateway"
        services = (Service(hosts=(GATEWAY,)),)

    def loader() -> Type[Provider]:
        return Gateway

    with track_context(user_id="erin"):
        call(client)
        assert sent_user(genai.server) == "erin"
        monkeypatch.setitem(PROVIDERS, Gateway.name, loader)
        call(client)
        assert sent_user(genai.server) is None
        monkeypatch.delitem(PROVIDERS, Gateway.name)
        call(client)
        assert sent_user(genai.server) == "erin"


@pytest.mark.parametrize(
    "policy",
    [
        WirePolicy(),
        WirePolicy(hosts=("*.corp.example",)),
        WirePolicy(hosts=("*",)),
        WirePolicy(refused=(GATEWAY,)),
        WirePolicy(hosts=()),
    ],
    ids=["default", "allow-list", "everywhere", "refused", "nowhere"],
)
def test_the_remembered_verdict_is_the_policys(policy: WirePolicy) -> None:
    urls = [
        None,
        "",
        f"https://{GATEWAY}/v1/chat/completions",
        f"https://{GATEWAY.upper()}./v1",
        "https://api.openai.com/v1/chat/completions",
        "https://bedrock-runtime.us-east-1.amazonaws.com/model/x/converse",
        "http://127.0.0.1:8000/v1",
        "http://[::1",  # not a URL: as an unknown host
    ]
    for _ in range(2):  # the first asks the policy, the second reads what it said
        assert [sends_to(url, policy) for url in urls] == [policy.sends_to(url) for url in urls]
    other = WirePolicy(hosts=("nothing.example",))
    assert [sends_to(url, other) for url in urls] == [other.sends_to(url) for url in urls]
    assert [sends_to(url, policy) for url in urls] == [policy.sends_to(url) for url in urls]


def test_metric_dimensions_per_parameter_set(genai: GenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cost observer remembers each parameter set's metric dimensions: the calls of one
    scope (one set) keep theirs - a property value past its cap stays counted as ``_other``,
    one kept stays kept - and a per-call header (a new set per call) gets its own."""
    monkeypatch.setattr(cost, "MAX_PROPERTY_VALUES", 1)
    metrics = Metrics()
    genai.reinstrument(
        meter_provider=metrics.provider, metric_properties=["tenant"], metrics_user_id=True
    )
    for tenant in ("t1", "t2", "t1"):
        with track_context(request_properties={"tenant": tenant}, user_id="u"):
            for _ in range(2):
                genai.openai.chat.completions.create(**MINI)
            genai.openai.chat.completions.create(**MINI, extra_headers={"x-payi-user-id": "v"})
    calls = metrics.sum_by("payi.genai.tokens", TENANT, **{"payi_otel.token.type": "output"})
    per_call = calls[cost.OTHER] / 3
    assert calls == {"t1": 6 * per_call, cost.OTHER: 3 * per_call}
    users = metrics.sum_by(
        "payi.genai.tokens", "payi.user_id", **{"payi_otel.token.type": "output"}
    )
    assert users == {"u": 6 * per_call, "v": 3 * per_call}


def _doubled_input(snapshot: Any, provider_id: str, model_id: str) -> Any:
    """``snapshot`` with (provider, model)'s input price doubled."""
    import copy
    from dataclasses import replace

    def doubled(prices: Any) -> Any:
        prices = copy.copy(prices)
        prices.input_mtok = prices.input_mtok * 2
        return prices

    providers = []
    for provider in snapshot.providers:
        if provider.id == provider_id:
            models = [
                replace(m, prices=doubled(m.prices)) if m.id == model_id else m
                for m in provider.models
            ]
            provider = replace(provider, models=models)
        providers.append(provider)
    return type(snapshot)(providers=providers, from_auto_update=False)


def test_the_remembered_price_follows_genai_prices_updates(genai: GenAI) -> None:
    """The cost observer remembers the linear price that priced the last call (a request's
    calls are priced alike): prices updated in genai-prices (its ``UpdatePrices`` sets a new
    snapshot) price the next call, and the old ones again once they are back."""
    from genai_prices import data_snapshot

    def input_cost() -> float:
        with track_context(user_id="u"):
            genai.openai.chat.completions.create(**MINI)
        span = max(genai.otel.genai_spans(), key=lambda s: s.start_time or 0)
        return float(span.attributes["payi_otel.cost.input"])  # type: ignore[arg-type,index]

    bundled = data_snapshot.get_snapshot()
    before = [input_cost(), input_cost()]
    data_snapshot.set_custom_snapshot(_doubled_input(bundled, "openai", "gpt-4o-mini"))
    try:
        updated = [input_cost(), input_cost()]
    finally:
        data_snapshot.set_custom_snapshot(None)
    after = input_cost()
    assert before[0] == before[1] == after > 0
    assert updated[0] == updated[1] == pytest.approx(2 * before[0], rel=1e-12)


def _with_model(snapshot: Any, provider_id: str, like: str, model_id: str) -> Any:
    """``snapshot`` with a new model ``model_id`` of ``provider_id``, priced as ``like``."""
    from dataclasses import replace

    from genai_prices.types import ClauseEquals

    providers = []
    for provider in snapshot.providers:
        if provider.id == provider_id:
            base = next(m for m in provider.models if m.id == like)
            added = replace(base, id=model_id, match=ClauseEquals(equals=model_id))
            provider = replace(provider, models=[added, *provider.models])
        providers.append(provider)
    return type(snapshot)(providers=providers, from_auto_update=False)


def test_a_price_remembered_from_a_later_target_gives_way_to_new_genai_prices(
    genai: GenAI,
) -> None:
    """A call is priced as its response's model first, then as the model asked for: with the
    first unknown to genai-prices and the second priced by the user, the user's price is
    remembered - until genai-prices learns the first, which then prices the call."""
    import json

    from genai_prices import data_snapshot

    genai.check_invariant = False  # answered in-process: the local server sees no request
    genai.reinstrument(
        prices=[{"model": "ft:my-model", "provider": "openai", "input": "1", "output": "2"}]
    )
    reply = {
        "id": "c1",
        "object": "chat.completion",
        "created": 1,
        "model": "brand-new-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hi"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100},
    }
    client = openai.OpenAI(
        base_url="http://127.0.0.1:9/v1",
        api_key="test",
        max_retries=0,
        http_client=httpx.Client(
            transport=httpx.MockTransport(
                lambda request: httpx.Response(200, content=json.dumps(reply).encode())
            )
        ),
    )

    def priced() -> tuple[object, object, float]:
        with track_context(user_id="u"):
            client.chat.completions.create(**{**CHAT, "model": "ft:my-model"})
        span = max(genai.otel.genai_spans(), key=lambda s: s.start_time or 0)
        attributes = span.attributes or {}
        return (
            attributes["payi_otel.cost.source"],
            attributes["payi_otel.cost.model"],
            float(attributes["payi_otel.cost.input"]),  # type: ignore[arg-type]
        )

    before = [priced(), priced()]
    data_snapshot.set_custom_snapshot(
        _with_model(data_snapshot.get_snapshot(), "openai", "gpt-4o-mini", "brand-new-model")
    )
    try:
        learned = [priced(), priced()]
    finally:
        data_snapshot.set_custom_snapshot(None)
    assert before == [("user", "ft:my-model", 0.001)] * 2
    assert [(s, m) for s, m, _ in learned] == [("genai-prices", "brand-new-model")] * 2
    assert learned[0][2] == learned[1][2] == pytest.approx(1000 * 0.15 / 1e6, rel=1e-12)


def test_a_base_url_property_put_on_the_class_after_its_first_call_is_read(
    genai: GenAI, records: List[CallRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whether a client class's ``base_url`` is the SDK's own property is decided again when
    the class's property is replaced (review: it was decided once per class, so a property
    put on the class later was never read, and a call planned under the old URL sent the
    gateway's headers to the provider's public host)."""
    genai.check_invariant = False  # the public host's requests carry no headers by policy

    class Late(openai.OpenAI):
        pass

    client = local(Late, f"https://{GATEWAY}/v1", genai.server)
    with track_context(user_id="lee"):
        call(client)  # the SDK's own property: its _base_url is read
        monkeypatch.setattr(Late, "base_url", property(lambda self: httpx.URL(f"{PUBLIC}/")))
        call(client)
    assert [r.headers["host"] for r in genai.server.requests] == [GATEWAY, "api.openai.com"]
    assert [r.headers.get("x-payi-user-id") for r in genai.server.requests] == ["lee", None]
    urls = [r.request.url for r in records if r.request is not None]
    assert urls == [f"https://{GATEWAY}/v1/chat/completions", f"{PUBLIC}/chat/completions"]


# --- reading responses: pydantic's misses without its exception (``_stainless._read``) -------


class _Reply(pydantic.BaseModel):
    """A model with what a response may have besides fields: extras, a property, a class
    attribute, a method, a private attribute."""

    model_config = pydantic.ConfigDict(extra="allow")
    tokens: Optional[int] = None
    details: Optional[_Reply] = None
    _secret: int = pydantic.PrivateAttr(default=7)
    kind: ClassVar[str] = "reply"

    @property
    def doubled(self) -> Optional[int]:
        return None if self.tokens is None else 2 * self.tokens


class _Plain:
    def __init__(self) -> None:
        self.tokens = 3

    def __getattr__(self, name: str) -> Any:
        if name == "dynamic":
            return 5
        raise AttributeError(name)


class _Shadowing(pydantic.BaseModel):
    """A parent's property that a subclass's field overrides (pydantic only warns)."""

    @property
    def usage(self) -> str:
        return "the parent's property"


with warnings.catch_warnings():
    warnings.simplefilter("ignore")

    class _Overridden(_Shadowing):
        usage: int = 0  # type: ignore[assignment]


class _Looking(pydantic.BaseModel):
    """A model that reads its own attributes."""

    model_config = pydantic.ConfigDict(extra="allow")
    tokens: int = 1

    def __getattribute__(self, name: str) -> Any:
        if name == "tokens":
            return 42
        if name == "dynamic":
            return "made up"
        return super().__getattribute__(name)


class _OnInstances:
    """A descriptor that reads the instance (on the class, ``instance`` is None: it fails)."""

    def __init__(self, error: type) -> None:
        self.error = error

    def __get__(self, instance: Any, owner: Any) -> Any:
        if instance is None:
            raise self.error("read on the class")
        return instance.tokens * 2


class _Described(pydantic.BaseModel):
    tokens: int = 3
    doubled: ClassVar[Any] = _OnInstances(AttributeError)
    kind: ClassVar[Any] = _OnInstances(TypeError)


class _Unhashable(type):
    def __eq__(cls, other: object) -> bool:
        return cls is other

    __hash__ = None  # type: ignore[assignment]


class _OfUnhashable(metaclass=_Unhashable):
    usage = 1


def _replies() -> List[object]:
    from anthropic.types import Usage as AnthropicUsage
    from openai.types import CompletionUsage
    from openai.types.chat import ChatCompletion
    from openai.types.responses import ResponseUsage

    usage = CompletionUsage(prompt_tokens=10, completion_tokens=5, total_tokens=15)
    detailed = CompletionUsage(
        prompt_tokens=10,
        completion_tokens=5,
        total_tokens=15,
        prompt_tokens_details={"cached_tokens": 4},
        input_tokens_details={"cached_tokens": 9},  # an extra: the other API's name
    )
    return [
        usage,
        detailed,
        ChatCompletion(
            id="c", choices=[], created=1, model="gpt-4o", object="chat.completion", usage=usage
        ),
        ResponseUsage.model_construct(input_tokens=3, output_tokens=2, total_tokens=5),
        AnthropicUsage(input_tokens=8, output_tokens=1, cache_read_input_tokens=2),
        _Reply(tokens=4, details=_Reply(tokens=1), surplus=6),
        _Reply(),
        _Plain(),
        _Overridden(usage=5),
        _Looking(surplus=2),
        _Described(),
        _Fixed(usage),
        _OfUnhashable(),
        SimpleNamespace(usage=SimpleNamespace(prompt_tokens=1)),
        {"usage": 1},
        None,
        12,
    ]


NAMES = (
    "usage", "model", "prompt_tokens", "completion_tokens", "input_tokens", "output_tokens",
    "prompt_tokens_details", "input_tokens_details", "completion_tokens_details",
    "output_tokens_details", "cache_read_input_tokens", "cache_creation_input_tokens",
    "tokens", "details", "surplus", "doubled", "kind", "model_dump", "dynamic", "_secret",
    "__class__", "nothing_here",
)  # fmt: skip


class _Fixed(wrapt.ObjectProxy):  # type: ignore[type-arg,misc,unused-ignore]
    """A proxy that answers one name itself."""

    @property
    def prompt_tokens(self) -> int:
        return 999


@pytest.mark.parametrize("index", range(len(_replies())))
def test_a_response_is_read_as_getattr_reads_it(index: int) -> None:
    from payi_otel._providers._stainless import _read

    obj = _replies()[index]
    for name in NAMES:
        assert _read(obj, name) == getattr(obj, name, None), name


def test_the_usage_of_a_proxied_usage_object_is_read_through_the_proxy() -> None:
    from openai.types import CompletionUsage

    from payi_otel._providers.openai import OpenAIProvider

    usage = CompletionUsage(prompt_tokens=10, completion_tokens=5, total_tokens=15)
    read = OpenAIProvider().usage(SimpleNamespace(usage=_Fixed(usage)))
    assert read is not None and (read.input_tokens, read.output_tokens) == (999, 5)


def test_a_class_attribute_put_on_a_model_after_it_was_read_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from openai.types import CompletionUsage

    from payi_otel._providers._stainless import _read

    usage = CompletionUsage(prompt_tokens=10, completion_tokens=5, total_tokens=15)
    assert _read(usage, "input_tokens_details") is None
    monkeypatch.setattr(CompletionUsage, "input_tokens_details", "patched", raising=False)
    assert _read(usage, "input_tokens_details") == "patched"

"""The provider recipe, done once (docs/architecture.md, "The provider seam"): a toy SDK and
its provider, registered with one line, behave as the openai and anthropic providers do.

The toy SDK is shaped like botocore, the hardest layout the seam serves: ``ToyClient.call()``
(the per-call method, read at an entry point) builds a request dict and hands it to
``ToyClient.send()`` (below it, once per attempt: stamped at a send point with what the
entry resolved), which POSTs it with ``http.client`` to the local fake server's
``/v1/chat/completions``; the answer nests its stream in the response (``result["stream"]``,
as ConverseStream's). A toy GenAI instrumentation of the toy SDK (turned on by
``payi_instrument()`` from the provider's facts) makes its GenAI spans, which start without
``gen_ai.*`` and are GenAI spans by their scope. Everything asserted is derived from the
merge engine, the parameter registry, the openai provider's behaviour on the same call, or
the toy provider's own facts: no second copy of a rule.
"""

from __future__ import annotations

import http.client
import importlib
import importlib.machinery
import json
import sys
import types
from collections.abc import Iterator, Mapping
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

import pytest
import wrapt
from fake_llm_server import RecordedRequest
from fixtures_genai import CHAT, GenAI
from fixtures_otel import payi_attrs
from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.instrumentation.utils import unwrap
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from payi_otel import PayiInstrumentor, _genai, track_context
from payi_otel._context import current_effective
from payi_otel._cost import _provider_id
from payi_otel._ingest import ingest_record
from payi_otel._model.dialects import (
    PAYI_PROXY,
    X_PAYI,
    dialect_named,
    is_attribution_header,
    is_dialect_header,
)
from payi_otel._model.parameters import ATTRIBUTE_NAMES
from payi_otel._model.wire_policy import WirePolicy
from payi_otel._providers import (
    PROVIDERS,
    Call,
    CallRecord,
    Instrumentation,
    PatchPoint,
    Provider,
    Role,
    Service,
    Usage,
)
from payi_otel._providers._core import add_observer, resolve_call
from payi_otel._providers._registry import providers
from payi_otel._spans import is_genai_span

TOY = "toy_llm"
TOY_INSTRUMENTATION = "toy_llm_instrumentation"
PUBLIC_HOST = "api.toy-llm.example"
MODEL = "gpt-4o-mini"

#: Parameter name -> its header and attribute names, from the one registry.
HEADER, PROXY_HEADER, ATTRIBUTE = X_PAYI.headers, PAYI_PROXY.headers, ATTRIBUTE_NAMES


# --- the toy SDK ---------------------------------------------------------------------------------


class ToyStream:
    """The answer's events, read as they arrive (iterable and closable, as botocore's
    ``EventStream``)."""

    def __init__(self, response: http.client.HTTPResponse) -> None:
        self._response = response

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for line in self._response:
            text = line.decode().strip()
            if not text.startswith("data: "):
                continue
            if text == "data: [DONE]":
                break
            yield json.loads(text[len("data: ") :])
        self.close()

    def close(self) -> None:
        self._response.close()


class ToyClient:
    """A client whose per-call method builds a request that another method sends."""

    def __init__(
        self,
        base_url: str,
        default_headers: Optional[Mapping[str, str]] = None,
        connect: Optional[tuple[str, int]] = None,
        retries: int = 0,
    ) -> None:
        self.base_url = base_url
        self.default_headers = dict(default_headers or {})
        #: Where to connect instead of the URL's host (the URL and Host header stay).
        self.connect = connect
        self.retries = retries

    def call(
        self, *, model: str, prompt: str, headers: Optional[Mapping[str, str]] = None
    ) -> dict[str, Any]:
        request = {
            "url": f"{self.base_url}/chat/completions",
            "headers": {
                "content-type": "application/json",
                **self.default_headers,
                **(headers or {}),
            },
            "body": {
                "model": model,
                "messages": [{"role": "user", "content": prompt}],
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        }
        for _ in range(self.retries):
            response = self.send(request)
            if response.status < 500:
                break
            response.read()
        else:
            response = self.send(request)
        return {
            "ResponseMetadata": {"HTTPStatusCode": response.status},
            "stream": ToyStream(response),
        }

    def send(self, request: Mapping[str, Any]) -> http.client.HTTPResponse:
        url = urlsplit(request["url"])
        host, port = self.connect or (url.hostname or "", url.port or 80)
        connection = http.client.HTTPConnection(host, port, timeout=10)
        connection.request(
            "POST",
            url.path,
            body=json.dumps(request["body"]),
            headers={"Host": url.netloc, **request["headers"]},
        )
        return connection.getresponse()


_ORIGINAL = {name: ToyClient.__dict__[name] for name in ("call", "send")}


# --- the toy provider: what the recipe asks for ---------------------------------------------


class ToyProvider(Provider):
    name = TOY
    instrumentations = (
        Instrumentation("toy-llm-instrumentation", TOY_INSTRUMENTATION, "ToyInstrumentor"),
    )
    services = (
        Service(
            "system.toy.cloud",
            "openai",  # the toy sells OpenAI's models: genai-prices prices them so
            genai_names=(TOY,),
            category_aliases=("toy",),
            hosts=(PUBLIC_HOST,),
        ),
    )

    def patch_points(self) -> tuple[PatchPoint, ...]:
        importlib.import_module(TOY)  # ImportError when the SDK is not installed
        return (
            PatchPoint(TOY, "ToyClient.call", False),
            PatchPoint(TOY, "ToyClient.send", False, Role.SEND),
        )

    def read(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call:
        own = kwargs.get("headers") or {}
        return Call(
            tuple(
                {k: v for k, v in source.items() if is_attribution_header(k)}
                for source in (instance.default_headers, own)
            ),
            kwargs.get("model"),
        )

    def send_url(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        return str(args[0]["url"])

    def stamp(
        self,
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        headers: Mapping[str, str],
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        request = args[0]
        kept = {k: v for k, v in request["headers"].items() if not is_attribution_header(k)}
        return ({**request, "headers": {**kept, **headers}}, *args[1:]), kwargs

    def usage(self, item: object) -> Optional[Usage]:
        found = item.get("usage") if isinstance(item, dict) else None
        if not isinstance(found, dict):
            return None
        return Usage(input_tokens=found["prompt_tokens"], output_tokens=found["completion_tokens"])

    def response_model(self, item: object) -> Optional[str]:
        model = item.get("model") if isinstance(item, dict) else None
        return model if isinstance(model, str) else None

    def stream_of(self, result: object) -> Optional[object]:
        return result.get("stream") if isinstance(result, dict) else None

    def with_stream(self, result: object, stream: object) -> object:
        assert isinstance(result, dict)
        result["stream"] = stream
        return result


# --- a toy GenAI instrumentation of the toy SDK ------------------------------------------------


class ToyInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """A GenAI span per call: started without ``gen_ai.*`` (a GenAI span by its scope),
    described at the response, ended when the nested stream ends."""

    def instrumentation_dependencies(self) -> tuple[str, ...]:
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        tracer = trace.get_tracer(
            TOY_INSTRUMENTATION, tracer_provider=kwargs.get("tracer_provider")
        )

        def traced(wrapped: Callable[..., Any], instance: Any, args: Any, kw: Any) -> Any:
            span = tracer.start_span(f"chat {kw['model']}", kind=SpanKind.CLIENT)
            with trace.use_span(span, end_on_exit=False):
                result = wrapped(*args, **kw)
            span.set_attributes(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": TOY,
                    "gen_ai.request.model": kw["model"],
                }
            )
            events = result["stream"]

            def ending() -> Iterator[Any]:
                try:
                    yield from events
                finally:
                    span.end()

            result["stream"] = ending()
            return result

        wrapt.wrap_function_wrapper(TOY, "ToyClient.call", traced)

    def _uninstrument(self, **kwargs: Any) -> None:
        unwrap(ToyClient, "call")


def _module(name: str, **attributes: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    for key, value in attributes.items():
        setattr(module, key, value)
    return module


@pytest.fixture(autouse=True)
def toy_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    """The toy SDK and its instrumentation "installed", and the provider registered (before
    payi_otel is instrumented; undone after it is uninstrumented)."""
    monkeypatch.setitem(sys.modules, TOY, _module(TOY, ToyClient=ToyClient))
    monkeypatch.setitem(
        sys.modules,
        TOY_INSTRUMENTATION,
        _module(TOY_INSTRUMENTATION, ToyInstrumentor=ToyInstrumentor),
    )
    # The recipe's one registry line:
    monkeypatch.setitem(PROVIDERS, TOY, lambda: ToyProvider)


# --- helpers -----------------------------------------------------------------------------------


def toy_client(genai: GenAI, **kwargs: Any) -> ToyClient:
    return ToyClient(genai.server.openai_base_url, **kwargs)


def attribution(request: RecordedRequest) -> dict[str, str]:
    """Every x-payi-* / xProxy-* header a request carried, names lower-cased, as sent."""
    return {k.lower(): v for k, v in request.headers.items() if is_dialect_header(k)}


def toy_spans(genai: GenAI) -> list[ReadableSpan]:
    return [
        s
        for s in genai.otel.spans()
        if s.instrumentation_scope is not None
        and s.instrumentation_scope.name == TOY_INSTRUMENTATION
    ]


def read_all(result: Mapping[str, Any]) -> list[Any]:
    return list(result["stream"])


# --- the tests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["x-payi", "payi-proxy"])
def test_scopes_apply_and_per_call_headers_resolve_as_for_openai(
    genai: GenAI, dialect: str
) -> None:
    genai.reinstrument(header_dialect=dialect)
    defaults = {HEADER["user_id"]: "bob", HEADER["account_name"]: "acme"}
    own = {PROXY_HEADER["user_id"]: "carol", HEADER["limit_ids"]: "l1,l2"}
    toy = toy_client(genai, default_headers=defaults)
    reference = genai.openai_client(default_headers=defaults)
    with track_context(
        use_case_name="recipe", use_case_id="u1", user_id="alice", request_properties={"k": "v"}
    ):
        expected = resolve_call(current_effective(), (defaults, own)).headers(
            dialect_named(dialect)
        )
        events = read_all(toy.call(model=MODEL, prompt="Hello", headers=own))
        reference.chat.completions.create(**CHAT, extra_headers=own)
    toy_request, openai_request = genai.server.requests
    assert toy_request.path == "/v1/chat/completions"
    assert attribution(toy_request) == {k.lower(): v for k, v in expected.items()}
    assert attribution(toy_request) == attribution(openai_request)
    assert events and events[-1]["usage"] is not None  # the caller's stream, as sent
    [toy_span] = toy_spans(genai)
    [openai_span] = [s for s in genai.otel.genai_spans() if s is not toy_span]
    assert payi_attrs(toy_span) == payi_attrs(openai_span)
    assert payi_attrs(toy_span)[ATTRIBUTE["user_id"]] == "carol"


def test_the_entry_resolves_once_and_the_send_stamps_every_attempt(genai: GenAI) -> None:
    genai.check_invariant = False  # two requests for one call (span)
    genai.server.fail_next(1)
    toy = toy_client(genai, retries=1)
    with track_context(user_id="alice"):  # a use case named for the call: a fresh id for it
        read_all(toy.call(model=MODEL, prompt="Hello", headers={HEADER["use_case_name"]: "c"}))
    first, retry = genai.server.requests
    assert attribution(first) == attribution(retry)
    assert attribution(first)[HEADER["use_case_id"]]  # made once for the logical call
    [span] = toy_spans(genai)
    assert payi_attrs(span)[ATTRIBUTE["use_case_id"]] == (attribution(first)[HEADER["use_case_id"]])


def test_a_send_outside_a_call_goes_out_untouched(genai: GenAI) -> None:
    genai.check_invariant = False  # no GenAI span for a bare send
    toy = toy_client(genai)
    own = {HEADER["user_id"]: "carol"}
    request = {"url": f"{toy.base_url}/chat/completions", "headers": own, "body": CHAT}
    with track_context(user_id="alice"):
        toy.send(request).read()
    [sent] = genai.server.requests
    assert attribution(sent) == own


def test_the_nested_stream_is_observed_in_place_and_reported_once(genai: GenAI) -> None:
    records: list[CallRecord] = []
    remove = add_observer(records.append)
    try:
        with track_context(user_id="alice"):
            result = toy_client(genai).call(model=MODEL, prompt="Hello there")
            assert records == []  # the stream is not read yet
            events = read_all(result)
    finally:
        remove()
    [record] = records
    usage = events[-1]["usage"]
    assert record.provider == TOY
    assert record.streamed and record.error is None
    assert record.request_model == MODEL and record.response_model == events[-1]["model"]
    assert record.usage == Usage(usage["prompt_tokens"], usage["completion_tokens"])
    assert record.call.attributes()[ATTRIBUTE["user_id"]] == "alice"


def test_the_default_wire_policy_refuses_its_public_host(genai: GenAI) -> None:
    genai.check_invariant = False  # the span is attributed, the request is not
    port = int(genai.server.base_url.rsplit(":", 1)[1])
    assert not WirePolicy().sends_to(f"https://{PUBLIC_HOST}/v1/chat/completions")
    public = ToyClient(f"http://{PUBLIC_HOST}/v1", connect=("127.0.0.1", port))
    with track_context(user_id="alice"):
        read_all(public.call(model=MODEL, prompt="Hello", headers={HEADER["account_name"]: "acme"}))
    [refused] = genai.server.requests
    assert attribution(refused) == {}
    [span] = toy_spans(genai)
    assert payi_attrs(span)[ATTRIBUTE["account_name"]] == "acme"
    genai.reinstrument(header_hosts=[PUBLIC_HOST])
    with track_context(user_id="alice"):
        expected = resolve_call(current_effective(), ()).headers(X_PAYI)
        read_all(public.call(model=MODEL, prompt="Hello"))
    assert attribution(genai.server.requests[-1]) == {k.lower(): v for k, v in expected.items()}
    assert expected


def test_genai_cost_and_ingest_read_its_facts(genai: GenAI) -> None:
    family = _genai.Family(
        TOY, ToyProvider.instrumentations, ToyProvider.native_spans_module, label=TOY
    )
    assert family in _genai.FAMILIES
    assert ToyInstrumentor().is_instrumented_by_opentelemetry  # turned on by payi_instrument()
    [service] = ToyProvider.services
    assert service.price_id is not None and service.category is not None
    assert _provider_id(service.category) == service.price_id
    assert _provider_id(f"system.{service.category_aliases[0]}") == service.price_id
    with track_context(user_id="alice"):
        read_all(toy_client(genai).call(model=MODEL, prompt="Hello"))
    [span] = toy_spans(genai)
    assert is_genai_span(span)
    attributes = span.attributes or {}
    assert attributes["payi_otel.cost.provider"] == service.price_id  # priced as the toy's
    assert attributes["gen_ai.usage.input_tokens"] > 0
    assert ingest_record(span)["category"] == service.category


def test_uninstrument_removes_it(genai: GenAI) -> None:
    genai.check_invariant = False  # no GenAI span once uninstrumented
    PayiInstrumentor().uninstrument()
    assert {name: ToyClient.__dict__[name] for name in _ORIGINAL} == _ORIGINAL
    assert not ToyInstrumentor().is_instrumented_by_opentelemetry
    own = {HEADER["user_id"]: "carol"}
    with track_context(user_id="alice"):
        read_all(toy_client(genai).call(model=MODEL, prompt="Hello", headers=own))
    [sent] = genai.server.requests
    assert attribution(sent) == own  # the caller's own headers, as given
    assert toy_spans(genai) == []


#: The facts of a Pay-i category, the same on every service filed under it (``_cost`` and
#: ``_ingest`` read them per category, the first provider's word winning).
_CATEGORY_FACTS = (
    "price_id",
    "genai_names",
    "category_aliases",
    "prices_as_sent",
    "ingest_resource",
)


def test_every_service_of_a_category_has_its_facts() -> None:
    """Bedrock and Vertex AI are called by several SDKs; each names the cloud's facts once
    (``_providers/_clouds``), so a GenAI name, an alias or a pricing rule one of them knows is
    known for all (docs/architecture.md, "The provider seam")."""
    by_category: dict[str, list[tuple[str, Any]]] = {}
    for provider in providers():
        for service in provider.services:
            if service.category:
                by_category.setdefault(service.category, []).append((provider.name, service))
    shared = {c: s for c, s in by_category.items() if len({name for name, _ in s}) > 1}
    assert {"system.aws.bedrock", "system.google.vertex"} <= set(shared)
    for category, services in shared.items():
        for fact in _CATEGORY_FACTS:
            values = {name: getattr(service, fact) for name, service in services}
            assert len(set(values.values())) == 1, (category, fact, values)
    owners: dict[str, set[str]] = {}
    for category, services in by_category.items():
        for _, service in services:
            for name in service.genai_names:
                owners.setdefault(name, set()).add(category)
    assert all(len(categories) == 1 for categories in owners.values()), owners

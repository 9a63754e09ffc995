"""The destination policy holds per hop (README "Which headers go where", "Across services"):
every redirect hop, every retry, whoever injects the baggage (the caller, a transport, the
OpenTelemetry httpx / requests instrumentations), gets attribution headers and ``payi.*``
baggage only where the policy allows that hop's own URL.

Everything runs against the local fake server, which answers injected redirects
(``FakeLLMServer.redirect_next``). Two names of 127.0.0.1 are two hosts to the policy:
``header_hosts`` allows one, and the other stands for a model provider's public host (one
test uses the default policy and the real provider host names, routed to the local server).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Callable, Optional

import anthropic
import httpx
import httpx2
import openai
import pytest
import requests
from fake_llm_server import FakeLLMServer, RecordedRequest
from fixtures_genai import (
    CHAT,
    MESSAGE,
    PROXY_CARRIES,
    GenAI,
    attribution_headers,
    headers_from_span,
)
from fixtures_otel import Otel
from fixtures_server import to_local
from opentelemetry import baggage, propagate
from opentelemetry import context as otel_context
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor

from payi_otel import PayiInstrumentor, track_context

ALLOWED, OTHER = "127.0.0.1", "localhost"  # one server, two hosts to the policy


@dataclass(frozen=True)
class Hop:
    """One redirect: from ``first`` to ``to`` ("" for a relative Location: the same origin),
    with ``allowed`` the only hosts the policy sends attribution to."""

    name: str
    status: int
    first: str
    to: str
    allowed: tuple[str, ...]

    @property
    def target(self) -> str:
        return self.to or self.first

    @property
    def cross_origin(self) -> bool:
        return self.target != self.first


HOPS = [
    Hop("307-to-a-refused-host", 307, ALLOWED, OTHER, (ALLOWED,)),
    Hop("308-to-a-refused-host", 308, ALLOWED, OTHER, (ALLOWED,)),
    Hop("302-to-a-refused-host-as-GET", 302, ALLOWED, OTHER, (ALLOWED,)),
    Hop("301-to-a-refused-host-as-GET", 301, ALLOWED, OTHER, (ALLOWED,)),
    Hop("307-relative-same-origin", 307, ALLOWED, "", (ALLOWED,)),
    Hop("307-relative-on-a-refused-host", 307, OTHER, "", (ALLOWED,)),
    Hop("307-from-a-refused-host-to-an-allowed-one", 307, OTHER, ALLOWED, (ALLOWED,)),
    Hop("307-cross-origin-both-allowed", 307, ALLOWED, OTHER, (ALLOWED, OTHER)),
]
SDKS = ["openai", "openai-async", "anthropic", "anthropic-async"]
PLAIN = ["httpx", "httpx-async", "requests"]
CLIENTS = SDKS + PLAIN
#: Who puts the baggage on: the caller's own header (plain requests); a transport that injects
#: on each hop, as HTTP instrumentations do (httpx and httpx2 transports, a requests adapter);
#: the OpenTelemetry httpx / requests instrumentations themselves.
INJECTORS = ["caller", "transport", "otel-instrumentation"]
#: opentelemetry-instrumentation-httpx does not instrument httpx2, the SDKs' default: openai
#: is given an httpx client; anthropic takes none.
NOT_INSTRUMENTED = {"anthropic", "anthropic-async"}
#: Who stamps the attribution in each dialect on a plain request: the caller.
USER_HEADERS = {"x-payi": {"x-payi-user-id": "alice"}, "payi-proxy": {"xProxy-User-ID": "alice"}}


def pay_i(request: RecordedRequest) -> dict[str, str]:
    """Every x-payi-* / xProxy-* header a request carried, whatever the dialect."""
    return {k: v for k, v in request.headers.items() if k.startswith(("x-payi-", "xproxy-"))}


def assert_the_span_is_what_was_sent(otel: Otel, sent: RecordedRequest, dialect: str) -> None:
    """The call's GenAI span carries the attribution ``sent`` carried (in either dialect)."""
    (span,) = otel.genai_spans()
    from_span = headers_from_span(span)
    if dialect == "payi-proxy":
        from_span = {k: v for k, v in from_span.items() if k in PROXY_CARRIES}
    assert from_span == attribution_headers(sent, dialect)


def payi_members(request: RecordedRequest) -> list[str]:
    return [
        m.strip()
        for m in request.headers.get("baggage", "").split(",")
        if m.strip().startswith("payi.")
    ]


# --- clients ------------------------------------------------------------------------------


def _injecting(module: Any, inner: Any, is_async: bool) -> Any:
    """A transport of ``module`` (httpx / httpx2) that injects the context's propagation
    headers into every hop it sends, then hands it to ``inner``."""
    if is_async:

        class AsyncInjecting(module.AsyncBaseTransport):  # type: ignore[misc]
            async def handle_async_request(self, request: Any) -> Any:
                propagate.inject(request.headers)
                return await inner.handle_async_request(request)

        return AsyncInjecting()

    class Injecting(module.BaseTransport):  # type: ignore[misc]
        def handle_request(self, request: Any) -> Any:
            propagate.inject(request.headers)
            return inner.handle_request(request)

    return Injecting()


class _InjectingAdapter(requests.adapters.HTTPAdapter):
    def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        propagate.inject(request.headers)
        return super().send(request, *args, **kwargs)


def _transport(client: str, inject: bool, local: Optional[FakeLLMServer]) -> Any:
    """The transport for ``client`` (requests: an adapter): routed to ``local`` (else the
    URL's own host), injecting per hop when ``inject``; None: the client's default."""
    if client == "requests":
        return _InjectingAdapter() if inject else None
    module = httpx2 if client.startswith("anthropic") else httpx
    is_async = client.endswith("-async")
    if local is not None:
        inner = to_local(local, module, is_async)
    else:
        inner = module.AsyncHTTPTransport() if is_async else module.HTTPTransport()
    return _injecting(module, inner, is_async) if inject else inner


def send(
    client: str, base: str, headers: dict[str, str], transport: Any = None, retries: int = 0
) -> None:
    """One chat call from ``client`` to ``base`` with ``headers`` (an SDK's extra_headers, a
    plain request's headers); a redirect that turns the POST into a GET gets a 405 from the
    fake server, which is fine: the hops are what is checked."""
    url = base + "/v1/chat/completions"
    http: Any = None
    if client.startswith("openai"):
        if transport is not None:
            http = (httpx.AsyncClient if client.endswith("-async") else httpx.Client)(
                transport=transport, follow_redirects=True
            )
        cls: Any = openai.AsyncOpenAI if client.endswith("-async") else openai.OpenAI
        sdk = cls(base_url=base + "/v1", api_key="test", max_retries=retries, http_client=http)
        create, body = sdk.chat.completions.create, CHAT
    elif client.startswith("anthropic"):
        if transport is not None:
            http = (httpx2.AsyncClient if client.endswith("-async") else httpx2.Client)(
                transport=transport, follow_redirects=True
            )
        cls = anthropic.AsyncAnthropic if client.endswith("-async") else anthropic.Anthropic
        sdk = cls(base_url=base, api_key="test", max_retries=retries, http_client=http)
        create, body = sdk.messages.create, MESSAGE
    if client in SDKS:
        errors = (openai.APIStatusError, anthropic.APIStatusError)
        if client.endswith("-async"):

            async def go() -> None:
                with contextlib.suppress(*errors):
                    await create(**body, extra_headers=headers)

            asyncio.run(go())
        else:
            with contextlib.suppress(*errors):
                create(**body, extra_headers=headers)
    elif client == "httpx":
        with httpx.Client(transport=transport, follow_redirects=True) as plain:
            plain.post(url, json=CHAT, headers=headers)
    elif client == "httpx-async":

        async def go_plain() -> None:
            async with httpx.AsyncClient(transport=transport, follow_redirects=True) as plain:
                await plain.post(url, json=CHAT, headers=headers)

        asyncio.run(go_plain())
    elif client == "aiohttp":
        import aiohttp

        async def go_aiohttp() -> None:
            async with aiohttp.ClientSession() as session:
                async with session.post(url, json=CHAT, headers=headers) as response:
                    await response.read()

        asyncio.run(go_aiohttp())
    else:
        with requests.Session() as session:
            if transport is not None:
                session.mount("http://", transport)
            session.post(url, json=CHAT, headers=headers, timeout=30)


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def port(llm_server: FakeLLMServer) -> int:
    return int(llm_server.base_url.rsplit(":", 1)[1])


@pytest.fixture
def http_instrumentations(otel: Otel) -> Iterator[None]:
    """opentelemetry-instrumentation-httpx and -requests on, as an app would run them."""
    HTTPXClientInstrumentor().instrument(tracer_provider=otel.provider)
    RequestsInstrumentor().instrument(tracer_provider=otel.provider)
    yield
    HTTPXClientInstrumentor().uninstrument()
    RequestsInstrumentor().uninstrument()


@contextlib.contextmanager
def a_users_scope() -> Iterator[None]:
    """alice's scope, under a baggage entry that is not ours (it goes everywhere: it shows
    that the hop did carry baggage)."""
    token = otel_context.attach(baggage.set_baggage("team", "search"))
    try:
        with track_context(user_id="alice"):
            yield
    finally:
        otel_context.detach(token)


def _hops(server: FakeLLMServer, hop: Hop) -> tuple[RecordedRequest, RecordedRequest]:
    first, followed = server.requests
    assert first.headers["host"].split(":")[0] == hop.first
    assert followed.headers["host"].split(":")[0] == hop.target
    if hop.status in (301, 302):
        assert (first.method, followed.method) == ("POST", "GET")
    else:
        assert (first.method, followed.method) == ("POST", "POST")
    return first, followed


# --- headers ------------------------------------------------------------------------------


@pytest.mark.parametrize("genai_spans", [False, True], ids=["nospans", "spans"])
@pytest.mark.parametrize("dialect", ["x-payi", "payi-proxy"])
@pytest.mark.parametrize("client", [*CLIENTS, "aiohttp"])  # (aiohttp: headers only, no baggage)
@pytest.mark.parametrize("hop", HOPS, ids=lambda h: h.name)
def test_a_redirect_hop_carries_attribution_headers_only_where_the_policy_allows_its_url(
    instrument: Callable[..., PayiInstrumentor],
    otel: Otel,
    llm_server: FakeLLMServer,
    port: int,
    hop: Hop,
    client: str,
    dialect: str,
    genai_spans: bool,
) -> None:
    instrument(
        caller_file="<test>",
        genai_spans=genai_spans,
        header_dialect=dialect,
        header_hosts=list(hop.allowed),
    )
    llm_server.redirect_next(1, hop.status, f"http://{hop.to}:{port}" if hop.to else "")
    sdk = client in SDKS
    with a_users_scope():
        send(client, f"http://{hop.first}:{port}", {} if sdk else USER_HEADERS[dialect])
    first, followed = _hops(llm_server, hop)

    if sdk:  # the request hook's resolved headers, where the first URL gets any
        assert bool(pay_i(first)) == (hop.first in hop.allowed)
    else:  # the caller's own headers on the first hop are theirs
        assert pay_i(first) == {k.lower(): v for k, v in USER_HEADERS[dialect].items()}
    if pay_i(first):
        assert attribution_headers(first, dialect)["x-payi-user-id"] == "alice"
        if sdk and genai_spans:
            assert_the_span_is_what_was_sent(otel, first, dialect)
    # A hop to another origin keeps them only where its own URL is allowed (an SDK's: never).
    kept = not hop.cross_origin or (hop.target in hop.allowed and not sdk)
    assert pay_i(followed) == (pay_i(first) if kept else {})


def test_the_policy_holds_on_the_hop_to_a_real_provider_host_name(
    instrument: Callable[..., PayiInstrumentor],
    llm_server: FakeLLMServer,
) -> None:
    """The default policy: a gateway that redirects an httpx request to api.openai.com (routed
    to the local server by the transport; the URL httpx and payi_otel see is the provider's)."""
    instrument(caller_file="<test>", genai_spans=False, propagate_baggage=True)
    llm_server.redirect_next(1, 307, "https://api.openai.com")
    transport = _injecting(httpx, to_local(llm_server), is_async=False)
    with a_users_scope(), httpx.Client(transport=transport, follow_redirects=True) as client:
        client.post(
            "http://gateway.internal/v1/chat/completions", json=CHAT, headers=USER_HEADERS["x-payi"]
        )
    first, followed = llm_server.requests
    assert (first.headers["host"], followed.headers["host"]) == (
        "gateway.internal",
        "api.openai.com",
    )
    assert pay_i(first) == {"x-payi-user-id": "alice"} and "payi.user_id=alice" in (
        payi_members(first)
    )
    assert pay_i(followed) == {} and payi_members(followed) == []
    assert "team=search" in followed.headers["baggage"]


# --- baggage ------------------------------------------------------------------------------


def _baggage_cases() -> list[Any]:
    return [
        pytest.param(client, injector, id=f"{client}-{injector}")
        for client in CLIENTS
        for injector in INJECTORS
        if not (injector == "otel-instrumentation" and client in NOT_INSTRUMENTED)
        and not (injector == "caller" and client in SDKS)
    ]


@pytest.mark.parametrize(("client", "injector"), _baggage_cases())
@pytest.mark.parametrize("hop", HOPS, ids=lambda h: h.name)
def test_a_redirect_hop_carries_payi_baggage_only_where_the_policy_allows_its_url(
    request: pytest.FixtureRequest,
    instrument: Callable[..., PayiInstrumentor],
    llm_server: FakeLLMServer,
    port: int,
    hop: Hop,
    client: str,
    injector: str,
) -> None:
    if injector == "otel-instrumentation":
        request.getfixturevalue("http_instrumentations")
    instrument(
        caller_file="<test>",
        genai_spans=False,
        propagate_baggage=True,
        header_hosts=list(hop.allowed),
    )
    llm_server.redirect_next(1, hop.status, f"http://{hop.to}:{port}" if hop.to else "")
    with a_users_scope():
        headers: dict[str, str] = {}
        if injector == "caller":
            propagate.inject(headers)
            assert "payi.user_id=alice" in headers["baggage"]
        transport: Any = None
        if injector == "transport":
            transport = _transport(client, True, None)
        elif injector == "otel-instrumentation" and client.startswith("openai"):
            transport = _transport(client, False, None)
        send(client, f"http://{hop.first}:{port}", headers, transport)
    first, followed = _hops(llm_server, hop)

    # opentelemetry-instrumentation-requests injects once per send: requests copies that
    # header to the hops, as it copies the caller's own.
    if injector == "caller" or (client, injector) == ("requests", "otel-instrumentation"):
        # One header, copied from hop to hop: it only loses members.
        expected = [
            hop.first in hop.allowed,
            hop.first in hop.allowed and hop.target in hop.allowed,
        ]
    elif client in SDKS:  # the SDK's call runs without payi.* baggage: nothing to inject
        expected = [False, False]
    else:  # injected on each hop from the caller's context: judged on each hop's URL
        expected = [hop.first in hop.allowed, hop.target in hop.allowed]
    assert [bool(payi_members(r)) for r in (first, followed)] == expected
    for sent in (first, followed):
        assert "team=search" in sent.headers["baggage"]  # the hop did carry baggage
        if payi_members(sent):
            assert "payi.user_id=alice" in payi_members(sent)


# --- retries ------------------------------------------------------------------------------


SEQUENCES = ["a-retry-then-a-redirect", "a-redirect-then-a-retry"]


@pytest.mark.parametrize("sequence", SEQUENCES)
@pytest.mark.parametrize("client", SDKS)
def test_every_attempt_and_hop_of_an_sdk_call_carries_exactly_what_its_url_allows(
    surface: GenAI,
    port: int,
    client: str,
    sequence: str,
) -> None:
    surface.check_invariant = False  # one span, several attempts and hops: checked below
    dialect = surface.dialect
    surface.reinstrument(
        genai_spans=surface.genai_spans,
        header_dialect=dialect,
        propagate_baggage=True,
        header_hosts=[ALLOWED],
    )
    server = surface.server
    if sequence == "a-retry-then-a-redirect":
        server.fail_next(1)
        server.redirect_next(1, 307, f"http://{OTHER}:{port}")
    else:
        server.redirect_next(1, 307, f"http://{OTHER}:{port}")
        server.fail_next(1)
    with a_users_scope():
        send(client, f"http://{ALLOWED}:{port}", {}, _transport(client, True, None), retries=2)
    sent = server.requests
    assert len(sent) == 3
    assert [int(r.headers["x-stainless-retry-count"]) for r in sent] == (
        [0, 1, 1] if sequence == "a-retry-then-a-redirect" else [0, 0, 1]
    )
    to_allowed = [r for r in sent if r.headers["host"].startswith(ALLOWED)]
    assert to_allowed and attribution_headers(to_allowed[0], dialect)["x-payi-user-id"] == ("alice")
    if surface.genai_spans:
        assert_the_span_is_what_was_sent(surface.otel, to_allowed[0], dialect)
    assert all(pay_i(r) == pay_i(to_allowed[0]) for r in to_allowed)
    assert all(pay_i(r) == {} for r in sent if r not in to_allowed)
    assert all(payi_members(r) == [] and "team=search" in r.headers["baggage"] for r in sent)


# --- the first hop ------------------------------------------------------------------------


def _rewriting(cls: Any, to_host: str, is_async: bool) -> Any:
    """An SDK client class whose own request hook (``_prepare_request``, run after the
    request hook stamped the call) sends the request to ``to_host`` instead."""

    def rewrite(request: Any) -> None:
        request.url = request.url.copy_with(host=to_host)
        request.headers["host"] = to_host

    class Rewriting(cls):  # type: ignore[misc,valid-type]
        def _prepare_request(self, request: Any) -> None:
            rewrite(request)

    class AsyncRewriting(cls):  # type: ignore[misc,valid-type]
        async def _prepare_request(self, request: Any) -> None:
            rewrite(request)

    return AsyncRewriting if is_async else Rewriting


@pytest.mark.parametrize("client", SDKS)
@pytest.mark.parametrize("to_host", ["api.openai.com", "gateway.internal"])
def test_a_first_hop_the_sdk_sends_elsewhere_carries_only_what_its_host_allows(
    instrument: Callable[..., PayiInstrumentor],
    llm_server: FakeLLMServer,
    client: str,
    to_host: str,
) -> None:
    """The request hook decides for the URL the call names; the SDK's own hooks may send the
    request elsewhere after that. The first hop as the HTTP client sends it is held to the
    policy too: a provider's public host gets no attribution header, another host keeps
    them (the transport routes both names to the local server)."""
    instrument(caller_file="<test>", genai_spans=False)
    is_async = client.endswith("-async")
    if client.startswith("openai"):
        base = "http://gateway.internal/v1"
        transport = to_local(llm_server, httpx, is_async)
        http: Any = (httpx.AsyncClient if is_async else httpx.Client)(transport=transport)
        sdk_cls: Any = _rewriting(
            openai.AsyncOpenAI if is_async else openai.OpenAI, to_host, is_async
        )
        body = CHAT
    else:
        base = "http://gateway.internal"
        transport = to_local(llm_server, httpx2, is_async)
        http = (httpx2.AsyncClient if is_async else httpx2.Client)(transport=transport)
        sdk_cls = _rewriting(
            anthropic.AsyncAnthropic if is_async else anthropic.Anthropic, to_host, is_async
        )
        body = MESSAGE
    sdk = sdk_cls(base_url=base, api_key="test", max_retries=0, http_client=http)
    create = sdk.chat.completions.create if client.startswith("openai") else sdk.messages.create
    with track_context(user_id="alice"):
        if is_async:
            asyncio.run(create(**body))
        else:
            create(**body)
    (sent,) = llm_server.requests
    assert sent.headers["host"] == to_host
    expected = {} if to_host == "api.openai.com" else {"x-payi-user-id": "alice"}
    assert {k: v for k, v in pay_i(sent).items() if k == "x-payi-user-id"} == expected
    if to_host == "api.openai.com":
        assert pay_i(sent) == {}


def test_a_base_url_set_by_another_thread_during_a_call_misleads_no_later_call(
    instrument: Callable[..., PayiInstrumentor], llm_server: FakeLLMServer
) -> None:
    """Another thread sets a client's ``base_url`` while a call of it is being read (made
    deterministic: the setting runs as the provider starts reading the call). The call
    itself goes where the SDK sends it, with only what that host allows; and no later call
    - of a copy still on the old base URL, planned (``_core._planned``) from what the racing
    call read - goes with the other base URL's verdict."""
    import sys

    from payi_otel._providers._stainless import StainlessProvider

    instrument(caller_file="<test>", genai_spans=False)
    gateway = httpx.URL("http://gateway.internal/v1/")
    public = httpx.URL("https://api.openai.com/v1/")
    reads = {StainlessProvider.read.__code__, StainlessProvider._read.__code__}
    flips: dict[Any, httpx.URL] = {}

    def other_thread(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code in reads:
            instance = frame.f_locals.get("instance")
            if instance in flips:
                instance.base_url = flips.pop(instance)

    def sdk(base: httpx.URL) -> openai.OpenAI:
        http = httpx.Client(transport=to_local(llm_server, httpx))
        return openai.OpenAI(base_url=base, api_key="test", max_retries=0, http_client=http)

    def racing(client: openai.OpenAI, to: httpx.URL) -> None:
        flips[client] = to
        sys.settrace(other_thread)
        try:
            client.chat.completions.create(**CHAT)
        finally:
            sys.settrace(None)
        assert not flips  # the flip happened

    on_gateway = sdk(gateway)
    copy_on_gateway = on_gateway.with_options(timeout=30)
    on_public = sdk(public)
    copy_on_public = on_public.copy()
    with track_context(user_id="racer"):
        racing(on_gateway, public)
        racing(on_public, gateway)
    with track_context(user_id="bob"):
        for _ in range(2):
            copy_on_gateway.chat.completions.create(**CHAT)
            copy_on_public.chat.completions.create(**CHAT)
    sent = [(r.headers["host"], pay_i(r).get("x-payi-user-id")) for r in llm_server.requests]
    assert sent[0] == ("api.openai.com", None)  # never the racer's id to the public host
    assert sent[1][0] == "gateway.internal"  # (its id: the race's to lose, nothing else)
    assert sent[2:] == [
        ("gateway.internal", "bob"),
        ("api.openai.com", None),
        ("gateway.internal", "bob"),
        ("api.openai.com", None),
    ]

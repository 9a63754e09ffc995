"""A context extracted from a carrier keeps the scopes in force where it is extracted
(``payi_otel._extracted``; README "Where the context travels"): a server's tracing that
attaches the caller's extracted context inside a request scope - FastAPI's own telemetry,
``opentelemetry-instrumentation-asgi`` in spanless mode - no longer drops the request's
attribution (a review found the handler's calls sent with none of it, and nothing said)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Callable

import pytest
from fake_llm_server import FakeLLMServer
from fixtures_otel import Otel
from opentelemetry import baggage, propagate
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import TextMapPropagator
from test_web import _LLM, _ask_async, get, llm_request, serve_uvicorn

from payi_otel import PayiInstrumentor, get_context, track_context
from payi_otel._context import current_effective
from payi_otel._extracted import KeepsScopes
from payi_otel.web import PayiASGIMiddleware

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_only_the_requests_own_carrier_keeps_its_scope_over_the_carriers_baggage(
    instrument: Callable[..., PayiInstrumentor],
) -> None:
    """Inside a request scope, extracting the request's own headers keeps the scope (over the
    baggage they bring, which stays the level below it); extracting another carrier - a
    message a consumer reads, in a task that inherited the scope - keeps what the message
    says (a review found the inherited user billed for every message), as does any
    extraction outside a request scope, or onto a context given."""
    import asyncio

    instrument(propagate_baggage=True, baggage_accept=["user_id", "account_name"])
    request_headers = {"traceparent": TRACEPARENT, "baggage": "payi.account_name=b"}
    message = {"traceparent": TRACEPARENT, "baggage": "payi.user_id=bob"}
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        own = {k.decode(): v.decode() for k, v in scope["headers"]}
        seen["own"] = current_effective(propagate.extract(own)).params
        seen["message"] = current_effective(propagate.extract(message)).params
        seen["onto"] = current_effective(propagate.extract(own, context=Context())).params
        seen["outgoing"] = baggage.get_baggage("payi.user_id", propagate.extract(own))

    headers = [
        (b"x-user-id", b"alice"),
        *((k.encode(), v.encode()) for k, v in request_headers.items()),
    ]
    middleware = PayiASGIMiddleware(app, headers={"X-User-Id": "user_id"})
    asyncio.run(middleware({"type": "http", "headers": headers}, None, None))
    assert seen["own"]["user_id"] == "alice"  # the request scope over the remote baggage
    assert seen["own"]["account_name"] == "b"  # which stays the level below it
    assert seen["outgoing"] == "alice"  # what goes on from there
    assert seen["message"]["user_id"] == "bob"  # another carrier: as it says
    assert "user_id" not in seen["onto"]  # a base given: left alone
    with track_context(user_id="alice"):  # not a request scope: a plain boundary
        assert current_effective(propagate.extract(message)).params["user_id"] == "bob"


def test_uninstrument_puts_the_propagator_back_unless_replaced(
    instrument: Callable[..., PayiInstrumentor],
) -> None:
    before = propagate.get_global_textmap()
    instrumentor = instrument()
    ours = propagate.get_global_textmap()
    assert isinstance(ours, KeepsScopes) and ours.inner is before
    assert ours.fields == before.fields
    instrumentor.uninstrument()
    assert propagate.get_global_textmap() is before
    instrument()
    mine: TextMapPropagator = KeepsScopes(before)  # stands for the program's own
    propagate.set_global_textmap(mine)
    try:
        instrumentor.uninstrument()
        assert propagate.get_global_textmap() is mine
    finally:
        propagate.set_global_textmap(before)


# --- servers whose tracing attaches the extracted context --------------------------------------


def _fastapi(otel: Otel) -> Any:
    from fastapi import FastAPI

    app = FastAPI(telemetry={"tracer_provider": otel.provider})  # its own server spans

    @app.get("/chat/{topic}")
    async def chat(topic: str) -> dict[str, Any]:
        await _ask_async(topic)
        return dict(get_context())

    return app


def wrapped_outside(otel: Otel) -> Any:
    return PayiASGIMiddleware(_fastapi(otel), headers={"X-User-Id": "user_id"}, route_step=True)


def mounted(otel: Otel) -> Any:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    parent = Starlette(routes=[Mount("/api", app=_fastapi(otel))])
    parent.add_middleware(PayiASGIMiddleware, headers={"X-User-Id": "user_id"}, route_step=True)
    return parent


def otel_asgi_inside(otel: Otel) -> Any:
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def chat(request: Any) -> Any:
        await _ask_async(request.path_params["topic"])
        return JSONResponse(dict(get_context()))

    app = Starlette(routes=[Route("/chat/{topic}", chat)])
    inner = OpenTelemetryMiddleware(app, tracer_provider=otel.provider)
    return PayiASGIMiddleware(inner, headers={"X-User-Id": "user_id"})


@pytest.fixture
def served(request: pytest.FixtureRequest, otel: Otel, fake_llm: FakeLLMServer) -> Iterator[str]:
    _LLM["url"] = fake_llm.openai_base_url
    server = serve_uvicorn(request.param(otel))
    yield server.url
    server.stop()


@pytest.mark.parametrize(
    ("served", "path", "spans"),
    [
        (wrapped_outside, "/chat/outside", True),
        (mounted, "/api/chat/mounted", True),
        (otel_asgi_inside, "/chat/spanless", False),
        (otel_asgi_inside, "/chat/spans", True),
    ],
    indirect=["served"],
    ids=["fastapi-wrapped-outside", "fastapi-mounted", "otel-asgi-spanless", "otel-asgi"],
)
def test_the_request_scope_reaches_the_handler_whatever_the_servers_tracing_attaches(
    served: str,
    path: str,
    spans: bool,
    llm_server: FakeLLMServer,
    instrument: Callable[..., PayiInstrumentor],
) -> None:
    instrument({"use_case_name": "web_app"}, scope_spans=spans)
    for suffix, trace_headers in TRACE_HEADERS.items():
        headers = {"X-User-Id": "alice", **trace_headers}
        status, body = get(served + path + suffix, headers)
        assert status == 200 and '"user_id":"alice"' in body, suffix
        topic = path.rsplit("/", 1)[1] + suffix
        assert llm_request(llm_server, topic).headers["x-payi-user-id"] == "alice", suffix


#: Trace headers a request may carry (each under its own path suffix). A UTF-8 byte in
#: ``baggage`` or ``tracestate`` is read as UTF-8 by the request scope and as Latin-1 by the
#: server's tracing: the request lost its scope (a review). (urllib sends a text's Latin-1
#: bytes: these are UTF-8 ones.)
TRACE_HEADERS = {
    "": {"traceparent": TRACEPARENT},
    "-none": {},
    "-utf8-baggage": {"baggage": "k=café".encode().decode("latin-1")},
    "-utf8-tracestate": {
        "traceparent": TRACEPARENT,
        "tracestate": "v=ü".encode().decode("latin-1"),
    },
    "-backslash": {"traceparent": TRACEPARENT, "tracestate": "v=a\\x41\\u00e9"},
}

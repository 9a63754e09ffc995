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


def test_a_fresh_extraction_keeps_the_scopes_over_its_baggage(
    instrument: Callable[..., PayiInstrumentor],
) -> None:
    instrument(propagate_baggage=True, baggage_accept=["user_id", "account_name"])
    carrier = {"traceparent": TRACEPARENT, "baggage": "payi.user_id=bob,payi.account_name=b"}
    outside = propagate.extract(carrier)
    assert current_effective(outside).params["user_id"] == "bob"  # no scope: as extracted
    with track_context(user_id="alice"):
        inside = propagate.extract(carrier)
        onto = propagate.extract(carrier, context=Context())
    params = current_effective(inside).params
    assert params["user_id"] == "alice"  # the scope over the remote baggage
    assert params["account_name"] == "b"  # which stays the level below it
    assert baggage.get_baggage("payi.user_id", inside) == "alice"  # what goes on from here
    assert current_effective(onto).params["user_id"] == "bob"  # a base given: left alone


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
    status, body = get(served + path, {"X-User-Id": "alice", "traceparent": TRACEPARENT})
    assert status == 200 and '"user_id":"alice"' in body
    topic = path.rsplit("/", 1)[1]
    assert llm_request(llm_server, topic).headers["x-payi-user-id"] == "alice"

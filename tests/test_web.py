"""Web services (README "Web services"): one scope per incoming request, from a declared
mapping, on a real FastAPI (Starlette) app under uvicorn and a real Flask app under werkzeug,
both on 127.0.0.1 behind the OpenTelemetry ASGI / WSGI middleware; every request's LLM calls
(to the fake LLM server) carry exactly its own user, concurrent requests through one worker."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional

import openai
import pytest
from fake_llm_server import FakeLLMServer, RecordedRequest
from fastapi import WebSocket  # at module level: FastAPI reads the handler's annotations here
from fixtures_otel import Otel
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from payi_otel import PayiInstrumentor, get_context, track_context
from payi_otel._model.codec import parse_value
from payi_otel._model.parameters import REGISTRY
from payi_otel.web import PayiASGIMiddleware, PayiWSGIMiddleware, RequestMapping

HEADER = {p.name: p.header for p in REGISTRY}
ATTRIBUTE = {p.name: p.attribute for p in REGISTRY}
MAPPING = {"X-User-Id": "user_id", "X-Version": "use_case_version", "X-Tags": "request_tags"}


# --- the apps ----------------------------------------------------------------------------------

_LLM: dict[str, str] = {}  # the fake server's base URL, set by the module fixture


def _ask_sync(text: str) -> str:
    client = openai.OpenAI(base_url=_LLM["url"], api_key="test", max_retries=0)
    reply = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": text}]
    )
    return reply.choices[0].message.content or ""


async def _ask_async(text: str) -> str:
    client = openai.AsyncOpenAI(base_url=_LLM["url"], api_key="test", max_retries=0)
    reply = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": text}]
    )
    return reply.choices[0].message.content or ""


def _principal(request: Any) -> Optional[dict[str, object]]:
    """The 'authenticated principal': a bearer token naming the account (ASGI scope or WSGI
    environ)."""
    if isinstance(request, dict) and "headers" in request and "type" in request:
        headers = {k.decode(): v.decode() for k, v in request["headers"]}
        auth = headers.get("authorization", "")
    else:
        auth = request.get("HTTP_AUTHORIZATION", "")
    if auth == "Bearer boom":
        raise RuntimeError("the app's own bug")
    return {"account_name": auth[len("Bearer ") :]} if auth.startswith("Bearer ") else None


def fastapi_app() -> Any:
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    app = FastAPI()

    @app.get("/chat/{topic}")
    async def chat(topic: str) -> dict[str, Any]:
        reply = await _ask_async(topic)
        return {"reply": reply, "context": dict(get_context())}

    @app.get("/sync/{topic}")
    def sync_chat(topic: str) -> dict[str, Any]:  # runs in Starlette's thread pool
        return {"reply": _ask_sync(topic), "context": dict(get_context())}

    @app.get("/stream/{topic}")
    async def stream(topic: str) -> StreamingResponse:
        async def body() -> Any:
            yield "start;"
            await asyncio.sleep(0.01)  # the handler has returned: the body is still in scope
            yield await _ask_async(topic)

        return StreamingResponse(body(), media_type="text/plain")

    @app.get("/inner/{topic}")
    async def inner(topic: str) -> dict[str, Any]:
        with track_context(user_id="handler-user"):  # the handler's own scope wins
            return {"reply": await _ask_async(topic)}

    app.add_middleware(PayiASGIMiddleware, headers=MAPPING, route_step=True, params=_principal)
    return OpenTelemetryMiddleware(app)  # the server span, around everything


def flask_app() -> Any:
    from flask import Flask, Response, jsonify
    from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

    app = Flask(__name__)

    @app.get("/chat/<topic>")
    def chat(topic: str) -> Any:
        return jsonify(reply=_ask_sync(topic), context=dict(get_context()))

    @app.get("/stream/<topic>")
    def stream(topic: str) -> Any:
        def body() -> Iterator[str]:
            yield "start;"
            yield _ask_sync(topic)  # produced after the view returned

        return Response(body(), mimetype="text/plain")

    @app.get("/inner/<topic>")
    def inner(topic: str) -> Any:
        with track_context(user_id="handler-user"):
            return jsonify(reply=_ask_sync(topic))

    app.wsgi_app = PayiWSGIMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, headers=MAPPING, route_step=True, params=_principal
    )
    app.wsgi_app = OpenTelemetryMiddleware(app.wsgi_app)  # type: ignore[method-assign]
    return app


# --- the servers -------------------------------------------------------------------------------


class Served:
    def __init__(self, url: str, stop: Callable[[], None]) -> None:
        self.url = url
        self.stop = stop


def serve_uvicorn(app: Any) -> Served:
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", lifespan="off", workers=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)

    def stop() -> None:
        server.should_exit = True
        thread.join(10)
        sock.close()

    return Served(f"http://127.0.0.1:{sock.getsockname()[1]}", stop)


def serve_werkzeug(app: Any) -> Served:
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        thread.join(10)
        server.server_close()

    return Served(f"http://127.0.0.1:{server.server_port}", stop)


SERVERS = {
    "fastapi-uvicorn": (fastapi_app, serve_uvicorn),
    "flask-werkzeug": (flask_app, serve_werkzeug),
}


@pytest.fixture(scope="module", params=sorted(SERVERS))
def web(request: pytest.FixtureRequest, fake_llm: FakeLLMServer) -> Iterator[Served]:
    _LLM["url"] = fake_llm.openai_base_url
    make_app, serve = SERVERS[request.param]
    served = serve(make_app())
    served.kind = request.param  # type: ignore[attr-defined]
    yield served
    served.stop()


def get(url: str, headers: Optional[dict[str, str]] = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, response.read().decode()


def llm_request(server: FakeLLMServer, text: str) -> RecordedRequest:
    found = [
        r
        for r in server.requests
        if r.path.endswith("/chat/completions") and r.body["messages"][-1]["content"] == text
    ]
    assert len(found) == 1, (text, len(found))
    return found[0]


def settled(otel: Otel, requests: int) -> None:
    """Wait for the requests' server spans to end: the client has its response once the
    body is sent, a moment before the server's middleware returns."""
    deadline = time.monotonic() + 10
    while (
        len([s for s in otel.spans() if s.kind is SpanKind.SERVER]) < requests
        or len([s for s in otel.spans() if s.instrumentation_scope.name == "payi_otel"]) < requests
    ):
        assert time.monotonic() < deadline, [s.name for s in otel.spans()]
        time.sleep(0.01)


def ancestors(otel: Otel, span: ReadableSpan) -> list[ReadableSpan]:
    by_id = {s.context.span_id: s for s in otel.spans() if s.context is not None}
    chain = []
    parent = span.parent
    while parent is not None and parent.span_id in by_id:
        found = by_id[parent.span_id]
        chain.append(found)
        parent = found.parent
    return chain


def route(kind: str, path: str) -> str:
    """The route template as each framework writes it."""
    return path if kind.startswith("fastapi") else path.replace("{topic}", "<topic>")


# --- tests ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["chat", "sync", "stream"])
def test_concurrent_requests_each_carry_their_own_user(
    web: Served,
    llm_server: FakeLLMServer,
    instrument: Callable[..., PayiInstrumentor],
    otel: Otel,
    path: str,
) -> None:
    if path == "sync" and web.kind.startswith("flask"):  # type: ignore[attr-defined]
        pytest.skip("Flask views are all sync: covered by 'chat'")
    instrument({"use_case_name": "web_app"})
    llm_server.latency = 0.02  # the requests overlap in the one worker
    try:
        jobs = [(f"user-{n % 5}", f"{path}-topic-{n}") for n in range(16)]
        with ThreadPoolExecutor(8) as pool:
            results = list(
                pool.map(lambda job: get(f"{web.url}/{path}/{job[1]}", {"X-User-Id": job[0]}), jobs)
            )
    finally:
        llm_server.latency = 0.0
    assert all(status == 200 for status, _ in results)
    for (user, topic), (_, body) in zip(jobs, results):
        assert topic in body
        sent = llm_request(llm_server, topic)
        assert sent.headers[HEADER["user_id"]] == user
        assert sent.headers[HEADER["use_case_step"]] == route(web.kind, f"/{path}/{{topic}}")  # type: ignore[attr-defined]
    # Every GenAI span: its request's user, under its request's scope span, under the server
    # span; each scope span lasted until its body ended (the stream's call is inside it).
    settled(otel, len(jobs))
    chats = [s for s in otel.all_genai_spans() if s.name.startswith("chat")]
    assert len(chats) == len(jobs)
    users = {s.attributes[ATTRIBUTE["user_id"]] for s in chats}
    assert users == {user for user, _ in jobs}
    for span in chats:
        chain = ancestors(otel, span)
        scopes = [s for s in chain if s.instrumentation_scope.name == "payi_otel"]
        assert scopes
        scope = scopes[0]
        assert scope.name == route(web.kind, f"/{path}/{{topic}}")  # type: ignore[attr-defined]
        assert scope.attributes[ATTRIBUTE["user_id"]] == span.attributes[ATTRIBUTE["user_id"]]
        assert scope.start_time <= span.start_time and span.end_time <= scope.end_time
        server = chain[chain.index(scope) + 1 :]
        assert any(s.kind is SpanKind.SERVER for s in server), [s.name for s in chain]


def test_principal_and_baggage_precedence(
    web: Served, llm_server: FakeLLMServer, instrument: Callable[..., PayiInstrumentor]
) -> None:
    """global < incoming baggage < the request scope (headers, route, the principal
    callable) < the handler's own scopes < per-call headers."""
    instrument({"use_case_name": "web_app", "account_name": "global-acct"}, propagate_baggage=True)
    baggage = "payi.user_id=bag-user,payi.request_tags=from-baggage,payi.account_name=bag-acct"
    headers = {"X-User-Id": "hdr-user", "baggage": baggage, "Authorization": "Bearer acct-1"}
    status, _ = get(f"{web.url}/chat/precedence", headers)
    assert status == 200
    sent = llm_request(llm_server, "precedence").headers
    assert sent[HEADER["user_id"]] == "hdr-user"  # the header over baggage
    assert sent[HEADER["account_name"]] == "acct-1"  # the principal over baggage
    assert sent[HEADER["request_tags"]] == "from-baggage"  # what the request did not set
    get(f"{web.url}/inner/handler", {"X-User-Id": "hdr-user", "baggage": baggage})
    assert llm_request(llm_server, "handler").headers[HEADER["user_id"]] == "handler-user"


def test_bad_values_are_one_log_line_and_the_request_goes_on(
    web: Served,
    llm_server: FakeLLMServer,
    instrument: Callable[..., PayiInstrumentor],
    caplog: pytest.LogCaptureFixture,
) -> None:
    instrument({"use_case_name": "web_app", "use_case_version": 3})
    bad = {"X-User-Id": "ok-user", "X-Version": "three", "Authorization": "Bearer boom"}
    with pytest.raises(ValueError):  # the registry's own verdict on the value
        parse_value("use_case_version", "three", what="x")
    with caplog.at_level(logging.DEBUG, logger="payi_otel"):
        status, _ = get(f"{web.url}/chat/badvalue", bad)
        assert status == 200
        status, _ = get(f"{web.url}/chat/badvalue2", bad)
        assert status == 200
    sent = llm_request(llm_server, "badvalue").headers
    assert sent[HEADER["user_id"]] == "ok-user"  # the good value is taken
    assert sent[HEADER["use_case_version"]] == "3"  # the bad one is not: the global's
    assert HEADER["account_name"] not in sent  # the callable raised: nothing from it
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    version_lines = [r for r in warnings if "x-version" in r.getMessage()]
    assert len(version_lines) == 1, [r.getMessage() for r in warnings]
    assert len([r for r in warnings if "params callable" in r.getMessage()]) == 1


def test_repeated_or_empty_headers_set_nothing(
    web: Served, llm_server: FakeLLMServer, instrument: Callable[..., PayiInstrumentor]
) -> None:
    instrument({"use_case_name": "web_app", "user_id": "global-user"})
    get(f"{web.url}/chat/emptyheader", {"X-User-Id": " "})
    assert llm_request(llm_server, "emptyheader").headers[HEADER["user_id"]] == "global-user"
    get(f"{web.url}/chat/tags", {"X-Tags": "a, b,,c"})
    assert llm_request(llm_server, "tags").headers[HEADER["request_tags"]] == "a,b,c"


def test_mapping_is_checked_when_made() -> None:
    with pytest.raises(ValueError, match="'userid'"):
        RequestMapping({"X-User-Id": "userid"})
    with pytest.raises(TypeError, match="params must be callable"):
        PayiASGIMiddleware(object(), params="nope")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="route_step"):
        PayiWSGIMiddleware(object(), route_step="yes")  # type: ignore[arg-type]
    assert not RequestMapping()


def plain_apps() -> dict[str, Callable[[], Any]]:
    """The same routes with no middleware at all: the zero-code hooks open the scopes."""
    from fastapi import FastAPI
    from flask import Flask, jsonify

    def fastapi_plain() -> Any:
        app = FastAPI()

        @app.get("/zc/{topic}")
        async def chat(topic: str) -> dict[str, Any]:
            return {"reply": await _ask_async(topic)}

        return app

    def flask_plain() -> Any:
        app = Flask(__name__)

        @app.get("/zc/<topic>")
        def chat(topic: str) -> Any:
            return jsonify(reply=_ask_sync(topic))

        return app

    return {"fastapi-uvicorn": fastapi_plain, "flask-werkzeug": flask_plain}


@pytest.mark.parametrize("kind", sorted(SERVERS))
def test_zero_code_from_variables(
    kind: str,
    llm_server: FakeLLMServer,
    instrument: Callable[..., PayiInstrumentor],
    otel: Otel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _LLM["url"] = llm_server.openai_base_url
    instrumentor = instrument({"use_case_name": "web_app"})
    instrumentor.uninstrument()
    monkeypatch.setenv("PAYI_WEB_HEADERS", "X-User-Id=user_id, X-Account=account_name")
    monkeypatch.setenv("PAYI_WEB_ROUTE_STEP", "true")
    instrument({"use_case_name": "web_app"})
    served = SERVERS[kind][1](plain_apps()[kind]())
    try:
        with ThreadPoolExecutor(4) as pool:
            list(
                pool.map(
                    lambda n: get(f"{served.url}/zc/zc-{n}", {"X-User-Id": f"zc-user-{n}"}),
                    range(8),
                )
            )
        get(f"{served.url}/zc/zc-acct", {"X-Account": "acme"})
    finally:
        served.stop()
    for n in range(8):
        sent = llm_request(llm_server, f"zc-{n}").headers
        assert sent[HEADER["user_id"]] == f"zc-user-{n}"
        assert sent[HEADER["use_case_step"]] == route(kind, "/zc/{topic}")
    assert llm_request(llm_server, "zc-acct").headers[HEADER["account_name"]] == "acme"
    # Instrumented again without the variables: the hooks are gone.
    instrumentor.uninstrument()
    monkeypatch.delenv("PAYI_WEB_HEADERS")
    monkeypatch.delenv("PAYI_WEB_ROUTE_STEP")
    instrument({"use_case_name": "web_app"})
    served = SERVERS[kind][1](plain_apps()[kind]())
    try:
        get(f"{served.url}/zc/zc-after", {"X-User-Id": "nobody"})
    finally:
        served.stop()
    after = llm_request(llm_server, "zc-after").headers
    assert HEADER["use_case_name"] in after  # instrumented ...
    assert HEADER["user_id"] not in after  # ... with no request scope


def test_bad_zero_code_variable_is_one_error_under_the_loader(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from payi_otel import _settings

    environ = {"PAYI_WEB_HEADERS": "X-User-Id=userid"}
    with pytest.raises(ValueError, match="PAYI_WEB_HEADERS"):
        _settings.build({}, environ=environ)
    assert _settings.build({}, environ=environ, lenient=True).web_headers == ()


# --- WebSocket: one scope per connection ---------------------------------------------------------


def websocket_app() -> Any:
    from fastapi import FastAPI
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    app = FastAPI()

    @app.websocket("/ws/{room}")
    async def talk(websocket: WebSocket, room: str) -> None:
        await websocket.accept()
        async for text in websocket.iter_text():
            await websocket.send_text(await _ask_async(text))

    app.add_middleware(PayiASGIMiddleware, headers=MAPPING, route_step=True)
    return OpenTelemetryMiddleware(app)


def test_each_websocket_connection_carries_its_own_user(
    fake_llm: FakeLLMServer, llm_server: FakeLLMServer, instrument: Callable[..., PayiInstrumentor]
) -> None:
    """A WebSocket connection is one ASGI request: every call made while serving its
    messages carries that connection's user and route, with connections open at once."""
    from websockets.sync.client import connect

    instrument({"use_case_name": "web_app"})
    _LLM["url"] = fake_llm.openai_base_url
    served = serve_uvicorn(websocket_app())
    llm_server.latency = 0.02  # the connections' calls overlap in the one worker
    try:

        def converse(user: str) -> list[str]:
            url = served.url.replace("http://", "ws://") + f"/ws/{user}-room"
            with connect(url, additional_headers={"X-User-Id": user}, open_timeout=10) as ws:
                replies = []
                for n in range(3):
                    ws.send(f"{user}-message-{n}")
                    replies.append(str(ws.recv(timeout=30)))
                return replies

        users = [f"ws-user-{n}" for n in range(4)]
        with ThreadPoolExecutor(4) as pool:
            replies = list(pool.map(converse, users))
    finally:
        llm_server.latency = 0.0
        served.stop()
    for user, answers in zip(users, replies):
        assert answers == [f"echo: {user}-message-{n}" for n in range(3)]
        for n in range(3):
            sent = llm_request(llm_server, f"{user}-message-{n}")
            assert sent.headers[HEADER["user_id"]] == user
            assert sent.headers[HEADER["use_case_step"]] == "/ws/{room}"

"""The web middlewares at the edges a review found (README "Web services"), each driven
through the real ASGI / WSGI protocol with a real openai client calling the fake server:
work done when a WSGI response is closed, the response's length and file bodies, the route
template found below middlewares that keep no ``.app``, and a route reader that fails."""

from __future__ import annotations

import asyncio
import io
import logging
import sys
from collections.abc import Iterator
from typing import Any, Callable, Optional
from wsgiref.util import FileWrapper

import openai
import pytest
from fake_llm_server import FakeLLMServer
from werkzeug.test import EnvironBuilder

from payi_otel import PayiInstrumentor, get_context
from payi_otel.web import PayiASGIMiddleware, PayiWSGIMiddleware

USER = {"X-User-Id": "user_id"}


def ask(server: FakeLLMServer, text: str) -> None:
    client = openai.OpenAI(base_url=server.openai_base_url, api_key="t", max_retries=0)
    client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": text}]
    )


def sent(server: FakeLLMServer, text: str) -> dict[str, str]:
    [request] = [r for r in server.requests if r.body["messages"][-1]["content"] == text]
    return {k: v for k, v in request.headers.items() if k.startswith("x-payi-")}


def wsgi(app: Any, path: str = "/chat/t", user: str = "alice") -> tuple[Any, list[Any]]:
    """``app`` called as a WSGI server would: its body and the status / headers it started."""
    started: list[Any] = []
    environ = EnvironBuilder(path=path, headers={"X-User-Id": user}).get_environ()
    body = app(environ, lambda status, headers, exc_info=None: started.append((status, headers)))
    return body, started


@pytest.fixture
def payi(instrument: Callable[..., PayiInstrumentor]) -> PayiInstrumentor:
    return instrument({"use_case_name": "web_app"})


# --- WSGI: the response's close, its length, file bodies ---------------------------------------


def test_work_done_when_the_response_is_closed_is_the_requests(
    payi: PayiInstrumentor, llm_server: FakeLLMServer
) -> None:
    """Flask's ``response.call_on_close`` runs when the server closes the body, after it is
    exhausted: its calls are the request's (they went out with none of its attribution)."""
    from flask import Flask, jsonify

    app = Flask(__name__)

    @app.get("/chat/<topic>")
    def chat(topic: str) -> Any:
        ask(llm_server, f"{topic}-view")
        response = jsonify(ok=True)
        response.call_on_close(lambda: ask(llm_server, f"{topic}-closed"))
        return response

    app.wsgi_app = PayiWSGIMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, headers=USER, route_step=True
    )
    body, _ = wsgi(app)
    assert b"".join(body) == b'{"ok":true}\n'
    assert "user_id" not in get_context()  # nothing of the request left in force here
    body.close()
    assert sent(llm_server, "t-closed") == sent(llm_server, "t-view")
    assert sent(llm_server, "t-closed")["x-payi-user-id"] == "alice"
    assert sent(llm_server, "t-closed")["x-payi-use-case-step"] == "/chat/<topic>"


def test_work_done_when_a_failed_response_is_closed_is_the_requests(
    payi: PayiInstrumentor, llm_server: FakeLLMServer, otel: Any
) -> None:
    """A streamed body that raised is still closed by the server: its close-time work is the
    request's, and the request's scope ends with the body's error (a review found it run
    in no scope)."""
    from flask import Flask, Response

    app = Flask(__name__)

    @app.get("/stream/<topic>")
    def stream(topic: str) -> Any:
        def body() -> Iterator[str]:
            yield "a"
            raise RuntimeError("stream broke")

        response = Response(body())
        response.call_on_close(lambda: ask(llm_server, f"{topic}-closed"))
        return response

    app.wsgi_app = PayiWSGIMiddleware(app.wsgi_app, headers=USER)  # type: ignore[method-assign]
    body, _ = wsgi(app, path="/stream/t")
    assert next(body) == b"a"
    with pytest.raises(RuntimeError, match="stream broke"):
        next(body)
    assert "user_id" not in get_context()
    body.close()
    assert sent(llm_server, "t-closed")["x-payi-user-id"] == "alice"
    [scope_span] = [s for s in otel.exporter.get_finished_spans() if s.name.startswith("payi")]
    assert not scope_span.status.is_ok  # ended with the body's error


def test_a_body_keeps_its_length_and_a_file_goes_out_as_it_is(
    payi: PayiInstrumentor, llm_server: FakeLLMServer
) -> None:
    def one_item(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [])
        return [b"hello"]

    body, _ = wsgi(PayiWSGIMiddleware(one_item, headers=USER))
    assert len(body) == 1  # so a server sets Content-Length (wsgiref does)
    body.close()

    def generated(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [])
        yield b"x"

    body, _ = wsgi(PayiWSGIMiddleware(generated, headers=USER))
    assert not hasattr(body, "__len__")  # waitress calls len() on a body that has it: a 500
    body.close()

    def a_file(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](io.BytesIO(b"file"))

    started: list[Any] = []
    environ = EnvironBuilder(path="/f", headers={"X-User-Id": "alice"}).get_environ()
    environ["wsgi.file_wrapper"] = FileWrapper
    body = PayiWSGIMiddleware(a_file, headers=USER)(environ, lambda *a: started.append(a))
    assert type(body) is FileWrapper  # the server may send it with sendfile
    assert "user_id" not in get_context()


# --- the route template -----------------------------------------------------------------------


def _starlette(llm_server: FakeLLMServer) -> Any:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    def chat(request: Any) -> Any:
        ask(llm_server, request.path_params["topic"])
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/chat/{topic}", chat)])


async def asgi(
    app: Any, path: str, user: str = "alice", more: tuple[tuple[bytes, bytes], ...] = ()
) -> list[Any]:
    """``app`` called as an ASGI server would, for a GET of ``path``; what it sent."""
    messages: list[Any] = []

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"x-user-id", user.encode()), *more],
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1),
    }
    await app(scope, receive, send)
    return messages


def test_the_route_is_found_below_a_middleware_that_keeps_no_app(
    payi: PayiInstrumentor, llm_server: FakeLLMServer
) -> None:
    """A function middleware (``add_middleware`` takes a factory) hides the router from the
    ``.app`` chain: the route is read from the Starlette app the request is in."""

    def timing(app: Any) -> Any:
        async def inner(scope: Any, receive: Any, send: Any) -> None:
            await app(scope, receive, send)

        return inner

    app = _starlette(llm_server)
    app.add_middleware(timing)
    app.add_middleware(PayiASGIMiddleware, headers=USER, route_step=True)
    asyncio.run(asgi(app, "/chat/fn"))
    assert sent(llm_server, "fn")["x-payi-use-case-step"] == "/chat/{topic}"


@pytest.mark.parametrize("wrapper", ["proxyfix", "otel-wsgi"])
def test_the_url_map_is_found_below_wsgi_middlewares(
    payi: PayiInstrumentor, llm_server: FakeLLMServer, wrapper: str
) -> None:
    from flask import Flask

    app = Flask(__name__)

    @app.get("/chat/<topic>")
    def chat(topic: str) -> Any:
        ask(llm_server, topic)
        return "ok"

    if wrapper == "proxyfix":
        from werkzeug.middleware.proxy_fix import ProxyFix

        inner: Any = ProxyFix(app.wsgi_app)
    else:
        from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

        inner = OpenTelemetryMiddleware(app.wsgi_app)
    body, _ = wsgi(PayiWSGIMiddleware(inner, headers=USER, route_step=True), f"/chat/{wrapper}")
    b"".join(body)
    body.close()
    assert sent(llm_server, wrapper)["x-payi-use-case-step"] == "/chat/<topic>"


def test_no_router_found_is_one_warning_and_a_failing_one_never_fails_the_request(
    payi: PayiInstrumentor,
    llm_server: FakeLLMServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[Optional[str]] = []

    class Other:  # another framework's app, with routes of its own kind
        def __init__(self) -> None:
            self.routes = [object()]

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            calls.append(get_context().get("user_id"))  # type: ignore[arg-type]
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

    monkeypatch.setitem(sys.modules, "starlette.routing", None)  # not installed
    answered = asyncio.run(asgi(PayiASGIMiddleware(Other(), headers=USER, route_step=True), "/x"))
    assert answered[0]["status"] == 200 and calls == ["alice"]

    async def bare(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})

    with caplog.at_level(logging.WARNING, "payi_otel"):
        for _ in range(2):
            asyncio.run(asgi(PayiASGIMiddleware(bare, headers=USER, route_step=True), "/y"))
    assert caplog.text.count("finds no Starlette / FastAPI router") == 1


def test_payi_baggage_nobody_extracted_is_one_warning(
    instrument: Callable[..., PayiInstrumentor],
    llm_server: FakeLLMServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With baggage on, the middleware reads incoming ``payi.*`` baggage from the context a
    server instrumentation extracted; without one around it, nothing reads it (a review found
    it silent): one WARNING says where to put it. With OpenTelemetry's ASGI middleware
    around it, the baggage is read and nothing is said."""
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    instrument(propagate_baggage=True, baggage_accept=["account_name"])
    app = _starlette(llm_server)
    bare = PayiASGIMiddleware(app, headers=USER)
    wrapped = OpenTelemetryMiddleware(PayiASGIMiddleware(app, headers=USER))

    def call(target: Any, topic: str) -> None:
        asyncio.run(asgi(target, f"/chat/{topic}", more=((b"baggage", b"payi.account_name=bag"),)))

    with caplog.at_level(logging.WARNING, "payi_otel"):
        call(wrapped, "around")
        assert "no server instrumentation extracted it" not in caplog.text
        for topic in ("bare1", "bare2"):
            call(bare, topic)
    assert caplog.text.count("no server instrumentation extracted it") == 1
    assert sent(llm_server, "around")["x-payi-account-name"] == "bag"
    assert "x-payi-account-name" not in sent(llm_server, "bare1")

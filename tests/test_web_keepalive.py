"""A request never runs in another request's scope (README "Web services"; a review).

An asyncio server can start a request's task in the context of an earlier request on the same
keep-alive connection: uvicorn pauses reading after a body over 64 KiB, or while requests are
pipelined, and resumes it from inside the request's task, whose context the socket's reader
then keeps (CPython gh-140947, uvicorn's opt-in ``reset_contextvars``). Every later request
on that connection - a reverse proxy's upstream connection serves many users - started inside
the earlier request's Pay-i scope: its calls billed to the earlier user, or with the earlier
tenant under a new user. Here on a real FastAPI app under uvicorn on 127.0.0.1, and by the
middlewares themselves (ASGI and WSGI) called in a context another request's scope leaked to.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any, Callable, Optional

import openai
import pytest
from fake_llm_server import FakeLLMServer
from fastapi import Request  # at module level: FastAPI reads the handler's annotations here
from opentelemetry import context as otel_context
from test_web import serve_uvicorn

from payi_otel import PayiInstrumentor, get_context
from payi_otel.web import PayiASGIMiddleware, PayiWSGIMiddleware

HEADERS = {"X-User-Id": "user_id", "X-Tenant": "account_name"}


@pytest.fixture
def payi(instrument: Callable[..., PayiInstrumentor]) -> PayiInstrumentor:
    return instrument({"use_case_name": "web_app"})


def _calls(server: FakeLLMServer) -> dict[str, tuple[Optional[str], Optional[str]]]:
    """Each LLM call's text -> the user and account it was sent with."""
    return {
        r.body["messages"][-1]["content"]: (
            r.headers.get("x-payi-user-id"),
            r.headers.get("x-payi-account-name"),
        )
        for r in server.requests
        if r.path.endswith("/chat/completions")
    }


# --- uvicorn, one keep-alive connection --------------------------------------------------------


@pytest.fixture
def served(payi: PayiInstrumentor, llm_server: FakeLLMServer) -> Iterator[int]:
    from fastapi import FastAPI

    client = openai.AsyncOpenAI(base_url=llm_server.openai_base_url, api_key="t", max_retries=0)
    app = FastAPI()

    @app.post("/chat/{text}")
    async def chat(text: str, request: Request) -> dict[str, Any]:
        await request.body()  # a large one: uvicorn resumes reading from this task
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": text}]
        )
        return dict(get_context())

    app.add_middleware(PayiASGIMiddleware, headers=HEADERS)
    server = serve_uvicorn(app)
    yield int(server.url.rsplit(":", 1)[1])
    server.stop()


def _request(text: str, headers: dict[str, str], size: int = 2) -> bytes:
    head = f"POST /chat/{text} HTTP/1.1\r\nHost: app\r\nContent-Length: {size}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (head + "\r\n").encode() + b"x" * size


def _responses(conn: socket.socket, count: int) -> list[bytes]:
    buffer, bodies = b"", []
    while len(bodies) < count:
        chunk = conn.recv(65536)
        assert chunk, "the server closed the connection"
        buffer += chunk
        while b"\r\n\r\n" in buffer:
            head, rest = buffer.split(b"\r\n\r\n", 1)
            [length] = [
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ]
            if len(rest) < length:
                break
            bodies.append(rest[:length])
            buffer = rest[length:]
    return bodies


@pytest.mark.parametrize("how", ["large body", "pipelined"])
def test_a_request_on_a_kept_alive_connection_is_never_in_the_last_ones_scope(
    served: int, llm_server: FakeLLMServer, how: str
) -> None:
    alice = {"X-User-Id": "alice", "X-Tenant": "acme"}
    with socket.create_connection(("127.0.0.1", served), timeout=30) as conn:
        if how == "large body":
            conn.sendall(_request("alice", alice, size=200_000))
            _responses(conn, 1)
        else:
            conn.sendall(_request("alice", alice) + _request("anonymous-pipelined", {}))
            _responses(conn, 2)
        for text, headers in [("bob", {"X-User-Id": "bob"}), ("anonymous", {})]:
            conn.sendall(_request(text, headers))
            _responses(conn, 1)
    calls = _calls(llm_server)
    assert calls["alice"] == ("alice", "acme")
    assert calls["bob"] == ("bob", None)  # not alice's tenant
    assert calls["anonymous"] == (None, None)  # not billed to alice
    if how == "pipelined":
        assert calls["anonymous-pipelined"] == (None, None)


# --- the middlewares, called where another request's scope leaked ------------------------------


def _leaked(middleware: Any, call: Callable[[Any], Any]) -> Any:
    """``call(middleware)`` in the context alice's request had inside its scope (as a server
    that resumed reading there hands to the next request's task)."""
    inside: list[otel_context.Context] = []
    entered = middleware.mapping.enter(
        [("x-user-id", "alice"), ("x-tenant", "acme")], None, {"type": "http"}
    )
    entered.attach()
    inside.append(otel_context.get_current())
    entered.restore()
    entered.end(None)
    token = otel_context.attach(inside[0])
    try:
        return call(middleware)
    finally:
        otel_context.detach(token)


def _asgi_app(seen: list[dict[str, Any]]) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(dict(get_context()))

    return app


@pytest.mark.parametrize("headers", [{}, {"x-user-id": "bob"}], ids=["anonymous", "bob"])
def test_the_asgi_middleware_leaves_another_requests_scope(
    payi: PayiInstrumentor, headers: dict[str, str]
) -> None:
    seen: list[dict[str, Any]] = []
    middleware = PayiASGIMiddleware(_asgi_app(seen), headers=HEADERS)
    scope = {"type": "http", "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        pass

    _leaked(middleware, lambda m: asyncio.run(m(scope, receive, send)))
    [context] = seen
    assert context.get("user_id") == headers.get("x-user-id")
    assert "account_name" not in context


@pytest.mark.parametrize("headers", [{}, {"HTTP_X_USER_ID": "bob"}], ids=["anonymous", "bob"])
def test_the_wsgi_middleware_leaves_another_requests_scope(
    payi: PayiInstrumentor, headers: dict[str, str]
) -> None:
    seen: list[dict[str, Any]] = []

    def app(environ: Any, start_response: Any) -> list[bytes]:
        seen.append(dict(get_context()))
        return [b"ok"]

    middleware = PayiWSGIMiddleware(app, headers=HEADERS)

    def call(m: Any) -> None:
        body = m({"REQUEST_METHOD": "GET", **headers}, lambda *a: None)
        list(body)
        getattr(body, "close", lambda: None)()

    _leaked(middleware, call)
    [context] = seen
    assert context.get("user_id") == headers.get("HTTP_X_USER_ID")
    assert "account_name" not in context


def test_a_nested_middleware_keeps_its_own_requests_scope(payi: PayiInstrumentor) -> None:
    """Two middlewares on one request (an app mounted below another, each with its own),
    the ASGI scope copied between them as ASGI asks: the inner scope is over the outer's."""
    seen: list[dict[str, Any]] = []
    inner = PayiASGIMiddleware(_asgi_app(seen), headers={"X-User-Id": "user_id"})

    async def copying(scope: Any, receive: Any, send: Any) -> None:
        await inner(dict(scope, root_path="/v1"), receive, send)

    outer = PayiASGIMiddleware(copying, headers={"X-Tenant": "account_name"})
    scope = {"type": "http", "headers": [(b"x-user-id", b"bob"), (b"x-tenant", b"acme")]}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        pass

    asyncio.run(outer(scope, receive, send))
    [context] = seen
    assert (context.get("user_id"), context.get("account_name")) == ("bob", "acme")

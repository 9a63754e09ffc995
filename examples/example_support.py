"""What the runnable web and agent examples share (README "Web services", "Agent
frameworks"): a plain FastAPI chat app, serving it on 127.0.0.1, requests as several users at
once, and printing what each LLM call carried or each span says."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from fake_llm_server import FakeLLMServer


def fastapi_chat_app(llm: Any) -> Any:
    """A FastAPI app whose ``GET /chat/{topic}`` asks the model (an ``AsyncOpenAI``)."""
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/chat/{topic}")
    async def chat(topic: str) -> dict[str, str]:
        messages = [{"role": "user", "content": topic}]
        reply = await llm.chat.completions.create(model="gpt-4o-mini", messages=messages)
        return {"reply": reply.choices[0].message.content or ""}

    return app


def serve_uvicorn(app: Any) -> tuple[str, Callable[[], None]]:
    """Serve ``app`` with uvicorn on 127.0.0.1 (one worker): its URL, and how to stop it."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)

    def stop() -> None:
        server.should_exit = True
        thread.join()

    return f"http://127.0.0.1:{sock.getsockname()[1]}", stop


def ask_as(url: str, users: Iterable[str]) -> None:
    """``GET <url><user>`` with ``X-User-Id: <user>``, for every user at once."""

    def ask(user: str) -> None:
        request = urllib.request.Request(url + user, headers={"X-User-Id": user})
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(ask, users))


def print_llm_calls(server: FakeLLMServer) -> None:
    """One line per LLM call the fake server received: its question, user and step."""
    for sent in sorted(server.requests, key=lambda r: str(r.body)):
        print(
            f"{sent.body['messages'][-1]['content']}: "
            f"user={sent.headers.get('x-payi-user-id')} "
            f"step={sent.headers.get('x-payi-use-case-step')}"
        )


def print_spans(spans: Any) -> None:
    """One line per finished span (an ``InMemorySpanExporter``'s): user, step, tokens."""
    for span in sorted(spans.get_finished_spans(), key=lambda s: s.start_time or 0):
        a = span.attributes or {}
        tokens = a.get("gen_ai.usage.input_tokens", 0) + a.get("gen_ai.usage.output_tokens", 0)
        print(
            f"{span.name}: user={a.get('payi.user_id')} step={a.get('payi.use_case.step')} "
            f"tokens={tokens}"
        )

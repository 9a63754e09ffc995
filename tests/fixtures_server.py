"""The local fake OpenAI/Anthropic server as pytest fixtures (the test suite and the install
matrix share them)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fake_llm_server import FakeLLMServer


@pytest.fixture(scope="session")
def fake_llm() -> Iterator[FakeLLMServer]:
    """One local fake OpenAI/Anthropic server for the whole test session."""
    with FakeLLMServer() as server:
        yield server


@pytest.fixture
def llm_server(fake_llm: FakeLLMServer) -> FakeLLMServer:
    """The session's fake server, with no recorded requests or pending failures."""
    fake_llm.reset()
    return fake_llm


def to_local(server: FakeLLMServer, module: Any = httpx, is_async: bool = False) -> Any:
    """A transport (of ``module``: httpx, or httpx2 for anthropic 2.x) that sends every
    request to the local server; the request's URL and Host stay as built."""
    port = int(server.base_url.rsplit(":", 1)[1])

    def local(request: Any) -> Any:
        request.url = request.url.copy_with(scheme="http", host="127.0.0.1", port=port)
        return request

    if is_async:
        inner_async = module.AsyncHTTPTransport()

        class AsyncToLocal(module.AsyncBaseTransport):  # type: ignore[misc]
            async def handle_async_request(self, request: Any) -> Any:
                return await inner_async.handle_async_request(local(request))

        return AsyncToLocal()
    inner = module.HTTPTransport()

    class ToLocal(module.BaseTransport):  # type: ignore[misc]
        def handle_request(self, request: Any) -> Any:
            return inner.handle_request(local(request))

    return ToLocal()

"""The local fake OpenAI/Anthropic server as pytest fixtures (the test suite and the install
matrix share them)."""

from __future__ import annotations

from collections.abc import Iterator

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

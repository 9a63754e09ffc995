"""Shared pytest fixtures."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The fake OpenAI/Anthropic server lives in examples/ (the demo and benchmarks use it too).
EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
if str(EXAMPLES_DIR) not in sys.path:
    sys.path.insert(0, str(EXAMPLES_DIR))

pytest_plugins = ["fixtures_server", "fixtures_otel", "fixtures_genai"]


@pytest.fixture(autouse=True)
def raise_internal_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    """Internal errors fail the test (the package logs them once in production); tests that
    inject bugs to check that they are contained use ``internal_errors_contained``."""
    from payi_otel import _log

    _log.RAISE_INTERNAL_ERRORS = "internal_errors_contained" not in request.fixturenames
    yield
    _log.RAISE_INTERNAL_ERRORS = False


@pytest.fixture(autouse=True)
def fresh_context() -> Iterator[None]:
    """Each test starts in an empty OpenTelemetry context, whatever an earlier test left
    attached (tests that leave scopes out of order, or by hand, do so on purpose); the
    suite's result then does not depend on its order (``make test`` runs it on 2 workers)."""
    from opentelemetry import context as otel_context

    token = otel_context.attach(otel_context.Context())
    yield
    otel_context.detach(token)


@pytest.fixture
def internal_errors_contained() -> None:
    """Internal errors are handled as in production: logged once, never raised."""

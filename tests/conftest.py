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


# -- the suite's speed (no behaviour of the package changes) ---------------------------------


#: The files that take longest (``pytest --durations``), longest first. ``make test``'s wall
#: time is its slower worker's: pytest-xdist (``--dist loadfile``) hands files out in
#: collection order, so these go first, and no long file starts last on one worker while the
#: other has nothing left to do.
LONGEST_FIRST = (
    "test_web_examples.py",
    "test_auto_instrumentation.py",
    "test_properties.py",
    "test_ingest_spool.py",
    "test_gc_guard.py",
    "test_demo.py",
    "test_streams.py",
    "test_pair_identity.py",
    "test_payi_side_by_side.py",
    "test_payi_side_by_side_providers.py",
    "test_baggage.py",
    "test_e2e_checks.py",
    "test_hops.py",
    "test_doctor.py",
    "test_parameter_recipe.py",
    "test_stress.py",
    "test_ingest_faults.py",
    "test_bedrock.py",
    "test_callbacks.py",
    "test_faults.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """:data:`LONGEST_FIRST` first, in that order; every other file as collected."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Everything imported so far (the SDKs, OpenTelemetry, hypothesis, every test module)
    lives as long as the process: move it out of the collector's reach (``gc.freeze``), so the
    many ``gc.collect()`` calls that finalize a test's abandoned streams walk only what
    the tests made - 0.4 s each on a full heap, a few ms this way. A test's own garbage is
    collected as before."""
    import gc

    gc.collect()
    gc.freeze()
    _SINCE_FREEZE["modules"] = len(sys.modules)


#: Tests run since the last :func:`gc.freeze`, and the modules imported by then.
_SINCE_FREEZE = {"tests": 0, "modules": 0}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    """As :func:`pytest_collection_finish` does, again after a test (its fixtures torn down)
    that imported modules (the first ``payi_instrument`` imports ~5000: every installed SDK
    and GenAI instrumentation), and after every 25 tests (what stays alive across tests,
    such as the meters and histograms each instrumentation asks the global proxy meter
    provider for, or genai-prices' data once read): collect, then freeze what is left alive.
    Else every full collection walks them again - 0.1 s each, hundreds in test_streams.py and
    test_review_context.py alone. A test's own garbage is collected as before."""
    yield
    _SINCE_FREEZE["tests"] += 1
    if _SINCE_FREEZE["tests"] >= 25 or len(sys.modules) != _SINCE_FREEZE["modules"]:
        import gc

        gc.collect()
        gc.freeze()
        _SINCE_FREEZE.update(tests=0, modules=len(sys.modules))


def _one_default_ssl_context() -> None:
    """Every ``OpenAI()`` / ``Anthropic()`` client the suite makes (hundreds) builds its
    httpx2 transport's default SSL context, reading the system's CA bundle each time (~40
    ms). The suite only speaks plain HTTP to 127.0.0.1: one default context, made once, is
    handed to every client that asks for the default."""
    import functools

    try:
        import httpcore2
    except ImportError:  # an SDK release on httpx: nothing to share
        return
    made = httpcore2.default_ssl_context
    if isinstance(made, functools._lru_cache_wrapper):
        return
    httpcore2.default_ssl_context = functools.lru_cache(maxsize=None)(made)  # type: ignore[assignment]


_one_default_ssl_context()


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

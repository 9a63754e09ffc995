"""pytest plugin: payi_otel active while the official GenAI instrumentations' own tests run.

Loaded with ``-p payi_upstream_plugin`` (``tests_upstream`` on ``PYTHONPATH``); the upstream test
files are not edited. At start-up it instruments ``PayiInstrumentor`` (``genai_spans=False``: the
upstream fixtures instrument the GenAI instrumentor themselves) with a global level, and wraps
``opentelemetry.sdk.trace.TracerProvider.__init__`` so that every provider the upstream fixtures
create gets ``PayiSpanProcessor`` (``payi_otel._spans.install_processor``) followed by an audit
processor. After each test phase, every GenAI span that ended in it must carry the global level's
``payi.*`` attributes, or the test fails. A JSON summary is written at the end.

Environment:
  ``PAYI_UPSTREAM_PLUGIN=0``  baseline: payi_otel is not instrumented and nothing fails; spans
                              and outcomes are still counted.
  ``PAYI_UPSTREAM_REPORT``    where the JSON summary goes (default ``payi_upstream_report.json``).
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Iterator
from typing import Any, Optional

import pytest
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider

ENABLED = os.environ.get("PAYI_UPSTREAM_PLUGIN", "1") != "0"
REPORT = os.environ.get("PAYI_UPSTREAM_REPORT", "payi_upstream_report.json")
CONFIG = {"use_case_name": "upstream", "user_id": "u1"}
EXPECTED = {"payi.use_case.name": "upstream", "payi.user_id": "u1"}
GENAI_SCOPES = (
    "opentelemetry.instrumentation.genai.",
    "opentelemetry.instrumentation.google_genai",
    "opentelemetry.util.genai",
)


def is_genai(span: ReadableSpan) -> bool:
    """A GenAI span: any ``gen_ai.*`` attribute at end, or a GenAI instrumentation scope."""
    if any(key.startswith("gen_ai.") for key in span.attributes or {}):
        return True
    scope = span.instrumentation_scope
    return scope is not None and scope.name.startswith(GENAI_SCOPES)


def payi_problem(span: ReadableSpan) -> Optional[str]:
    """Why ``span`` lacks the global level's ``payi.*`` attributes, or None when it has them."""
    attributes = span.attributes or {}
    missing = [key for key in EXPECTED if key not in attributes]
    if missing:
        return "missing " + ", ".join(missing)
    wrong = {key: attributes[key] for key, value in EXPECTED.items() if attributes[key] != value}
    return f"wrong values {wrong}" if wrong else None


class Audit:
    """What the run saw: GenAI spans per test phase, the ones without ``payi.*``, requests."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.test: Optional[str] = None
        self.pending: list[dict[str, Any]] = []  # bad spans since the last phase check
        self.genai_spans = 0
        self.started_without_gen_ai = 0  # GenAI spans with no gen_ai.* attribute at start
        self.scopes: dict[str, int] = {}
        self.bad_spans: list[dict[str, Any]] = []
        self.requests_played = 0
        self.requests_with_payi_headers = 0
        self.providers = 0

    def ended(self, span: ReadableSpan, genai_at_start: bool) -> None:
        if not is_genai(span):
            return
        scope = span.instrumentation_scope.name if span.instrumentation_scope else "?"
        problem = payi_problem(span)
        with self.lock:
            self.genai_spans += 1
            self.started_without_gen_ai += not genai_at_start
            self.scopes[scope] = self.scopes.get(scope, 0) + 1
            if problem is None:
                return
            record = {
                "test": self.test,
                "span": span.name,
                "scope": scope,
                "problem": problem,
                "gen_ai_attributes_at_start": genai_at_start,
            }
            self.bad_spans.append(record)
            self.pending.append(record)

    def take_pending(self) -> list[dict[str, Any]]:
        with self.lock:
            pending, self.pending = self.pending, []
        return pending


AUDIT = Audit()


class AuditProcessor(SpanProcessor):
    """Added after ``PayiSpanProcessor``: notes each span's state at start and checks it at end."""

    def __init__(self) -> None:
        # By span id: on_end gets a ReadableSpan snapshot, not the span that started.
        self._genai_at_start: dict[tuple[int, int], bool] = {}

    @staticmethod
    def _key(span: ReadableSpan) -> tuple[int, int]:
        context = span.context
        return (context.trace_id, context.span_id) if context else (0, id(span))

    def on_start(self, span: Span, parent_context: Any = None) -> None:
        attributes = span.attributes or {}
        genai = any(key.startswith("gen_ai.") for key in attributes)
        self._genai_at_start[self._key(span)] = genai

    def on_end(self, span: ReadableSpan) -> None:
        AUDIT.ended(span, self._genai_at_start.pop(self._key(span), False))


def _hook_tracer_providers() -> None:
    original = TracerProvider.__init__
    if getattr(original, "_payi_upstream", False):
        return

    @functools.wraps(original)
    def init(provider: TracerProvider, *args: Any, **kwargs: Any) -> None:
        original(provider, *args, **kwargs)
        if ENABLED:
            from payi_otel._spans import install_processor

            install_processor(provider)
        provider.add_span_processor(AuditProcessor())
        AUDIT.providers += 1

    init._payi_upstream = True  # type: ignore[attr-defined]
    TracerProvider.__init__ = init  # type: ignore[method-assign]


def _hook_cassette_playback() -> None:
    """Count the cassette-played requests and how many carried ``x-payi-*`` headers.

    Requests to localhost bypass the cassettes (``ignore_localhost``): the runs replay only
    (``--vcr-record=none``), and the upstream "bad endpoint" tests expect a real connection
    error from ``localhost:4242``, which the contrib repository's tox run (record mode "once")
    gives them.
    """
    try:
        from vcr.cassette import Cassette
        from vcr.config import VCR
    except ImportError:
        return
    original_vcr_init = VCR.__init__

    @functools.wraps(original_vcr_init)
    def vcr_init(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("ignore_localhost", True)
        original_vcr_init(self, *args, **kwargs)

    VCR.__init__ = vcr_init  # type: ignore[method-assign]
    original = Cassette.play_response

    @functools.wraps(original)
    def play_response(cassette: Any, request: Any) -> Any:
        response = original(cassette, request)
        with AUDIT.lock:
            AUDIT.requests_played += 1
            if any(name.lower().startswith("x-payi-") for name in request.headers):
                AUDIT.requests_with_payi_headers += 1
        return response

    Cassette.play_response = play_response  # type: ignore[method-assign]


def pytest_configure(config: pytest.Config) -> None:
    _hook_tracer_providers()
    _hook_cassette_playback()
    if ENABLED:
        from payi_otel import PayiInstrumentor

        PayiInstrumentor().instrument(config=CONFIG, genai_spans=False)


def pytest_unconfigure(config: pytest.Config) -> None:
    if ENABLED:
        from payi_otel import PayiInstrumentor

        instrumentor = PayiInstrumentor()
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: Optional[pytest.Item]) -> Iterator[None]:
    AUDIT.take_pending()  # spans that ended between tests belong to none
    AUDIT.test = item.nodeid
    yield
    AUDIT.test = None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    bad = AUDIT.take_pending()
    if not bad or not ENABLED or not report.passed:
        return
    lines = [f"{len(bad)} GenAI span(s) without the payi.* attributes {EXPECTED}:"]
    lines += [
        f"  {b['span']!r} (scope {b['scope']}, gen_ai.* at start: "
        f"{b['gen_ai_attributes_at_start']}): {b['problem']}"
        for b in bad
    ]
    report.outcome = "failed"
    report.longrepr = "\n".join(lines)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    stats: dict[str, list[Any]] = getattr(reporter, "stats", {}) or {}

    def nodeids(category: str, when: Optional[str] = None) -> list[str]:
        return sorted(
            {
                r.nodeid
                for r in stats.get(category, [])
                if hasattr(r, "nodeid") and (when is None or r.when == when)
            }
        )

    summary = {
        "payi_otel_instrumented": ENABLED,
        "exit_status": int(exitstatus),
        "passed": len(nodeids("passed", "call")),
        "failed": len(nodeids("failed")),
        "errors": len(nodeids("error")),
        "skipped": len(nodeids("skipped")),
        "xfailed": len(nodeids("xfailed")),
        "xpassed": len(nodeids("xpassed")),
        "failed_tests": nodeids("failed"),
        "error_tests": nodeids("error"),
        "tracer_providers": AUDIT.providers,
        "genai_spans": AUDIT.genai_spans,
        "genai_spans_by_scope": dict(sorted(AUDIT.scopes.items())),
        "genai_spans_started_without_gen_ai_attributes": AUDIT.started_without_gen_ai,
        "genai_spans_without_payi": len(AUDIT.bad_spans),
        "spans_without_payi": AUDIT.bad_spans,
        "cassette_requests_played": AUDIT.requests_played,
        "cassette_requests_with_x_payi_headers": AUDIT.requests_with_payi_headers,
    }
    with open(REPORT, "w", encoding="utf-8") as out:
        json.dump(summary, out, indent=2)
        out.write("\n")

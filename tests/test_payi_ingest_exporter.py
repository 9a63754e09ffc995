"""PayiIngestExporter as a span exporter: what it sends (one record per GenAI call span), and
the SDK's span queue full - with the app's calls unaffected, memory bounded and drops counted.
Per call: tests/test_ingest_per_call.py; Pay-i's faults: tests/test_ingest_faults.py. Local
servers only (fake LLM, fake Pay-i). ``pytest -s`` prints the figures."""

from __future__ import annotations

import logging
import socket
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fake_payi_server import FakePayiServer
from fixtures_genai import CHAT, MESSAGE, GenAI
from ingest_support import add_processor
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult

from payi_otel import PayiIngestExporter, track_context

__all__ = ["add_processor"]  # a fixture


@pytest.fixture
def fake_payi() -> Iterator[FakePayiServer]:
    with FakePayiServer() as server:
        yield server


def exporter_for(base_url: str, **kwargs: Any) -> PayiIngestExporter:
    return PayiIngestExporter(api_key="test-key", base_url=base_url, **kwargs)


@pytest.fixture
def attach(
    add_processor: Callable[[SpanProcessor], None],
) -> Callable[..., BatchSpanProcessor]:
    def do(genai: GenAI, exporter: PayiIngestExporter, **kwargs: Any) -> BatchSpanProcessor:
        processor = BatchSpanProcessor(exporter, **kwargs)
        add_processor(processor)
        return processor

    return do


def timed_calls(genai: GenAI, n: int) -> list[float]:
    """``n`` chat calls under a scope; each call's duration in seconds."""
    durations = []
    with track_context(user_id="alice", limit_ids=["l1"]):
        for _ in range(n):
            started = time.perf_counter()
            reply = genai.openai.chat.completions.create(**CHAT)
            durations.append(time.perf_counter() - started)
            assert reply.choices[0].message.content == "echo: Hello"
    return durations


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def report(name: str, durations: list[float], stats: Any, **extra: Any) -> None:
    print(
        f"\n[{name}] calls={len(durations)} max_call_ms={max(durations) * 1000:.1f} "
        f"stats={dict(stats)} {extra}"
    )


# --- what is sent --------------------------------------------------------------------------


def test_one_record_per_call_with_units_status_and_attribution(
    genai: GenAI, fake_payi: FakePayiServer, attach: Callable[..., BatchSpanProcessor]
) -> None:
    exporter = exporter_for(fake_payi.base_url)
    processor = attach(genai, exporter)
    with track_context(
        use_case_name="bot",
        user_id="alice",
        request_properties={"k": "v"},
        price_as_resource="claude-x",
    ):
        genai.anthropic.messages.create(**MESSAGE)  # two nested GenAI spans: one record
        stream = genai.openai.chat.completions.create(
            **CHAT, stream=True, stream_options={"include_usage": True}
        )
        for _ in stream:
            pass
    processor.force_flush()
    assert exporter.force_flush()
    records = [r.body for r in fake_payi.ingested()]
    assert len(records) == 2, records
    anthropic_record, openai_record = records
    assert anthropic_record["category"] == "system.anthropic"
    assert anthropic_record["resource"] == "claude-x"  # price_as_resource wins, as in Pay-i
    assert anthropic_record["http_status_code"] == 200
    assert anthropic_record["properties"] == {"k": "v"}
    assert openai_record["category"] == "system.openai"
    assert openai_record["units"]["text"]["output"] > 0
    assert isinstance(openai_record["time_to_first_token_ms"], int)
    headers = fake_payi.ingested()[0].headers
    assert headers["xproxy-user-id"] == "alice" and headers["xproxy-usecase-name"] == "bot"
    assert headers["xproxy-api-key"] == "test-key"
    # Skipped: the scope's span, and the outer of anthropic's two nested GenAI spans.
    assert exporter.stats() == {
        "exported": 2,
        "failed": 0,
        "dropped": 0,
        "spooled": 0,
        "replayed": 0,
        "pending": 0,
        "skipped": 2,
    }


def test_spans_of_api_calls_that_are_no_inference_are_never_sent(
    genai: GenAI, fake_payi: FakePayiServer, attach: Callable[..., BatchSpanProcessor]
) -> None:
    """anthropic's own spans (``com.anthropic.sdk.python``) cover every API call: those of
    token counting and listing name no GenAI operation and are no billed request - the
    per-call form never sends them - but the span form sent each as one (a review)."""
    exporter = exporter_for(fake_payi.base_url)
    processor = attach(genai, exporter)
    with track_context(user_id="alice"):
        genai.anthropic.messages.count_tokens(model=MESSAGE["model"], messages=MESSAGE["messages"])
        genai.anthropic.models.list()
        genai.anthropic.messages.create(**MESSAGE)
    genai.check_invariant = False  # calls without a span of their own to compare
    processor.force_flush()
    assert exporter.force_flush()
    native = [
        s
        for s in genai.otel.exporter.get_finished_spans()
        if s.instrumentation_scope.name == "com.anthropic.sdk.python"
    ]
    assert {s.name for s in native} >= {
        "anthropic.messages.count_tokens",
        "anthropic.models.list",
    }  # (the spans this is about)
    [record] = [r.body for r in fake_payi.ingested()]
    assert record["resource"] == MESSAGE["model"]


def test_without_the_payi_package_a_warning_names_the_pip_command(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "payi", None)  # import payi -> ImportError
    with caplog.at_level(logging.WARNING, logger="payi_otel"):
        exporter = PayiIngestExporter()
    assert "pip install 'payi>=0.1.0a183'" in caplog.text
    assert exporter.export([]) is SpanExportResult.SUCCESS


def test_without_an_api_key_nothing_breaks(
    genai: GenAI,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    attach: Callable[..., BatchSpanProcessor],
) -> None:
    monkeypatch.delenv("PAYI_API_KEY", raising=False)
    exporter = PayiIngestExporter(base_url=closed_port_url())
    processor = attach(genai, exporter)
    with caplog.at_level(logging.WARNING, logger="payi_otel"):
        timed_calls(genai, 2)
        processor.force_flush()
        exporter.force_flush()
    assert "cannot create Pay-i's client" in caplog.text
    stats = exporter.stats()
    assert stats["exported"] == 0 and stats["failed"] + stats["dropped"] == 2


# --- faults: tests/test_ingest_faults.py (per call and as a span exporter alike) -------------


def test_a_full_queue_drops_and_counts_and_stays_bounded(
    genai: GenAI, fake_payi: FakePayiServer, attach: Callable[..., BatchSpanProcessor]
) -> None:
    """Pay-i slower than the app: the exporter's own queue (``max_queue``) holds what it can,
    drops and counts the rest; the span processor never waits (export only enqueues)."""
    fake_payi.delay = 0.05
    exporter = exporter_for(fake_payi.base_url, timeout=5, max_queue=8)
    processor = attach(genai, exporter, schedule_delay_millis=10)
    durations = timed_calls(genai, 60)
    processor.force_flush()
    assert exporter._queue.stats()["pending"] <= 8
    exporter.force_flush()
    stats = exporter.stats()
    report("full queue", durations, stats)
    assert max(durations) < 1.0
    assert stats["dropped"] > 0
    assert stats["exported"] + stats["failed"] + stats["dropped"] == 60


# --- at interpreter exit -------------------------------------------------------------------

_AT_EXIT_APP = """
import sys
import openai
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from payi_otel import PayiIngestExporter, payi_instrument, track_context

import atexit, time

payi_url, llm_url, timeout = sys.argv[1:]
atexit.register(lambda: print(f"exit {time.monotonic() - ended:.2f}"))  # runs last
provider = TracerProvider()  # its exit (shutdown_on_exit) runs after the exporter's
exporter = PayiIngestExporter(
    api_key="test-key", base_url=payi_url, shutdown_timeout=float(timeout), timeout=0.2
)
provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=60_000))
payi_instrument(tracer_provider=provider, genai_spans=True, header_hosts=[])
client = openai.OpenAI(base_url=llm_url, api_key="t", max_retries=0)
with track_context(user_id="first"):
    client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "a"}])
provider.force_flush()  # one record sent: the ingest worker runs, its exit handler is set
for i in range(4):
    with track_context(user_id=f"late{i}"):
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "b"}])
ended = time.monotonic()
"""


def _exit_app(payi_url: str, llm_url: str, timeout: float) -> tuple[float, str]:
    """The app above in a process of its own: how long its exit took, and its stderr."""
    import os
    import subprocess
    from pathlib import Path

    tests = Path(__file__).resolve().parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PAYI_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(tests), str(tests.parent / "examples")])
    done = subprocess.run(
        [sys.executable, "-c", _AT_EXIT_APP, payi_url, llm_url, str(timeout)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [line] = [x for x in done.stdout.splitlines() if x.startswith("exit ")]
    return float(line.split()[1]), done.stderr


def test_a_span_exporters_last_spans_are_sent_at_a_normal_exit(
    fake_payi: FakePayiServer, genai: GenAI
) -> None:
    """The tracer provider flushes its span processor at exit, after the exporter's own exit
    handler (atexit runs the newest first): that handler closed the queue, so the last spans'
    records were dropped, with nothing said (a review: 1 of 5 sent). Now a span exporter is
    shut down by the provider, and every record is sent."""
    genai.check_invariant = False  # the calls are the child process's
    _, stderr = _exit_app(fake_payi.base_url, genai.server.openai_base_url, 5.0)
    assert "payi_otel" not in stderr, stderr
    users = sorted(r.headers.get("xproxy-user-id") for r in fake_payi.ingested())
    assert users == ["first", "late0", "late1", "late2", "late3"]


def test_a_span_exporters_exit_waits_one_shutdown_timeout_in_all(
    fake_payi: FakePayiServer, genai: GenAI
) -> None:
    """Pay-i unreachable at exit: the exporter's exit handler and then the provider's shutdown
    of it share one ``shutdown_timeout`` (a review: each waited it in full, twice as long)."""
    genai.check_invariant = False
    fake_payi.down()
    try:
        took, stderr = _exit_app(fake_payi.base_url, genai.server.openai_base_url, 2.0)
    finally:
        fake_payi.up()
    assert "unsent at shutdown" in stderr
    assert took < 3.0, took  # one timeout (2 s) and the exit's own work; twice was 4 s

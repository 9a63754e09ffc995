"""README "Using with Pay-i": its ingest snippets run as written (per call, and the span
exporter form), against the fake LLM and the fake Pay-i servers on 127.0.0.1."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from fake_payi_server import FakePayiServer
from fixtures_genai import GenAI
from ingest_support import fake_payi_module, payi
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from payi_otel import PayiIngestExporter, PayiInstrumentor
from payi_otel._payi_answer import reset_answers

__all__ = ["fake_payi_module", "payi"]  # fixtures

README = Path(__file__).resolve().parent.parent / "README.md"


def snippets() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Using with Pay-i\n", 1)[1].split("\n## ", 1)[0]
    ingest = section.split("**Ingest mode**", 1)[1]
    return re.findall(r"```python\n(.*?)```", ingest, re.S)


@pytest.fixture
def pay_i_env(
    payi: FakePayiServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, genai: GenAI
) -> FakePayiServer:
    monkeypatch.setenv("PAYI_API_KEY", "test-key")
    monkeypatch.setenv("PAYI_BASE_URL", payi.base_url)
    monkeypatch.chdir(tmp_path)  # the snippet's spool file
    PayiInstrumentor().uninstrument()  # the snippets call payi_instrument() themselves
    genai.check_invariant = False  # header_hosts=[]: spans keep the attribution, no header
    reset_answers()
    return payi


def test_the_per_call_snippet_runs(
    genai: GenAI, pay_i_env: FakePayiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    per_call, _, _ = snippets()
    client = openai.OpenAI(base_url=genai.server.openai_base_url, api_key="t", max_retries=0)
    exec(compile(per_call, "README.md", "exec"), {"client": client})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("{'exported': 1, 'failed': 0, 'dropped': 0, 'spooled': 0")
    assert "'currency': 'usd'" in printed[1]
    (record,) = pay_i_env.ingested()
    assert record.body["resource"] == "gpt-4o-mini"
    assert Path("payi-ingest.jsonl").exists()  # the spool, one add and one done line
    assert len(Path("payi-ingest.jsonl").read_text().splitlines()) == 2


def test_the_prompt_logging_snippet_keeps_that_scope_s_prompts_out(
    genai: GenAI, pay_i_env: FakePayiServer
) -> None:
    _, logging_off, _ = snippets()
    from payi_otel import payi_instrument

    exporter = PayiIngestExporter()
    payi_instrument(
        tracer_provider=genai.otel.provider, ingest=exporter, log_prompt_and_response=True
    )
    client = openai.OpenAI(base_url=genai.server.openai_base_url, api_key="t", max_retries=0)
    exec(compile(logging_off, "README.md", "exec"), {"client": client})
    client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}]
    )
    assert exporter.force_flush()
    # Pay-i's client sends the attribution as xProxy-* headers of the ingest request.
    records = {r.headers.get("xproxy-user-id"): r.body for r in pay_i_env.ingested()}
    assert set(records) == {"alice", None}
    assert "provider_request_json" not in records["alice"]
    # (The prompt's words, not its digits alone: a random id may hold "4111".)
    assert "My card is" not in str(records["alice"])
    assert "provider_request_json" in records[None]  # outside the scope: the global True


def test_the_span_exporter_snippet_runs(
    genai: GenAI, pay_i_env: FakePayiServer, add_processor_spy: list[BatchSpanProcessor]
) -> None:
    _, _, spans = snippets()
    namespace = {"provider": _Recording(genai, add_processor_spy)}
    exec(compile(spans, "README.md", "exec"), namespace)
    genai.openai.chat.completions.create(
        model="gpt-4", messages=[{"role": "user", "content": "Hello"}]
    )
    (processor,) = [p for p in add_processor_spy if isinstance(p, BatchSpanProcessor)]
    processor.force_flush()
    exporter = processor._batch_processor._exporter
    assert isinstance(exporter, PayiIngestExporter) and exporter.force_flush()
    assert len(pay_i_env.ingested()) == 1


class _Recording:
    """The test's tracer provider, noting the processors the snippet adds (taken off after)."""

    def __init__(self, genai: GenAI, added: list[BatchSpanProcessor]) -> None:
        self._provider = genai.otel.provider
        self._added = added

    def add_span_processor(self, processor: BatchSpanProcessor) -> None:
        self._added.append(processor)
        self._provider.add_span_processor(processor)

    def __getattr__(self, name: str) -> object:
        return getattr(self._provider, name)


@pytest.fixture
def add_processor_spy(genai: GenAI) -> Iterator[list[BatchSpanProcessor]]:
    active = genai.otel.provider._active_span_processor
    before = active._span_processors
    added: list[BatchSpanProcessor] = []
    yield added
    with active._lock:
        active._span_processors = before
    for processor in added:
        processor.shutdown()

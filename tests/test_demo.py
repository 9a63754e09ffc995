"""The demo behind ``make demo`` (examples/support_assistant/main.py), run as a user runs it.

It runs offline against its in-process fake LLM server, prints the traces and the headers
each call sent, and with ``OTEL_EXPORTER_OTLP_ENDPOINT`` set exports its spans over real
OTLP/HTTP, checked here with the receiver from tests/otlp_receiver.py.
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fixtures_otel import is_genai
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otlp_receiver import OTLPReceiver, ReceivedSpan

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "support_assistant" / "main.py"

STEPS = ("classify", "retrieve", "answer", "translate", "review", "escalate", "digest")
CUSTOMERS = {"alice": "acme", "bob": "globex", "carol": "initech"}
# 3 tickets x 3 steps, 1 translation (Gemini), 1 review (Bedrock), 1 escalation, 1 admin
# replay, 3 digests
CALLS = 16


def run_demo(**env: str) -> subprocess.CompletedProcess[str]:
    """Run the demo as ``make demo`` does, with a clean OTel/Pay-i environment plus ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PAYI_"))}
    clean.setdefault("PYTHONIOENCODING", "utf-8")
    clean.update(env)
    return subprocess.run(
        [sys.executable, str(DEMO)],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
    )


def section(stdout: str, title: str) -> list[str]:
    """The lines of the output section headed ``=== <title> ===``."""
    match = re.search(rf"^=== {re.escape(title)} =+\n(.*?)(?=^=== |\Z)", stdout, re.M | re.S)
    assert match, f"no section {title!r} in:\n{stdout}"
    return match.group(1).splitlines()


def header_table(stdout: str) -> tuple[str, list[dict[str, str]]]:
    """The line of headers every request sent, and the table rows as dicts by column name."""
    lines = section(stdout, "x-payi-* headers sent, one line per request")
    (common,) = [line for line in lines if line.startswith("Every request sent:")]
    start = next(i for i, line in enumerate(lines) if line.startswith("#  "))
    columns = re.split(r"\s{2,}", lines[start].strip())
    rows = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        assert len(cells) == len(columns), (columns, line)
        rows.append(dict(zip(columns, cells)))
    return common, rows


@pytest.fixture(scope="module")
def demo() -> subprocess.CompletedProcess[str]:
    result = run_demo()
    assert result.returncode == 0, result.stdout + result.stderr
    return result


# ---------------------------------------------------------------------------- printed output
def test_demo_runs_offline_and_its_spans_match_its_headers(
    demo: subprocess.CompletedProcess[str],
) -> None:
    assert "Traceback" not in demo.stderr, demo.stderr
    assert f"{CALLS} LLM calls" in demo.stdout
    assert re.search(
        rf"equal the x-payi-\* headers of their request: {CALLS}/{CALLS}; "
        r"requests without such a span: 0",
        demo.stdout,
    ), demo.stdout
    assert "MISMATCH" not in demo.stdout
    assert "OTLP/HTTP export" not in demo.stdout  # no endpoint, no exporter


def test_demo_prints_each_trace_as_a_tree_of_steps_and_genai_spans(
    demo: subprocess.CompletedProcess[str],
) -> None:
    tree = section(demo.stdout, "Traces")
    names = [re.sub(r"^[\s│├└─]*", "", line).split("  ")[0] for line in tree]
    for root in (
        "ticket T-1001",
        "ticket T-1002",
        "ticket T-1003",
        "admin replay T-1001",
        "nightly digest",
    ):
        assert root in names, names
    counts = Counter(names)
    assert counts["classify"] == counts["retrieve"] == 3
    assert counts["answer"] == 4 and counts["escalate"] == 1 and counts["digest"] == 3
    assert counts["translate"] == counts["review"] == 1
    assert counts["[GenAI] chat gpt-4o-mini"] == CALLS - 5
    assert counts["[GenAI] embeddings text-embedding-3-small"] == 3
    assert counts["[GenAI] generate_content gemini-2.5-flash"] == 1
    assert counts["[GenAI] chat us.anthropic.claude-3-5-haiku-20241022-v1:0"] == 1
    # Each GenAI span hangs under its step, one level deeper, and points at its request.
    for i, line in enumerate(tree):
        if "[GenAI]" in line:
            parent = tree[i - 1]
            assert names[i - 1] in STEPS, (parent, line)
            assert line.index("[GenAI]") > len(parent) - len(parent.lstrip(" │├└─")), line
            assert re.search(r"\(request #\d+\)$", line), line
    (global_line,) = [line for line in tree if line.startswith("Global level")]
    assert "use_case.name=support_assistant" in global_line
    assert "limit_ids=[monthly_budget]" in global_line
    # What each scope sets (who, the step) and what is in force for each call.
    assert any("sets user_id=alice account_name=acme" in line for line in tree)
    assert any("request_tags=[escalation] user_id=agent-7" in line for line in tree)
    cleared = "user_id=ops-admin account_name=internal limit_ids=(cleared)"
    assert any(cleared in line for line in tree)


def test_the_readme_sample_is_what_the_demo_prints(
    demo: subprocess.CompletedProcess[str],
) -> None:
    """README "Try it: make demo": every line of its sample output is a line the demo prints
    (durations and column padding aside), and no scope span reads as cleared."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("## Try it: `make demo`")
    sample = readme[readme.index("```\n", readme.index("PAYI_DEMO_BASE_URL", start)) + 4 :]
    sample = sample[: sample.index("```")]

    def plain(line: str) -> str:
        return re.sub(r"\s+", " ", re.sub(r"\d+\.\d ms", "", line)).strip()

    printed = {plain(line) for line in demo.stdout.splitlines()}
    lines = [line for line in sample.splitlines() if line.strip()]
    assert len(lines) > 10
    for line in lines:
        assert plain(line) in printed, line
    for line in section(demo.stdout, "Traces"):
        if "[GenAI]" not in line and "sets " in line:
            assert "(cleared)" not in line, line  # a scope span shows what it set, never "cleared"


def test_demo_prints_the_headers_each_call_sent(demo: subprocess.CompletedProcess[str]) -> None:
    common, rows = header_table(demo.stdout)
    assert "x-payi-use-case-name: support_assistant" in common
    assert "x-payi-use-case-version: 2" in common
    assert re.search(r"x-payi-use-case-id: [0-9a-f-]{36}", common)
    assert len(rows) == CALLS
    assert [r["#"] for r in rows] == [str(i) for i in range(1, CALLS + 1)]

    tickets = [r for r in rows if r["user-id"] in CUSTOMERS]
    assert len(tickets) == 3 * 3 + 2
    for row in tickets:
        account = CUSTOMERS[row["user-id"]]
        assert row["account-name"] == account
        limits = row["limit-ids"].split(",")
        assert limits[0] == "monthly_budget" and limits[-1] == f"{account}_quota"
        assert ("answer_tokens" in limits) == (row["use-case-step"] == "answer")
    assert [r["use-case-step"] for r in tickets[:3]] == ["classify", "retrieve", "answer"]
    assert [r["call"] for r in tickets[:3]] == [
        "chat/completions",
        "embeddings",
        "chat/completions",
    ]
    (streamed,) = [r for r in rows if r["call"] == "chat/completions (stream)"]
    assert (streamed["user-id"], streamed["use-case-step"]) == ("bob", "answer")

    (escalation,) = [r for r in rows if r["use-case-step"] == "escalate"]
    assert escalation["user-id"] == "agent-7"  # the per-call header beat carol's scope
    assert escalation["account-name"] == "initech"
    assert escalation["request-tags"] == "escalation"

    (admin,) = [r for r in rows if r["user-id"] == "ops-admin"]
    assert admin["limit-ids"] == "-"  # track_context(limit_ids=[]) cleared every limit
    assert (admin["account-name"], admin["use-case-step"]) == ("internal", "answer")

    digests = [r for r in rows if r["use-case-step"] == "digest"]
    assert sorted(r["account-name"] for r in digests) == sorted(CUSTOMERS.values())
    for row in digests:
        assert row["user-id"] == "-"
        assert row["request-tags"] == "digest"
        assert row["limit-ids"] == "monthly_budget"


def load_report() -> ModuleType:
    """examples/support_assistant/report.py, imported under a name of its own."""
    path = DEMO.parent / "report.py"
    spec = importlib.util.spec_from_file_location("support_assistant_report", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("encoding", "branch"), [("utf-8", "└─ "), ("ascii", "`- ")])
def test_trees_fall_back_to_ascii_where_box_drawing_cannot_be_encoded(
    encoding: str, branch: str
) -> None:
    provider = TracerProvider()
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test")
    with (
        tracer.start_as_current_span("root"),
        tracer.start_as_current_span(
            "step", attributes={"payi.user_id": "u1", "payi.limit_ids": ("a", "b")}
        ),
    ):
        pass
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding=encoding)
    load_report().print_traces(memory.get_finished_spans(), out=out)
    out.flush()
    lines = raw.getvalue().decode(encoding).splitlines()
    (step,) = [line for line in lines if "step" in line]
    assert step.startswith(branch + "step ")
    assert step.endswith(" ms  sets user_id=u1 limit_ids=[a,b]")


# ---------------------------------------------------------------------------- OTLP export
def by_id(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    return {span.span_id: span for span in spans}


def test_demo_exports_its_spans_over_otlp_http() -> None:
    with OTLPReceiver() as receiver:
        result = run_demo(
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        )
        assert result.returncode == 0, result.stdout + result.stderr
        match = re.search(r"(\d+) spans delivered, 0 failed", result.stdout)
        assert match, result.stdout
        spans = receiver.wait_for(int(match.group(1)))
    assert len(spans) == int(match.group(1))
    assert {span.service_name for span in spans} == {"payi-otel-demo"}
    assert len({span.trace_id for span in spans}) == 5  # 3 tickets, the replay, the digest

    scopes = [s for s in spans if s.scope_name == "payi_otel"]
    assert {s.name for s in scopes} == {*STEPS, "payi.track_context"}
    for span in scopes:
        if span.name in STEPS:
            assert span.attributes["payi.use_case.step"] == span.name
            assert span.attributes["payi.scope"] == "track"

    genai = [s for s in spans if is_genai(s.attributes)]
    assert len(genai) == CALLS
    parents = by_id(spans)
    for span in genai:
        attributes: dict[str, Any] = span.attributes
        # Each GenAI span is the child of the step scope it was called in.
        assert parents[span.parent_span_id].name == attributes["payi.use_case.step"]
        assert attributes["payi.use_case.name"] == "support_assistant"
        assert attributes["payi.use_case.version"] == 2  # an int on the wire
        assert re.fullmatch(r"[0-9a-f-]{36}", attributes["payi.use_case.id"])
        assert "payi.scope" not in attributes

    def call(step: str, **expected: Any) -> dict[str, Any]:
        found = [
            s.attributes
            for s in genai
            if s.attributes["payi.use_case.step"] == step
            and all(s.attributes.get(f"payi.{k}") == v for k, v in expected.items())
        ]
        assert len(found) == 1, (step, expected, [s.attributes for s in genai])
        return found[0]

    alice = call("answer", user_id="alice")
    assert alice["payi.account_name"] == "acme"
    assert alice["payi.limit_ids"] == ["monthly_budget", "answer_tokens", "acme_quota"]
    assert call("classify", user_id="bob")["payi.limit_ids"] == ["monthly_budget", "globex_quota"]
    escalation = call("escalate")
    assert escalation["payi.user_id"] == "agent-7"
    assert escalation["payi.request_tags"] == ["escalation"]
    admin = call("answer", user_id="ops-admin")
    assert admin["payi.account_name"] == "internal"
    assert "payi.limit_ids" not in admin
    for account in CUSTOMERS.values():
        digest = call("digest", account_name=account)
        assert digest["payi.request_tags"] == ["digest"]
        assert "payi.user_id" not in digest


def _cost_table(lines: list[str], title: str) -> dict[tuple[str, str], float]:
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    rows: dict[tuple[str, str], float] = {}
    for line in lines[start + 2 :]:
        cells = re.split(r"\s{2,}", line.strip())
        if cells[0] == "total":
            rows[("total", "")] = float(cells[1])
            return rows
        rows[(cells[0], cells[1])] = float(cells[2])
    raise AssertionError(f"no total row under {title!r}")


def test_demo_prints_cost_per_user_and_per_use_case_step_from_the_metrics(
    demo: subprocess.CompletedProcess[str],
) -> None:
    lines = section(demo.stdout, "Cost, from the payi.genai.* metrics")
    by_user = _cost_table(lines, "By account and user")
    by_step = _cost_table(lines, "By use case and step")
    for user, account in {**CUSTOMERS, "agent-7": "initech", "ops-admin": "internal"}.items():
        assert by_user[(account, user)] > 0, by_user
    for account in ("acme", "globex", "initech"):  # the digests: no user
        assert by_user[(account, "-")] > 0
    assert {step for _, step in by_step} - {""} == set(STEPS)
    total = by_user.pop(("total", ""))
    assert total == by_step.pop(("total", "")) > 0
    assert sum(by_user.values()) == pytest.approx(total, abs=1e-5)
    assert sum(by_step.values()) == pytest.approx(total, abs=1e-5)
    # One priced row per provider and model: Gemini and Bedrock beside OpenAI's two models.
    by_model = _cost_table(lines, "By provider and model")
    assert by_model.pop(("total", "")) == total
    assert set(by_model) == {
        ("openai", "gpt-4o-mini"),
        ("openai", "text-embedding-3-small"),
        ("google.genai", "gemini-2.5-flash"),
        ("aws.bedrock", "us.anthropic.claude-3-5-haiku-20241022-v1:0"),
    }
    assert all(cost > 0 for cost in by_model.values()), by_model
    assert sum(by_model.values()) == pytest.approx(total, abs=1e-5)

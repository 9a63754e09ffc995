"""The checks `make e2e` (e2e/run.py) makes of what Jaeger returns, on made-up answers.

`make e2e` itself needs Go and the built binaries; these tests need neither. They show that
each check fails when Jaeger's copy of a trace differs from what the demo produced.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_run() -> Any:
    spec = importlib.util.spec_from_file_location("e2e_run", ROOT / "e2e" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["e2e_run"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


run = _load_run()
SERVICE = "svc"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
ROOT_ID = "b7ad6b7169203331"
CALL_ID = "00f067aa0ba902b7"
PAYI = {
    "payi.user_id": "alice",
    "payi.use_case.name": "support",
    "payi.use_case.version": 2,
    "payi.limit_ids": ["monthly", "acme_quota"],
    "payi.scope": "track",
}
HEADERS = {
    "x-payi-user-id": "alice",
    "x-payi-use-case-name": "support",
    "x-payi-use-case-version": "2",
    "x-payi-limit-ids": "monthly,acme_quota",
}


def demo_trace() -> dict[str, Any]:
    """As the demo's PAYI_DEMO_TRACES_JSON writes one trace."""
    return {
        "trace_id": TRACE_ID,
        "spans": [
            {
                "span_id": ROOT_ID,
                "parent_span_id": None,
                "name": "ticket",
                "genai": False,
                "payi": {},
                "headers": None,
            },
            {
                "span_id": CALL_ID,
                "parent_span_id": ROOT_ID,
                "name": "chat gpt-4o-mini",
                "genai": True,
                "payi": dict(PAYI),
                "headers": dict(HEADERS),
            },
        ],
    }


def otlp_value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}  # OTLP/JSON writes 64-bit integers as strings
    if isinstance(value, list):
        return {"arrayValue": {"values": [otlp_value(v) for v in value]}}
    return {"stringValue": value}


def v3_answer(trace: dict[str, Any], service: str = SERVICE, redact: bool = False) -> bytes:
    """What Jaeger's GET /api/v3/traces/{id} returns for ``trace`` (as run.py expects it)."""
    spans = []
    for span in trace["spans"]:
        attributes = dict(span["payi"])
        if redact and "payi.user_id" in attributes:
            attributes["payi.user_id"] = hashlib.sha256(b"alice").hexdigest()
        if span["genai"]:
            attributes["gen_ai.operation.name"] = "chat"
        entry = {
            "traceId": trace["trace_id"],
            "spanId": span["span_id"].upper(),
            "name": span["name"],
            "kind": 3,
            "attributes": [{"key": k, "value": otlp_value(v)} for k, v in attributes.items()],
        }
        if span["parent_span_id"]:
            entry["parentSpanId"] = span["parent_span_id"]
        spans.append(entry)
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]}
    return json.dumps(
        {
            "result": {
                "resourceSpans": [
                    {"resource": resource, "scopeSpans": [{"scope": {}, "spans": spans}]}
                ]
            }
        }
    ).encode()


def problems(trace: dict[str, Any], answer: bytes, redact: bool = False) -> list[str]:
    found = run.parse_v3_trace(trace["trace_id"], answer)
    result: list[str] = run.check_trace(trace, found, SERVICE, redact)
    return result


def test_a_whole_trace_passes() -> None:
    trace = demo_trace()
    assert problems(trace, v3_answer(trace)) == []


def test_parse_keeps_types_ids_and_parents() -> None:
    found = run.parse_v3_trace(TRACE_ID, v3_answer(demo_trace()))
    assert found.service_names == {SERVICE}
    assert found.spans[ROOT_ID].parent_span_id is None
    assert found.spans[CALL_ID].parent_span_id == ROOT_ID
    assert found.spans[CALL_ID].attributes["payi.use_case.version"] == 2
    assert found.spans[CALL_ID].attributes["payi.limit_ids"] == ["monthly", "acme_quota"]


def test_a_missing_span_fails() -> None:
    trace = demo_trace()
    lost = copy.deepcopy(trace)
    lost["spans"].pop()
    assert any("1 spans in Jaeger, 2 produced" in p for p in problems(trace, v3_answer(lost)))


def test_a_duplicated_span_fails() -> None:
    trace = demo_trace()
    twice = copy.deepcopy(trace)
    twice["spans"].append(copy.deepcopy(twice["spans"][1]))
    assert any("1 duplicate spans" in p for p in problems(trace, v3_answer(twice)))


def test_a_wrong_parent_fails() -> None:
    trace = demo_trace()
    orphan = copy.deepcopy(trace)
    orphan["spans"][1]["parent_span_id"] = None
    assert any("parent None" in p for p in problems(trace, v3_answer(orphan)))


def test_a_changed_payi_value_fails_against_attributes_and_headers() -> None:
    trace = demo_trace()
    changed = copy.deepcopy(trace)
    changed["spans"][1]["payi"]["payi.use_case.version"] = 3
    found = problems(trace, v3_answer(changed))
    assert any("payi.* {" in p and "!=" in p for p in found)
    assert any("do not stand for the headers" in p for p in found)


def test_headers_the_call_sent_are_the_reference() -> None:
    trace = demo_trace()
    trace["spans"][1]["headers"]["x-payi-user-id"] = "mallory"  # the call sent another id
    assert any("do not stand for the headers" in p for p in problems(trace, v3_answer(trace)))


def test_a_genai_span_without_a_matched_request_fails() -> None:
    trace = demo_trace()
    trace["spans"][1]["headers"] = None
    assert any("matched no request" in p for p in problems(trace, v3_answer(trace)))


def test_another_service_fails() -> None:
    trace = demo_trace()
    assert any("service.name" in p for p in problems(trace, v3_answer(trace, service="other")))


def test_redact_expects_the_sha256_of_the_user_id() -> None:
    trace = demo_trace()
    assert problems(trace, v3_answer(trace, redact=True), redact=True) == []
    clear = problems(trace, v3_answer(trace), redact=True)
    assert clear and all("alice" in p for p in clear)
    assert problems(trace, v3_answer(trace, redact=True), redact=False)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("payi.user_id", "alice", {TRACE_ID}),
        ("payi.user_id", "bob", set()),
        ("payi.use_case.name", "support", {TRACE_ID}),
    ],
)
def test_tag_search_expectation(key: str, value: str, expected: set[str]) -> None:
    assert run.traces_with({"traces": [demo_trace()]}, key, value) == expected


def test_the_hash_is_the_attributes_processors() -> None:
    # SHA-256, lower-case hex, of the UTF-8 string (contrib internal/coreinternal/attraction).
    assert run.sha256_hex("alice") == (
        "2bd806c97f0e00af1a1fc3328fa763a9269723c8db8fac4f93af71db186d6e90"
    )


# --------------------------------------------------------------------------- the demo's record
@pytest.fixture(scope="module")
def demo_record(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``PAYI_DEMO_TRACES_JSON``: the reference `make e2e` compares Jaeger with; the demo run
    once (as ``OTEL_SERVICE_NAME=recorded``) for the tests below."""
    import os
    import subprocess

    path = tmp_path_factory.mktemp("demo_record") / "traces.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PAYI_"))}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "support_assistant" / "main.py")],
        env={**env, "PAYI_DEMO_TRACES_JSON": str(path), "OTEL_SERVICE_NAME": "recorded"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    record: dict[str, Any] = json.loads(path.read_text())
    return record


def test_the_demo_records_what_it_produced(demo_record: dict[str, Any]) -> None:
    """``PAYI_DEMO_TRACES_JSON``: the reference `make e2e` compares Jaeger with."""
    record = demo_record
    assert record["service_name"] == "recorded"
    assert record["check_ok"] is True and record["headers_recorded"] is True
    assert record["otlp_delivered"] == record["otlp_failed"] == 0  # no OTLP endpoint set
    roots = [t["spans"][0]["name"] for t in record["traces"]]
    assert roots == [
        "ticket T-1001",
        "ticket T-1002",
        "ticket T-1003",
        "admin replay T-1001",
        "nightly digest",
    ]
    genai = 0
    for trace in record["traces"]:
        ids = {s["span_id"] for s in trace["spans"]}
        assert [s["parent_span_id"] for s in trace["spans"]].count(None) == 1
        assert all(s["parent_span_id"] in ids for s in trace["spans"] if s["parent_span_id"])
        for span in trace["spans"]:
            assert all(key.startswith("payi.") for key in span["payi"])
            if span["genai"]:
                genai += 1
                assert span["headers"] and all(h.startswith("x-payi-") for h in span["headers"])
                sent_user = span["headers"].get("x-payi-user-id")
                assert sent_user == span["payi"].get("payi.user_id")
            else:
                assert span["headers"] is None
    assert genai == 16  # the calls of tests/test_demo.py (CALLS): Gemini and Bedrock too


def test_every_search_the_readme_shows_finds_the_demos_traces(
    demo_record: dict[str, Any],
) -> None:
    """The README's Jaeger searches, checked against what the demo produces (`make e2e` runs
    the same searches against the real Jaeger): each matches at least one trace."""
    record = demo_record
    searches = run.readme_searches()
    assert {"payi.user_id": "alice"} in searches
    assert any(len(tags) > 1 for tags in searches)  # a combined search is shown too
    for tags in searches:
        assert run.traces_with_all(record, tags), f"the README's search {tags} finds nothing"
    assert not run.traces_with_all(
        record, {"payi.user_id": "carol", "payi.use_case.step": "escalate"}
    )


# --------------------------------------------------------------------------- the fleet variant
def _load_fleet() -> Any:
    spec = importlib.util.spec_from_file_location("e2e_fleet_checks", ROOT / "e2e" / "fleet.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fleet = _load_fleet()


@pytest.fixture(scope="module")
def fleet_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    """e2e/fleet_demo.py, run once: its record (the SDK's metric points, each span's cost and
    status) and the demo's output."""
    import os
    import subprocess

    path = tmp_path_factory.mktemp("fleet") / "fleet.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PAYI_"))}
    done = subprocess.run(
        [sys.executable, str(ROOT / "e2e" / "fleet_demo.py")],
        env={**env, "PAYI_E2E_FLEET_JSON": str(path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(path.read_text()), done.stdout


def _sums_by(points: list[dict[str, Any]], attributes: tuple[str, ...]) -> list[Any]:
    """Cost, input and output tokens of the SDK's points, by ``attributes``."""
    by = ", ".join(fleet.label_name(a) for a in attributes)
    return [
        fleet.sdk_sums(points, query)
        for query in (
            f"sum by ({by}) (payi_genai_cost_USD_total)",
            f'sum by ({by}) (payi_genai_tokens_total{{payi_otel_token_type="input"}})',
            f'sum by ({by}) (payi_genai_tokens_total{{payi_otel_token_type="output"}})',
        )
    ]


def test_fleet_demo_records_the_sdks_metrics_and_each_spans_cost(
    fleet_demo: tuple[dict[str, Any], str],
) -> None:
    record, _ = fleet_demo
    names = {p["name"] for p in record["sdk_points"]}
    assert names == {"payi.genai.cost", "payi.genai.tokens"}
    traces = {s["trace_id"] for s in record["spans"].values()}
    assert len(traces) == 5
    priced = [s for s in record["spans"].values() if s["cost"] is not None]
    assert len(priced) == 16  # the demo's GenAI calls (Gemini and Bedrock too), each priced
    total = sum(p["value"] for p in record["sdk_points"] if p["name"] == "payi.genai.cost")
    assert total == pytest.approx(sum(s["cost"] for s in priced), rel=1e-12)
    # The e2e's threshold keeps some of the demo's traces and drops others.
    kept = fleet.kept_traces(record["spans"], float(fleet.KEEP_COST_USD))
    assert 0 < len(kept) < len(traces)


def test_demo_tables_are_the_sdks_sums_and_a_difference_fails(
    fleet_demo: tuple[dict[str, Any], str],
) -> None:
    record, output = fleet_demo
    tables = fleet.demo_tables(output)
    assert set(tables) == set(fleet.DEMO_TABLES)
    for title, attributes in fleet.DEMO_TABLES.items():
        cost, tokens_in, tokens_out = _sums_by(record["sdk_points"], attributes)
        assert fleet.compare_demo_table(tables[title], cost, tokens_in, tokens_out, title) == []
        assert ("total",) in tables[title] and len(tables[title]) > 3
        key = next(iter(cost))
        more = {**cost, key: cost[key] + 1e-6}
        assert fleet.compare_demo_table(tables[title], more, tokens_in, tokens_out, title)
        fewer = {**tokens_in, key: tokens_in[key] - 1}
        assert fleet.compare_demo_table(tables[title], cost, fewer, tokens_out, title)


def test_readme_queries_compare_prometheus_answers_with_the_sdks_sums(
    fleet_demo: tuple[dict[str, Any], str],
) -> None:
    record, _ = fleet_demo
    points = record["sdk_points"]
    for query in fleet.readme_queries():
        metric, by, _ = fleet.parse_query(query)
        want = fleet.sdk_sums(points, query)
        assert want, query
        # A Prometheus answer with the same sums (labels absent where the SDK had none).
        answer = [
            {
                "metric": {label: value for label, value in zip(by, key) if value},
                "value": [1.0, repr(total)],
            }
            for key, total in want.items()
        ]
        exact = metric.endswith("tokens")
        assert fleet.compare_sums(want, fleet.prometheus_sums(answer, by), exact, query) == []
        answer[0]["value"][1] = repr(float(answer[0]["value"][1]) * (1 + 1e-6))
        assert fleet.compare_sums(want, fleet.prometheus_sums(answer, by), exact, query)
        assert fleet.compare_sums(want, fleet.prometheus_sums(answer[1:], by), exact, query)

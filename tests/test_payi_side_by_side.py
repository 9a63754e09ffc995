"""Side by side with Pay-i's own SDK (``payi`` 0.1.0a183, real, unpatched): the same seed
scenarios under the same scopes, each SDK and mode in a process of its own, each against its
own local capture server for the LLM calls and its own local fake Pay-i for ingest
(tests/payi_side_by_side.py), all at once.

* proxy: Pay-i's SDK with ``proxy=True`` vs payi_otel's ``payi-proxy`` dialect - the
  ``xProxy-*`` headers on each LLM call, name for name and value for value;
* ingest: Pay-i's SDK in its default mode vs ``PayiIngestExporter`` - each
  ``/api/v1/ingest`` request's ``xProxy-*`` headers and body, field by field.

Use case ids are fresh UUIDs on each side ("ids aside": compared as "a UUID, the same one
where the other side repeats one"). Limit ids are compared as sets: Pay-i's SDK merges them
through a ``set`` (``_init_current_context``), so its order is arbitrary. The differences
that remain are where Pay-i's SDK does not follow the seeds; they are listed in
``KNOWN`` and asserted exactly, so any other difference fails. ``pytest -s`` prints the
tables.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, TypeVar

import pytest
from fake_llm_server import FakeLLMServer
from fake_payi_server import FakePayiServer

TESTS = Path(__file__).resolve().parent
RUNNER = TESTS / "payi_side_by_side.py"
#: (implementation, mode): ``("payi", "proxy")``, ``("payi_otel", "spans")``, ...
Key = tuple[str, str]
T = TypeVar("T")

#: (scenario, index of the call in it, header) -> (Pay-i's SDK, payi_otel). Why each differs:
#: a per-call list or dict header replaces the scopes' value in Pay-i's SDK, where the seeds
#: merge it ("Headers with Decorated Functions", "Triple Combination"); and Pay-i's SDK lets
#: the innermost scope win where the seeds rank every track_context above every @track
#: ("Context Manager Calling a Decorated Function").
KNOWN: Mapping[tuple[str, int, str], tuple[str, str]] = {
    ("headers_with_decorated_functions", 1, "xproxy-limit-ids"): (
        "header_limit",
        "header_limit,limit1",
    ),
    ("triple_combination", 0, "xproxy-limit-ids"): ("limit3", "limit1,limit2,limit3"),
    ("context_calling_decorated", 1, "xproxy-user-id"): ("decorator_user", "context_user"),
    ("properties_and_pricing", 1, "xproxy-request-properties"): (
        '{"call":"1"}',
        '{"call":"1","cost":"a","team":"core"}',
    ),
}


@dataclass
class Run:
    labels: list[str]
    llm: list[dict[str, str]]
    ingest: list[tuple[dict[str, str], dict[str, Any]]]
    #: Pay-i's last answer as the app sees it (issue 19).
    last_result: Any = None
    #: The ``id`` query of each ingest request (issue 19).
    ids: list[Optional[str]] = dataclasses.field(default_factory=list)


def runner_env(payi: FakePayiServer) -> dict[str, str]:
    """A runner process's environment: Pay-i's key and the fake Pay-i, no OTEL_* setting."""
    env = {
        **os.environ,
        "PAYI_API_KEY": "test-key",
        "PAYI_BASE_URL": payi.base_url,
        "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent / "examples")]),
    }
    return {k: v for k, v in env.items() if not k.startswith("OTEL_")}


def start_runner(
    runner: Path,
    impl: str,
    modes: tuple[str, ...],
    stack: ExitStack,
    collect: Callable[[Any, FakeLLMServer, FakePayiServer], T],
    limits: Optional[dict[str, str]] = None,
) -> Callable[[], dict[Key, T]]:
    """Start one runner process for ``modes``, each with its own fake LLM and Pay-i servers
    (the runner forks one process per mode when there are several); the call that waits for
    it and ``collect``s each mode's result with what its servers received."""
    servers: dict[str, tuple[FakeLLMServer, FakePayiServer]] = {}
    args = []
    for mode in modes:
        llm, payi = stack.enter_context(FakeLLMServer()), stack.enter_context(FakePayiServer())
        payi.limits = dict(limits or {})
        servers[mode] = llm, payi
        args += [mode, llm.base_url, payi.base_url]
    process = subprocess.Popen(
        [sys.executable, str(runner), impl, *args],
        env=runner_env(payi),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def finish() -> dict[Key, T]:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err[-3000:]
        found = json.loads(out.strip().splitlines()[-1])
        assert set(found) == set(modes)
        return {(impl, mode): collect(found[mode], *servers[mode]) for mode in modes}

    return finish


def _collected(out: dict[str, Any], llm: FakeLLMServer, payi: FakePayiServer) -> Run:
    return Run(
        out["labels"],
        [
            {k: v for k, v in r.headers.items() if k.startswith(("xproxy-", "x-payi-"))}
            for r in llm.requests
        ],
        [
            ({k: v for k, v in r.headers.items() if k.startswith("xproxy-")}, r.body)
            for r in payi.ingested()
        ],
        out["last_result"],
        [r.id for r in payi.ingested()],
    )


@pytest.fixture(scope="module")
def runs() -> Iterator[dict[Key, Run]]:
    """Pay-i's SDK in its two modes, payi_otel in its four (payi_otel's span exporter form and
    prompt logging too: Pay-i's SDK has one ingest mode), all at once."""
    limits = {"limit1": "ok", "limit3": "exceeded"}  # in every answer
    with ExitStack() as stack:
        started = [
            start_runner(RUNNER, impl, modes, stack, _collected, limits)
            for impl, modes in [
                ("payi", ("proxy",)),
                ("payi", ("ingest",)),
                ("payi_otel", ("proxy", "ingest", "spans", "logged")),
            ]
        ]
        runs: dict[Key, Run] = {}
        for finish in started:
            runs.update(finish())
        yield runs


def _is_uuid(text: str) -> bool:
    try:
        return uuid.UUID(text).version == 4
    except ValueError:
        return False


def _normal(headers: Mapping[str, str], ids: dict[str, str]) -> dict[str, str]:
    """Use case ids as ``<id N>`` (N: first-seen order on that side), limit ids sorted,
    properties decoded from base64 and keys sorted."""
    import base64

    out = {}
    for name, value in headers.items():
        if name == "xproxy-usecase-id" and _is_uuid(value):
            value = ids.setdefault(value, f"<id {len(ids) + 1}>")
        elif name == "xproxy-limit-ids":
            value = ",".join(sorted(value.split(",")))
        elif name.endswith("-properties"):
            value = json.dumps(
                json.loads(base64.b64decode(value)), sort_keys=True, separators=(",", ":")
            )
        out[name] = value
    return out


def _numbered(labels: list[str]) -> list[tuple[str, int]]:
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        out.append((label, seen.get(label, 0)))
        seen[label] = seen.get(label, 0) + 1
    return out


def _table(title: str, rows: list[tuple[str, str, str, str]], key: str = "header") -> None:
    print(f"\n{title}\n| call | {key} | Pay-i SDK | payi_otel |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def _compare(
    payi_calls: list[dict[str, str]],
    ours_calls: list[dict[str, str]],
    labels: list[str],
    title: str,
    in_headers: bool = True,
) -> None:
    """Compare call by call; the differences must be exactly the KNOWN ones (those of the
    properties only where they travel in headers)."""
    assert len(payi_calls) == len(ours_calls) == len(labels)
    payi_ids: dict[str, str] = {}
    ours_ids: dict[str, str] = {}
    rows, unexpected = [], []
    for (label, index), theirs, ours in zip(_numbered(labels), payi_calls, ours_calls):
        theirs, ours = _normal(theirs, payi_ids), _normal(ours, ours_ids)
        for name in sorted(set(theirs) | set(ours)):
            pair = (theirs.get(name, "-"), ours.get(name, "-"))
            mark = "" if pair[0] == pair[1] else " (differs)"
            rows.append((f"{label}#{index}", name, pair[0], pair[1] + mark))
            if pair[0] != pair[1] and KNOWN.get((label, index, name)) != pair:
                unexpected.append((label, index, name, pair))
    _table(title, rows)
    assert unexpected == []
    expected = [k for k in KNOWN if in_headers or not k[2].endswith("-properties")]
    assert sum(1 for r in rows if r[3].endswith("(differs)")) == len(expected)


def test_proxy_headers_match_pay_i_sdk_in_proxy_mode(runs: dict[Key, Run]) -> None:
    payi, ours = runs["payi", "proxy"], runs["payi_otel", "proxy"]
    assert payi.labels == ours.labels and len(payi.labels) == 23
    # Only xProxy-* names on either side (no x-payi-* in Pay-i's dialect).
    assert not any(k.startswith("x-payi-") for h in ours.llm for k in h)
    _compare(payi.llm, ours.llm, payi.labels, "proxy mode: xProxy-* headers on the LLM call")


# Body fields Pay-i's SDK sends that PayiIngestExporter does not, and why: the prompt and
# the response (provider_request_json / provider_response_json) are not on spans and are not
# attribution; nor are the provider's response headers; its stack trace property is the
# caller's Python stack, which a span exporter does not have; provider_uri is the SDK
# client's base URL, which the OpenAI GenAI span does not carry (only server.address/port).
PAYI_ONLY_FIELDS = {
    "provider_request_json",
    "provider_response_json",
    "provider_response_headers",
    "provider_uri",
}
PAYI_ONLY_PROPERTIES = {"system.stack_trace"}
#: A header of Pay-i's ingest request that the exporter does not send: the instrumented SDK
#: and its version ("openai/3.57.0"), which a span does not say.
PAYI_ONLY_HEADERS = {"xproxy-instrumented-module"}
#: Measured on each side (the wrapped call / the GenAI span): compared by type and range.
MEASURED = {"event_timestamp", "end_to_end_latency_ms", "provider_response_id"}


@pytest.mark.parametrize("form", ["ingest", "spans"])
def test_ingest_records_match_pay_i_sdk_in_ingest_mode(runs: dict[Key, Run], form: str) -> None:
    """Per call (``payi_instrument(ingest=...)``) and as a span exporter alike."""
    payi, ours = runs["payi", "ingest"], runs["payi_otel", form]
    assert payi.labels == ours.labels
    # Ingest mode: no attribution header on the LLM call, from either side.
    assert all(h == {} for h in payi.llm + ours.llm)
    assert len(payi.ingest) == len(ours.ingest) == len(payi.labels)
    headers_theirs = [
        {k: v for k, v in h.items() if k not in PAYI_ONLY_HEADERS} for h, _ in payi.ingest
    ]
    assert all(set(h) >= PAYI_ONLY_HEADERS for h, _ in payi.ingest)
    _compare(
        headers_theirs,
        [h for h, _ in ours.ingest],
        payi.labels,
        "ingest mode: xProxy-* headers of POST /api/v1/ingest",
        in_headers=False,
    )
    rows = []
    for (label, index), (_, theirs), (_, mine) in zip(
        _numbered(payi.labels), payi.ingest, ours.ingest
    ):
        assert set(theirs["properties"]) >= PAYI_ONLY_PROPERTIES
        properties = {
            k: v for k, v in theirs["properties"].items() if k not in PAYI_ONLY_PROPERTIES
        }
        theirs = {k: v for k, v in theirs.items() if k != "properties"}
        if properties:
            theirs["properties"] = properties
        # Prompt logging per scope (prompt_logging_per_scope): a call neither logs is no
        # difference; one both log is compared in test_prompt_and_response_as_pay_i_sdk_logs_them.
        payi_only = PAYI_ONLY_FIELDS
        if "provider_request_json" not in theirs or "provider_request_json" in mine:
            payi_only = PAYI_ONLY_FIELDS - {"provider_request_json", "provider_response_json"}
        assert set(theirs) - set(mine) == payi_only, label
        assert set(mine) <= set(theirs), label
        for field in sorted(set(theirs) - PAYI_ONLY_FIELDS):
            a, b = theirs[field], mine[field]
            if field == "properties" and (label, index) == ("properties_and_pricing", 1):
                # The per-call header replaces in Pay-i's SDK, merges here (KNOWN).
                assert (a, b) == ({"call": "1"}, {"team": "core", "cost": "a", "call": "1"})
                a = b
            if field in MEASURED:
                assert type(a) is type(b), field
                if field == "provider_response_id":
                    assert a.startswith("chatcmpl-") and b.startswith("chatcmpl-")
                a = b = f"<{type(a).__name__}>"
            assert a == b, (label, index, field, a, b)
            if index == 0 and label in ("tracking_users", "properties_and_pricing"):
                rows.append(
                    (
                        f"{label}#{index}",
                        field,
                        json.dumps(theirs[field])[:60],
                        json.dumps(mine[field])[:60],
                    )
                )
        for field in sorted(PAYI_ONLY_FIELDS):
            if index == 0 and label == "tracking_users":
                rows.append(
                    (
                        f"{label}#{index}",
                        field,
                        json.dumps(theirs[field])[:40] + "...",
                        "- (not sent)",
                    )
                )
    _table("ingest mode: POST /api/v1/ingest body", rows, key="field")


@pytest.mark.parametrize("form", ["ingest", "spans"])
def test_each_record_is_sent_with_its_id_as_pay_i_sdk_does(runs: dict[Key, Run], form: str) -> None:
    """Pay-i's SDK sends ``?id=<provider_response_id>`` with each record (Pay-i recognises a
    record sent again by it); so does payi_otel, whose retries rely on it."""
    for run in (runs["payi", "ingest"], runs["payi_otel", form]):
        assert run.ids == [body["provider_response_id"] for _, body in run.ingest]
        assert all(run.ids) and len(set(run.ids)) == len(run.ids)


@pytest.mark.parametrize("mode", ["ingest", "spans"])
def test_the_last_answer_has_pay_i_sdk_shape(runs: dict[Key, Run], mode: str) -> None:
    """``payi_otel.last_result()`` is what Pay-i's SDK gives as
    ``get_context()["last_result"]`` after the same calls, field for field (the request id
    aside: Pay-i makes a new one per record)."""
    theirs, ours = runs["payi", "ingest"].last_result, runs["payi_otel", mode].last_result
    assert theirs is not None and ours is not None
    assert set(theirs) == set(ours)
    assert {k: v for k, v in theirs.items() if k != "request_id"} == {
        k: v for k, v in ours.items() if k != "request_id"
    }
    assert theirs["limits"]["limit3"] == {"state": "exceeded"}


def test_prompt_and_response_as_pay_i_sdk_logs_them(runs: dict[Key, Run]) -> None:
    """With ``log_prompt_and_response=True`` (Pay-i's SDK's default; off by default here) the
    records carry the request and response bodies as Pay-i's SDK sends them: the request
    body's JSON, and a list with the response's JSON (the response's own id and time aside:
    two calls)."""
    theirs, ours = runs["payi", "ingest"], runs["payi_otel", "logged"]
    # Off by default here: only the call whose own scope turns it on is logged.
    default = runs["payi_otel", "ingest"]
    assert [
        f"{label}#{index}"
        for (label, index), (_, b) in zip(_numbered(default.labels), default.ingest)
        if "provider_request_json" in b
    ] == ["prompt_logging_per_scope#1"]
    volatile = {"id", "created"}
    logged = 0
    for (_, a), (_, b) in zip(theirs.ingest, ours.ingest):
        # Not logged where a scope or the call turned it off (prompt_logging_per_scope).
        assert ("provider_request_json" in a) == ("provider_request_json" in b), a["user_id"]
        if "provider_request_json" not in a:
            assert "provider_response_json" not in a and "provider_response_json" not in b
            continue
        logged += 1
        assert json.loads(a["provider_request_json"]) == json.loads(b["provider_request_json"])
        (their_response,), (our_response,) = (
            a["provider_response_json"],
            b["provider_response_json"],
        )
        their_response, our_response = json.loads(their_response), json.loads(our_response)
        assert set(their_response) == set(our_response)
        assert {k: v for k, v in their_response.items() if k not in volatile} == {
            k: v for k, v in our_response.items() if k not in volatile
        }
    assert 0 < logged < len(theirs.ingest)

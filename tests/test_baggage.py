"""Context across processes (README.md, "Where the context travels"): W3C baggage, opt-in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import openai
import pytest
from fake_llm_server import FakeLLMServer
from fixtures_genai import CHAT, GenAI, genai_call, payi_headers
from opentelemetry import baggage, propagate
from opentelemetry import context as otel_context

from payi_otel import PayiInstrumentor, get_context, track, track_context

DOWNSTREAM = Path(__file__).resolve().parent.parent / "examples" / "cross_service" / "downstream.py"


@pytest.fixture
def downstream(llm_server: FakeLLMServer) -> Iterator[Callable[[bool], str]]:
    """Start the downstream service in its own process; returns its URL."""
    processes: list[subprocess.Popen[str]] = []

    def start(propagate_baggage: bool) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PAYI_", "OTEL_"))}
        env.update(
            LLM_BASE_URL=llm_server.openai_base_url,
            PAYI_PROPAGATE_BAGGAGE="true" if propagate_baggage else "false",
            PAYI_USE_CASE_NAME="downstream_default",
            PAYI_ACCOUNT_NAME="down_acct",
        )
        proc = subprocess.Popen(
            [sys.executable, str(DOWNSTREAM)],
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        processes.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("LISTENING"), (line, proc.stderr.read() if proc.stderr else "")
        return f"http://127.0.0.1:{line.split()[1]}/summarize"

    yield start
    for proc in processes:
        proc.terminate()
        proc.communicate(timeout=10)  # waits for it, and closes its pipes


def call_downstream(url: str) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    propagate.inject(headers)  # what an HTTP client instrumentation does
    request = urllib.request.Request(url, data=b'{"text": "order 42"}', headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        result: dict[str, Any] = json.loads(response.read())
    return result


def upstream_call(url: str) -> dict[str, Any]:
    with track_context(
        use_case_name="checkout", use_case_id="co-1", user_id="up_user", limit_ids=["up_limit"]
    ):
        return call_downstream(url)


def test_baggage_on_downstream_inherits_upstream_parameters(
    instrument: Callable[..., PayiInstrumentor],
    llm_server: FakeLLMServer,
    downstream: Callable[[bool], str],
) -> None:
    instrument(caller_file="<test>", propagate_baggage=True)
    result = upstream_call(downstream(True))
    sent = payi_headers(llm_server.requests[-1])
    assert sent["x-payi-user-id"] == "up_user"
    assert sent["x-payi-use-case-name"] == "checkout"
    assert sent["x-payi-use-case-id"] == "co-1"
    assert sent["x-payi-use-case-step"] == "summarize"  # the downstream's own scope
    # Budget controls are not taken from another process by default (PAYI_BAGGAGE_ACCEPT).
    assert "x-payi-limit-ids" not in sent
    assert sent["x-payi-account-name"] == "down_acct"  # its global level still applies
    assert result["context"]["user_id"] == "up_user"


def test_baggage_off_downstream_does_not_inherit(
    instrument: Callable[..., PayiInstrumentor],
    llm_server: FakeLLMServer,
    downstream: Callable[[bool], str],
) -> None:
    instrument(caller_file="<test>")  # propagate_baggage defaults to off
    upstream_call(downstream(True))
    sent = payi_headers(llm_server.requests[-1])
    assert "x-payi-user-id" not in sent
    assert sent["x-payi-use-case-name"] == "downstream_default"


def test_downstream_off_ignores_incoming_baggage(
    instrument: Callable[..., PayiInstrumentor],
    llm_server: FakeLLMServer,
    downstream: Callable[[bool], str],
) -> None:
    instrument(caller_file="<test>", propagate_baggage=True)
    upstream_call(downstream(False))
    sent = payi_headers(llm_server.requests[-1])
    assert "x-payi-user-id" not in sent
    assert sent["x-payi-use-case-name"] == "downstream_default"


def test_outgoing_baggage_entries(instrument: Callable[..., PayiInstrumentor]) -> None:
    instrument(caller_file="<test>", propagate_baggage=True)
    with track_context(user_id="u", limit_ids=["a", "b"], request_properties={"k": "v"}):
        with track_context(user_id=""):
            entries = dict(baggage.get_all())
    assert entries == {
        "payi.limit_ids": "a,b",
        "payi.request_properties": '{"k":"v"}',
        "payi.user_id": "",
    }
    assert baggage.get_all() == {}


def test_incoming_baggage_is_the_level_above_global(
    instrument: Callable[..., PayiInstrumentor],
) -> None:
    instrument(
        {"user_id": "global_user", "limit_ids": ["g"]},
        caller_file="<test>",
        propagate_baggage=True,
        baggage_accept=["*"],
    )
    ctx = baggage.set_baggage("payi.user_id", "baggage_user")
    ctx = baggage.set_baggage("payi.limit_ids", "b1,b2", ctx)
    ctx = baggage.set_baggage("payi.use_case_version", "not-an-int", ctx)  # ignored, logged
    token = otel_context.attach(ctx)
    try:
        assert get_context()["user_id"] == "baggage_user"

        @track(user_id="track_user", limit_ids=["t"])
        def f() -> dict[str, Any]:
            return dict(get_context())

        inner = f()
        assert inner["user_id"] == "track_user"
        assert inner["limit_ids"] == ["g", "b1", "b2", "t"]
    finally:
        otel_context.detach(token)


def test_baggage_ignored_when_off(instrument: Callable[..., PayiInstrumentor]) -> None:
    instrument(caller_file="<test>")
    token = otel_context.attach(baggage.set_baggage("payi.user_id", "intruder"))
    try:
        assert "user_id" not in get_context()
        with track_context(limit_ids=["x"]):
            assert "user_id" not in get_context()
            assert baggage.get_baggage("payi.limit_ids") is None
    finally:
        otel_context.detach(token)


def test_incoming_baggage_sets_no_budget_or_pricing_control_by_default(
    instrument: Callable[..., PayiInstrumentor],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    instrument({"limit_ids": ["mine"]}, caller_file="<test>", propagate_baggage=True)
    ctx = baggage.set_baggage("payi.limit_ids", "", None)  # a caller trying to clear limits
    ctx = baggage.set_baggage("payi.price_as_resource", "cheap-model", ctx)
    ctx = baggage.set_baggage("payi.user_id", "caller_user", ctx)
    token = otel_context.attach(ctx)
    try:
        seen = dict(get_context())
    finally:
        otel_context.detach(token)
    assert seen == {"limit_ids": ["mine"], "user_id": "caller_user"}


def test_baggage_accept_from_the_environment(
    instrument: Callable[..., PayiInstrumentor],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PAYI_BAGGAGE_ACCEPT", "user_id")
    instrument(caller_file="<test>", propagate_baggage=True)
    ctx = baggage.set_baggage("payi.account_name", "theirs", None)
    ctx = baggage.set_baggage("payi.user_id", "u", ctx)
    token = otel_context.attach(ctx)
    try:
        assert dict(get_context()) == {"user_id": "u"}
    finally:
        otel_context.detach(token)
    monkeypatch.setenv("PAYI_BAGGAGE_ACCEPT", "user_id,no_such_parameter")
    PayiInstrumentor().uninstrument()
    with pytest.raises(ValueError, match="no_such_parameter"):
        PayiInstrumentor().instrument(caller_file="<test>", propagate_baggage=True)


def test_a_model_provider_call_carries_no_payi_baggage(genai: GenAI) -> None:
    """What an instrumented HTTP client would inject into the provider request: no payi.*
    entries, even with baggage on (the provider has no use for user ids)."""
    genai.reinstrument(propagate_baggage=True)
    seen: list[dict[str, object]] = []
    client = genai.openai_client(
        http_client=openai.DefaultHttpxClient(
            event_hooks={"request": [lambda request: seen.append(dict(baggage.get_all()))]}
        )
    )
    with track_context(user_id="private"):
        assert baggage.get_baggage("payi.user_id") == "private"
        client.chat.completions.create(**CHAT)
    assert seen and not any(k.startswith("payi.") for k in seen[0])


def _injecting_client() -> Any:
    """An httpx client whose request hook injects the context's baggage, as an HTTP
    instrumentation does inside the send."""
    import httpx

    def inject(request: Any) -> None:
        propagate.inject(request.headers)

    return httpx.Client(event_hooks={"request": [inject]})


def _sent_baggage(server: FakeLLMServer) -> str:
    return server.requests[-1].headers.get("baggage", "")


def test_outgoing_payi_baggage_goes_only_to_allowed_hosts(
    instrument: Callable[..., PayiInstrumentor],
    llm_server: FakeLLMServer,
) -> None:
    instrument(caller_file="<test>", propagate_baggage=True, header_hosts=["gateway.internal"])
    client = _injecting_client()
    url = llm_server.openai_base_url + "/models"
    ctx = baggage.set_baggage("team", "search")  # not ours: always goes
    token = otel_context.attach(ctx)
    try:
        with track_context(user_id="private"):
            client.get(url)
    finally:
        otel_context.detach(token)
    sent = _sent_baggage(llm_server)
    assert "team=search" in sent and "payi." not in sent  # 127.0.0.1 is not allowed here

    PayiInstrumentor().uninstrument()
    PayiInstrumentor().instrument(
        caller_file="<test>", propagate_baggage=True, header_hosts=["127.0.0.1"]
    )
    with track_context(user_id="private"):
        client.get(url)
    assert "payi.user_id=private" in _sent_baggage(llm_server)


def test_requests_adapter_strips_payi_members_for_refused_hosts(
    instrument: Callable[..., PayiInstrumentor],
    llm_server: FakeLLMServer,
) -> None:
    import requests

    instrument(caller_file="<test>", propagate_baggage=True, header_hosts=["gateway.internal"])
    with track_context(user_id="private"):
        headers: dict[str, str] = {}
        propagate.inject(headers)  # what a requests instrumentation does before the adapter
        assert "payi.user_id" in headers["baggage"]
        requests.get(llm_server.openai_base_url + "/models", headers=headers, timeout=10)
    assert "payi." not in _sent_baggage(llm_server)


def test_strip_payi_members_keeps_the_others() -> None:
    from payi_otel._outgoing import strip_payi_members

    assert strip_payi_members("a=1,payi.user_id=u;p=1, payi%2Elimit_ids=x,b=2") == "a=1,b=2"


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
def test_one_incoming_request_naming_a_use_case_without_an_id_is_one_instance(
    surface: GenAI, sdk: str
) -> None:
    """Incoming baggage names a use case but no id (a gateway set it): every call of that
    request - one trace - carries one id, not a new one per call; another request (another
    trace) gets its own (README "Across services")."""
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    surface.reinstrument(
        propagate_baggage=True, genai_spans=surface.genai_spans, header_dialect=surface.dialect
    )

    def request(trace_id: int) -> None:
        parent = NonRecordingSpan(SpanContext(trace_id, 0x1234, True, TraceFlags(1)))
        ctx = trace.set_span_in_context(parent)
        ctx = baggage.set_baggage("payi.use_case_name", "checkout", ctx)
        token = otel_context.attach(ctx)
        try:
            first = get_context()["use_case_id"]
            assert get_context()["use_case_id"] == first
            genai_call(surface, sdk)
            genai_call(surface, sdk)
            with track_context(user_id="u"):  # a scope inside the request: the same instance
                genai_call(surface, sdk)
        finally:
            otel_context.detach(token)

    request(0xA1)
    request(0xB2)
    sent = surface.attribution()
    names = {headers["x-payi-use-case-name"] for headers in sent}
    ids = [headers["x-payi-use-case-id"] for headers in sent]
    assert names == {"checkout"}
    assert len(set(ids[:3])) == 1 and len(set(ids[3:])) == 1 and ids[0] != ids[3]

"""Spanless mode (``payi_instrument(scope_spans=False)`` / ``PAYI_SCOPE_SPANS=false``): the
same headers and GenAI-span attributes as with scope spans, and no scope span."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fixtures_genai import CHAT, MESSAGE, GenAI

from payi_otel import get_context, track, track_context
from payi_otel._spans import TRACER_NAME

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def _program(genai: GenAI) -> list[Any]:
    """Nested scopes of both methods, per-call headers, both SDKs; what get_context saw."""
    seen: list[Any] = []

    @track(use_case_name="support", limit_ids=["l1"], request_properties={"a": "1"})
    def handle(user: str) -> None:
        with track_context(user_id=user, use_case_step="answer", limit_ids=["l2"]):
            genai.openai.chat.completions.create(**CHAT)
            with track_context(request_properties={"a": None, "b": "2"}, account_name="acme"):
                genai.openai.chat.completions.create(
                    **CHAT, extra_headers={"x-payi-user-id": "per-call"}
                )
                with genai.anthropic_span():
                    genai.anthropic.messages.create(**MESSAGE)
                seen.append(dict(get_context()))
        with track_context(use_case_name="", experience_name="exp"):
            genai.openai.chat.completions.create(**CHAT)

    for user in ("alice", "bob"):
        handle(user)
    return seen


def _normal(value: Any) -> Any:
    """The program's output with generated UUIDs numbered by first appearance."""
    ids: dict[str, str] = {}
    text = _UUID.sub(lambda m: ids.setdefault(m.group(0), f"<id{len(ids)}>"), repr(value))
    return text


def _run(genai: GenAI, scope_spans: bool) -> tuple[str, list[Any]]:
    genai.reinstrument({"limit_ids": ["global"]}, scope_spans=scope_spans)
    genai.server.requests.clear()
    genai.otel.exporter.clear()
    seen = _program(genai)
    scope_spans_seen = [
        s
        for s in genai.otel.spans()
        if s.instrumentation_scope is not None and s.instrumentation_scope.name == TRACER_NAME
    ]
    return _normal((genai.sent(), genai.span_attrs(), seen)), scope_spans_seen


def test_spanless_sends_the_same_headers_and_genai_attributes(genai: GenAI) -> None:
    with_spans, scope_spans = _run(genai, scope_spans=True)
    assert len(scope_spans) == 8
    spanless, none = _run(genai, scope_spans=False)
    assert none == []
    assert spanless == with_spans
    assert "per-call" in spanless and "<id" in spanless


def test_scope_spans_env_variable(genai: GenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYI_SCOPE_SPANS", "false")
    genai.reinstrument()
    with track_context(user_id="u"):
        genai.openai.chat.completions.create(**CHAT)
    assert [s.name for s in genai.otel.spans() if s.name == "payi.track_context"] == []
    assert genai.span_attrs()[-1]["payi.user_id"] == "u"
    monkeypatch.setenv("PAYI_SCOPE_SPANS", "maybe")
    with pytest.raises(ValueError, match="PAYI_SCOPE_SPANS"):
        genai.reinstrument()
    with pytest.raises(TypeError, match="scope_spans"):
        genai.reinstrument(scope_spans="no")


def test_scope_span_carries_what_the_scope_set(genai: GenAI) -> None:
    genai.reinstrument({"limit_ids": ["global"]})
    with track_context(use_case_name="outer", limit_ids=["l1"]):
        with track_context(user_id="u", use_case_step="s", request_properties={"k": "v"}):
            genai.openai.chat.completions.create(**CHAT)
    inner, outer = genai.otel.named("s")[0], genai.otel.named("outer")[0]
    assert dict(inner.attributes or {}) == {
        "payi.user_id": "u",
        "payi.use_case.step": "s",
        "payi.request.properties.k": "v",
        "payi.scope": "track_context",
    }
    outer_attrs = dict(outer.attributes or {})
    assert outer_attrs["payi.use_case.name"] == "outer"
    assert outer_attrs["payi.use_case.id"] == genai.last()["x-payi-use-case-id"]
    assert list(outer_attrs["payi.limit_ids"]) == ["l1"]
    assert set(outer_attrs) == {
        "payi.use_case.name",
        "payi.use_case.id",
        "payi.limit_ids",
        "payi.scope",
    }
    [attrs] = genai.span_attrs()
    assert attrs["payi.limit_ids"] == ["global", "l1"] and attrs["payi.user_id"] == "u"


def test_scope_span_attributes_effective_by_env(
    genai: GenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYI_SCOPE_SPAN_ATTRIBUTES", "effective")
    genai.reinstrument({"limit_ids": ["global"]})
    with track_context(user_id="u", use_case_step="s"):
        pass
    attrs = dict(genai.otel.named("s")[0].attributes or {})
    assert attrs["payi.use_case.name"] == "app" and list(attrs["payi.limit_ids"]) == ["global"]
    monkeypatch.setenv("PAYI_SCOPE_SPAN_ATTRIBUTES", "all")
    with pytest.raises(ValueError, match="PAYI_SCOPE_SPAN_ATTRIBUTES"):
        genai.reinstrument()
    monkeypatch.delenv("PAYI_SCOPE_SPAN_ATTRIBUTES")
    with pytest.raises(ValueError, match="scope_span_attributes"):
        genai.reinstrument(scope_span_attributes="all")

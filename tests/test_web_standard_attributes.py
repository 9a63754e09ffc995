"""Standard attributes (README "Web services", "Standard attributes"): opt-in mirrors of the
user id as ``user.id`` and of a declared request property as ``session.id`` /
``gen_ai.conversation.id`` on GenAI spans, equal to what the call sent."""

from __future__ import annotations

import json
from typing import Any, Callable

import openai
import pytest
from fake_llm_server import FakeLLMServer
from fixtures_otel import Otel

from payi_otel import PayiInstrumentor, track_context
from payi_otel._model.parameters import REGISTRY

HEADER = {p.name: p.header for p in REGISTRY}


def chat(server: FakeLLMServer, text: str, **headers: str) -> None:
    client = openai.OpenAI(base_url=server.openai_base_url, api_key="test", max_retries=0)
    reply = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": text}],
        extra_headers=headers or None,
    )
    _replies[text] = reply.id


_replies: dict[str, str] = {}


def span_of(otel: Otel, server: FakeLLMServer, text: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The chat span's attributes and the headers its call sent."""
    [sent] = [r for r in server.requests if r.body["messages"][-1]["content"] == text]
    [span] = [
        s
        for s in otel.all_genai_spans()
        if s.attributes.get("gen_ai.response.id") == _replies[text]
    ]
    return dict(span.attributes or {}), sent.headers


def test_off_by_default(
    llm_server: FakeLLMServer, instrument: Callable[..., PayiInstrumentor], otel: Otel
) -> None:
    instrument({"use_case_name": "app", "user_id": "u1"})
    chat(llm_server, "plain")
    attributes, _ = span_of(otel, llm_server, "plain")
    assert attributes["payi.user_id"] == "u1"
    assert "user.id" not in attributes and "session.id" not in attributes


@pytest.mark.parametrize("how", ["keywords", "variables"])
def test_user_and_session_mirrored_as_sent(
    llm_server: FakeLLMServer,
    instrument: Callable[..., PayiInstrumentor],
    otel: Otel,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    if how == "keywords":
        instrument({"use_case_name": "app"}, standard_attributes=True, session_property="sid")
    else:
        monkeypatch.setenv("PAYI_STANDARD_ATTRIBUTES", "true")
        monkeypatch.setenv("PAYI_SESSION_PROPERTY", "sid")
        instrument({"use_case_name": "app"})
    with track_context(user_id="alice", request_properties={"sid": "s-1", "other": "x"}):
        chat(llm_server, "scoped")
        # Per-call headers: another user, and the session property removed.
        chat(
            llm_server,
            "overridden",
            **{HEADER["user_id"]: "bob", HEADER["request_properties"]: json.dumps({"sid": None})},
        )
        chat(llm_server, "cleared", **{HEADER["user_id"]: ""})
    attributes, sent = span_of(otel, llm_server, "scoped")
    assert attributes["user.id"] == sent[HEADER["user_id"]] == "alice"
    assert attributes["session.id"] == attributes["gen_ai.conversation.id"] == "s-1"
    assert json.loads(sent[HEADER["request_properties"]])["sid"] == "s-1"
    attributes, sent = span_of(otel, llm_server, "overridden")
    assert attributes["user.id"] == sent[HEADER["user_id"]] == "bob"
    assert "session.id" not in attributes and "gen_ai.conversation.id" not in attributes
    attributes, sent = span_of(otel, llm_server, "cleared")
    assert HEADER["user_id"] not in sent
    assert "user.id" not in attributes and "payi.user_id" not in attributes
    assert attributes["session.id"] == "s-1"


def test_bad_options_raise(instrument: Callable[..., PayiInstrumentor]) -> None:
    with pytest.raises(TypeError, match="session_property"):
        instrument(session_property="")
    with pytest.raises(TypeError, match="standard_attributes"):
        instrument(standard_attributes="yes")

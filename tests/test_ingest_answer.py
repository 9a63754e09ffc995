"""Issue 19, Pay-i's answer: what Pay-i answers a call (its request id, cost, limits' states)
on the call's span as ``payi.response.*``, as the app's ``last_result()`` (Pay-i's SDK:
``get_context()["last_result"]``), and one log line per limit entering a blocked or exceeded
state - for a call through Pay-i's proxy (the answer in the response) and for an ingested
call (the answer in the ingest reply). The fake Pay-i server plays Pay-i's proxy and its
ingest API."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import openai
import pytest
from fake_payi_server import PROXY_PATH, FakePayiServer
from fixtures_genai import CHAT, GenAI
from ingest_support import exporter_for, fake_payi_module, payi

from payi_otel import last_result, track_context
from payi_otel._payi_answer import reset_answers

__all__ = ["fake_payi_module", "payi"]  # fixtures


@pytest.fixture(autouse=True)
def no_answer_yet() -> Iterator[None]:
    reset_answers()
    yield
    reset_answers()


def limit_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "reports limit" in r.getMessage()]


def test_a_proxied_call_gets_pay_i_answer_on_its_span_and_is_not_ingested(
    genai: GenAI, payi: FakePayiServer, caplog: pytest.LogCaptureFixture
) -> None:
    genai.check_invariant = False  # the calls go to the fake Pay-i proxy, not the fake LLM
    exporter = exporter_for(payi.base_url)
    genai.reinstrument(header_dialect="payi-proxy", ingest=exporter)
    client = openai.OpenAI(base_url=payi.base_url + PROXY_PATH, api_key="k", max_retries=0)
    payi.limits = {"l1": "blocked", "l2": "ok"}
    with caplog.at_level(logging.WARNING, logger="payi_otel"):
        with track_context(limit_ids=["l1", "l2"], user_id="alice"):
            first = client.chat.completions.create(**CHAT)
            stream = client.chat.completions.create(
                **CHAT, stream=True, stream_options={"include_usage": True}
            )
            for _ in stream:
                pass
            payi.limits = {"l1": "ok", "l2": "exceeded"}
            client.chat.completions.create(**CHAT)
            payi.limits = {"l1": "blocked"}
            client.chat.completions.create(**CHAT)
    assert exporter.force_flush()
    # What the app gets from the SDK is untouched: Pay-i's field is still in the response.
    assert first.model_extra and first.model_extra["xproxy_result"]["limits"]["l1"]
    requests = [r for r in payi.requests if r.path.startswith(PROXY_PATH)]
    assert len(requests) == 4 and requests[0].headers["xproxy-user-id"] == "alice"
    assert payi.ingested() == []  # Pay-i saw the calls: nothing ingested
    assert exporter.stats()["exported"] == 0
    spans = sorted(genai.otel.genai_spans(), key=lambda s: s.start_time or 0)
    assert len(spans) == 4
    answered = [dict(s.attributes or {}) for s in spans]
    assert answered[0]["payi.response.limits.blocked"] == ("l1",)
    assert answered[0]["payi.response.limits.ok"] == ("l2",)
    assert answered[0]["payi.response.cost.total"] == payi.cost
    assert answered[0]["payi.response.cost.currency"] == "usd"
    assert answered[1]["payi.response.request_id"]  # the stream's last chunk
    assert answered[2]["payi.response.limits.exceeded"] == ("l2",)
    last = last_result()
    assert last is not None and last["request_id"] == answered[3]["payi.response.request_id"]
    assert last["limits"] == {"l1": {"state": "blocked"}}
    # One line each time a limit enters blocked / exceeded; not one per call.
    ids = [a["payi.response.request_id"] for a in answered]
    assert limit_lines(caplog) == [
        f"payi_otel: Pay-i reports limit 'l1' as blocked (request {ids[0]})",
        f"payi_otel: Pay-i reports limit 'l2' as exceeded (request {ids[2]})",
        f"payi_otel: Pay-i reports limit 'l1' as blocked (request {ids[3]})",
    ]


def test_an_ingested_call_gets_pay_i_answer_from_the_ingest_reply(
    genai: GenAI, payi: FakePayiServer, caplog: pytest.LogCaptureFixture
) -> None:
    exporter = exporter_for(payi.base_url)
    genai.reinstrument(ingest=exporter)
    payi.limits = {"budget": "exceeded"}
    assert last_result() is None
    with caplog.at_level(logging.WARNING, logger="payi_otel"):
        genai.openai.chat.completions.create(**CHAT)
        genai.openai.chat.completions.create(**CHAT)
        assert exporter.force_flush()
    last = last_result()
    assert last is not None and last["cost"] == {"currency": "usd", "total": {"base": payi.cost}}
    assert len(limit_lines(caplog)) == 1 and "'budget' as exceeded" in limit_lines(caplog)[0]
    # The call's span had ended when Pay-i answered: the answer is on a "payi ingest" span,
    # a child of it.
    calls = {s.context.span_id: s for s in genai.otel.genai_spans()}
    answers = genai.otel.named("payi ingest")
    assert len(answers) == 2
    for answer in answers:
        assert answer.parent is not None and answer.parent.span_id in calls
        attributes = answer.attributes or {}
        assert attributes["payi.response.limits.exceeded"] == ("budget",)
    assert {a.attributes["payi.response.request_id"] for a in answers if a.attributes} >= {
        last["request_id"]
    }

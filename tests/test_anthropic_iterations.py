"""Anthropic's compaction iterations (``usage.iterations``, beta context management): a
``compaction`` entry is the server's summarizing request, billed with the call, and "not
included in the top-level usage fields" (the SDK's ``BetaUsage``). payi_otel adds it to the
call's counts, so its cost is counted; ``message`` entries are the top-level counts already.
Real anthropic SDK (beta messages, plain and streamed), answered in process."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx2
import pytest
from fixtures_genai import GenAI
from fixtures_otel import Metrics
from genai_prices import Usage, calc_price

MODEL = "claude-sonnet-4-5"
TOP = {
    "input_tokens": 3_000,
    "output_tokens": 400,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 1_000,
}
ITERATIONS = [
    {
        "type": "compaction",
        "input_tokens": 150_000,
        "output_tokens": 2_500,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    },
    {"type": "message", **TOP},
]
#: The call's counts with the compaction's added (input counting its cache reads).
WANT = calc_price(
    Usage(input_tokens=154_000, output_tokens=2_900, cache_read_tokens=1_000),
    model_ref=MODEL,
    provider_id="anthropic",
)


def message(usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [{"type": "text", "text": "hi"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }


def answer(request: Any) -> Any:
    body = json.loads(request.content)
    if not body.get("stream"):
        return httpx2.Response(200, json=message({**TOP, "iterations": ITERATIONS}))
    start = message({**TOP, "output_tokens": 1})
    events = [
        ("message_start", {"type": "message_start", "message": start}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                # (the cumulative usage, and the iterations: input counts left out)
                "usage": {"output_tokens": 400, "iterations": ITERATIONS},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    text = "".join(f"event: {k}\ndata: {json.dumps(v)}\n\n" for k, v in events)
    return httpx2.Response(
        200, content=text.encode(), headers={"content-type": "text/event-stream"}
    )


@pytest.mark.parametrize("how", ["beta", "beta-stream", "plain"])
def test_compaction_iterations_are_counted(genai: GenAI, how: str) -> None:
    metrics = Metrics()
    genai.reinstrument(meter_provider=metrics.provider)
    genai.check_invariant = False  # answered in process
    client = anthropic.Anthropic(
        base_url="http://gateway.local",
        api_key="k",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(answer)),
    )
    call: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 1_000,
        "messages": [{"role": "user", "content": "Hello"}],
    }
    if how == "beta-stream":
        with client.beta.messages.stream(**call) as events:
            reply = events.get_final_message()
    elif how == "beta":
        reply = client.beta.messages.create(**call)
    else:  # the non-beta client asking for context management: the iterations are extras
        reply = client.messages.create(
            **call, extra_headers={"anthropic-beta": "context-management-2025-06-27"}
        )
    assert getattr(reply.usage, "iterations", None) is not None  # (the caller's, unchanged)
    assert reply.usage.input_tokens == 3_000
    assert metrics.total("payi.genai.cost") == pytest.approx(float(WANT.total_price))
    assert metrics.total("payi.genai.tokens", **{"payi_otel.token.type": "input"}) == 154_000
    assert metrics.total("payi.genai.tokens", **{"payi_otel.token.type": "output"}) == 2_900

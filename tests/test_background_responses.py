"""OpenAI's background responses (``responses.create(background=True)``): the create answers
``queued`` with no usage; a later ``retrieve`` (polled), ``cancel`` or resumed stream shows it
finished, with its usage. The call is counted once, then, with the attribution it was sent
with - not the poller's, not never, not twice (real openai SDK, a local HTTP double of the
Responses API's background lifecycle, the real OpenTelemetry SDK and fake Pay-i)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest
from fake_payi_server import FakePayiServer
from fixtures_genai import GenAI, mock_openai
from fixtures_otel import Metrics
from genai_prices import Usage, calc_price
from ingest_support import exporter_for, fake_payi_module, payi

from payi_otel import PayiIngestExporter, track_context
from payi_otel._providers import _background

__all__ = ["fake_payi_module", "payi"]  # fixtures

MODEL = "gpt-4o-mini"
USAGE = {
    "input_tokens": 2_000,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 700,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 2_700,
}
PRICE = calc_price(
    Usage(input_tokens=2_000, output_tokens=700), model_ref=MODEL, provider_id="openai"
)


class BackgroundAPI:
    """The Responses API's background lifecycle: a create answers ``queued``; each retrieve
    moves it on (``in_progress`` for ``polls`` retrieves, then ``completed`` with usage);
    cancel ends it ``cancelled`` (with the usage so far); ``stream=True`` on a retrieve
    replays its events to ``response.completed``."""

    def __init__(self, polls: int = 1) -> None:
        self.polls = polls
        self.lock = threading.Lock()
        self.state: dict[str, str] = {}
        self.seen: dict[str, int] = {}
        self.count = 0

    def response(self, rid: str, status: str) -> dict[str, Any]:
        done = status in ("completed", "cancelled")
        return {
            "id": rid,
            "object": "response",
            "created_at": 1,
            "status": status,
            "background": True,
            "model": f"{MODEL}-2024-07-18",
            "output": [],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": USAGE if done else None,
        }

    def __call__(self, request: Any) -> Any:
        path = request.url.path
        with self.lock:
            if request.method == "POST" and path.endswith("/responses"):
                body = json.loads(request.content)
                assert body["background"] is True
                self.count += 1
                rid = f"resp_bg_{self.count}_{id(self)}"
                self.state[rid] = "queued"
                self.seen[rid] = 0
                if body.get("stream"):
                    return self.events(rid, ["response.created", "response.queued"])
                return httpx2.Response(200, json=self.response(rid, "queued"))
            rid = path.split("/")[-2 if path.endswith("/cancel") else -1]
            if path.endswith("/cancel"):
                self.state[rid] = "cancelled"
            elif self.state[rid] != "cancelled":
                self.seen[rid] += 1
                self.state[rid] = "in_progress" if self.seen[rid] <= self.polls else "completed"
            if request.url.params.get("stream") == "true":
                self.state[rid] = "completed"
                return self.events(rid, ["response.in_progress", "response.completed"])
            return httpx2.Response(200, json=self.response(rid, self.state[rid]))

    def events(self, rid: str, kinds: list[str]) -> Any:
        statuses = {
            "response.created": "queued",
            "response.queued": "queued",
            "response.in_progress": "in_progress",
            "response.completed": "completed",
        }
        text = "".join(
            f"event: {kind}\ndata: "
            + json.dumps(
                {"type": kind, "sequence_number": n, "response": self.response(rid, statuses[kind])}
            )
            + "\n\n"
            for n, kind in enumerate(kinds)
        )
        return httpx2.Response(
            200, content=text.encode(), headers={"content-type": "text/event-stream"}
        )


@pytest.fixture
def metrics(genai: GenAI) -> Iterator[Metrics]:
    found = Metrics()
    genai.reinstrument(meter_provider=found.provider, metrics_user_id=True)
    genai.check_invariant = False  # the double is not the fake server
    yield found


def clients(api: BackgroundAPI) -> tuple[openai.OpenAI, openai.AsyncOpenAI]:
    return mock_openai(api), mock_openai(api, is_async=True)


def by_user(metrics: Metrics) -> dict[Any, float]:
    return metrics.by("payi.genai.cost", "payi.user_id")


def test_polled_to_completion_is_counted_once_for_the_caller(metrics: Metrics) -> None:
    client, _ = clients(BackgroundAPI(polls=2))
    with track_context(user_id="alice"):
        queued = client.responses.create(model=MODEL, input="a long job", background=True)
    assert queued.status == "queued" and queued.usage is None
    assert by_user(metrics) == {}  # nothing to count yet
    with track_context(user_id="poller"):
        statuses = [client.responses.retrieve(queued.id).status for _ in range(4)]
    assert statuses == ["in_progress", "in_progress", "completed", "completed"]
    assert by_user(metrics) == {"alice": pytest.approx(float(PRICE.total_price))}
    assert metrics.total("payi.genai.tokens", **{"payi_otel.token.type": "input"}) == 2_000


async def test_async_polled_to_completion_is_counted_once(metrics: Metrics) -> None:
    _, client = clients(BackgroundAPI(polls=1))
    with track_context(user_id="alice"):
        queued = await client.responses.create(model=MODEL, input="job", background=True)
    with track_context(user_id="bob"):
        for _ in range(3):
            await client.responses.retrieve(queued.id)
    assert by_user(metrics) == {"alice": pytest.approx(float(PRICE.total_price))}


def test_a_cancelled_one_is_counted_with_its_usage(metrics: Metrics) -> None:
    client, _ = clients(BackgroundAPI(polls=5))
    with track_context(user_id="alice"):
        queued = client.responses.create(model=MODEL, input="job", background=True)
    client.responses.retrieve(queued.id)
    cancelled = client.responses.cancel(queued.id)
    assert cancelled.status == "cancelled"
    client.responses.retrieve(queued.id)
    assert by_user(metrics) == {"alice": pytest.approx(float(PRICE.total_price))}


def test_a_stream_left_queued_and_resumed_is_counted_once(metrics: Metrics) -> None:
    client, _ = clients(BackgroundAPI())
    with track_context(user_id="alice"):
        events = list(
            client.responses.create(model=MODEL, input="job", background=True, stream=True)
        )
    assert [e.type for e in events] == ["response.created", "response.queued"]
    rid = events[0].response.id
    with track_context(user_id="bob"):
        resumed = list(client.responses.retrieve(rid, stream=True))
    assert resumed[-1].type == "response.completed"
    client.responses.retrieve(rid)
    assert by_user(metrics) == {"alice": pytest.approx(float(PRICE.total_price))}


def test_many_in_flight_each_to_its_own_user_across_threads(metrics: Metrics) -> None:
    client, _ = clients(BackgroundAPI(polls=1))
    users = [f"user-{n}" for n in range(8)]
    ids: dict[str, str] = {}

    def start(user: str) -> None:
        with track_context(user_id=user):
            ids[user] = client.responses.create(model=MODEL, input="job", background=True).id

    threads = [threading.Thread(target=start, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    before = _background.held()
    assert before >= len(users)
    for user in reversed(users):  # polled by one worker, in another order
        for _ in range(2):
            client.responses.retrieve(ids[user])
    assert _background.held() == before - len(users)
    want = float(PRICE.total_price)
    assert by_user(metrics) == {u: pytest.approx(want) for u in users}


@pytest.fixture
def exporter(genai: GenAI, payi: FakePayiServer) -> PayiIngestExporter:
    """payi_otel instrumented with per-call ingest to the fake Pay-i."""
    found = exporter_for(payi.base_url)
    genai.reinstrument(ingest=found)
    genai.check_invariant = False  # the double is not the fake server
    return found


def test_pay_i_gets_one_record_with_the_callers_attribution(
    exporter: PayiIngestExporter, payi: FakePayiServer
) -> None:
    client, _ = clients(BackgroundAPI(polls=1))
    with track_context(user_id="alice", use_case_name="reports"):
        queued = client.responses.create(model=MODEL, input="job", background=True)
    assert exporter.force_flush()
    assert payi.ingested() == []  # not yet: no usage to bill
    with track_context(user_id="bob"):
        for _ in range(3):
            client.responses.retrieve(queued.id)
    assert exporter.force_flush()
    (record,) = payi.ingested()  # (Pay-i's client sends the attribution as xProxy-*)
    assert record.headers["xproxy-user-id"] == "alice"
    assert record.headers["xproxy-usecase-name"] == "reports"
    assert record.body["units"]["text"] == {"input": 2_000, "output": 700}
    assert record.body["provider_response_id"] == queued.id


class _LeftEarly(BackgroundAPI):
    """A background stream's create that sends its first events and a text delta, then
    (``broken``) drops the connection."""

    def __init__(self, broken: bool) -> None:
        super().__init__()
        self.broken = broken

    def events(self, rid: str, kinds: list[str]) -> Any:
        if kinds[-1] != "response.queued":
            return super().events(rid, kinds)
        created = {"type": "response.created", "sequence_number": 0}
        created["response"] = self.response(rid, "queued")
        delta = {
            "type": "response.output_text.delta",
            "sequence_number": 1,
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "delta": "partial",
            "logprobs": [],
        }
        text = f"event: response.created\ndata: {json.dumps(created)}\n\n"
        text += f"event: response.output_text.delta\ndata: {json.dumps(delta)}\n\n"

        def body() -> Iterator[bytes]:
            yield text.encode()
            if self.broken:
                raise httpx2.ReadError("connection dropped")
            yield (
                b"event: response.output_text.delta\ndata: " + json.dumps(delta).encode() + b"\n\n"
            )

        return httpx2.Response(200, content=body(), headers={"content-type": "text/event-stream"})


@pytest.mark.parametrize("broken", [False, True])
def test_a_stream_left_or_broken_mid_text_then_resumed_is_counted_once(
    metrics: Metrics, broken: bool
) -> None:
    client, _ = clients(_LeftEarly(broken))
    with track_context(user_id="alice"):
        stream = client.responses.create(model=MODEL, input="job", background=True, stream=True)
        first = next(iter(stream))
        rid = first.response.id
        if broken:
            with pytest.raises(openai.APIConnectionError):
                list(stream)
        else:
            next(iter(stream))  # a text delta: then left
            stream.close()
    with track_context(user_id="bob"):
        resumed = list(client.responses.retrieve(rid, stream=True))
    assert resumed[-1].type == "response.completed"
    assert by_user(metrics) == {"alice": pytest.approx(float(PRICE.total_price))}


def test_a_held_call_keeps_no_input(metrics: Metrics) -> None:
    """Held until polled (perhaps never, here): without its arguments (the whole input)."""
    client, _ = clients(BackgroundAPI())
    with track_context(user_id="alice"):
        queued = client.responses.create(model=MODEL, input="x" * 100_000, background=True)
    held = _background._held[("openai", queued.id)]
    assert held.arguments is None and held.response is None
    assert held.call.params.get("user_id") == "alice"
    client.responses.retrieve(queued.id)
    client.responses.retrieve(queued.id)
    assert ("openai", queued.id) not in _background._held


def test_a_stream_kept_open_while_polled_to_its_end_is_counted_once(metrics: Metrics) -> None:
    """The id read from the stream's first event, the response polled until completed, the
    stream closed after: the poll came first, the create's hold after (a review)."""
    client, _ = clients(BackgroundAPI(polls=1))
    with track_context(user_id="alice"):
        stream = client.responses.create(model=MODEL, input="job", background=True, stream=True)
        rid = next(iter(stream)).response.id
        with track_context(user_id="bob"):
            statuses = [client.responses.retrieve(rid).status for _ in range(2)]
        stream.close()
    assert statuses == ["in_progress", "completed"]
    assert by_user(metrics) == {"alice": pytest.approx(float(PRICE.total_price))}
    client.responses.retrieve(rid)
    assert by_user(metrics) == {"alice": pytest.approx(float(PRICE.total_price))}


class _Failing(BackgroundAPI):
    """A background stream the API ends itself: ``response.failed`` without usage."""

    def events(self, rid: str, kinds: list[str]) -> Any:
        failed = self.response(rid, "failed")
        created = self.response(rid, "queued")
        text = "".join(
            f"event: {kind}\ndata: "
            + json.dumps({"type": kind, "sequence_number": n, "response": response})
            + "\n\n"
            for n, (kind, response) in enumerate(
                (("response.created", created), ("response.failed", failed))
            )
        )
        return httpx2.Response(
            200, content=text.encode(), headers={"content-type": "text/event-stream"}
        )


def test_a_background_stream_the_api_failed_is_reported_not_held(
    exporter: PayiIngestExporter, payi: FakePayiServer
) -> None:
    client, _ = clients(_Failing())
    before = _background.held()
    with track_context(user_id="alice"):
        events = list(
            client.responses.create(model=MODEL, input="job", background=True, stream=True)
        )
    assert events[-1].type == "response.failed"
    assert _background.held() == before
    assert exporter.force_flush()
    (record,) = payi.ingested()
    assert record.headers["xproxy-user-id"] == "alice"

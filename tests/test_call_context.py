"""Issue 20: while the SDK sends a call, the context is the call's - whether or not the request
hook had to attach one (docs/performance.md, "Third round").

The hook attaches a context around a call only when the caller's context is not already the
call's: a per-call header or a model mapping changed the parameters, ``payi.*`` baggage must
be kept from the provider, or an outer call's parameters are in it. Each case here is seen
from inside the send (the client's transport): a GenAI span started there carries exactly the
headers the request was sent with, and no ``payi.*`` baggage is there to propagate.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Dict, List, Optional

import httpx
import openai
import pytest
from fixtures_genai import CHAT, GenAI
from fixtures_otel import payi_attrs
from fixtures_server import to_local
from opentelemetry import baggage
from opentelemetry import context as otel_context

from payi_otel import track_context

Seen = Dict[str, Any]


def _watching(genai: GenAI, seen: List[Seen], during: Optional[Callable[[], None]] = None) -> Any:
    """A transport that, inside each send, starts a GenAI span (as an SDK's own call span
    would), notes its payi.* attributes, the request's x-payi-* headers and the payi.*
    baggage in the context, runs ``during`` (once), then sends to the local server."""
    inner = to_local(genai.server)
    tracer = genai.otel.provider.get_tracer("test.inside")
    pending = [during]

    class Watching(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            with tracer.start_as_current_span(
                "inside", attributes={"gen_ai.operation.name": "chat"}
            ) as span:
                attributes = payi_attrs(span)  # type: ignore[arg-type]
            seen.append(
                {
                    "span user": attributes.get("payi.user_id"),
                    "sent user": request.headers.get("x-payi-user-id"),
                    "baggage": sorted(k for k in baggage.get_all() if k.startswith("payi.")),
                }
            )
            resource = attributes.get("payi.price_as.resource")
            if resource is not None or "x-payi-price-as-resource" in request.headers:
                seen[-1]["span resource"] = resource
                seen[-1]["sent resource"] = request.headers.get("x-payi-price-as-resource")
            run, pending[0] = pending[0], None
            if run is not None:
                run()
            return inner.handle_request(request)  # type: ignore[no-any-return]

    return Watching()


class _AsyncWatching(httpx.AsyncBaseTransport):
    def __init__(self, sync: Any) -> None:
        self.sync = sync

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = self.sync.handle_request(request)
        response.read()
        return httpx.Response(
            response.status_code, headers=response.headers, content=response.content
        )


def _client(genai: GenAI, seen: List[Seen], is_async: bool, **kw: Any) -> Any:
    transport = _watching(genai, seen, **kw)
    if is_async:
        return openai.AsyncOpenAI(
            base_url=genai.server.openai_base_url,
            api_key="test",
            max_retries=0,
            http_client=httpx.AsyncClient(transport=_AsyncWatching(transport)),
        )
    return openai.OpenAI(
        base_url=genai.server.openai_base_url,
        api_key="test",
        max_retries=0,
        http_client=httpx.Client(transport=transport),
    )


def _create(client: Any, **kwargs: Any) -> None:
    if isinstance(client, openai.AsyncOpenAI):
        asyncio.run(client.chat.completions.create(**CHAT, **kwargs))
    else:
        client.chat.completions.create(**CHAT, **kwargs)


@pytest.fixture(params=[False, True], ids=["sync", "async"])
def is_async(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def test_a_call_in_its_scope(genai: GenAI, is_async: bool) -> None:
    seen: List[Seen] = []
    with track_context(user_id="alice"):
        _create(_client(genai, seen, is_async))
    assert seen == [{"span user": "alice", "sent user": "alice", "baggage": []}]


def test_a_call_with_its_own_header(genai: GenAI, is_async: bool) -> None:
    seen: List[Seen] = []
    with track_context(user_id="alice"):
        _create(_client(genai, seen, is_async), extra_headers={"x-payi-user-id": "bob"})
    assert seen == [{"span user": "bob", "sent user": "bob", "baggage": []}]


def test_payi_baggage_never_reaches_the_provider(genai: GenAI, is_async: bool) -> None:
    seen: List[Seen] = []
    ctx = baggage.set_baggage("payi.user_id", "carol")
    ctx = baggage.set_baggage("tenant", "t1", ctx)
    token = otel_context.attach(ctx)
    try:
        with track_context(user_id="alice"):
            _create(_client(genai, seen, is_async))
        assert baggage.get_all() == {"payi.user_id": "carol", "tenant": "t1"}  # the caller's
    finally:
        otel_context.detach(token)
    assert seen == [{"span user": "alice", "sent user": "alice", "baggage": []}]


def test_a_call_made_while_another_call_with_its_own_header_is_sent(genai: GenAI) -> None:
    """The inner call (no header of its own) is its scope's, not the outer call's."""
    genai.check_invariant = False  # two requests, one instrumented call span around both
    seen: List[Seen] = []
    inner = _client(genai, seen, is_async=False)
    outer = _client(genai, seen, is_async=False, during=lambda: _create(inner))
    with track_context(user_id="alice"):
        _create(outer, extra_headers={"x-payi-user-id": "bob"})
    assert seen == [
        {"span user": "bob", "sent user": "bob", "baggage": []},
        {"span user": "alice", "sent user": "alice", "baggage": []},
    ]


def test_a_call_a_model_mapping_prices(genai: GenAI, is_async: bool) -> None:
    genai.reinstrument(model_mappings=[{"model": CHAT["model"], "price_as_resource": "gpt-4o"}])
    seen: List[Seen] = []
    with track_context(user_id="alice"):
        _create(_client(genai, seen, is_async))
    assert seen == [
        {
            "span user": "alice",
            "sent user": "alice",
            "baggage": [],
            "span resource": "gpt-4o",
            "sent resource": "gpt-4o",
        }
    ]


# --- the basis of a call, remembered for the last context (``_context.call_basis``) ----------


def test_a_context_sent_from_again_after_its_scope_exited_here(genai: GenAI) -> None:
    """The same context object, restored after its scope exited while another context was
    current: the scope is gone here, though the basis of a call from that very context was
    remembered while it was open. (GenAI spans off: the hook sees the scope's context
    itself, not a GenAI span's context made for each call.)"""
    genai.reinstrument(genai_spans=False)
    seen: List[Seen] = []
    client = _client(genai, seen, is_async=False)
    with track_context(user_id="outer"):
        scope = track_context(user_id="inner")
        scope.__enter__()
        inside = otel_context.get_current()
        _create(client)
        token = otel_context.attach(otel_context.set_value("on top", True))
        scope.__exit__(None, None, None)  # noted here: another context is current
        otel_context.detach(token)
        assert otel_context.get_current() is inside
        _create(client)
    assert [s["sent user"] for s in seen] == ["inner", "outer"]
    assert [s["span user"] for s in seen] == ["inner", "outer"]


def test_a_context_sent_from_again_under_new_settings(genai: GenAI) -> None:
    """The same context (here the empty one), new settings: the new global level."""
    seen: List[Seen] = []
    client = _client(genai, seen, is_async=False)
    genai.reinstrument(config={"user_id": "first"}, genai_spans=False)
    _create(client)
    genai.reinstrument(config={"user_id": "second"}, genai_spans=False)
    _create(client)
    assert [s["sent user"] for s in seen] == ["first", "second"]


def test_a_context_sent_from_again_after_its_scope_was_orphaned(genai: GenAI) -> None:
    """The same context, after its scope was left in another ``contextvars`` context (the
    event loop's finalizer closing an async generator's scope): gone everywhere."""
    from payi_otel import _context

    genai.reinstrument(genai_spans=False)
    seen: List[Seen] = []
    client = _client(genai, seen, is_async=False)
    with track_context(user_id="outer"), track_context(user_id="inner"):
        state = otel_context.get_value(_context._STATE_KEY)
        assert isinstance(state, _context.ScopeState)
        _create(client)
        _context.orphan(state.contexts[-1])
        _create(client)
    assert [s["sent user"] for s in seen] == ["inner", "outer"]


def test_one_baggage_value_under_two_traces_names_two_instances(genai: GenAI) -> None:
    """Incoming baggage outside any scope names a use case without an id: one id per trace,
    even when both requests' contexts carry the very same baggage value."""
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    genai.reinstrument(propagate_baggage=True, genai_spans=False)
    seen: List[Seen] = []
    client = _client(genai, seen, is_async=False)
    shared = baggage.set_baggage("payi.use_case_name", "checkout")
    for trace_id in (0xA1, 0xA1, 0xB2):
        parent = NonRecordingSpan(SpanContext(trace_id, 0x1234, True, TraceFlags(1)))
        token = otel_context.attach(trace.set_span_in_context(parent, shared))
        try:
            _create(client)
        finally:
            otel_context.detach(token)
    ids = [r.headers["x-payi-use-case-id"] for r in genai.server.requests[-3:]]
    assert ids[0] == ids[1] != ids[2]

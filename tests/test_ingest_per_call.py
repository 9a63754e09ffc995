"""Issue 19, billing records (contract section 7): one Pay-i ingest record per inference call,
from the provider seam's per-call record - whatever the trace sampling, never for agent / tool
/ workflow spans, never twice for one call - with the real SDKs, the real OpenTelemetry SDK and
the fake Pay-i server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import gc
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fake_payi_server import FakePayiServer
from fixtures_genai import CHAT, MESSAGE, GenAI, answered_openai
from ingest_support import add_processor, fake_payi_module, payi
from ingest_support import exporter_for as exporter_base
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind

from payi_otel import PayiIngestExporter, PayiInstrumentor, track, track_context
from payi_otel._ingest import NOT_CALLS

__all__ = ["add_processor", "fake_payi_module", "payi"]  # fixtures


def exporter_for(server: FakePayiServer, **kwargs: Any) -> PayiIngestExporter:
    return exporter_base(server.base_url, **kwargs)


@contextmanager
def sampled_app(genai: GenAI, sampler: Any, **options: Any) -> Iterator[InMemorySpanExporter]:
    """payi_otel with per-call ingest on a tracer provider with ``sampler`` (the GenAI
    instrumentations on it too); the spans it exported."""
    genai.check_invariant = False  # spans are sampled out here: not one per request
    spans = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(spans))
    instrumentor = PayiInstrumentor()
    instrumentor.uninstrument()
    instrumentor.instrument(
        tracer_provider=provider, caller_file="/srv/app.py", genai_spans=True, **options
    )
    try:
        yield spans
    finally:
        instrumentor.uninstrument()


def bodies(server: FakePayiServer) -> list[dict[str, Any]]:
    return [r.body for r in server.ingested()]


def test_sampled_out_calls_are_still_ingested_once(genai: GenAI, payi: FakePayiServer) -> None:
    exporter = exporter_for(payi)
    sampler = ParentBased(TraceIdRatioBased(0.5))  # OTEL_TRACES_SAMPLER=parentbased_traceidratio
    with sampled_app(genai, sampler, ingest=exporter) as spans:
        with track_context(user_id="alice"):  # no scope span: each call its own trace
            pass
        for _ in range(20):
            with track_context(user_id="alice", limit_ids=["l1"]):
                genai.openai.chat.completions.create(**CHAT)
        assert exporter.force_flush()
    chat_spans = [s for s in spans.get_finished_spans() if s.name.startswith("chat")]
    assert 0 < len(chat_spans) < 20  # sampling let some through, not all
    records = bodies(payi)
    assert len(records) == 20 and len(payi.accepted_ids()) == 20
    # The attribution travels as Pay-i's client sends it: xProxy-* headers of the request.
    assert all(
        r.headers["xproxy-user-id"] == "alice" and r.headers["xproxy-limit-ids"] == "l1"
        for r in payi.ingested()
    )
    assert all(r["category"] == "system.openai" and r["resource"] == "gpt-4" for r in records)
    assert exporter.stats()["exported"] == 20


def test_a_non_ascii_attribution_is_ingested_as_the_call_sent_it(
    genai: GenAI, payi: FakePayiServer
) -> None:
    """A user, account, use case or limit id outside ASCII: the call sends it percent-encoded
    (the codec), and so does its ingest record's ``xProxy-*`` header. As given, the HTTP
    client refused the header before sending, and the record counted as exported (a review
    found it lost)."""
    exporter = exporter_for(payi)
    with sampled_app(genai, ALWAYS_OFF, ingest=exporter):
        with track_context(
            user_id="José", account_name="Zürich AG", use_case_name="résumé", limit_ids=["ünï"]
        ):
            genai.openai.chat.completions.create(**CHAT)
        assert exporter.force_flush()
    (sent,) = genai.server.requests
    (ingested,) = payi.ingested()
    for proxy, ours in (
        ("user-id", "user-id"),
        ("account-name", "account-name"),
        ("usecase-name", "use-case-name"),
    ):
        assert ingested.headers[f"xproxy-{proxy}"] == sent.headers[f"x-payi-{ours}"], ours
    assert ingested.headers["xproxy-user-id"] == "Jos%C3%A9"
    assert ingested.headers["xproxy-limit-ids"] == "%C3%BCn%C3%AF"
    assert exporter.stats()["exported"] == 1 and exporter.stats()["failed"] == 0


def test_an_exporter_shut_down_by_uninstrument_and_given_again_says_so(
    genai: GenAI, payi: FakePayiServer, caplog: pytest.LogCaptureFixture
) -> None:
    """``uninstrument()`` shuts the exporter down; instrumenting again with the same one (a
    configuration reload) would drop every record: a WARNING says so and how to fix it (a
    review found it silent)."""
    exporter = exporter_for(payi)
    with sampled_app(genai, ALWAYS_OFF, ingest=exporter):
        pass
    with caplog.at_level("WARNING", logger="payi_otel"):
        with sampled_app(genai, ALWAYS_OFF, ingest=exporter):
            genai.openai.chat.completions.create(**CHAT)
    [warning] = [r for r in caplog.records if "shut down" in r.getMessage()]
    assert "Pass a new PayiIngestExporter" in warning.getMessage()
    assert exporter.stats()["dropped"] == 1 and payi.ingested() == []
    with sampled_app(genai, ALWAYS_OFF, ingest=exporter_for(payi)):
        pass
    assert len([r for r in caplog.records if "shut down" in r.getMessage()]) == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork")
def test_a_forked_child_does_not_send_the_parents_queued_records(
    genai: GenAI, payi: FakePayiServer
) -> None:
    """Records still queued when the process forks (Pay-i slow) are the parent's to send:
    the child starts with an empty queue of its own (a review found each sent twice, once
    by the child, and counted as the child's)."""
    exporter = exporter_for(payi)
    payi.delay = 0.3
    with sampled_app(genai, ALWAYS_OFF, ingest=exporter):
        for _ in range(3):
            genai.openai.chat.completions.create(**CHAT)
        assert exporter.stats()["pending"] >= 2
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: what it would send, then gone (no flush, no atexit)
            os.write(write, json.dumps(dict(exporter.stats())).encode())
            os._exit(0)
        os.close(write)
        os.waitpid(pid, 0)
        child = json.loads(os.read(read, 4096))
        os.close(read)
        assert exporter.force_flush()
    assert child["pending"] == 0
    ids = [r.id for r in payi.ingested()]
    assert len(ids) == 3 and len(set(ids)) == 3
    assert exporter.stats()["exported"] == 3


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork")
def test_a_multiprocessing_workers_records_are_sent_when_it_exits(
    genai: GenAI, payi: FakePayiServer
) -> None:
    """A multiprocessing worker (fork) ends with ``os._exit``: no atexit flush. Its records
    are sent by a finalizer its exit runs (a review found all of them lost)."""
    import multiprocessing

    exporter = exporter_for(payi)
    with sampled_app(genai, ALWAYS_OFF, ingest=exporter):
        genai.openai.chat.completions.create(**CHAT)  # Pay-i's client made before the fork
        assert exporter.force_flush()

        def worker(user: str) -> None:
            import openai  # a client of its own: the parent's pooled connections are not

            client = openai.OpenAI(
                base_url=genai.server.openai_base_url, api_key="test", max_retries=0
            )
            with track_context(user_id=user):
                for _ in range(3):
                    client.chat.completions.create(**CHAT)

        fork = multiprocessing.get_context("fork")
        workers = [fork.Process(target=worker, args=(f"worker-{i}",)) for i in range(2)]
        for process in workers:
            process.start()
        for process in workers:
            process.join(30)
            assert process.exitcode == 0
    users = [r.headers.get("xproxy-user-id") for r in payi.ingested()]
    assert sorted(u for u in users if u) == ["worker-0"] * 3 + ["worker-1"] * 3
    # Each sent once: a worker makes Pay-i's client anew (the parent's pools connections).
    ids = [r.id for r in payi.ingested()]
    assert len(ids) == len(set(ids)) == 7


def test_nothing_sampled_still_bills_every_call_with_its_usage(
    genai: GenAI, payi: FakePayiServer
) -> None:
    exporter = exporter_for(payi)
    with sampled_app(genai, ALWAYS_OFF, ingest=exporter) as spans:
        reply = genai.openai.chat.completions.create(**CHAT)
        assert exporter.force_flush()
    assert spans.get_finished_spans() == ()
    (record,) = bodies(payi)
    usage = reply.usage
    assert usage is not None
    assert record["units"]["text"] == {
        "input": usage.prompt_tokens,
        "output": usage.completion_tokens,
    }
    assert record["provider_response_id"] == reply.id
    assert record["http_status_code"] == 200
    assert isinstance(record["end_to_end_latency_ms"], int)


def test_anthropic_call_is_one_record_and_streams_embeddings_too(
    genai: GenAI, payi: FakePayiServer
) -> None:
    exporter = exporter_for(payi)
    genai.reinstrument(ingest=exporter)
    message = genai.anthropic.messages.create(**MESSAGE)  # two nested GenAI spans (2.x)
    stream = genai.openai.chat.completions.create(
        **CHAT, stream=True, stream_options={"include_usage": True}
    )
    for _ in stream:
        pass
    genai.openai.embeddings.create(model="text-embedding-3-small", input="hi")
    genai.openai.models.list()  # an API call, no inference: no record (and no GenAI span)
    genai.check_invariant = False  # that request has no span to compare with
    assert exporter.force_flush()
    records = bodies(payi)
    assert [r["category"] for r in records] == [
        "system.anthropic",
        "system.openai",
        "system.openai",
    ]
    anthropic_record, stream_record, embedding_record = records
    assert anthropic_record["resource"] == MESSAGE["model"]
    assert anthropic_record["provider_response_id"] == message.id
    assert isinstance(stream_record["time_to_first_token_ms"], int)
    assert stream_record["units"]["text"]["output"] > 0
    assert embedding_record["resource"] == "text-embedding-3-small"
    assert exporter.stats()["exported"] == 3


def test_agent_tool_and_workflow_spans_are_never_ingested(
    genai: GenAI, payi: FakePayiServer, add_processor: Callable[[SpanProcessor], None]
) -> None:
    """Agent frameworks' spans carry gen_ai.* attributes; per call and as a span exporter,
    only the inference call inside them is a record."""
    genai.check_invariant = False  # agent spans are GenAI spans without a request of their own
    span_exporter = exporter_for(payi)
    add_processor(SimpleSpanProcessor(span_exporter))
    tracer = genai.otel.provider.get_tracer("opentelemetry.instrumentation.openai_agents")

    def agent_run() -> None:
        for operation in sorted(NOT_CALLS):
            with tracer.start_as_current_span(
                f"{operation} planner",
                kind=SpanKind.INTERNAL,
                attributes={
                    "gen_ai.operation.name": operation,
                    "gen_ai.provider.name": "openai",
                    "gen_ai.agent.name": "planner",
                },
            ):
                pass
        with tracer.start_as_current_span(
            "invoke_agent planner",
            attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.provider.name": "openai"},
        ):
            genai.openai.chat.completions.create(**CHAT)

    agent_run()  # as a span exporter: one record, of the chat span
    assert span_exporter.force_flush()
    assert [r["resource"] for r in bodies(payi)] == ["gpt-4"]
    assert span_exporter.stats()["exported"] == 1

    payi.reset()
    per_call = exporter_for(payi)
    genai.reinstrument(ingest=per_call)
    agent_run()  # per call: one record; the span exporter now sends nothing
    assert per_call.force_flush() and span_exporter.force_flush()
    assert [r["resource"] for r in bodies(payi)] == ["gpt-4"]
    assert span_exporter.stats()["exported"] == 1  # unchanged


def test_ingest_from_the_environment_and_off_by_default(
    genai: GenAI, payi: FakePayiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from payi_otel import _settings

    assert not _settings.current.ingest  # off unless asked
    monkeypatch.setenv("PAYI_API_KEY", "test-key")
    monkeypatch.setenv("PAYI_BASE_URL", payi.base_url)
    monkeypatch.setenv("PAYI_INGEST", "true")
    genai.reinstrument()
    genai.openai.chat.completions.create(**CHAT)
    (observer,) = [o for o in _settings.current.observers if isinstance(o, PayiIngestExporter)]
    assert observer.force_flush()
    assert len(payi.ingested()) == 1
    with pytest.raises(TypeError, match="ingest must be"):
        genai.reinstrument(ingest="yes")


def test_prompts_and_responses_only_when_opted_in_and_not_for_a_call_that_disables_it(
    genai: GenAI, payi: FakePayiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter = exporter_for(payi)
    genai.reinstrument(ingest=exporter)  # the default: off
    genai.openai.chat.completions.create(**CHAT)
    monkeypatch.setenv("PAYI_LOG_PROMPT_AND_RESPONSE", "true")
    logged = exporter_for(payi)
    genai.reinstrument(ingest=logged)
    genai.openai.chat.completions.create(**CHAT)
    genai.openai.chat.completions.create(**CHAT, extra_headers={"xProxy-Logging-Disable": "1"})
    genai.anthropic.messages.create(**MESSAGE)
    assert exporter.force_flush() and logged.force_flush()
    default, opted_in, disabled, anthropic_record = bodies(payi)
    assert "provider_request_json" not in default and "provider_response_json" not in default
    assert "provider_request_json" not in disabled and "provider_response_json" not in disabled
    assert json.loads(opted_in["provider_request_json"]) == CHAT
    (response,) = opted_in["provider_response_json"]
    assert json.loads(response)["choices"][0]["message"]["content"] == "echo: Hello"
    assert json.loads(anthropic_record["provider_request_json"]) == MESSAGE


# --- prompt logging per scope (Pay-i's ``track(log_prompt_and_response=)``) -------------------


def _logged(server: FakePayiServer) -> list[bool]:
    return ["provider_request_json" in b for b in bodies(server)]


@pytest.mark.parametrize("sdk", ["openai", "anthropic", "async-openai", "async-anthropic"])
@pytest.mark.parametrize("dialect", ["x-payi", "payi-proxy"])
async def test_prompt_logging_follows_the_innermost_scope_and_the_call(
    genai: GenAI, payi: FakePayiServer, sdk: str, dialect: str
) -> None:
    """Precedence as for every parameter: the call's header over ``track_context`` over
    ``@track`` over the global level; unset is off. What the call sent says the same."""
    exporter = exporter_for(payi)
    genai.reinstrument(ingest=exporter, header_dialect=dialect)
    off = {"x-payi": "x-payi-log-prompt-and-response", "payi-proxy": "xProxy-Logging-Disable"}
    off_value = {"x-payi": "false", "payi-proxy": "True"}[dialect]

    async def call(headers: dict[str, str] | None = None) -> None:
        extra = {"extra_headers": headers} if headers else {}
        if sdk == "openai":
            genai.openai.chat.completions.create(**CHAT, **extra)
        elif sdk == "anthropic":
            genai.anthropic.messages.create(**MESSAGE, **extra)
        elif sdk == "async-openai":
            await genai.async_openai.chat.completions.create(**CHAT, **extra)
        else:
            await genai.async_anthropic.messages.create(**MESSAGE, **extra)

    @track(log_prompt_and_response=True)
    async def opted_in() -> None:
        await call()  # the decorator's True
        with track_context(log_prompt_and_response=False):
            await call()  # track_context ranks above @track
        await call({off[dialect]: off_value})  # the call's own header: off

    await call()  # unset: off
    with track_context(user_id="u", log_prompt_and_response=True):
        await call()  # on
        with track_context(log_prompt_and_response=False):
            await call()  # the inner scope: off
            with track_context(user_id="v"):
                await call()  # inherited: off
    await opted_in()
    assert exporter.force_flush()
    # A proxied call is Pay-i's to log (it reads the header): no record is ingested for it.
    expected = [False, True, False, False, True, False, False] if dialect == "x-payi" else []
    assert _logged(payi) == expected
    sent = [h.get("x-payi-log-prompt-and-response") for h in genai.attribution()]
    # payi-proxy sends only "off" (presence-only); x-payi both values.
    on = "true" if dialect == "x-payi" else None
    assert sent == [None, on, "false", "false", on, "false", "false"]


def test_prompt_logging_global_level_and_a_scope_that_turns_it_off(
    genai: GenAI, payi: FakePayiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter = exporter_for(payi)
    monkeypatch.setenv("PAYI_LOG_PROMPT_AND_RESPONSE", "yes")
    genai.reinstrument(ingest=exporter)
    genai.openai.chat.completions.create(**CHAT)
    with track_context(log_prompt_and_response=False):
        genai.openai.chat.completions.create(**CHAT)
    assert exporter.force_flush()
    second = exporter_for(payi)
    genai.reinstrument(ingest=second, log_prompt_and_response=False)  # the keyword wins
    genai.openai.chat.completions.create(**CHAT)
    with track_context(log_prompt_and_response=True):
        genai.openai.chat.completions.create(**CHAT)
    assert second.force_flush()
    assert _logged(payi) == [True, False, False, True]


def test_prompt_logging_bad_values_name_the_parameter_and_send_nothing(genai: GenAI) -> None:
    with pytest.raises(TypeError, match="log_prompt_and_response must be a bool"):
        track_context(log_prompt_and_response="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="log_prompt_and_response must be a bool"):
        genai.reinstrument(log_prompt_and_response=1)
    genai.reinstrument()
    genai.check_invariant = False  # the call that raised has a GenAI span, and no request
    with pytest.raises(ValueError, match="x-payi-log-prompt-and-response"):
        genai.openai.chat.completions.create(
            **CHAT, extra_headers={"x-payi-log-prompt-and-response": "maybe"}
        )
    assert genai.server.requests == []


def test_prompt_logging_is_not_taken_from_incoming_baggage_by_default(
    genai: GenAI, payi: FakePayiServer
) -> None:
    from opentelemetry import baggage
    from opentelemetry import context as otel_context

    exporter = exporter_for(payi)
    genai.reinstrument(ingest=exporter)
    token = otel_context.attach(baggage.set_baggage("payi.log_prompt_and_response", "true"))
    try:
        genai.openai.chat.completions.create(**CHAT)
    finally:
        otel_context.detach(token)
    assert exporter.force_flush()
    assert _logged(payi) == [False]


def _stream_kwargs(sdk: str) -> dict[str, Any]:
    if sdk == "openai":
        return {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    return {**MESSAGE, "stream": True}


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
@pytest.mark.parametrize("how", ["cancelled", "left-in-a-task", "broken"])
def test_a_stream_the_provider_answered_is_billed_however_it_ends(
    genai: GenAI, payi: FakePayiServer, sdk: str, how: str
) -> None:
    """A stream whose first events came, then was cancelled (a web client gone: the handler's
    task cancelled while it waits for the next event), left in a task that ended (finished by
    asyncio's clean-up), or broken (the connection lost mid-body): the provider answered and
    bills it, the metrics counted it, and Pay-i got no record (a review). One record each,
    with the caller's user, status 200."""
    import asyncio

    import httpx2 as httpx  # the HTTP client both SDKs' releases here use
    import openai

    exporter = exporter_for(payi)
    genai.reinstrument(ingest=exporter)
    genai.check_invariant = False  # a stream left early: no span compared with its request
    kwargs = _stream_kwargs(sdk)
    if how == "broken":

        class Breaks(httpx.SyncByteStream):
            def __init__(self, inner: Any) -> None:
                self.inner = inner

            def __iter__(self) -> Iterator[bytes]:
                for chunk in self.inner:
                    yield chunk
                    raise httpx.ReadError("connection lost mid-body")

        class Transport(httpx.HTTPTransport):
            def handle_request(self, request: httpx.Request) -> httpx.Response:
                response = super().handle_request(request)
                return httpx.Response(
                    response.status_code,
                    headers=response.headers,
                    stream=Breaks(response.stream),
                    extensions=response.extensions,
                )

        client = (genai.openai_client if sdk == "openai" else genai.anthropic_client)(
            http_client=httpx.Client(transport=Transport())
        )
        create = client.chat.completions.create if sdk == "openai" else client.messages.create
        broke = (httpx.ReadError, openai.APIConnectionError)  # openai wraps it
        with track_context(user_id="alice"), pytest.raises(broke):
            for _ in create(**kwargs):  # type: ignore[operator]
                pass
    else:
        async_client: Any = genai.async_openai if sdk == "openai" else genai.async_anthropic
        create = (
            async_client.chat.completions.create
            if sdk == "openai"
            else async_client.messages.create
        )
        first = asyncio.Event()

        async def handler() -> None:
            with track_context(user_id="alice"):
                stream = await create(**kwargs)
                async for _ in stream:
                    first.set()
                    if how == "left-in-a-task":
                        return  # the stream left open, in a task that ends

        async def main() -> None:
            task = asyncio.ensure_future(handler())
            await first.wait()
            if how == "cancelled":
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        genai.server.stream_delay = 0.05  # the next event is awaited when the task is cancelled
        try:
            asyncio.run(main())
        finally:
            genai.server.stream_delay = 0.0
        gc.collect()
    assert exporter.force_flush()
    [record] = bodies(payi)
    assert record["http_status_code"] == 200
    [user] = [r.headers.get("xproxy-user-id") for r in payi.ingested()]
    assert user == "alice"
    assert exporter.stats()["exported"] == 1


@pytest.mark.parametrize("finish", ["length", "content_filter"])
def test_a_completion_the_sdk_refuses_to_parse_is_billed(
    genai: GenAI, payi: FakePayiServer, finish: str
) -> None:
    """``chat.completions.parse`` raises when the completion was cut short or filtered -
    after OpenAI answered, and billed it: the call had no usage, no cost and no Pay-i record
    (a review). The completion the error carries is read: billed once, status 200."""
    import openai
    from pydantic import BaseModel

    class Answer(BaseModel):
        text: str

    client = answered_openai(
        '{"text": "cut sh',
        {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
        finish_reason=finish,
    )
    exporter = exporter_for(payi)
    genai.reinstrument(ingest=exporter)
    genai.check_invariant = False  # answered in process, not by the server
    refused = (openai.LengthFinishReasonError, openai.ContentFilterFinishReasonError)
    with track_context(user_id="alice"), pytest.raises(refused):
        client.chat.completions.parse(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Hi"}],
            response_format=Answer,
        )
    assert exporter.force_flush()
    [record] = bodies(payi)
    assert record["http_status_code"] == 200
    assert record["units"]["text"] == {"input": 11, "output": 7}
    assert payi.ingested()[0].headers["xproxy-user-id"] == "alice"

"""google-genai (``google.genai``) behind the provider seam: the Gemini API and Vertex AI, sync
and async, ``generate_content`` and ``generate_content_stream`` (and ``embed_content``),
Automatic Function Calling, with and without GenAI spans, in both wire dialects (the real
SDK, its official instrumentation, the real OpenTelemetry SDK and the local fake server).

The ``genai`` / ``surface`` fixtures check after each test that every GenAI span's ``payi.*``
attributes equal the headers its request carried (a test whose call makes several requests,
or none, checks that itself).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Callable, Optional

import google.auth
import google.oauth2.credentials
import httpx
import pytest
from fixtures_genai import (
    GEMINI,
    GOOGLE_BACKENDS,
    PROXY_CARRIES,
    GenAI,
    async_google_call,
    google_call,
    google_client,
    google_config,
    headers_from_span,
)
from fixtures_otel import Metrics, payi_attrs
from fixtures_server import to_local
from genai_prices import Usage as PriceUsage
from genai_prices import calc_price
from google import genai as google_genai
from google.genai import _api_client, _extra_utils, models
from google.genai import errors as google_errors
from google.genai import types as google_types
from opentelemetry.instrumentation.dependencies import DependencyConflict
from opentelemetry.instrumentation.google_genai import GoogleGenAiSdkInstrumentor
from test_call_headers import CALL, CLEAR, CLIENT, EXPECTED, SCOPE, _normal, spelled

from payi_otel import PayiInstrumentor, get_context, track_context
from payi_otel._genai import _forced
from payi_otel._ingest import ingest_record
from payi_otel._providers import PROVIDERS, CallRecord, Instrumentation, Usage
from payi_otel._providers._core import add_observer
from payi_otel._providers.google_genai import (
    LABELS,
    MAX_LABELS,
    GoogleGenAIProvider,
    label_value,
    model_name,
)

#: Every way of making one logical call (``client.models`` / ``client.aio.models``).
APIS = ("sync", "sync-stream", "async", "async-stream")
PROMPT = "Hello there"
#: The fake server's counts for PROMPT: its words and its echo's.
PROMPT_TOKENS, REPLY_TOKENS = 2, 4
SCOPE_SPANS = "opentelemetry.instrumentation.google_genai"


async def generate(
    client: google_genai.Client,
    api: str,
    config: Any = None,
    contents: str = PROMPT,
    model: str = GEMINI,
) -> list[Any]:
    """One logical call through ``api``: its response, or a stream's chunks read to the end."""
    kwargs: dict[str, Any] = {"model": model, "contents": contents, "config": config}
    if api == "sync":
        return [client.models.generate_content(**kwargs)]
    if api == "sync-stream":
        return list(client.models.generate_content_stream(**kwargs))
    if api == "async":
        return [await client.aio.models.generate_content(**kwargs)]
    if api == "async-stream":
        return [chunk async for chunk in await client.aio.models.generate_content_stream(**kwargs)]
    raise ValueError(api)


def text_of(responses: list[Any]) -> str:
    parts = [
        part.text
        for response in responses
        for candidate in response.candidates or []
        for part in (candidate.content.parts if candidate.content else None) or []
        if part.text
    ]
    return "".join(parts)


class Records(list[CallRecord]):
    """Every google-genai call payi_otel reports (one per logical call), from :meth:`observe`
    on (again after each ``reinstrument``: new settings have their own observers)."""

    def __init__(self) -> None:
        super().__init__()
        self.undo: list[Callable[[], None]] = []

    def _add(self, record: CallRecord) -> None:
        if record.provider == "google.genai":
            self.append(record)

    def observe(self) -> None:
        self.undo.append(add_observer(self._add))


@pytest.fixture
def records(genai: GenAI) -> Iterator[Records]:
    found = Records()
    found.observe()
    yield found
    for undo in found.undo:
        undo()


def in_dialect(surface: GenAI, headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` (x-payi-* names) as :meth:`GenAI.attribution` reads them in the dialect
    in force (the payi-proxy dialect has no name for some parameters)."""
    if surface.dialect == "x-payi":
        return dict(headers)
    return {k: v for k, v in headers.items() if k in PROXY_CARRIES}


def attribution_names(surface: GenAI) -> list[list[str]]:
    """The attribution header names (lower-cased) of each request, either spelling."""
    return [
        [k.lower() for k, _ in r.raw_headers if k.lower().startswith(("x-payi-", "xproxy-"))]
        for r in surface.server.requests
    ]


# --- every surface --------------------------------------------------------------------------


@pytest.mark.parametrize("backend", GOOGLE_BACKENDS)
async def test_every_surface_sends_one_resolved_set_and_reports_its_usage(
    surface: GenAI, records: Records, backend: str
) -> None:
    """Sync and async, plain and streamed: client-level headers and the call's own (the
    SDK's ``config.http_options.headers``) are one level over the scope; each request carries
    exactly the resolved set in the dialect in force, its GenAI span the same values (the
    fixture checks it), and the call is reported once with its usage and model."""
    client = google_client(
        surface, backend, headers={"X-Payi-Limit-Ids": "client", "x-payi-account-name": "acme"}
    )
    config = google_config({"xProxy-Limit-IDs": "call", "x-payi-user-id": "bob"})
    with track_context(use_case_name="flow", user_id="alice", limit_ids=["scope"]):
        use_case_id = get_context()["use_case_id"]
        for api in APIS:
            assert text_of(await generate(client, api, config)) == f"echo: {PROMPT}"
    expected = {
        "x-payi-use-case-name": "flow",
        "x-payi-use-case-id": use_case_id,
        "x-payi-limit-ids": "scope,client,call",
        "x-payi-user-id": "bob",
        "x-payi-account-name": "acme",
    }
    assert surface.attribution() == [in_dialect(surface, expected)] * len(APIS)
    other = "xproxy-" if surface.dialect == "x-payi" else "x-payi-"
    for names in attribution_names(surface):
        assert len(names) == len(set(names)) and not [n for n in names if n.startswith(other)]
    prefix = (
        "/v1beta1/projects/proj/locations/us-central1/publishers/google/models/"
        if backend == "vertex"
        else "/v1beta/models/"
    )
    assert [r.path for r in surface.server.requests] == [
        f"{prefix}{GEMINI}:{method}" for method in ("generateContent", "streamGenerateContent") * 2
    ]
    assert [(r.streamed, r.request_model, r.response_model) for r in records] == [
        (streamed, GEMINI, GEMINI) for streamed in (False, True, False, True)
    ]
    assert {r.usage for r in records} == {Usage(PROMPT_TOKENS, REPLY_TOKENS)}
    if surface.genai_spans:
        spans = surface.otel.genai_spans()
        assert len(spans) == len(APIS)
        name = "vertex_ai" if backend == "vertex" else "gemini"
        for span in spans:
            assert span.instrumentation_scope is not None
            assert span.instrumentation_scope.name == SCOPE_SPANS
            assert (span.attributes or {})["gen_ai.provider.name"] == name
    else:
        assert surface.otel.genai_spans() == []


#: Where the caller's headers come from: (client-level headers given, call's headers given).
SOURCES = {"client": (True, False), "call": (False, True), "client+call": (True, True)}
#: google-genai takes ``dict[str, str]`` headers (no bytes names).
SPELLINGS = ("lower", "Title-Case", "UPPER", "xProxy")


@pytest.mark.parametrize("backend", GOOGLE_BACKENDS)
async def test_client_and_call_headers_are_one_level_in_every_spelling(
    surface: GenAI, backend: str
) -> None:
    """The per-call grid of openai and anthropic (test_call_headers' SCOPE, CLIENT, CALL,
    CLEAR and EXPECTED) through google-genai: strings and the version from the call, lists
    added up, properties updated, ``""`` clearing; one header per parameter whatever the
    spellings (the SDK merges the client's and the call's headers case-sensitively: a client
    header in one case and the call's in another would otherwise both go out). A loop, not
    parameters: the ``surface`` fixture's set-up costs more than the calls."""
    for source, (has_defaults, has_call) in SOURCES.items():
        for spelling in SPELLINGS:
            for api in ("sync", "async"):
                case = f"{source} in {spelling}, {api}"
                with track_context(**SCOPE):
                    use_case = {
                        "x-payi-use-case-name": "flow",
                        "x-payi-use-case-id": get_context()["use_case_id"],
                    }
                    for client_values, call_values in (
                        (CLIENT, CALL),
                        (CLIENT, CLEAR) if has_call else (CLEAR, None),
                    ):
                        # Client and call in different cases when both are given.
                        client_spelling = "lower" if has_call else spelling
                        client = google_client(
                            surface,
                            backend,
                            headers=spelled(client_spelling, client_values)
                            if has_defaults
                            else None,
                        )
                        call = spelled(spelling, call_values) if has_call and call_values else None
                        await generate(client, api, google_config(call))
                expected = [{**use_case, **e} for e in EXPECTED[(has_defaults, has_call)]]
                assert [_normal(a) for a in surface.attribution()[-2:]] == expected, case
                for names in attribution_names(surface)[-2:]:
                    assert len(names) == len(set(names)), (case, names)


@pytest.mark.parametrize("key", ["http_options", "httpOptions"])
def test_a_config_dict_in_either_case_gives_the_calls_own_headers(genai: GenAI, key: str) -> None:
    """The SDK takes a config dict in snake or camel case (its pydantic aliases): the call's
    own headers are read in either (a review found camel case's replaced by the scope's)."""
    client = google_client(genai, "gemini")
    with track_context(user_id="alice"):
        client.models.generate_content(
            model=GEMINI, contents="Hello", config={key: {"headers": {"x-payi-user-id": "bob"}}}
        )
    assert [a.get("x-payi-user-id") for a in genai.attribution()] == ["bob"]
    assert genai.span_attrs()[-1]["payi.user_id"] == "bob"


def test_a_header_given_twice_with_two_values_is_the_callers_error_and_nothing_is_sent(
    genai: GenAI,
) -> None:
    genai.check_invariant = False  # the GenAI span records the error; no request
    with pytest.raises(ValueError, match=r"(?i)x-payi-user-id.*xProxy-User-ID"):
        google_call(genai, {"x-payi-user-id": "a", "xProxy-User-ID": "b"})
    assert genai.server.requests == []


# --- streams, however they are left ---------------------------------------------------------

#: exhaust: read to the end; break: leave the loop after the first chunk; close: one chunk,
#: then ``close()`` / ``aclose()``; drop: one chunk, then nothing (collected later).
STYLES = ("exhaust", "break", "close", "drop")


def _consume(stream: Any, style: str) -> tuple[list[Any], list[Any]]:
    if style == "exhaust":
        return list(stream), [stream]
    iterator = iter(stream)
    items = [next(iterator)]
    if style == "close":
        stream.close()
    if style == "drop":
        return items, [stream, iterator]
    del iterator
    return items, [stream]


async def _aconsume(stream: Any, style: str) -> tuple[list[Any], list[Any]]:
    if style == "exhaust":
        return [chunk async for chunk in stream], [stream]
    iterator = stream.__aiter__()
    items = [await iterator.__anext__()]
    if style == "close":
        await stream.aclose()
    if style == "drop":
        return items, [stream, iterator]
    del iterator
    return items, [stream]


async def _collect() -> None:
    for _ in range(2):
        gc.collect()
        for _ in range(2):
            await asyncio.sleep(0)


@pytest.mark.parametrize("spans", [True, False], ids=["spans", "nospans"])
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("style", STYLES)
async def test_a_stream_left_anyhow_is_reported_once_and_never_keeps_its_scope(
    genai: GenAI, records: Records, style: str, is_async: bool, spans: bool
) -> None:
    """The stream is a generator that sends its request when first read: read in the call's
    context, it carries the scope's headers; its call is reported exactly once (ended,
    closed, or collected) with the usage it showed; the scope is gone once left."""
    genai.reinstrument(genai_spans=spans)
    records.observe()
    client = google_client(genai)
    kwargs: dict[str, Any] = {"model": GEMINI, "contents": PROMPT}
    with track_context(user_id="alice"):
        if is_async:
            stream = await client.aio.models.generate_content_stream(**kwargs)
            items, held = await _aconsume(stream, style)
        else:
            stream = client.models.generate_content_stream(**kwargs)
            items, held = _consume(stream, style)
        del stream
    del held
    await _collect()
    assert "user_id" not in get_context()
    await generate(client, "async" if is_async else "sync")
    first, after = genai.attribution()
    assert first["x-payi-user-id"] == "alice" and "x-payi-user-id" not in after
    assert items
    (streamed,) = [r for r in records if r.streamed]
    full = Usage(PROMPT_TOKENS, REPLY_TOKENS)
    if style == "exhaust":
        assert streamed.usage == full
    else:  # what the stream showed before it was left: never invented
        assert streamed.usage is None or streamed.usage.input_tokens == PROMPT_TOKENS
    assert streamed.error is None


@pytest.mark.parametrize("left", ["dropped", "closed"])
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_a_stream_never_read_sent_nothing_and_is_no_call(
    genai: GenAI, records: Records, is_async: bool, left: str
) -> None:
    """The stream sends its request when first read: one never read (an early return, an
    exception before the loop) sent nothing, so it is no call - no record, no Pay-i request
    counted against the user's limits (a review found one billed with status 200)."""
    client = google_client(genai)
    with track_context(user_id="alice"):
        if is_async:
            stream = await client.aio.models.generate_content_stream(model=GEMINI, contents=PROMPT)
            if left == "closed":
                await stream.aclose()
        else:
            stream = client.models.generate_content_stream(model=GEMINI, contents=PROMPT)
            if left == "closed":
                stream.close()
        del stream
    await _collect()
    genai.check_invariant = False  # no request, no span to compare with
    assert genai.server.requests == [] and list(records) == []


@pytest.mark.parametrize("call", ["generate", "stream", "async"])
def test_a_call_google_refused_with_a_status_is_billed_with_it(genai: GenAI, call: str) -> None:
    """google-genai's errors keep the HTTP status in ``code`` (not ``status_code``): a
    refused call was taken for one that never reached Google, and Pay-i got no record (a
    review). It is sent with its status, as other providers' are."""
    from fake_payi_server import FakePayiServer
    from google.genai import errors

    from payi_otel import PayiIngestExporter

    client = google_client(genai)
    with FakePayiServer() as payi:
        exporter = PayiIngestExporter(api_key="k", base_url=payi.base_url)
        genai.reinstrument(ingest=exporter)
        genai.server.fail_next(1, "400")
        with track_context(user_id="alice"), pytest.raises(errors.ClientError):
            if call == "generate":
                client.models.generate_content(model=GEMINI, contents=PROMPT)
            elif call == "stream":
                for _ in client.models.generate_content_stream(model=GEMINI, contents=PROMPT):
                    pass
            else:
                asyncio.run(client.aio.models.generate_content(model=GEMINI, contents=PROMPT))
        assert exporter.force_flush()
        [record] = [r.body for r in payi.ingested()]
        exporter.shutdown()
    assert record["http_status_code"] == 400
    genai.check_invariant = False  # a refused call: its span records the error alone


# --- Automatic Function Calling ---------------------------------------------------------------


def get_weather() -> str:
    """Today's weather."""
    return "sunny"


async def test_automatic_function_calling_is_one_call_whose_requests_share_its_ids(
    surface: GenAI,
) -> None:
    """With a Python function among the tools, one ``generate_content`` is two requests (the
    model asks for the function, the SDK answers with its result): both carry the same
    resolved headers - one fresh id for the use case the call names - and the call's one
    GenAI span says the same; the next call gets another id."""
    surface.check_invariant = False  # one span per call, two requests: checked here
    client = google_client(surface)
    ids = []
    for api in APIS:
        surface.server.reset()
        surface.otel.exporter.clear()
        config = google_config({"x-payi-use-case-name": "weather"}, tools=[get_weather])
        responses = await generate(client, api, config, contents="weather?")
        assert text_of(responses).endswith("echo: sunny"), api
        first, second = surface.attribution()
        assert first == second and first["x-payi-use-case-name"] == "weather", api
        assert "functionResponse" in json.dumps(surface.server.requests[1].body)
        ids.append(first["x-payi-use-case-id"])
        if surface.genai_spans:
            (span,) = surface.otel.genai_spans()
            assert in_dialect(surface, headers_from_span(span)) == first, api
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).version == 4 for i in ids)


def test_a_chat_runs_its_function_calling_turns_as_calls_of_their_own(genai: GenAI) -> None:
    """``chat.send_message`` runs Automatic Function Calling itself, one
    ``generate_content`` per turn (each its own GenAI span): each turn is a call, attributed
    on its own (the fixture checks every span against its request)."""
    config = google_config({"x-payi-use-case-name": "weather"}, tools=[get_weather])
    client = google_client(genai)  # held: a dropped Client closes its HTTP client
    chat = client.chats.create(model=GEMINI, config=config)
    assert chat.send_message("weather?").text == "echo: sunny"
    first, second = genai.attribution()
    assert first["x-payi-use-case-name"] == second["x-payi-use-case-name"] == "weather"
    assert len(genai.otel.genai_spans()) == 2


async def test_a_tools_own_requests_are_not_the_calls(surface: GenAI) -> None:
    """Automatic Function Calling runs the caller's Python tools inside the call; what a tool
    sends is not the call: ``count_tokens`` on any client (the call's own included) goes out
    as written, as outside a call, and a GenAI call a tool makes is attributed where the
    call was made (its scopes, its own), without the outer call's per-call headers."""
    surface.check_invariant = False  # the tool's calls have spans of their own: checked here
    client = google_client(surface)
    other = google_client(surface)

    def weather() -> str:
        """Today's weather."""
        client.models.count_tokens(model=GEMINI, contents="x")
        with track_context(user_id="bob"):
            other.models.count_tokens(model=GEMINI, contents="x")
            other.models.generate_content(model=GEMINI, contents="inner")
        client.models.generate_content(model=GEMINI, contents="inner")
        return "sunny"

    outer = {"x-payi-use-case-name": "weather", "x-payi-account-name": "acme"}
    for api in APIS:
        surface.server.reset()
        with track_context(user_id="alice"):
            config = google_config(outer, tools=[weather])
            responses = await generate(client, api, config, contents="weather?")
        assert text_of(responses).endswith("echo: sunny"), api
        paths = [r.path.rsplit(":", 1)[1] for r in surface.server.requests]
        assert paths == [
            "streamGenerateContent" if "stream" in api else "generateContent",
            "countTokens",
            "countTokens",
            "generateContent",
            "generateContent",
            "streamGenerateContent" if "stream" in api else "generateContent",
        ], api
        first, counted, other_counted, bobs, alices, last = surface.attribution()
        assert first == last, api
        assert first["x-payi-user-id"] == "alice" and first["x-payi-account-name"] == "acme"
        assert counted == other_counted == {}, api
        assert bobs["x-payi-user-id"] == "bob" and alices["x-payi-user-id"] == "alice", api
        for inner in (bobs, alices):
            assert "x-payi-account-name" not in inner, api
            assert inner.get("x-payi-use-case-name") != "weather", api
        if surface.genai_spans:  # the call's (the instrumentation gives the tool's none)
            (span,) = surface.otel.genai_spans()
            assert in_dialect(surface, headers_from_span(span)) == first, api
            surface.otel.exporter.clear()


# --- where attribution goes -------------------------------------------------------------------


def posing(
    genai: GenAI, host_of: str, headers: Optional[dict[str, str]] = None
) -> google_genai.Client:
    """A client whose requests go to Google's public API (``host_of``: ``gemini``, ``vertex``
    in us-central1, ``vertex-global``, ``vertex-us``: multi-region) as built, delivered to the
    fake server."""
    options = google_types.HttpOptions(
        headers=headers,
        httpx_client=httpx.Client(transport=to_local(genai.server)),
        httpx_async_client=httpx.AsyncClient(transport=to_local(genai.server, is_async=True)),
    )
    if host_of == "gemini":
        return google_genai.Client(api_key="test", http_options=options)
    return google_genai.Client(
        vertexai=True,
        project="proj",
        location={"vertex-global": "global", "vertex-us": "us"}.get(host_of, "us-central1"),
        credentials=google.oauth2.credentials.Credentials(token="vertex-token"),
        http_options=options,
    )


PUBLIC_HOSTS = {
    "gemini": "generativelanguage.googleapis.com",
    "vertex": "us-central1-aiplatform.googleapis.com",
    "vertex-global": "aiplatform.googleapis.com",
    # A multi-region endpoint (found by a review sending alice's id there).
    "vertex-us": "aiplatform.us.rep.googleapis.com",
}


async def test_googles_public_hosts_get_no_attribution_but_spans_keep_it(genai: GenAI) -> None:
    """By default nobody at Google's public API reads Pay-i's headers: none is sent there -
    not even the caller's own, client-level or per-call - while the GenAI spans keep the
    values; an allow-list (``header_hosts``) sends them."""
    genai.check_invariant = False
    for host_of in PUBLIC_HOSTS:
        client = posing(genai, host_of, headers={"x-payi-account-name": "acme"})
        with track_context(user_id="alice"):
            for api in ("sync", "async-stream"):
                await generate(client, api, google_config({"xProxy-Limit-IDs": "l"}))
    assert [r.headers["host"] for r in genai.server.requests] == [
        host for host in PUBLIC_HOSTS.values() for _ in range(2)
    ]
    assert genai.attribution() == [{}] * (2 * len(PUBLIC_HOSTS))
    for attributes in genai.span_attrs():
        assert attributes["payi.user_id"] == "alice"
        assert attributes["payi.account_name"] == "acme"
        assert attributes["payi.limit_ids"] == ["l"]
    genai.server.reset()
    genai.reinstrument(header_hosts=["generativelanguage.googleapis.com"])
    with track_context(user_id="alice"):
        await generate(posing(genai, "gemini"), "sync")
        await generate(posing(genai, "vertex"), "sync")
    assert [a.get("x-payi-user-id") for a in genai.attribution()] == ["alice", None]


@pytest.mark.parametrize("is_async", [False, True], ids=["sync-httpx", "async-aiohttp"])
def test_a_redirect_to_another_origin_loses_the_attribution(genai: GenAI, is_async: bool) -> None:
    """google-genai's HTTP clients follow redirects: a hop to another origin (loopback,
    which the policy allows) carries no attribution header - httpx's by payi_otel's guard on
    the SDK's client, aiohttp's (the async client's default when installed) by its redirect
    trace signal (a review found the async hop carrying the user's id)."""
    import aiohttp  # the async client's, here

    assert aiohttp
    genai.check_invariant = False  # one call, two requests
    port = genai.server.google_genai_base_url.rsplit(":", 1)[1].strip("/")
    genai.server.redirect_next(1, 307, target=f"http://localhost:{port}")
    with track_context(user_id="alice"):
        if is_async:
            assert asyncio.run(async_google_call(genai)) == "echo: Hello"
        else:
            assert google_call(genai) == "echo: Hello"
    first, hop = genai.server.requests
    assert first.headers["x-payi-user-id"] == "alice"
    assert hop.headers["host"].startswith("localhost")
    assert not [k for k in hop.headers if k.startswith(("x-payi-", "xproxy-"))]


async def test_other_apis_go_out_as_written_and_embeddings_are_attributed(
    genai: GenAI, records: Records
) -> None:
    """``count_tokens`` (and every API but the GenAI ones) goes out as the caller wrote it:
    no header added from the scope, the caller's own untouched, nothing reported.
    ``embed_content`` is a GenAI call (the instrumentation gives it a span): attributed on
    the wire and the span alike (the fake has no embeddings route: a 404, an error span)."""
    client = google_client(genai)
    own = google_types.CountTokensConfig(
        http_options=google_types.HttpOptions(headers={"X-Payi-Request-Tags": "mine"})
    )
    with track_context(user_id="alice"):
        client.models.count_tokens(model=GEMINI, contents=PROMPT, config=own)
        await client.aio.models.count_tokens(model=GEMINI, contents=PROMPT)
        embed = google_types.EmbedContentConfig(
            http_options=google_types.HttpOptions(headers={"x-payi-limit-ids": "e"})
        )
        with pytest.raises(google_errors.ClientError):
            client.models.embed_content(model="gemini-embedding-001", contents="x", config=embed)
        with pytest.raises(google_errors.ClientError):
            await client.aio.models.embed_content(model="gemini-embedding-001", contents="x")
    counted, acounted, embedded, aembedded = genai.server.requests
    assert counted.path.endswith(":countTokens")
    assert [(k, v) for k, v in counted.raw_headers if k.lower().startswith("x-payi")] == [
        ("X-Payi-Request-Tags", "mine")
    ]
    assert not [k for k in acounted.headers if k.startswith("x-payi")]
    assert embedded.path.endswith("gemini-embedding-001:batchEmbedContents")
    assert embedded.headers["x-payi-user-id"] == "alice"
    assert embedded.headers["x-payi-limit-ids"] == "e"
    assert aembedded.headers["x-payi-user-id"] == "alice"
    assert [(r.request_model, r.usage, r.error is not None) for r in records] == [
        ("gemini-embedding-001", None, True)
    ] * 2
    # The spans==wire check of the fixture holds for these two requests and their spans.
    genai.server.requests[:] = [embedded, aembedded]


# --- usage and cost ---------------------------------------------------------------------------

EXTRA = {"cached_tokens": 6, "reasoning_tokens": 3}


@pytest.mark.parametrize("spans", [True, False], ids=["spans", "nospans"])
async def test_usage_and_cost_count_cached_and_thought_tokens_on_the_span_and_in_metrics(
    genai: GenAI, records: Records, spans: bool
) -> None:
    """``prompt_token_count`` includes the cached tokens, ``candidates_token_count`` leaves
    out the thoughts: input = prompt, output = candidates + thoughts, priced cache-aware by
    genai-prices as Google's; the same for every surface and both backends, on the GenAI
    span (``payi_otel.cost.*``) and in the counters by attribution."""
    metrics = Metrics()
    genai.reinstrument(
        {"use_case_name": "support"}, meter_provider=metrics.provider, genai_spans=spans
    )
    records.observe()
    usage = json.dumps(EXTRA)
    with track_context(account_name="acme"):
        for backend in GOOGLE_BACKENDS:
            client = google_client(genai, backend)
            for api in APIS:
                await generate(client, api, google_config({"x-fake-usage": usage}))
    prompt = PROMPT_TOKENS + EXTRA["cached_tokens"]
    output = REPLY_TOKENS + EXTRA["reasoning_tokens"]
    expected = Usage(prompt, output, EXTRA["cached_tokens"], None, EXTRA["reasoning_tokens"])
    assert [r.usage for r in records] == [expected] * 8
    price = calc_price(
        PriceUsage(input_tokens=prompt, output_tokens=output, cache_read_tokens=6),
        model_ref=GEMINI,
        provider_id="google",
    )
    spans_seen = genai.otel.genai_spans()
    assert len(spans_seen) == (8 if spans else 0)
    for span in spans_seen:
        attributes = span.attributes or {}
        assert attributes["gen_ai.usage.input_tokens"] == prompt
        assert attributes["gen_ai.usage.output_tokens"] == output
        assert attributes["payi_otel.cost.total"] == pytest.approx(float(price.total_price))
        assert (attributes["payi_otel.cost.provider"], attributes["payi_otel.cost.model"]) == (
            "google",
            GEMINI,
        )
    tokens = metrics.sum_by(
        "payi.genai.tokens", "payi_otel.token.type", **{"payi.account_name": "acme"}
    )
    assert tokens == {
        "input": 8 * prompt,
        "output": 8 * output,
        "cache_read": 8 * EXTRA["cached_tokens"],
        "reasoning": 8 * EXTRA["reasoning_tokens"],
    }
    (cost,) = metrics.sum_by("payi.genai.cost", "gen_ai.provider.name").items()
    assert cost[0] == "google.genai"
    assert cost[1] == pytest.approx(8 * float(price.total_price))


def test_google_model_names_are_priced_without_their_resource_prefixes(
    genai: GenAI, records: Records
) -> None:
    client = google_client(genai)
    for model in (f"models/{GEMINI}", GEMINI):
        client.models.generate_content(model=model, contents=PROMPT)
    assert [r.request_model for r in records] == [GEMINI, GEMINI]
    assert model_name(f"projects/p/locations/l/publishers/google/models/{GEMINI}") == GEMINI
    assert model_name(f"publishers/google/models/{GEMINI}-001") == f"{GEMINI}-001"
    assert model_name(f"google/{GEMINI}") == GEMINI
    assert model_name("tunedModels/123") == "tunedModels/123"
    for span in genai.otel.genai_spans():
        assert (span.attributes or {})["payi_otel.cost.model"] == GEMINI


def test_ingest_files_gemini_and_vertex_calls_as_pay_i_names_them(genai: GenAI) -> None:
    """Pay-i files Gemini API and Vertex AI calls under ``system.google.vertex`` and names
    the resource ``google.`` + the response's model version."""
    for backend in GOOGLE_BACKENDS:
        with track_context(user_id="alice"):
            google_call(genai, backend=backend)
    for span in genai.otel.genai_spans():
        record = ingest_record(span)
        assert record["category"] == "system.google.vertex"
        assert record["resource"] == f"google.{GEMINI}"
        assert record["units"] == {"text": {"input": 1, "output": 3}}
        assert record["user_id"] == "alice"
    resource = GoogleGenAIProvider.services[0].ingest_resource
    assert resource is not None
    assert resource(f"models/{GEMINI}", None) == f"google.{GEMINI}"
    assert resource(GEMINI, "gemini-2.0-flash-001") == "google.gemini-2.0-flash-001"
    assert resource("claude-3-5-haiku@20241022", None) == "anthropic.claude-3-5-haiku@20241022"


# --- Vertex AI labels (native attribution, opt-in) ---------------------------------------------


@pytest.mark.parametrize("switch", ["off", "argument", "variable"])
async def test_vertex_labels_carry_use_case_user_and_account_only_when_asked(
    genai: GenAI, monkeypatch: pytest.MonkeyPatch, switch: str
) -> None:
    """``native_attribution=True`` (or ``PAYI_NATIVE_ATTRIBUTION=true``): a Vertex AI call's
    billing labels carry the use case name, user id and account name, made label-safe; the
    caller's own labels win; Google's public hosts get them too (they are Google's own
    field), while the Gemini API gets none (labels are a Vertex AI feature)."""
    if switch == "variable":
        monkeypatch.setenv("PAYI_NATIVE_ATTRIBUTION", "true")
    genai.reinstrument(native_attribution=True if switch == "argument" else None)
    genai.check_invariant = False
    config = google_config(labels={"team": "core", "payi_user_id": "mine"})
    with track_context(use_case_name="Support Bot", user_id="Alice@Example.com"):
        with track_context(account_name="ACME"):
            for api in APIS:
                await generate(google_client(genai, "vertex"), api, config)
            await generate(google_client(genai, "vertex"), "sync")
            await generate(google_client(genai, "gemini"), "sync", config)
            await generate(posing(genai, "vertex"), "sync")
    *vertex, plain, gemini, public = genai.server.requests
    ours = {
        "payi_use_case_name": "support_bot",
        "payi_account_name": "acme",
    }
    if switch == "off":
        assert [r.body["labels"] for r in vertex] == [{"team": "core", "payi_user_id": "mine"}] * 4
        assert "labels" not in plain.body and "labels" not in public.body
    else:
        assert [r.body["labels"] for r in vertex] == [
            {"team": "core", "payi_user_id": "mine", **ours}
        ] * 4
        assert plain.body["labels"] == {**ours, "payi_user_id": "alice_example_com"}
        assert public.body["labels"] == plain.body["labels"]
        assert public.headers["host"] == PUBLIC_HOSTS["vertex"]
        assert not [k for k in public.headers if k.startswith("x-payi")]
    assert gemini.body["labels"] == {"team": "core", "payi_user_id": "mine"}  # the caller's


def test_label_values_are_made_label_safe_deterministically() -> None:
    assert [name for name, _ in LABELS] == ["use_case_name", "user_id", "account_name"]
    assert label_value("Alice@Example.com") == "alice_example_com"
    assert label_value("caf\u00e9 bar-1_2") == "caf__bar-1_2"
    long = "x" * 70
    made = label_value(long)
    assert len(made) == 63 and made.startswith("x" * 54 + "-") and made == label_value(long)
    assert label_value("x" * 70) != label_value("x" * 69 + "y")
    assert label_value("") == ""


def test_labels_never_exceed_googles_64(genai: GenAI) -> None:
    genai.reinstrument(native_attribution=True)
    given = {f"k{i}": "v" for i in range(MAX_LABELS - 1)}
    client = google_client(genai, "vertex")
    with track_context(user_id="u", account_name="a"):
        client.models.generate_content(
            model=GEMINI, contents=PROMPT, config=google_config(labels=given)
        )
    (request,) = genai.server.requests
    assert len(request.body["labels"]) == MAX_LABELS
    assert request.body["labels"]["payi_use_case_name"] == "app"


# --- GenAI spans: the instrumentation and its version range -----------------------------------


def test_forced_only_for_a_tested_next_major() -> None:
    tested = Instrumentation("opentelemetry-instrumentation-google-genai", "m", "C", (3, 10), (3,))
    conflict = DependencyConflict("google-genai<3,>=1.32.0", "google-genai 3.6.1")
    message = _forced(tested, conflict)
    assert message is not None
    assert "declares google-genai<3,>=1.32.0 but google-genai 3.6.1 is installed" in message
    untested = Instrumentation("opentelemetry-instrumentation-google-genai", "m", "C")
    assert _forced(untested, conflict) is None
    assert (
        _forced(tested, DependencyConflict("google-genai<3,>=1.32.0", "google-genai 4.0")) is None
    )
    assert _forced(tested, DependencyConflict("google-genai<3,>=1.32.0")) is None  # absent
    assert _forced(tested, DependencyConflict("google-genai<3,>=3.9", "google-genai 3.6.1")) is None


@pytest.fixture
def sdk_outside_range(monkeypatch: pytest.MonkeyPatch) -> Callable[[tuple[int, ...]], None]:
    """The installed google-genai (2.x) made the instrumentation's next major: it declares
    ``< 2``; ``tested(majors)`` registers the provider with those ``forced_majors``."""
    monkeypatch.setattr(
        GoogleGenAiSdkInstrumentor,
        "instrumentation_dependencies",
        lambda self: ["google-genai>=1.32.0,<2"],
    )

    def tested(majors: tuple[int, ...]) -> None:
        inst = GoogleGenAIProvider.instrumentations[0]

        class Tested(GoogleGenAIProvider):
            instrumentations = (
                Instrumentation(inst.distribution, inst.module, inst.instrumentor, (3, 10), majors),
            )

        monkeypatch.setitem(PROVIDERS, "google.genai", lambda: Tested)

    return tested


@pytest.mark.parametrize("majors", [(2,), ()], ids=["tested", "untested"])
def test_an_sdk_beyond_the_declared_range_is_forced_with_one_warning_when_tested(
    genai: GenAI,
    sdk_outside_range: Callable[[tuple[int, ...]], None],
    caplog: pytest.LogCaptureFixture,
    majors: tuple[int, ...],
) -> None:
    sdk_outside_range(majors)
    with caplog.at_level(logging.WARNING, logger="payi_otel"):
        genai.reinstrument()
    warnings = [r.getMessage() for r in caplog.records if "google" in r.getMessage()]
    assert len(warnings) == 1, warnings
    google_call(genai)
    spans = genai.otel.genai_spans()
    if majors:
        assert "declares google-genai<2,>=1.32.0 but google-genai 2." in warnings[0]
        assert "payi_otel turns it on anyway" in warnings[0]
        assert "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=google-genai" in warnings[0]
        assert [payi_attrs(s)["payi.use_case.name"] for s in spans] == ["app"]
    else:
        assert "no GenAI spans for google.genai calls" in warnings[0]
        assert spans == []
        genai.check_invariant = False


def test_disabling_the_instrumentations_entry_point_is_respected(
    genai: GenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=google-genai`` (its entry point's name, what
    the loader itself skips) keeps payi_otel from turning it on; headers still go out."""
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "google-genai")
    genai.reinstrument()
    genai.check_invariant = False
    with track_context(user_id="alice"):
        google_call(genai)
    assert genai.otel.genai_spans() == []
    assert genai.attribution()[0]["x-payi-user-id"] == "alice"


async def test_an_instrumentation_turned_on_before_payi_otel_still_gets_usage_and_cost(
    genai: GenAI,
) -> None:
    """GoogleGenAiSdkInstrumentor instrumented first (by hand, or before payi_otel by the
    zero-code loader) wraps the same methods *inside* payi_otel's: its span starts inside the
    call's context (``payi.*`` from it) and the usage and cost find it at the send point."""
    payi = PayiInstrumentor()
    payi.uninstrument()
    google = GoogleGenAiSdkInstrumentor()
    google.instrument(tracer_provider=genai.otel.provider)
    try:
        payi.instrument(tracer_provider=genai.otel.provider, caller_file="/srv/app.py")
        client = google_client(genai)
        with track_context(user_id="alice"):
            for api in APIS:
                await generate(client, api)
        spans = genai.otel.genai_spans()
        assert len(spans) == len(APIS)
        for span in spans:
            attributes = span.attributes or {}
            assert attributes["payi.user_id"] == "alice"
            assert attributes["payi_otel.cost.model"] == GEMINI
    finally:
        payi.uninstrument()
        google.uninstrument()


def test_uninstrument_restores_every_method_and_sends_calls_as_written(genai: GenAI) -> None:
    wrapped = {
        (models.Models, "generate_content"),
        (models.Models, "generate_content_stream"),
        (models.AsyncModels, "generate_content"),
        (models.AsyncModels, "embed_content"),
        (_api_client.BaseApiClient, "_request_once"),
        (_api_client.BaseApiClient, "_async_request_once"),
        (_extra_utils, "get_function_response_parts"),
        (_extra_utils, "get_function_response_parts_async"),
    }
    assert all(hasattr(getattr(owner, name), "__wrapped__") for owner, name in wrapped)
    PayiInstrumentor().uninstrument()
    assert not [
        (owner, name) for owner, name in wrapped if hasattr(getattr(owner, name), "__wrapped__")
    ]
    genai.check_invariant = False
    with track_context(user_id="alice"):
        google_call(genai, {"x-payi-user-id": "as-written"})
        client = google_client(genai)
        list(
            client.models.generate_content_stream(
                model=GEMINI, contents=PROMPT, config=google_config({"X-Payi-Limit-Ids": "l"})
            )
        )
    assert genai.attribution() == [{"x-payi-user-id": "as-written"}, {"x-payi-limit-ids": "l"}]
    assert genai.otel.genai_spans() == []


# --- the README's snippet ---------------------------------------------------------------------


def _readme_snippet() -> str:
    # README "Providers" is in docs/providers.md (issue 22).
    text = (Path(__file__).resolve().parent.parent / "docs" / "providers.md").read_text()
    section = text[text.index("### Google GenAI (`google-genai`)") :]
    start = section.index("```python\n") + len("```python\n")
    return section[start : section.index("```", start)]


def test_the_readmes_snippet_sends_what_the_readme_says(
    genai: GenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README "Providers": the snippet as written, its gateway being the fake server and
    Google's application default credentials a token that never expires."""
    code = _readme_snippet().replace(
        "https://gateway.example.com", genai.server.google_genai_base_url
    )
    monkeypatch.setattr(
        google.auth,
        "default",
        lambda *args, **kwargs: (
            google.oauth2.credentials.Credentials(token="adc-token"),
            "my-project",
        ),
    )
    PayiInstrumentor().uninstrument()
    try:
        exec(compile(code, "README.md", "exec"), {})
    finally:
        PayiInstrumentor().uninstrument()
    (request,) = genai.server.requests
    assert request.path.startswith("/v1beta1/projects/my-project/locations/us-central1/")
    sent = genai.attribution()[0]
    assert {k: v for k, v in sent.items() if k != "x-payi-use-case-id"} == {
        "x-payi-use-case-name": "support_bot",
        "x-payi-user-id": "alice",
        "x-payi-account-name": "acme",
        "x-payi-limit-ids": "per_feature",
    }
    assert request.body["labels"] == {
        "team": "support",
        "payi_use_case_name": "support_bot",
        "payi_user_id": "alice",
        "payi_account_name": "acme",
    }


EMIT_EVENT = "OTEL_INSTRUMENTATION_GENAI_EMIT_EVENT"


@pytest.mark.parametrize("users", [None, "false", "true"])
def test_turning_its_genai_spans_on_leaves_the_environment_as_it_was(
    genai: GenAI, monkeypatch: pytest.MonkeyPatch, users: Optional[str]
) -> None:
    """opentelemetry-instrumentation-google-genai sets OTEL_INSTRUMENTATION_GENAI_EMIT_EVENT=true
    in the process environment when instrumented, which every GenAI instrumentation reads at
    each call: an OpenAI call would emit an event too. Turned on by payi_otel, it leaves the
    variable as the user had it (set, or not)."""
    genai.reinstrument(genai_spans=False)  # google-genai's instrumentation off
    assert not GoogleGenAiSdkInstrumentor().is_instrumented_by_opentelemetry
    if users is None:
        monkeypatch.delenv(EMIT_EVENT, raising=False)
    else:
        monkeypatch.setenv(EMIT_EVENT, users)
    genai.reinstrument()  # GenAI spans on: payi_otel turns google-genai's on
    assert GoogleGenAiSdkInstrumentor().is_instrumented_by_opentelemetry
    assert os.environ.get(EMIT_EVENT) == users

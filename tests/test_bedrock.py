"""AWS Bedrock through boto3 (``src/payi_otel/_providers/bedrock.py``): the real boto3 with real
SigV4 signing against the fake server's Bedrock runtime, the real OpenTelemetry SDK, the real
genai-bedrock and botocore instrumentations.

Every operation (``converse``, ``converse_stream``, ``invoke_model``,
``invoke_model_with_response_stream``; boto3 has no async client, aiobotocore is not covered)
under every surface mode (GenAI spans on / off x both wire dialects); streams read to the
end, closed early, abandoned, used with ``with``; retries; per-call ``extra_headers`` in both
spellings; the default-refused public host; genai-bedrock next to the botocore
instrumentation, in code and under ``opentelemetry-instrument``; usage and cost on the span
and in the metrics; Pay-i ingest; native attribution (``requestMetadata``); uninstrument.
Expectations come from the merge engine (``resolve_call``), the parameter registry and the
provider's own facts, never a second copy of a rule. The ``genai`` fixture checks, after
each test that keeps it on, that every GenAI span's ``payi.*`` equals the headers its call
sent.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional
from urllib.parse import unquote, urlsplit, urlunsplit

import boto3
import botocore.awsrequest
import botocore.client
import botocore.config
import botocore.endpoint
import botocore.exceptions
import pytest
from fake_llm_server import FakeLLMServer, RecordedRequest
from fixtures_genai import (
    BEDROCK_MODEL,
    BEDROCK_OPERATIONS,
    GenAI,
    attribution_headers,
    bedrock_call,
    bedrock_client,
    bedrock_messages,
    claude_body,
    shared_bedrock,
)
from fixtures_otel import Metrics, Otel, payi_attrs
from genai_prices import Usage as PriceUsage
from genai_prices import calc_price
from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
from opentelemetry.instrumentation.botocore import extensions as botocore_extensions
from opentelemetry.sdk.trace import ReadableSpan
from test_auto_instrumentation import INSTRUMENT, console_spans

from payi_otel import PayiInstrumentor, track_context
from payi_otel._context import current_effective
from payi_otel._ingest import ingest_record
from payi_otel._log import reset_log_once
from payi_otel._model.dialects import (
    PAYI_PROXY,
    X_PAYI,
    dialect_named,
    is_attribution_header,
    is_dialect_header,
)
from payi_otel._model.parameters import ATTRIBUTE_NAMES, ParameterError
from payi_otel._model.wire_policy import WirePolicy
from payi_otel._providers import CallRecord, Usage, providers
from payi_otel._providers._core import add_observer, resolve_call
from payi_otel._providers._registry import public_hosts
from payi_otel._providers.bedrock import (
    AWS_DNS_SUFFIXES,
    HOSTS,
    NATIVE_PARAMETERS,
    BedrockProvider,
)

HEADER, PROXY_HEADER, ATTRIBUTE = X_PAYI.headers, PAYI_PROXY.headers, ATTRIBUTE_NAMES
GENAI_SCOPE = BedrockProvider.instrumentations[0].module
BOTOCORE_BEDROCK_SCOPE = "opentelemetry.instrumentation.botocore.bedrock-runtime"
[SERVICE] = BedrockProvider.services
OPERATIONS = sorted(BEDROCK_OPERATIONS)
STREAMS = ["converse_stream", "invoke_model_with_response_stream"]
#: The fake server's extra usage, asked for with a non-attribution per-call header.
CACHE = {"cached_tokens": 6, "cache_write_tokens": 4}
WITH_CACHE = {"x-fake-usage": json.dumps(CACHE)}
#: AWS's ``requestMetadata`` charset and lengths (botocore's model and the log filters).
AWS_KEY = re.compile(r"[a-zA-Z0-9\s._:/=+$@-]{1,256}\Z")
AWS_VALUE = re.compile(r"[a-zA-Z0-9\s._:/=+$@-]{0,256}\Z")
APPLICATION_PROFILE = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3"

# Before any test instruments anything (collection): what uninstrument must restore.
ORIGINAL = {
    (botocore.client.BaseClient, "_make_api_call"): botocore.client.BaseClient.__dict__[
        "_make_api_call"
    ],
    (botocore.endpoint.Endpoint, "prepare_request"): botocore.endpoint.Endpoint.__dict__[
        "prepare_request"
    ],
    (botocore.endpoint.Endpoint, "_send"): botocore.endpoint.Endpoint.__dict__["_send"],
}
ORIGINAL_EXTENSION = botocore_extensions._BOTOCORE_EXTENSIONS["bedrock-runtime"]


# --- helpers ---------------------------------------------------------------------------------


def attribution(request: RecordedRequest) -> dict[str, str]:
    """Every x-payi-* / xProxy-* header a request carried, names lower-cased, as sent."""
    return {k.lower(): v for k, v in request.headers.items() if is_dialect_header(k)}


def lowered(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def signed_headers(request: RecordedRequest) -> set[str]:
    authorization = request.headers["authorization"]
    return set(authorization.split("SignedHeaders=")[1].split(",")[0].split(";"))


def expected_headers(own: Mapping[str, str], dialect: str) -> dict[str, str]:
    """What the merge engine resolves for a call with ``own`` per-call headers, here."""
    attribution_part = {k: v for k, v in own.items() if is_attribution_header(k)}
    dialect_obj = dialect_named(dialect)
    assert dialect_obj is not None
    return lowered(resolve_call(current_effective(), (attribution_part,)).headers(dialect_obj))


def bedrock_spans(genai: GenAI) -> list[ReadableSpan]:
    return sorted(genai.otel.genai_spans(), key=lambda s: s.start_time or 0)


def scope_of(span: ReadableSpan) -> str:
    return span.instrumentation_scope.name if span.instrumentation_scope else ""


def aws_client(service: str, genai: GenAI) -> Any:
    """A client of another AWS service on the fake server (which answers it 404)."""
    return boto3.client(
        service,
        endpoint_url=genai.server.base_url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=botocore.config.Config(retries={"total_max_attempts": 1}),
    )


@pytest.fixture
def records() -> Iterator[list[CallRecord]]:
    """Every completed call, as the response side reports it."""
    found: list[CallRecord] = []
    remove = add_observer(found.append)
    yield found
    remove()


def to_local(client: Any, server: FakeLLMServer) -> Any:
    """Send ``client``'s requests to the local server while their URL and Host stay as
    built (a public Bedrock host): the transport trick of ``fixtures_server.to_local``."""
    session = client._endpoint.http_session
    send = session.send
    port = int(server.base_url.rsplit(":", 1)[1])

    def local(request: Any) -> Any:
        parts = urlsplit(request.url)
        request.headers["Host"] = parts.netloc  # the host SigV4 signed
        request.url = urlunsplit(("http", f"127.0.0.1:{port}", parts.path, parts.query, ""))
        return send(request)

    session.send = local
    return client


@pytest.mark.parametrize("operation", OPERATIONS)
def test_every_operation_is_attributed_on_the_wire_and_the_span(
    surface: GenAI, operation: str
) -> None:
    own = {
        HEADER["account_name"]: "acme",
        PROXY_HEADER["user_id"]: "carol",  # Pay-i's spelling, in either dialect
        HEADER["limit_ids"]: "per_call",
        "x-gateway-key": "k1",  # not an attribution header: sent as it is
    }
    with track_context(
        use_case_name="bedrock_uc",
        user_id="alice",
        limit_ids=["scope"],
        request_properties={"k": "v"},
    ):
        expected = expected_headers(own, surface.dialect)
        result = bedrock_call(surface, operation, own)
    assert result
    [request] = surface.server.requests
    assert attribution(request) == expected
    assert request.headers["x-gateway-key"] == "k1"
    # Stamped after SigV4 signing: none of them is signed (a gateway may strip them), and the
    # fake verified the signature over the rest (else the call failed with a 403).
    assert not {h for h in signed_headers(request) if is_dialect_header(h) or h == "x-gateway-key"}
    assert not (isinstance(request.body, dict) and "extra_headers" in request.body)
    if surface.genai_spans:
        [span] = bedrock_spans(surface)
        assert scope_of(span) == GENAI_SCOPE
        assert payi_attrs(span)[ATTRIBUTE["user_id"]] == "carol"
        assert payi_attrs(span)[ATTRIBUTE["limit_ids"]] == ["scope", "per_call"]
    else:
        assert bedrock_spans(surface) == []


def test_the_caller_attribution_alone_is_one_level_over_the_scopes(genai: GenAI) -> None:
    with track_context(user_id="alice", limit_ids=["a"]):
        bedrock_call(genai, "converse", {HEADER["limit_ids"]: "", HEADER["user_id"]: ""})
        bedrock_call(genai, "converse")
    cleared, inherited = genai.sent()
    assert HEADER["limit_ids"] not in cleared and HEADER["user_id"] not in cleared
    assert inherited == {HEADER["limit_ids"]: "a", HEADER["user_id"]: "alice"}


def test_bad_extra_headers_raise_and_nothing_is_sent(genai: GenAI) -> None:
    genai.check_invariant = False  # genai-bedrock's span records the error; nothing is sent
    client = shared_bedrock(genai)
    bad: list[Any] = [
        [(HEADER["user_id"], "a")],  # not a mapping
        {"x-gateway-key": 1},  # not a str
        {"x-gateway-key": "a\r\nInjected: 1"},
        {HEADER["use_case_version"]: "two"},  # the codec's rules
        {HEADER["user_id"]: "a", PROXY_HEADER["user_id"]: "b"},  # both spellings, two values
    ]
    for extra in bad:
        with pytest.raises(ParameterError):
            client.converse(modelId=BEDROCK_MODEL, messages=bedrock_messages(), extra_headers=extra)
    assert genai.server.requests == []


def test_other_services_and_operations_pass_untouched(genai: GenAI) -> None:
    genai.check_invariant = False  # calls the fake answers 404: no GenAI span
    s3 = aws_client("s3", genai)
    with track_context(user_id="alice"):
        with pytest.raises(botocore.exceptions.ClientError):
            s3.list_buckets()
        with pytest.raises(botocore.exceptions.ClientError):
            shared_bedrock(genai).apply_guardrail(
                guardrailIdentifier="g",
                guardrailVersion="1",
                source="INPUT",
                content=[{"text": {"text": "hi"}}],
            )
        # payi_otel takes extra_headers on the four operations only: botocore refuses it
        # elsewhere, as without payi_otel.
        with pytest.raises(botocore.exceptions.ParamValidationError):
            s3.list_buckets(extra_headers={HEADER["user_id"]: "x"})
    assert len(genai.server.requests) == 2
    assert all(attribution(r) == {} for r in genai.server.requests)


def test_a_call_of_another_service_made_while_a_bedrock_request_is_signed_gets_nothing(
    genai: GenAI,
) -> None:
    """As botocore does when it fetches credentials (STS, SSO) while signing: that request is
    sent in the Bedrock call's context, through the same send point, and is not the call's."""
    genai.check_invariant = False  # the S3 request has no GenAI span
    s3 = aws_client("s3", genai)
    client = bedrock_client(genai)

    def fetch(**_: Any) -> None:
        with pytest.raises(botocore.exceptions.ClientError):
            s3.list_buckets()

    client.meta.events.register("before-sign.bedrock-runtime.Converse", fetch)
    with track_context(user_id="alice"):
        BEDROCK_OPERATIONS["converse"](client, BEDROCK_MODEL, extra_headers={"x-gateway-key": "k"})
    nested, call = genai.server.requests
    assert nested.method == "GET" and attribution(nested) == {}
    assert "x-gateway-key" not in nested.headers
    assert attribution(call)[HEADER["user_id"]] == "alice"


def test_an_attribution_header_signed_by_the_callers_own_handler_stays_as_signed(
    genai: GenAI, caplog: pytest.LogCaptureFixture
) -> None:
    genai.check_invariant = False  # the caller's signed header differs from the span
    client = bedrock_client(genai)
    client.meta.events.register(
        "before-sign.bedrock-runtime.Converse",
        lambda request, **_: request.headers.add_header(HEADER["user_id"], "signed"),
    )
    with caplog.at_level(logging.WARNING, logger="payi_otel"), track_context(user_id="alice"):
        client.converse(modelId=BEDROCK_MODEL, messages=bedrock_messages())  # a 403 if broken
    [request] = genai.server.requests
    assert request.headers[HEADER["user_id"]] == "signed"
    assert HEADER["user_id"] in signed_headers(request)
    assert "extra_headers= instead" in caplog.text


# --- streams -----------------------------------------------------------------------------------


def _stream_of(client: Any, operation: str) -> tuple[Any, str]:
    if operation == "converse_stream":
        response = client.converse_stream(modelId=BEDROCK_MODEL, messages=bedrock_messages())
        return response, "stream"
    response = client.invoke_model_with_response_stream(modelId=BEDROCK_MODEL, body=claude_body())
    return response, "body"


def _usage_of_events(events: list[Any]) -> Usage:
    """Bedrock's own counts in a stream's last event, as the caller saw them."""
    last = events[-1]
    if "metadata" in last:
        usage = last["metadata"]["usage"]
        return Usage(usage["inputTokens"], usage["outputTokens"])
    metrics = json.loads(last["chunk"]["bytes"])["amazon-bedrock-invocationMetrics"]
    return Usage(metrics["inputTokenCount"], metrics["outputTokenCount"])


@pytest.mark.parametrize("spans", [True, False], ids=["spans", "nospans"])
@pytest.mark.parametrize("operation", STREAMS)
def test_a_stream_read_to_the_end_is_reported_once_with_its_usage(
    genai: GenAI, records: list[CallRecord], operation: str, spans: bool
) -> None:
    genai.reinstrument(genai_spans=spans)
    remove = add_observer(records.append)  # reinstrumenting dropped the fixture's observer
    try:
        with track_context(user_id="alice"):
            response, key = _stream_of(shared_bedrock(genai), operation)
            assert records == []  # the call is not over before its stream is read
            events = list(response[key])
    finally:
        remove()
    [record] = records
    assert record.provider == "botocore" and record.streamed and record.error is None
    assert record.request_model == BEDROCK_MODEL
    assert record.usage == _usage_of_events(events)
    assert record.call.attributes()[ATTRIBUTE["user_id"]] == "alice"
    if spans:
        [span] = bedrock_spans(genai)
        assert (span.attributes or {})["payi_otel.cost.total"] > 0
        assert span.end_time is not None and record.span.get_span_context() == span.context


def test_a_stream_chunk_that_only_names_the_metrics_key_is_not_the_last(
    genai: GenAI, records: list[CallRecord]
) -> None:
    """A model's text that mentions ``amazon-bedrock-invocationMetrics`` (the fake model
    echoes the prompt) is no metrics chunk: the call is reported once, at the real last
    chunk, with its usage (a review found it reported early, with none)."""
    with track_context(user_id="alice"):
        response = shared_bedrock(genai).invoke_model_with_response_stream(
            modelId=BEDROCK_MODEL, body=claude_body("What is amazon-bedrock-invocationMetrics?")
        )
        events = list(response["body"])
    assert any(
        b"amazon-bedrock-invocationMetrics" in e["chunk"]["bytes"]
        and "amazon-bedrock-invocationMetrics" not in json.loads(e["chunk"]["bytes"])
        for e in events
    )  # (the test needs a chunk that names it)
    [record] = records
    assert record.usage == _usage_of_events(events) and record.usage.input_tokens


@pytest.mark.parametrize("operation", STREAMS)
def test_a_stream_closed_early_is_reported_and_its_span_ends(
    genai: GenAI, records: list[CallRecord], operation: str
) -> None:
    with track_context(user_id="alice"):
        response, key = _stream_of(shared_bedrock(genai), operation)
        stream = response[key]
        first = next(iter(stream))
        assert first
        stream.close()
    [record] = records
    assert record.streamed and record.error is None
    assert record.usage is None  # left before its usage arrived: none, never an estimate
    [span] = bedrock_spans(genai)
    assert span.end_time is not None
    assert payi_attrs(span)[ATTRIBUTE["user_id"]] == "alice"


@pytest.mark.parametrize("operation", STREAMS)
def test_a_stream_used_with_with_is_reported_on_exit(
    genai: GenAI, records: list[CallRecord], operation: str
) -> None:
    # ``with`` works on the GenAI instrumentation's stream wrapper (botocore's EventStream
    # has no ``with`` of its own).
    with track_context(user_id="alice"):
        response, key = _stream_of(shared_bedrock(genai), operation)
        with response[key] as stream:
            events = list(stream)
    [record] = records
    assert (
        record.usage is not None
        and record.usage.output_tokens == _usage_of_events(events).output_tokens
    )
    [span] = bedrock_spans(genai)
    assert (span.attributes or {})["payi_otel.cost.total"] > 0


@pytest.mark.parametrize("operation", STREAMS)
def test_an_abandoned_stream_is_reported_when_collected(
    genai: GenAI, records: list[CallRecord], operation: str
) -> None:
    with track_context(user_id="alice"):
        response, key = _stream_of(shared_bedrock(genai), operation)
        next(iter(response[key]))
        del response
    gc.collect()
    [record] = records
    assert record.streamed and record.call.attributes()[ATTRIBUTE["user_id"]] == "alice"
    [span] = bedrock_spans(genai)
    assert span.end_time is not None


# --- retries ------------------------------------------------------------------------------------


@pytest.mark.parametrize("operation", OPERATIONS)
def test_every_attempt_is_stamped_with_what_the_call_resolved_once(
    genai: GenAI, records: list[CallRecord], operation: str
) -> None:
    client = bedrock_client(genai, retries={"mode": "standard", "total_max_attempts": 2})
    genai.server.fail_next(1, "503")
    with track_context(user_id="alice"):
        # A use case named by the call: its fresh id is made once for the logical call.
        BEDROCK_OPERATIONS[operation](
            client, BEDROCK_MODEL, extra_headers={HEADER["use_case_name"]: "per_call"}
        )
    first, retry = genai.server.requests
    assert re.search(r"attempt=1(;|$)", first.headers["amz-sdk-request"])  # (1.43: no max)
    assert "attempt=2;" in retry.headers["amz-sdk-request"]
    assert attribution(first) == attribution(retry)
    assert attribution(first)[HEADER["use_case_id"]]
    [record] = records  # one logical call
    assert record.error is None
    [span] = bedrock_spans(genai)
    assert payi_attrs(span)[ATTRIBUTE["use_case_id"]] == attribution(first)[HEADER["use_case_id"]]


# --- where the headers go ----------------------------------------------------------------------


def test_the_public_bedrock_hosts_are_refused_by_default_and_only_by_this_provider() -> None:
    for url in (
        "https://bedrock-runtime.us-east-1.amazonaws.com/model/m/converse",
        "https://bedrock-runtime-fips.us-west-2.amazonaws.com/model/m/converse",
        "https://bedrock-runtime.cn-north-1.amazonaws.com.cn/model/m/converse",
        # Dual-stack (use_dualstack_endpoint=True), the European sovereign cloud, a VPC
        # interface endpoint: found by a review sending alice's id to the first.
        "https://bedrock-runtime.us-east-1.api.aws/model/m/converse",
        "https://bedrock-runtime-fips.us-east-1.api.aws/model/m/converse",
        "https://bedrock-runtime.cn-north-1.api.amazonwebservices.com.cn/model/m/converse",
        "https://bedrock-runtime.eusc-de-east-1.amazonaws.eu/model/m/converse",
        "https://vpce-0a1b2c3d-4e5f6g7h.bedrock-runtime.us-east-1.vpce.amazonaws.com/model/m",
    ):
        assert not WirePolicy().sends_to(url), url
    assert WirePolicy().sends_to("https://bedrock-gateway.corp.example/model/m/converse")
    # One's own load balancer or API gateway on AWS is not AWS's Bedrock.
    assert WirePolicy().sends_to("https://bedrock-runtime-gw-1.us-east-1.elb.amazonaws.com/m")
    assert WirePolicy().sends_to("https://a1b2c3.execute-api.us-east-1.amazonaws.com/m")
    assert set(HOSTS) <= set(public_hosts())
    owners = [p.name for p in providers() for s in p.services if set(HOSTS) & set(s.hosts)]
    # moved here from AnthropicBedrock's service; aiobotocore's is botocore's
    assert owners == ["botocore", "aiobotocore"]


def _botocore_data(name: str) -> Any:
    return json.loads((Path(botocore.__file__).parent / "data" / name).read_text())


def test_every_bedrock_host_botocore_can_resolve_is_refused() -> None:
    """Every partition botocore knows (its DNS suffixes, dual-stack too: a review sent
    alice's id to ``bedrock-runtime.eusc-de-east-1.api.amazonwebservices.eu``, the ISO
    partitions and FIPS in China), every ``bedrock-runtime`` host its endpoint data names,
    and the VPC endpoints of each, are refused by default."""
    suffixes = set()
    for partition in _botocore_data("partitions.json")["partitions"]:
        outputs = partition["outputs"]
        suffixes |= {outputs["dnsSuffix"], outputs["dualStackDnsSuffix"]}
    assert suffixes <= set(AWS_DNS_SUFFIXES)
    hosts = {
        f"{service}.{region}.{suffix}"
        for suffix in suffixes
        for service in ("bedrock-runtime", "bedrock-runtime-fips")
        for region in ("us-east-1", "cn-north-1", "eusc-de-east-1", "us-iso-east-1")
    }
    hosts |= {f"vpce-0a1b.{h.split('.', 1)[0]}.us-east-1.vpce.{s}" for h in hosts for s in suffixes}
    for partition in _botocore_data("endpoints.json")["partitions"]:
        service = partition["services"].get("bedrock-runtime", {})
        for key, endpoint in service.get("endpoints", {}).items():
            hostname = endpoint.get("hostname")
            if hostname:
                hosts.add(hostname)
            hosts.add(f"bedrock-runtime.{key}.{partition['dnsSuffix']}")
    assert len(hosts) > 100
    sent = [host for host in sorted(hosts) if WirePolicy().sends_to(f"https://{host}/model/m")]
    assert sent == []


def test_a_call_of_another_api_made_during_a_call_is_not_that_call(genai: GenAI) -> None:
    """A user's ``before-call`` handler calls ``apply_guardrail`` on other clients while a
    Converse call is being made: those requests are not the call's, and carry neither its
    attribution nor the caller's other ``extra_headers`` (a review found the call's user id,
    and its gateway key, sent with them - to AWS too). The call itself is stamped as ever."""
    sent: list[tuple[str, dict[str, str]]] = []

    def capture(request: Any, **kwargs: Any) -> Any:
        sent.append((request.url, {k.lower(): str(v) for k, v in request.headers.items()}))
        return botocore.awsrequest.AWSResponse(request.url, 200, {}, _Raw(b'{"action": "NONE"}'))

    guards = [
        bedrock_client(genai, endpoint_url="https://guardrails.corp.example"),
        bedrock_client(genai, endpoint_url="https://bedrock-runtime.us-east-1.amazonaws.com"),
    ]
    for guard in guards:
        guard.meta.events.register("before-send.bedrock-runtime", capture)

    def precheck(**kwargs: Any) -> None:
        for guard in guards:
            guard.apply_guardrail(
                guardrailIdentifier="g",
                guardrailVersion="1",
                source="INPUT",
                content=[{"text": {"text": "hi"}}],
            )

    client = bedrock_client(genai)
    client.meta.events.register("before-call.bedrock-runtime.Converse", precheck)
    with track_context(user_id="alice", use_case_name="chat"):
        BEDROCK_OPERATIONS["converse"](
            client, BEDROCK_MODEL, extra_headers={HEADER["user_id"]: "vip", "x-gateway-key": "k"}
        )
    assert [urlsplit(url).hostname for url, _ in sent] == [
        "guardrails.corp.example",
        "bedrock-runtime.us-east-1.amazonaws.com",
    ]
    for _, headers in sent:
        assert not [k for k in headers if k.startswith(("x-payi-", "xproxy-", "x-gateway"))]
    [call] = genai.server.requests
    assert attribution(call)[HEADER["user_id"]] == "vip"
    assert call.headers["x-gateway-key"] == "k"


def test_a_request_a_before_send_handler_sends_to_a_public_host_loses_the_headers(
    genai: GenAI,
) -> None:
    """A ``before-send`` handler that re-routes the built request (a failover from the
    gateway to AWS's public host) sends it there without attribution headers (a review
    found them sent), and the caller's other headers as they are; to the gateway, as ever."""
    genai.check_invariant = False  # the span is attributed, the re-routed request is not
    client = to_local(
        bedrock_client(genai, endpoint_url="https://gateway.corp.example"), genai.server
    )
    public = "https://bedrock-runtime.us-east-1.amazonaws.com"
    rerouted: list[bool] = []

    def failover(request: Any, **kwargs: Any) -> None:
        if rerouted:
            request.url = request.url.replace("https://gateway.corp.example", public)

    client.meta.events.register_first("before-send.bedrock-runtime", failover)
    own = {"x-gateway-key": "k"}
    with track_context(user_id="alice"):
        BEDROCK_OPERATIONS["converse"](client, BEDROCK_MODEL, extra_headers=own)
        rerouted.append(True)
        with pytest.raises(botocore.exceptions.ClientError):  # signed for the gateway
            BEDROCK_OPERATIONS["converse"](client, BEDROCK_MODEL, extra_headers=own)
    gateway, failed_over = genai.server.requests
    assert gateway.headers["host"] == "gateway.corp.example"
    assert attribution(gateway)[HEADER["user_id"]] == "alice"
    assert failed_over.headers["host"] == "bedrock-runtime.us-east-1.amazonaws.com"
    assert attribution(failed_over) == {}
    assert failed_over.headers["x-gateway-key"] == "k"


def test_a_stream_left_before_its_usage_is_one_warning_per_provider(
    genai: GenAI, caplog: pytest.LogCaptureFixture
) -> None:
    """ConverseStream sends its usage in the ``metadata`` event after ``messageStop``: a loop
    that stops there is billed by AWS and counted without tokens or cost here (a review
    found it silent). One WARNING says so; a stream read to its end says nothing."""
    client = shared_bedrock(genai)
    with caplog.at_level(logging.WARNING, "payi_otel"):
        with track_context(user_id="alice"):
            events = client.converse_stream(modelId=BEDROCK_MODEL, messages=bedrock_messages())
            list(events["stream"])  # to the end: its usage
        assert "ended without its usage" not in caplog.text
        for _ in range(2):
            stream = client.converse_stream(modelId=BEDROCK_MODEL, messages=bedrock_messages())
            for event in stream["stream"]:
                if "messageStop" in event:
                    break
            stream["stream"].close()
    assert caplog.text.count("stream of AWS Bedrock (botocore bedrock-runtime) ended without") == 1


def test_an_extra_header_botocore_signs_is_not_sent_and_says_so(
    genai: GenAI, caplog: pytest.LogCaptureFixture
) -> None:
    """An ``extra_headers`` entry named as a header botocore signs (``Content-Type``,
    ``X-Amz-Date``) cannot be sent without breaking the signature: the signed one stays, and
    one WARNING names the entry (a review found it dropped without a word)."""
    with caplog.at_level(logging.WARNING, "payi_otel"), track_context(user_id="alice"):
        for _ in range(2):
            BEDROCK_OPERATIONS["converse"](
                shared_bedrock(genai),
                BEDROCK_MODEL,
                extra_headers={"Content-Type": "text/plain", "x-gateway-key": "k"},
            )
    request = genai.server.requests[-1]
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-gateway-key"] == "k"
    assert caplog.text.count("extra_headers entry Content-Type is not sent") == 1


class _Raw:
    """A response body botocore reads (``AWSResponse.raw``)."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **kwargs: Any) -> Iterator[bytes]:
        yield self._body


@pytest.mark.parametrize("dialect", ["x-payi", "payi-proxy"])
def test_a_public_bedrock_host_gets_no_attribution_unless_allow_listed(
    genai: GenAI, dialect: str
) -> None:
    genai.reinstrument(header_dialect=dialect)
    genai.check_invariant = False  # the span is attributed, the request is not
    public = to_local(
        bedrock_client(genai, endpoint_url="https://bedrock-runtime.us-east-1.amazonaws.com"),
        genai.server,
    )
    own = {HEADER["account_name"]: "acme", "x-gateway-key": "k1"}
    with track_context(user_id="alice"):
        BEDROCK_OPERATIONS["converse"](public, BEDROCK_MODEL, extra_headers=own)
    [refused] = genai.server.requests
    assert refused.headers["host"] == "bedrock-runtime.us-east-1.amazonaws.com"
    assert attribution(refused) == {}
    assert refused.headers["x-gateway-key"] == "k1"  # the caller's own other headers
    [span] = bedrock_spans(genai)
    assert payi_attrs(span)[ATTRIBUTE["account_name"]] == "acme"

    genai.reinstrument(header_dialect=dialect, header_hosts=["bedrock-runtime.*.amazonaws.com"])
    with track_context(user_id="alice"):
        expected = expected_headers(own, dialect)
        BEDROCK_OPERATIONS["converse"](public, BEDROCK_MODEL, extra_headers=own)
    assert attribution(genai.server.requests[-1]) == expected
    assert attribution_headers(genai.server.requests[-1], dialect)[HEADER["user_id"]] == "alice"


# --- GenAI spans: genai-bedrock, and opentelemetry-instrumentation-botocore ---------------------


@pytest.mark.parametrize("order", ["botocore_first", "payi_first"])
def test_one_genai_span_per_call_with_the_botocore_instrumentation_on_too(
    genai: GenAI, order: str, caplog: pytest.LogCaptureFixture
) -> None:
    genai.check_invariant = False  # an S3 call too; the Bedrock calls are checked here
    payi, botocore_instr = PayiInstrumentor(), BotocoreInstrumentor()
    if order == "botocore_first":
        payi.uninstrument()
        botocore_instr.instrument(tracer_provider=genai.otel.provider)
        genai.reinstrument()
    else:
        botocore_instr.instrument(tracer_provider=genai.otel.provider)
    s3 = aws_client("s3", genai)
    try:
        with caplog.at_level(logging.WARNING, logger="payi_otel"), track_context(user_id="alice"):
            for operation in OPERATIONS:
                bedrock_call(genai, operation)
            with pytest.raises(botocore.exceptions.ClientError):
                s3.list_buckets()
    finally:
        # Each off in the reverse order of on (an instrumentor's unwrap takes the top wrapper).
        first, second = (
            (payi, botocore_instr) if order == "botocore_first" else (botocore_instr, payi)
        )
        first.uninstrument()
        second.uninstrument()
    spans = genai.otel.all_genai_spans()
    assert len(spans) == len(OPERATIONS)
    assert {scope_of(s) for s in spans} == {GENAI_SCOPE}
    assert all(payi_attrs(s)[ATTRIBUTE["user_id"]] == "alice" for s in spans)
    assert all((s.attributes or {})["payi_otel.cost.total"] > 0 for s in spans)
    # The user's AWS tracing of every other service stays.
    [s3_span] = [s for s in genai.otel.spans() if (s.attributes or {}).get("rpc.service") == "S3"]
    assert scope_of(s3_span) == "opentelemetry.instrumentation.botocore"
    assert caplog.text.count("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=bedrock") == 1
    for (owner, name), original in ORIGINAL.items():
        assert owner.__dict__[name] is original
    assert botocore_extensions._BOTOCORE_EXTENSIONS["bedrock-runtime"] is ORIGINAL_EXTENSION


def test_genai_bedrock_instrumented_before_payi_otel_stays_outside_its_entry(genai: GenAI) -> None:
    """The entry goes beneath a GenAI instrumentation already on ``_make_api_call``: its span
    is current when the call is read (per-call headers on it) and ends after the call is
    reported (the cost on it), streams included."""
    from opentelemetry.instrumentation.genai.bedrock import BedrockInstrumentor

    payi, bedrock_instr = PayiInstrumentor(), BedrockInstrumentor()
    payi.uninstrument()
    bedrock_instr.instrument(tracer_provider=genai.otel.provider)
    try:
        genai.reinstrument()  # keeps the instrumentation already on
        with track_context(user_id="alice"):
            for operation in OPERATIONS:
                bedrock_call(genai, operation, {HEADER["account_name"]: operation})
        spans = bedrock_spans(genai)
        assert [payi_attrs(s)[ATTRIBUTE["account_name"]] for s in spans] == OPERATIONS
        assert all((s.attributes or {})["payi_otel.cost.total"] > 0 for s in spans)
        payi.uninstrument()
        assert bedrock_instr.is_instrumented_by_opentelemetry  # not payi_otel's to turn off
    finally:
        payi.uninstrument()
        bedrock_instr.uninstrument()
    for (owner, name), original in ORIGINAL.items():
        assert owner.__dict__[name] is original


def test_a_beneath_entry_comes_in_and_out_of_any_chain_of_wrappers() -> None:
    """``PatchPoint.beneath`` and its undo, against other libraries' ``wrapt`` wrappers and
    their ``unwrap`` (which takes the top wrapper off, leaving a bound wrapper on the class
    when others are under it)."""
    import wrapt
    from opentelemetry.instrumentation.utils import unwrap

    from payi_otel._providers._core import _wrap_beneath
    from payi_otel._wrapping import unwrap_own

    class Client:
        def call(self) -> str:
            return "sdk"

    original = Client.__dict__["call"]

    def named(name: str) -> Any:
        def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> str:
            return f"{name}({wrapped(*args, **kwargs)})"

        return wrapper

    genai, other, ours = named("genai"), named("other"), named("ours")
    wrapt.wrap_function_wrapper(Client, "call", genai)
    _wrap_beneath(Client, "call", ours)
    wrapt.wrap_function_wrapper(Client, "call", other)
    assert Client().call() == "other(genai(ours(sdk)))"
    unwrap(Client, "call")  # other's undo: a bound wrapper of genai's is left on the class
    assert Client().call() == "genai(ours(sdk))"
    unwrap_own(Client, "call", ours)
    assert Client().call() == "genai(sdk)"
    _wrap_beneath(Client, "call", ours)  # beneath the bound wrapper's chain
    assert Client().call() == "genai(ours(sdk))"
    unwrap(Client, "call")  # genai's undo
    assert Client().call() == "ours(sdk)"
    unwrap_own(Client, "call", ours)
    assert Client.__dict__["call"] is original


def test_without_genai_bedrock_the_botocore_spans_are_the_genai_spans(genai: GenAI) -> None:
    genai.reinstrument(genai_spans=False)
    genai.check_invariant = True  # botocore's spans: each must equal its request
    botocore_instr = BotocoreInstrumentor()
    botocore_instr.instrument(tracer_provider=genai.otel.provider)
    try:
        with track_context(user_id="alice"):
            bedrock_call(genai, "converse", {HEADER["account_name"]: "acme", **WITH_CACHE})
            bedrock_call(genai, "converse_stream", {HEADER["account_name"]: "beta"})
    finally:
        botocore_instr.uninstrument()
    plain, streamed = bedrock_spans(genai)
    assert {scope_of(plain), scope_of(streamed)} == {BOTOCORE_BEDROCK_SCOPE}
    assert payi_attrs(plain)[ATTRIBUTE["account_name"]] == "acme"
    assert payi_attrs(streamed)[ATTRIBUTE["account_name"]] == "beta"
    assert (plain.attributes or {})["payi_otel.cost.total"] > 0
    assert (streamed.attributes or {})["payi_otel.cost.total"] > 0
    record = ingest_record(plain)
    assert record["category"] == SERVICE.category
    assert record["units"]["text_cache_read"]["input"] == CACHE["cached_tokens"]
    assert record["units"]["text"]["input"] == (plain.attributes or {})["gen_ai.usage.input_tokens"]


def test_genai_spans_respect_the_disabled_instrumentations_variable(
    genai: GenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    genai.check_invariant = False  # no GenAI span
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "bedrock")
    genai.reinstrument()
    bedrock_call(genai, "converse")
    assert bedrock_spans(genai) == []
    assert len(genai.server.requests) == 1
    # "botocore" names the AWS instrumentation, not genai-bedrock: it stays on.
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "botocore")
    genai.reinstrument()
    bedrock_call(genai, "converse")
    [span] = bedrock_spans(genai)
    assert scope_of(span) == GENAI_SCOPE


ZERO_CODE_APP = """
import os
import boto3

client = boto3.client("bedrock-runtime", endpoint_url=os.environ["APP_BEDROCK_URL"])
reply = client.converse(
    modelId="us.anthropic.claude-3-5-haiku-20241022-v1:0",
    messages=[{"role": "user", "content": [{"text": "zero code"}]}],
    extra_headers={"x-payi-request-tags": "from_app"},
)
events = list(client.converse_stream(
    modelId="us.anthropic.claude-3-5-haiku-20241022-v1:0",
    messages=[{"role": "user", "content": [{"text": "zero code"}]}],
)["stream"])
print("REPLY:", reply["output"]["message"]["content"][0]["text"], len(events))
"""


@pytest.mark.skipif(not INSTRUMENT.exists(), reason="opentelemetry-instrument not installed")
@pytest.mark.parametrize("disabled", ["", "bedrock"])
def test_opentelemetry_instrument_gives_one_priced_genai_span_per_bedrock_call(
    tmp_path: Path, llm_server: FakeLLMServer, disabled: str
) -> None:
    """The loader instruments botocore, genai-bedrock and payi_otel in whatever order it
    finds them: one GenAI span per call, attributed and priced, either way."""
    app = tmp_path / "bedrock_bot.py"
    app.write_text(ZERO_CODE_APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAYI_", "OTEL_", "AWS_"))}
    env.update(
        {
            "APP_BEDROCK_URL": llm_server.bedrock_endpoint_url,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "OTEL_TRACES_EXPORTER": "console",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": disabled,
            "PAYI_USER_ID": "env_user",
        }
    )
    result = subprocess.run(
        [str(INSTRUMENT), sys.executable, str(app)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "REPLY: echo: zero code" in result.stdout
    plain, streamed = llm_server.requests
    assert attribution(plain)[HEADER["request_tags"]] == "from_app"
    assert attribution(streamed)[HEADER["user_id"]] == "env_user"
    genai = [
        s for s in console_spans(result.stdout) if s["attributes"].get("gen_ai.operation.name")
    ]
    assert len(genai) == 2, result.stdout
    for span in genai:
        # botocore's spans are AWS RPC spans too; genai-bedrock's are not.
        assert ("rpc.system" in span["attributes"]) is bool(disabled)
        assert span["attributes"]["payi.user_id"] == "env_user"
        assert span["attributes"]["payi.use_case.name"] == "bedrock_bot"
        assert span["attributes"]["payi_otel.cost.total"] > 0
    assert ("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=bedrock" in result.stderr) is (not disabled)


# --- usage, cost, metrics, ingest ---------------------------------------------------------------


def _raw_call(client: Any, operation: str, model: str, **kwargs: Any) -> dict[str, int]:
    """Call ``operation`` and return Bedrock's own counts as the caller saw them (input
    without the cache reads and writes)."""
    if operation == "converse":
        usage = client.converse(modelId=model, messages=bedrock_messages(), **kwargs)["usage"]
    elif operation == "converse_stream":
        response = client.converse_stream(modelId=model, messages=bedrock_messages(), **kwargs)
        events = list(response["stream"])
        usage = next(e for e in events if "metadata" in e)["metadata"]["usage"]
    elif operation == "invoke_model":
        response = client.invoke_model(modelId=model, body=claude_body(), **kwargs)
        response["body"].read()
        headers = response["ResponseMetadata"]["HTTPHeaders"]
        return {
            "input": int(headers["x-amzn-bedrock-input-token-count"]),
            "output": int(headers["x-amzn-bedrock-output-token-count"]),
            "cache_read": int(headers.get("x-amzn-bedrock-cache-read-input-token-count", 0)),
            "cache_write": int(headers.get("x-amzn-bedrock-cache-write-input-token-count", 0)),
        }
    else:
        response = client.invoke_model_with_response_stream(
            modelId=model, body=claude_body(), **kwargs
        )
        chunks = [json.loads(e["chunk"]["bytes"]) for e in response["body"]]
        metrics = chunks[-1]["amazon-bedrock-invocationMetrics"]
        return {
            "input": metrics["inputTokenCount"],
            "output": metrics["outputTokenCount"],
            "cache_read": metrics.get("cacheReadInputTokenCount", 0),
            "cache_write": metrics.get("cacheWriteInputTokenCount", 0),
        }
    return {
        "input": usage["inputTokens"],
        "output": usage["outputTokens"],
        "cache_read": usage.get("cacheReadInputTokens", 0),
        "cache_write": usage.get("cacheWriteInputTokens", 0),
    }


@pytest.mark.parametrize("operation", OPERATIONS)
def test_usage_and_cost_on_the_span_in_the_metrics_and_in_ingest(
    genai: GenAI, operation: str
) -> None:
    metrics = Metrics()
    genai.reinstrument({"use_case_name": "support"}, meter_provider=metrics.provider)
    with track_context(account_name="acme"):
        raw = _raw_call(shared_bedrock(genai), operation, BEDROCK_MODEL, extra_headers=WITH_CACHE)
    assert (raw["cache_read"], raw["cache_write"]) == (6, 4)
    total_input = raw["input"] + raw["cache_read"] + raw["cache_write"]  # Bedrock's excludes them
    price = calc_price(
        PriceUsage(
            input_tokens=total_input,
            output_tokens=raw["output"],
            cache_read_tokens=raw["cache_read"],
            cache_write_tokens=raw["cache_write"],
        ),
        model_ref=BEDROCK_MODEL,
        provider_id=SERVICE.price_id,
    )
    [span] = bedrock_spans(genai)
    attributes = span.attributes or {}
    assert attributes["payi_otel.cost.total"] == pytest.approx(float(price.total_price))
    assert attributes["payi_otel.cost.input"] == pytest.approx(float(price.input_price))
    assert attributes["payi_otel.cost.provider"] == SERVICE.price_id
    # The instrumentation's own usage attributes stay as it set them (Bedrock's counts).
    assert attributes["gen_ai.usage.input_tokens"] == raw["input"]
    tokens = {
        p[0]["payi_otel.token.type"]: p[1]
        for p in metrics.points("payi.genai.tokens")
        if p[0]["payi.account_name"] == "acme"
    }
    assert tokens == {
        "input": total_input,
        "output": raw["output"],
        "cache_read": 6,
        "cache_creation": 4,
    }
    [(dimensions, cost)] = metrics.points("payi.genai.cost")
    assert cost == pytest.approx(float(price.total_price))
    assert dimensions["gen_ai.provider.name"] == SERVICE.genai_names[0]
    assert dimensions["gen_ai.request.model"] == BEDROCK_MODEL
    assert dimensions["payi.use_case.name"] == "support"
    record = ingest_record(span)
    assert record["category"] == SERVICE.category == "system.aws.bedrock"
    assert record["resource"] == BEDROCK_MODEL
    assert record["units"]["text"] == {"input": raw["input"], "output": raw["output"]}
    assert record["units"]["text_cache_read"] == {"input": 6, "output": 0}
    assert record["units"]["text_cache_write"] == {"input": 4, "output": 0}
    assert record["account_name"] == "acme"


@pytest.mark.parametrize(
    "model",
    [
        "anthropic.claude-3-5-haiku-20241022-v1:0",
        "us.anthropic.claude-3-5-haiku-20241022-v1:0",
        "eu.anthropic.claude-3-5-haiku-20241022-v1:0",
        "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/"
        "us.anthropic.claude-3-5-haiku-20241022-v1:0",
        "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-5-haiku-20241022-v1:0",
        "us.amazon.nova-lite-v1:0",
    ],
)
def test_model_ids_profiles_and_arns_are_priced_as_aws(genai: GenAI, model: str) -> None:
    raw = _raw_call(shared_bedrock(genai), "converse", model)
    [span] = bedrock_spans(genai)
    attributes = span.attributes or {}
    price = calc_price(
        PriceUsage(input_tokens=raw["input"], output_tokens=raw["output"]),
        model_ref=model,
        provider_id="aws",
    )
    assert attributes["payi_otel.cost.total"] == pytest.approx(float(price.total_price))
    assert attributes["payi_otel.cost.provider"] == "aws"
    assert ingest_record(span)["resource"] == model  # as passed, as Pay-i's SDK files it


@pytest.mark.parametrize(
    "arn",
    [
        APPLICATION_PROFILE,
        # Found by a review unpriced without a word.
        "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/xyz789",
        "arn:aws:bedrock:us-east-1:123456789012:default-prompt-router/anthropic.claude:1",
        "arn:aws:bedrock:us-east-1:123456789012:imported-model/abc",
    ],
)
def test_an_arn_that_names_no_model_is_priced_once_given_its_model(
    genai: GenAI, caplog: pytest.LogCaptureFixture, arn: str
) -> None:
    with caplog.at_level(logging.WARNING, logger="payi_otel"):
        _raw_call(shared_bedrock(genai), "converse", arn)
        _raw_call(shared_bedrock(genai), "converse", arn)
        with track_context(price_as_resource="anthropic.claude-3-5-haiku-20241022-v1:0"):
            _raw_call(shared_bedrock(genai), "converse", arn)
    unpriced, unpriced_again, priced = bedrock_spans(genai)
    assert "payi_otel.cost.total" not in (unpriced.attributes or {})
    assert "payi_otel.cost.total" not in (unpriced_again.attributes or {})
    assert (priced.attributes or {})["payi_otel.cost.total"] > 0
    warnings = [r.getMessage() for r in caplog.records if r.name == "payi_otel"]
    [warning] = warnings  # once, with the fix
    assert arn in warning and "price_as_resource" in warning
    record = ingest_record(priced)
    assert record["resource"] == "anthropic.claude-3-5-haiku-20241022-v1:0"  # price_as wins


def test_invoke_model_usage_comes_from_its_headers_and_its_body_stays_the_callers(
    genai: GenAI, records: list[CallRecord]
) -> None:
    response = shared_bedrock(genai).invoke_model(modelId=BEDROCK_MODEL, body=claude_body())
    [record] = records  # reported before the caller read a byte of the body
    body = json.loads(response["body"].read())
    assert record.usage == Usage(body["usage"]["input_tokens"], body["usage"]["output_tokens"])
    assert not record.streamed


# --- native attribution: requestMetadata --------------------------------------------------------


def sent_metadata(request: RecordedRequest) -> Optional[dict[str, Any]]:
    """The ``requestMetadata`` a request carried: Converse's body field, InvokeModel's
    ``X-Amzn-Bedrock-Request-Metadata`` header."""
    if request.path.endswith(("/converse", "/converse-stream")):
        found = request.body.get("requestMetadata")
        return None if found is None else dict(found)
    header = request.headers.get("x-amzn-bedrock-request-metadata")
    return None if header is None else dict(json.loads(header))


def aws_decoded(text: str) -> str:
    return unquote(text.replace("$", "%"))


@pytest.mark.parametrize("operation", OPERATIONS)
def test_native_attribution_is_off_by_default(genai: GenAI, operation: str) -> None:
    with track_context(use_case_name="uc", user_id="alice", account_name="acme"):
        bedrock_call(genai, operation)
    [request] = genai.server.requests
    assert sent_metadata(request) is None


@pytest.mark.parametrize("operation", OPERATIONS)
def test_native_attribution_puts_use_case_user_and_account_in_request_metadata(
    genai: GenAI, operation: str
) -> None:
    genai.reinstrument(native_attribution=True)
    with track_context(
        use_case_name="support bot",
        user_id="josé@example.com",
        account_name="acme,inc",
        limit_ids=["l1"],
        request_properties={"k": "v"},
    ):
        bedrock_call(genai, operation, {HEADER["use_case_step"]: "s1"})
    [request] = genai.server.requests
    metadata = sent_metadata(request)
    assert metadata is not None
    assert set(metadata) == {ATTRIBUTE[name] for name in NATIVE_PARAMETERS}
    for key, value in metadata.items():
        assert AWS_KEY.match(key) and AWS_VALUE.match(value), (key, value)
    assert metadata[ATTRIBUTE["user_id"]] == "jos$C3$A9@example.com"
    assert metadata[ATTRIBUTE["account_name"]] == "acme$2Cinc"
    decoded = {key: aws_decoded(value) for key, value in metadata.items()}
    assert decoded[ATTRIBUTE["user_id"]] == "josé@example.com"
    assert decoded[ATTRIBUTE["use_case_name"]] == "support bot"
    assert decoded[ATTRIBUTE["use_case_id"]] == attribution(request)[HEADER["use_case_id"]]


@pytest.mark.parametrize("operation", OPERATIONS)
def test_the_callers_own_request_metadata_wins(genai: GenAI, operation: str) -> None:
    genai.reinstrument(native_attribution=True)
    own = {ATTRIBUTE["user_id"]: "mine", "team": "search"}
    given: Any = own if operation.startswith("converse") else json.dumps(own)
    with track_context(use_case_name="uc", user_id="alice"):
        BEDROCK_OPERATIONS[operation](shared_bedrock(genai), BEDROCK_MODEL, requestMetadata=given)
    [request] = genai.server.requests
    metadata = sent_metadata(request)
    assert metadata is not None
    assert metadata[ATTRIBUTE["user_id"]] == "mine"
    assert metadata["team"] == "search"
    assert metadata[ATTRIBUTE["use_case_name"]] == "uc"


def test_request_metadata_stays_within_aws_limits(
    genai: GenAI, caplog: pytest.LogCaptureFixture
) -> None:
    genai.reinstrument(native_attribution=True)
    fifteen = {f"k{i}": "v" for i in range(15)}
    with caplog.at_level(logging.WARNING, logger="payi_otel"):
        with track_context(use_case_name="uc", user_id="u" * 300, account_name="acme"):
            # At most 16 entries: the caller's 15 and one of ours.
            bedrock_call(genai, "converse")
            shared_bedrock(genai).converse(
                modelId=BEDROCK_MODEL, messages=bedrock_messages(), requestMetadata=fifteen
            )
    alone, crowded = (sent_metadata(r) for r in genai.server.requests)
    assert alone is not None and crowded is not None
    assert ATTRIBUTE["user_id"] not in alone  # too long once escaped: left out, said once
    assert alone[ATTRIBUTE["account_name"]] == "acme"
    assert "left out of requestMetadata" in caplog.text
    assert len(crowded) == 16 and fifteen.items() <= crowded.items()


def test_native_attribution_from_the_environment(
    genai: GenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYI_NATIVE_ATTRIBUTION", "true")
    genai.reinstrument()
    with track_context(user_id="alice"):
        bedrock_call(genai, "converse")
    metadata = sent_metadata(genai.server.requests[-1])
    assert metadata is not None and metadata[ATTRIBUTE["user_id"]] == "alice"
    monkeypatch.setenv("PAYI_NATIVE_ATTRIBUTION", "maybe")
    with pytest.raises(ValueError, match="PAYI_NATIVE_ATTRIBUTION"):
        genai.reinstrument()
    genai.reinstrument(native_attribution=False)  # the argument wins over the variable
    with track_context(user_id="alice"):
        bedrock_call(genai, "converse")
    assert sent_metadata(genai.server.requests[-1]) is None


# --- uninstrument ------------------------------------------------------------------------------


def test_uninstrument_restores_botocore(genai: GenAI) -> None:
    genai.check_invariant = False  # no GenAI span once uninstrumented
    assert botocore_extensions._BOTOCORE_EXTENSIONS["bedrock-runtime"] is not ORIGINAL_EXTENSION
    PayiInstrumentor().uninstrument()
    for (owner, name), original in ORIGINAL.items():
        assert owner.__dict__[name] is original
    assert botocore_extensions._BOTOCORE_EXTENSIONS["bedrock-runtime"] is ORIGINAL_EXTENSION
    client = shared_bedrock(genai)
    with track_context(user_id="alice"):
        # Without payi_otel, botocore refuses extra_headers (README "Providers").
        with pytest.raises(botocore.exceptions.ParamValidationError, match="extra_headers"):
            client.converse(
                modelId=BEDROCK_MODEL,
                messages=bedrock_messages(),
                extra_headers={HEADER["user_id"]: "carol"},
            )
        client.converse(modelId=BEDROCK_MODEL, messages=bedrock_messages())
    [sent] = genai.server.requests
    assert attribution(sent) == {}
    assert genai.otel.all_genai_spans() == []


# --- the README's snippet ---------------------------------------------------------------------


def readme_bedrock_snippet() -> str:
    # README "Providers" is in docs/providers.md (issue 22).
    readme = (Path(__file__).resolve().parent.parent / "docs" / "providers.md").read_text(
        encoding="utf-8"
    )
    section = readme.split("### AWS Bedrock (boto3)", 1)[1].split("\n## ", 1)[0]
    section = section.split("\n### ", 1)[0]
    [snippet] = re.findall(r"```python\n(.*?)```", section, re.S)
    return snippet


def test_the_readme_bedrock_snippet_runs(genai: GenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    PayiInstrumentor().uninstrument()  # the snippet calls payi_instrument() itself
    snippet = readme_bedrock_snippet()
    gateway = genai.server.bedrock_endpoint_url
    exec(compile(snippet, "README.md", "exec"), {"GATEWAY_URL": gateway})
    [request] = genai.server.requests
    sent = attribution(request)
    assert sent[HEADER["user_id"]] == "alice"
    assert sent[HEADER["account_name"]] == "acme"
    metadata = sent_metadata(request)
    assert metadata is not None and metadata[ATTRIBUTE["user_id"]] == "alice"
    [span] = bedrock_spans(genai)
    assert payi_attrs(span)[ATTRIBUTE["account_name"]] == "acme"


def test_the_no_genai_spans_warning_names_bedrock_not_every_aws_call(
    otel: Otel, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Without a loadable genai-bedrock (Python 3.9, or uninstalled) the one WARNING is about
    Bedrock calls: a boto3 user who only calls S3 must not read it as "your AWS calls"."""
    from payi_otel import _genai

    [family] = [f for f in _genai._registered_families() if f.sdk == "botocore"]
    missing = _genai.Instrumentation(
        "opentelemetry-instrumentation-genai-bedrock", "payi_test_missing.bedrock", "Instr"
    )
    monkeypatch.setattr(_genai, "FAMILIES", (replace(family, instrumentations=(missing,)),))
    reset_log_once()
    with caplog.at_level(logging.WARNING, logger="payi_otel"):
        assert _genai.enable_genai_spans(otel.provider) == []
    reset_log_once()
    [record] = caplog.records
    message = record.getMessage()
    assert message.startswith(
        "payi_otel: no GenAI spans for AWS Bedrock (botocore bedrock-runtime) calls"
    ), message
    assert "pip install -U opentelemetry-instrumentation-genai-bedrock" in message


def test_an_agents_stream_keeps_its_span_current_while_read_a_models_stream_does_not(
    genai: GenAI,
) -> None:
    """genai-bedrock's ``invoke_inline_agent`` completion stream keeps the agent's span
    current while its consumer reads it (the calls made in the loop body are the agent's:
    that instrumentation's own suite requires it), while a model's stream (ConverseStream)
    hands the caller its own context back between reads (``_stream_context``)."""
    from botocore.stub import Stubber

    genai.check_invariant = False  # the agent call is stubbed: no request on the wire
    agent = boto3.client(
        "bedrock-agent-runtime",
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    stubber = Stubber(agent)
    stubber._validate_response = lambda *args, **kwargs: None  # type: ignore[method-assign]
    params = {
        "foundationModel": "amazon.nova-micro-v1:0",
        "instruction": "Answer every question in one short line, please.",
        "sessionId": "session-1",
        "inputText": "Hi",
    }
    stubber.add_response(
        "invoke_inline_agent",
        {"contentType": "application/json", "sessionId": "session-1", "completion": [{}, {}]},
        params,
    )
    tracer = genai.otel.provider.get_tracer("app")
    client = bedrock_client(genai)
    with stubber, track_context(user_id="agent_user"), tracer.start_as_current_span("request"):
        for _ in agent.invoke_inline_agent(**params)["completion"]:
            with tracer.start_as_current_span("agent loop body"):
                pass
        response = client.converse_stream(modelId=BEDROCK_MODEL, messages=bedrock_messages())
        for _ in response["stream"]:
            with tracer.start_as_current_span("model loop body"):
                pass
    spans = genai.otel.exporter.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans if s.context}
    [agent_span] = [s for s in spans if s.name.startswith("invoke_agent")]
    [model_span] = [s for s in spans if s.name.startswith("chat")]
    [request] = [s for s in spans if s.name == "request"]
    agent_bodies = [s for s in spans if s.name == "agent loop body"]
    model_bodies = [s for s in spans if s.name == "model loop body"]
    assert len(agent_bodies) == 2 and model_bodies
    for body in agent_bodies:
        assert body.parent is not None and by_id[body.parent.span_id] is agent_span
    for body in model_bodies:
        assert body.parent is not None and body.parent.span_id == request.context.span_id
    assert model_span.attributes is not None
    assert model_span.attributes["payi.user_id"] == "agent_user"

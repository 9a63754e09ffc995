"""End-to-end over real OTLP/HTTP: SDK -> OTLPSpanExporter -> wire -> tests/otlp_receiver.py.

Everything runs on 127.0.0.1, and nothing is mocked between the SDK and the decoded
protobuf.
"""

from __future__ import annotations

import gzip
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from otlp_receiver import OTLPReceiver, ReceivedSpan, any_value_to_python

SERVICE_NAME = "payi-otel-test"
PAYI_ATTRIBUTES = {
    "payi.use_case.name": "support_assistant",
    "payi.use_case.step": "draft_reply",
    "payi.use_case.version": 3,
    "payi.user_id": "u1",
    "payi.account_name": "acme",
    "payi.limit_ids": ["a", "b"],
    "payi.proxy": False,
    "payi.cost.input": 0.25,
}
# OTLP SpanKind numbering (trace.proto) is the SDK's SpanKind value + 1.
OTLP_SPAN_KIND_INTERNAL = 1
OTLP_SPAN_KIND_CLIENT = 3


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as r:
        yield r


def make_provider(exporter: OTLPSpanExporter | InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def finished_spans(count: int = 1) -> tuple[ReadableSpan, ...]:
    """Real SDK spans, captured in memory, for calling ``exporter.export`` directly."""
    memory = InMemorySpanExporter()
    provider = make_provider(memory)
    tracer = provider.get_tracer("test")
    for i in range(count):
        with tracer.start_as_current_span(f"span-{i}", attributes={"payi.user_id": "u1"}):
            pass
    provider.shutdown()
    return memory.get_finished_spans()


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


# --------------------------------------------------------------------------- happy path
def test_payi_attributes_survive_the_wire_with_their_types(receiver: OTLPReceiver) -> None:
    provider = make_provider(OTLPSpanExporter(endpoint=receiver.traces_endpoint, timeout=5))
    tracer = provider.get_tracer("payi_otel.tests")
    with tracer.start_as_current_span("support_assistant") as parent:
        parent.set_attributes(PAYI_ATTRIBUTES)
        with tracer.start_as_current_span("chat gpt-4o-mini", kind=SpanKind.CLIENT) as child:
            child.set_attribute("payi.user_id", "u1")
            child.set_status(StatusCode.ERROR, "boom")
    provider.shutdown()

    spans = {s.name: s for s in receiver.wait_for(2)}
    root, llm = spans["support_assistant"], spans["chat gpt-4o-mini"]

    assert root.attributes == PAYI_ATTRIBUTES
    # Types, not just equal values: 3 == 3.0 and 1 == True would hide a lossy encoding.
    assert type(root.attributes["payi.use_case.version"]) is int
    assert type(root.attributes["payi.proxy"]) is bool
    assert type(root.attributes["payi.cost.input"]) is float
    assert root.attributes["payi.limit_ids"] == ["a", "b"]
    assert all(type(v) is str for v in root.attributes["payi.limit_ids"])

    assert len(root.trace_id) == 32 and len(root.span_id) == 16
    assert llm.trace_id == root.trace_id
    assert llm.parent_span_id == root.span_id
    assert root.parent_span_id == ""
    assert (root.kind, llm.kind) == (OTLP_SPAN_KIND_INTERNAL, OTLP_SPAN_KIND_CLIENT)
    assert root.service_name == llm.service_name == SERVICE_NAME
    assert root.scope_name == "payi_otel.tests"
    assert (llm.status_code, llm.status_message) == (2, "boom")
    # Matches what the SDK itself reports.
    assert root.span_id == format(parent.get_span_context().span_id, "016x")


def test_gzip_compressed_exports_are_decoded(receiver: OTLPReceiver) -> None:
    exporter = OTLPSpanExporter(
        endpoint=receiver.traces_endpoint, compression=Compression.Gzip, timeout=5
    )
    assert exporter.export(finished_spans(3)) is SpanExportResult.SUCCESS
    assert [s.name for s in receiver.wait_for(3)] == ["span-0", "span-1", "span-2"]
    (request,) = receiver.requests
    assert request.headers["content-encoding"] == "gzip"
    assert request.headers["content-type"] == "application/x-protobuf"
    assert (request.status, request.span_count) == (200, 3)


def test_base_endpoint_from_env_gets_v1_traces_appended(
    receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The docker-compose demo sets only the base URL, as OTEL_EXPORTER_OTLP_ENDPOINT."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert OTLPSpanExporter(timeout=5).export(finished_spans()) is SpanExportResult.SUCCESS
    (span,) = receiver.wait_for(1)
    assert span.attributes == {"payi.user_id": "u1"}
    assert receiver.requests[0].path == "/v1/traces"


def test_receiver_answers_with_an_export_trace_service_response(receiver: OTLPReceiver) -> None:
    request = urllib.request.Request(
        receiver.traces_endpoint,
        data=ExportTraceServiceRequest().SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/x-protobuf"
        ExportTraceServiceResponse().ParseFromString(response.read())  # must not raise


# --------------------------------------------------------------------------- failure modes
@pytest.mark.parametrize("status", [400, 500, 503])
def test_export_to_failing_receiver_returns_failure_without_raising(
    receiver: OTLPReceiver, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.fail_with(status)
    # A short timeout so that the retryable 503 gives up instead of backing off.
    exporter = OTLPSpanExporter(endpoint=receiver.traces_endpoint, timeout=0.5)
    started = time.monotonic()
    with caplog.at_level(logging.CRITICAL):  # the exporter logs the failure; keep it quiet
        result = exporter.export(finished_spans())
    assert result is SpanExportResult.FAILURE
    assert time.monotonic() - started < 5
    assert receiver.spans == []
    assert {r.status for r in receiver.requests} == {status}

    receiver.recover()
    assert exporter.export(finished_spans()) is SpanExportResult.SUCCESS
    assert len(receiver.wait_for(1)) == 1


def test_span_end_does_not_raise_when_the_receiver_fails(
    receiver: OTLPReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    """Application code only ends spans; a failing backend must never surface there."""
    receiver.fail_with(500)
    provider = make_provider(OTLPSpanExporter(endpoint=receiver.traces_endpoint, timeout=0.5))
    with caplog.at_level(logging.CRITICAL):
        with provider.get_tracer("test").start_as_current_span("llm-call"):
            pass
        provider.shutdown()
    assert receiver.spans == []
    assert [r.status for r in receiver.requests] == [500]


def test_export_to_stopped_receiver_returns_failure_without_raising(
    receiver: OTLPReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    exporter = OTLPSpanExporter(endpoint=receiver.traces_endpoint, timeout=0.5)
    assert exporter.export(finished_spans()) is SpanExportResult.SUCCESS
    receiver.stop()
    assert not receiver.running
    with caplog.at_level(logging.CRITICAL):
        assert exporter.export(finished_spans()) is SpanExportResult.FAILURE
    receiver.start()  # same port again: the collector "comes back"
    assert exporter.export(finished_spans()) is SpanExportResult.SUCCESS
    assert len(receiver.wait_for(2)) == 2


def test_transient_failure_is_retried_by_the_exporter(
    receiver: OTLPReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.fail_with(503, times=1, retry_after=0)
    exporter = OTLPSpanExporter(endpoint=receiver.traces_endpoint, timeout=5)
    with caplog.at_level(logging.CRITICAL):
        assert exporter.export(finished_spans()) is SpanExportResult.SUCCESS
    assert [r.status for r in receiver.requests] == [503, 200]
    assert len(receiver.spans) == 1


# --------------------------------------------------------------------------- receiver itself
def test_receiver_rejects_what_a_collector_would_reject(receiver: OTLPReceiver) -> None:
    body = ExportTraceServiceRequest().SerializeToString()
    protobuf = {"Content-Type": "application/x-protobuf"}
    assert post(receiver.endpoint + "/v1/metrics", body, protobuf) == 404
    assert post(receiver.traces_endpoint, b"{}", {"Content-Type": "application/json"}) == 415
    assert post(receiver.traces_endpoint, b"\xff\x00garbage", protobuf) == 400
    gzipped = {**protobuf, "Content-Encoding": "gzip"}
    assert post(receiver.traces_endpoint, b"not gzip", gzipped) == 400
    assert post(receiver.traces_endpoint, gzip.compress(body), gzipped) == 200
    assert receiver.spans == []


def test_wait_for_times_out_with_a_useful_message(receiver: OTLPReceiver) -> None:
    with pytest.raises(TimeoutError, match=r"expected >= 1 spans within 0.1s, got 0"):
        receiver.wait_for(1, timeout=0.1)


def test_endpoints_use_loopback_and_an_ephemeral_port() -> None:
    receiver = OTLPReceiver()
    with pytest.raises(RuntimeError):
        _ = receiver.endpoint
    with receiver:
        assert receiver.endpoint == f"http://127.0.0.1:{receiver.port}"
        assert receiver.traces_endpoint == receiver.endpoint + "/v1/traces"
        assert receiver.port > 0


def test_any_value_conversion_covers_every_otlp_value_kind() -> None:
    nested = AnyValue(
        kvlist_value=KeyValueList(
            values=[
                KeyValue(key="s", value=AnyValue(string_value="x")),
                KeyValue(
                    key="arr",
                    value=AnyValue(
                        array_value=ArrayValue(
                            values=[AnyValue(int_value=1), AnyValue(double_value=1.5)]
                        )
                    ),
                ),
            ]
        )
    )
    assert any_value_to_python(nested) == {"s": "x", "arr": [1, 1.5]}
    assert any_value_to_python(AnyValue(bool_value=True)) is True
    assert any_value_to_python(AnyValue(bytes_value=b"\x01")) == b"\x01"
    assert any_value_to_python(AnyValue()) is None
    assert ReceivedSpan("n", 1, "t", "s", "", "svc", {}).resource_attributes == {}

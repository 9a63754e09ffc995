"""A real OTLP/HTTP trace receiver for tests (stdlib + opentelemetry-proto only).

Start it on an ephemeral 127.0.0.1 port, point a real ``OTLPSpanExporter`` at
:attr:`OTLPReceiver.traces_endpoint`, and read the decoded spans from
:attr:`OTLPReceiver.spans` (or block with :meth:`OTLPReceiver.wait_for`)::

    with OTLPReceiver() as receiver:
        exporter = OTLPSpanExporter(endpoint=receiver.traces_endpoint)
        ...
        (span,) = receiver.wait_for(1)
        assert span.attributes["payi.user_id"] == "u1"

To imitate a collector that is failing, call ``fail_with(503)``; to imitate one that
is down, call ``stop()``.
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

__all__ = ["OTLPReceiver", "ReceivedRequest", "ReceivedSpan", "any_value_to_python"]

TRACES_PATH = "/v1/traces"
PROTOBUF_CONTENT_TYPE = "application/x-protobuf"


@dataclass
class ReceivedSpan:
    """One span as decoded from the wire (IDs as lowercase hex, attributes as Python)."""

    name: str
    kind: int  # opentelemetry.proto.trace.v1.Span.SpanKind: 1 INTERNAL ... 5 CONSUMER
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root span
    service_name: str  # resource attribute service.name, "" if absent
    attributes: dict[str, Any]
    resource_attributes: dict[str, Any] = field(default_factory=dict)
    scope_name: str = ""
    status_code: int = 0  # 0 UNSET, 1 OK, 2 ERROR
    status_message: str = ""


@dataclass(frozen=True)
class ReceivedRequest:
    """Metadata of one HTTP request the receiver answered (successful or not)."""

    path: str
    status: int
    headers: dict[str, str]  # header names lower-cased
    span_count: int


def any_value_to_python(value: AnyValue) -> Any:
    """Convert an OTLP ``AnyValue`` to the equivalent Python value."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value_to_python(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _key_values_to_dict(value.kvlist_value.values)
    # string_value, bool_value, int_value, double_value, bytes_value
    return getattr(value, kind)


def _key_values_to_dict(key_values: Any) -> dict[str, Any]:
    items: list[KeyValue] = list(key_values)
    return {kv.key: any_value_to_python(kv.value) for kv in items}


def _decode_spans(request: ExportTraceServiceRequest) -> list[ReceivedSpan]:
    spans: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        resource_attributes = _key_values_to_dict(resource_spans.resource.attributes)
        service_name = str(resource_attributes.get("service.name", ""))
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        name=span.name,
                        kind=int(span.kind),
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        service_name=service_name,
                        attributes=_key_values_to_dict(span.attributes),
                        resource_attributes=resource_attributes,
                        scope_name=scope_spans.scope.name,
                        status_code=int(span.status.code),
                        status_message=span.status.message,
                    )
                )
    return spans


class _ReceiverHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    receiver: OTLPReceiver


class _Handler(BaseHTTPRequestHandler):
    server: _ReceiverHTTPServer
    # HTTP/1.0: one request per connection, so after stop() no pooled keep-alive
    # connection can still reach a handler thread, and the receiver really is "down".
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def do_POST(self) -> None:
        receiver = self.server.receiver
        headers = {k.lower(): v for k, v in self.headers.items()}
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))

        if self.path.split("?", 1)[0] != TRACES_PATH:
            self._reply(receiver, HTTPStatus.NOT_FOUND, headers, 0)
            return

        forced = receiver._take_failure()
        if forced is not None:
            status, retry_after = forced
            extra = {"Retry-After": str(retry_after)} if retry_after is not None else {}
            self._reply(receiver, status, headers, 0, extra_headers=extra)
            return

        content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if content_type != PROTOBUF_CONTENT_TYPE:
            self._reply(receiver, HTTPStatus.UNSUPPORTED_MEDIA_TYPE, headers, 0)
            return

        try:
            encoding = headers.get("content-encoding", "").strip().lower()
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            elif encoding not in ("", "identity"):
                self._reply(receiver, HTTPStatus.UNSUPPORTED_MEDIA_TYPE, headers, 0)
                return
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
        except Exception:  # corrupt gzip/zlib or protobuf: the client's fault
            self._reply(receiver, HTTPStatus.BAD_REQUEST, headers, 0)
            return

        spans = _decode_spans(request)
        receiver._store(spans)
        self._reply(
            receiver,
            HTTPStatus.OK,
            headers,
            len(spans),
            body=ExportTraceServiceResponse().SerializeToString(),
        )

    def _reply(
        self,
        receiver: OTLPReceiver,
        status: int,
        request_headers: dict[str, str],
        span_count: int,
        *,
        body: bytes = b"",
        extra_headers: Optional[dict[str, str]] = None,
    ) -> None:
        receiver._record(
            ReceivedRequest(
                path=self.path, status=int(status), headers=request_headers, span_count=span_count
            )
        )
        self.send_response(int(status))
        self.send_header("Content-Type", PROTOBUF_CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(body)


class OTLPReceiver:
    """OTLP/HTTP (protobuf) trace receiver on 127.0.0.1, for tests."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._server: Optional[_ReceiverHTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self._cond = threading.Condition()
        self._spans: list[ReceivedSpan] = []
        self._requests: list[ReceivedRequest] = []
        self._fail_status: Optional[int] = None
        self._fail_times: Optional[int] = None
        self._fail_retry_after: Optional[int] = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> OTLPReceiver:
        """Bind and serve in a daemon thread. Restarting reuses the previous port."""
        if self._server is not None:
            return self
        server = _ReceiverHTTPServer((self._host, self._port), _Handler)
        server.receiver = self
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"otlp-receiver-{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket: exporters then get connection errors."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> OTLPReceiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    # ------------------------------------------------------------------ addresses
    @property
    def port(self) -> int:
        if self._port == 0:
            raise RuntimeError("OTLPReceiver has not been started")
        return self._port

    @property
    def endpoint(self) -> str:
        """Base URL, as for ``OTEL_EXPORTER_OTLP_ENDPOINT`` (e.g. ``http://127.0.0.1:1234``)."""
        return f"http://{self._host}:{self.port}"

    @property
    def traces_endpoint(self) -> str:
        """Full traces URL, as for ``OTLPSpanExporter(endpoint=...)``."""
        return self.endpoint + TRACES_PATH

    # ------------------------------------------------------------------ failure mode
    def fail_with(
        self,
        status: Optional[int],
        *,
        times: Optional[int] = None,
        retry_after: Optional[int] = None,
    ) -> None:
        """Answer trace exports with HTTP ``status`` instead of accepting them.

        ``times``: only the next ``times`` requests fail (None: until ``recover()``).
        ``retry_after``: add a ``Retry-After`` header (seconds). ``status=None`` recovers.
        """
        with self._cond:
            self._fail_status = status
            self._fail_times = times
            self._fail_retry_after = retry_after

    def recover(self) -> None:
        """Leave failure mode: accept exports again."""
        self.fail_with(None)

    def _take_failure(self) -> Optional[tuple[int, Optional[int]]]:
        with self._cond:
            if self._fail_status is None:
                return None
            forced = (self._fail_status, self._fail_retry_after)
            if self._fail_times is not None:
                self._fail_times -= 1
                if self._fail_times <= 0:
                    self._fail_status = self._fail_times = self._fail_retry_after = None
            return forced

    # ------------------------------------------------------------------ received data
    def _store(self, spans: list[ReceivedSpan]) -> None:
        with self._cond:
            self._spans.extend(spans)
            self._cond.notify_all()

    def _record(self, request: ReceivedRequest) -> None:
        with self._cond:
            self._requests.append(request)
            self._cond.notify_all()

    @property
    def spans(self) -> list[ReceivedSpan]:
        """A snapshot of every span received so far, in arrival order."""
        with self._cond:
            return list(self._spans)

    @property
    def requests(self) -> list[ReceivedRequest]:
        """A snapshot of every request answered so far (including failed ones)."""
        with self._cond:
            return list(self._requests)

    def spans_named(self, name: str) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.name == name]

    def clear(self) -> None:
        with self._cond:
            self._spans.clear()
            self._requests.clear()

    def wait_for(self, n: int, timeout: float = 5.0) -> list[ReceivedSpan]:
        """Block until at least ``n`` spans arrived; return all of them.

        Raises ``TimeoutError`` (listing what did arrive) if that takes longer than
        ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._spans) < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    names = [s.name for s in self._spans]
                    raise TimeoutError(
                        f"expected >= {n} spans within {timeout}s, got {len(names)}: {names}"
                    )
                self._cond.wait(remaining)
            return list(self._spans)

"""The demo (examples/support_assistant) as `make e2e`'s fleet variant runs it: unchanged, plus
a record of what the fleet check compares with, written to ``PAYI_E2E_FLEET_JSON``:

* ``sdk_points``: every data point of the SDK's own ``payi.genai.cost`` / ``payi.genai.tokens``
  metrics (name, attributes, value), read from the demo's own ``InMemoryMetricReader`` - the
  reader its cost tables print;
* ``spans``: per span id, its trace id, status and the ``payi_otel.cost.total`` the SDK put on
  it - what the gateway's tail_sampling policy judges;
* ``probe``: when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, :data:`PROBE_TRACES` more traces
  exported there after the demo, ``e2e error probe N``, whose child span has an error status
  and no GenAI call (the demo's traces have no error: these are for the policy that keeps
  errors, and with the demo's five they make it all but certain that both gateways get
  traces), in the format of ``PAYI_DEMO_TRACES_JSON``'s traces; their spans are in ``spans``
  too.

The demo's module is imported and run as ``main.main()``; the reader and the span exporter it
makes are kept by wrapping the two names it calls. Everything else (``OTEL_*``,
``PAYI_DEMO_TRACES_JSON``) works as for ``python examples/support_assistant/main.py``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

DEMO = Path(__file__).resolve().parent.parent / "examples" / "support_assistant"
sys.path.insert(0, str(DEMO))

import main as demo  # noqa: E402
from costs import _points as metric_points  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.resources import SERVICE_NAME, Resource  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from opentelemetry.trace import Status, StatusCode  # noqa: E402

COST_ATTRIBUTE = "payi_otel.cost.total"
PROBE_TRACES = 10
_kept: dict[str, Any] = {}


class _KeptReader(InMemoryMetricReader):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _kept["reader"] = self


_setup_tracing = demo.setup_tracing


def _kept_setup_tracing() -> Any:
    provider, memory, otlp = _setup_tracing()
    _kept["spans"] = memory
    return provider, memory, otlp


def sdk_points(reader: InMemoryMetricReader) -> list[dict[str, Any]]:
    """The points the demo's cost tables sum (its own reader of them), as JSON-ready data."""
    return [
        {"name": name, "attributes": attributes, "value": value}
        for name, attributes, value in metric_points(reader)
    ]


def span_facts(memory: InMemorySpanExporter) -> dict[str, dict[str, Any]]:
    return {
        f"{span.context.span_id:016x}": {
            "trace_id": f"{span.context.trace_id:032x}",
            "status": span.status.status_code.name,
            "cost": (span.attributes or {}).get(COST_ATTRIBUTE),
        }
        for span in memory.get_finished_spans()
        if span.context is not None
    }


def error_probe() -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Export the error probe traces over OTLP (the endpoint, protocol: from ``OTEL_*``);
    return their records and their spans' facts."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    service = os.environ.get("OTEL_SERVICE_NAME") or demo.DEFAULT_SERVICE_NAME
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter()))
    tracer = provider.get_tracer("payi-otel-e2e")
    for number in range(1, PROBE_TRACES + 1):
        with tracer.start_as_current_span(f"e2e error probe {number}"):
            with tracer.start_as_current_span("failing step") as span:
                span.set_status(Status(StatusCode.ERROR, "the e2e's error probe"))
    provider.shutdown()
    traces: dict[int, list[dict[str, Any]]] = {}
    for s in sorted(memory.get_finished_spans(), key=lambda s: s.start_time or 0):
        assert s.context is not None
        traces.setdefault(s.context.trace_id, []).append(
            {
                "span_id": f"{s.context.span_id:016x}",
                "parent_span_id": f"{s.parent.span_id:016x}" if s.parent else None,
                "name": s.name,
                "genai": False,
                "payi": {},
                "headers": None,
            }
        )
    records = [{"trace_id": f"{t:032x}", "spans": spans} for t, spans in traces.items()]
    return records, span_facts(memory)


def main() -> int:
    demo.InMemoryMetricReader = _KeptReader
    demo.setup_tracing = _kept_setup_tracing
    status = demo.main()
    record: dict[str, Any] = {
        "sdk_points": sdk_points(_kept["reader"]),
        "spans": span_facts(_kept["spans"]),
        "probe": [],
    }
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        record["probe"], probe_spans = error_probe()
        record["spans"].update(probe_spans)
    Path(os.environ["PAYI_E2E_FLEET_JSON"]).write_text(json.dumps(record, indent=1) + "\n")
    return int(status)


if __name__ == "__main__":
    sys.exit(main())

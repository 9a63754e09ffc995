"""``TelemetryHandlerScopeTest``: every signal of an instrumentation carries its scope.

A test class sets ``instrumentor_class``, ``instrumentation_scope_name`` and
``instrumentation_scope_version``; the test instruments it, runs one inference through the
``TelemetryHandler`` the instrumentor creates, and checks the span, the metrics and the log
record all name that scope (with one schema URL).
"""

from __future__ import annotations

from typing import Any, ClassVar
from unittest import mock

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.test_util_genai.instrumentor import instrument
from opentelemetry.util.genai.handler import TelemetryHandler


class TelemetryHandlerScopeTest:
    instrumentor_class: ClassVar[type[BaseInstrumentor]]
    instrumentation_scope_name: ClassVar[str]
    instrumentation_scope_version: ClassVar[str]

    def test_instrumentation_scope_is_used_for_all_signals(
        self,
        tracer_provider: Any,
        logger_provider: Any,
        meter_provider: Any,
        span_exporter: Any,
        log_exporter: Any,
        metric_reader: Any,
    ) -> None:
        created: list[TelemetryHandler] = []
        real_init = TelemetryHandler.__init__

        def recording_init(handler: TelemetryHandler, *args: Any, **kwargs: Any) -> None:
            real_init(handler, *args, **kwargs)
            created.append(handler)

        with mock.patch.object(TelemetryHandler, "__init__", recording_init):
            with instrument(
                self.instrumentor_class(),
                tracer_provider=tracer_provider,
                logger_provider=logger_provider,
                meter_provider=meter_provider,
                content_capture="EVENT_ONLY",
            ):
                assert len(created) == 1, created
                with created[0].inference("provider", request_model="model"):
                    pass

        scopes = [span.instrumentation_scope for span in span_exporter.get_finished_spans()]
        data = metric_reader.get_metrics_data()
        scopes += [
            scope_metrics.scope
            for resource_metrics in data.resource_metrics
            for scope_metrics in resource_metrics.scope_metrics
        ]
        scopes += [log.instrumentation_scope for log in log_exporter.get_finished_logs()]
        assert len(scopes) == 3, scopes  # one span, one metrics scope, one log record
        for scope in scopes:
            assert scope.name == self.instrumentation_scope_name
            assert scope.version == self.instrumentation_scope_version
        schema_urls = {scope.schema_url for scope in scopes}
        assert len(schema_urls) == 1 and "" not in schema_urls, schema_urls

"""Runs the seed scenarios with Pay-i's SDK (``payi``) or with payi_otel, in a process of its
own (each instruments ``openai`` globally), against local servers only.

    python payi_side_by_side.py {payi|payi_otel} {proxy|ingest} LLM_BASE_URL

``proxy``: Pay-i's SDK with ``config={"proxy": True}`` / payi_otel with
``header_dialect="payi-proxy"``: the attribution goes to the LLM server as headers.
``ingest``: Pay-i's SDK in its default mode / payi_otel with ``payi_instrument(ingest=...)``
(and no attribution header on the LLM call); ``spans``: the same with ``PayiIngestExporter``
as a span exporter; ``logged``: ``ingest`` with ``log_prompt_and_response=True`` (Pay-i's
SDK logs them by default): the attribution goes to ``PAYI_BASE_URL``'s
``/api/v1/ingest``. Per-call headers use Pay-i's spelling (``xProxy-*``), which both read.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Callable

#: Scenario names in order; the test reads them to label the calls (one or more per scenario).
SCENARIOS: list[str] = []


def scenarios(track: Any, track_context: Any, call: Callable[..., None]) -> None:
    """The seed examples (spec/seeds; tests/test_genai_seeds.py) with parameters both SDKs
    take (Pay-i's ``track`` has no step, price-as or resource scope)."""

    def scenario(name: str) -> Callable[[Callable[[], None]], None]:
        def run(body: Callable[[], None]) -> None:
            SCENARIOS.append(name)
            body()

        return run

    @scenario("headers_with_decorated_functions")
    def _() -> None:
        @track(limit_ids=["limit1"], user_id="default_user")
        def function_with_headers() -> None:
            call({"xProxy-Limit-IDs": "", "xProxy-User-ID": ""})
            call({"xProxy-Limit-IDs": "header_limit", "xProxy-UseCase-Version": "5"})

        function_with_headers()

    @scenario("triple_combination")
    def _() -> None:
        @track(limit_ids=["limit1"], user_id="default_user")
        def complex_function() -> None:
            with track_context(limit_ids=["limit2"], use_case_name="reporting"):
                call({"xProxy-Limit-IDs": "limit3", "xProxy-User-ID": "specific_user"})
                with track_context(limit_ids=[], user_id=""):
                    call()
                with track_context(limit_ids=["limit4"], user_id="nested_user"):
                    call()

        complex_function()

    @scenario("combined_strings")
    def _() -> None:
        @track(user_id="decorator_user")
        def function_with_context() -> None:
            with track_context(user_id="context_user"):
                call()
            with track_context(user_id=None):
                call()
            with track_context(user_id=""):
                call()

        function_with_context()

    @scenario("combined_lists")
    def _() -> None:
        @track(limit_ids=["decorator_limit"])
        def function_with_context() -> None:
            with track_context(limit_ids=["context_limit"]):
                call()
            with track_context(limit_ids=[]):
                call()

        function_with_context()

    @scenario("combined_numeric")
    def _() -> None:
        @track(use_case_name="numbers", use_case_version=1)
        def function_with_numeric() -> None:
            call()
            with track_context(use_case_version=2):
                call()

        function_with_numeric()

    @scenario("name_id_pairs")
    def _() -> None:
        @track(use_case_name="decorator_case", use_case_id="decorator_id")
        def function_with_context() -> None:
            with track_context(use_case_name="context_case"):
                call()
            with track_context(use_case_id="context_id"):
                call()
            with track_context(use_case_name="context_case", use_case_id="context_id"):
                call()

        function_with_context()

    @scenario("context_calling_decorated")
    def _() -> None:
        @track(limit_ids=["decorator_limit"], user_id="decorator_user")
        def decorated_function() -> None:
            call()

        decorated_function()
        with track_context(limit_ids=["context_limit"], user_id="context_user"):
            decorated_function()

    @scenario("tracking_users")
    def _() -> None:
        with track_context(user_id="user_42"):
            call()

    @scenario("properties_and_pricing")
    def _() -> None:
        with track_context(
            use_case_name="props",
            use_case_step="draft",
            use_case_properties={"tier": "gold"},
            request_properties={"team": "core", "cost": "a"},
            account_name="acme",
            price_as_category="system.openai",
            price_as_resource="gpt-4o",
            resource_scope="global",
        ):
            call()
            call({"xProxy-Request-Properties": '{"call":"1"}'})

    # Issue 19: prompt logging per scope (Pay-i's ``track_context(log_prompt_and_response=)``):
    # off in the outer scope, on again in the inner one, off for one call by its header.
    @scenario("prompt_logging_per_scope")
    def _() -> None:
        with track_context(user_id="quiet", log_prompt_and_response=False):
            call()
            with track_context(log_prompt_and_response=True):
                call()
                call({"xProxy-Logging-Disable": "True"})


def main(impl: str, mode: str, llm_base_url: str) -> None:
    import openai

    client = openai.OpenAI(base_url=llm_base_url, api_key="test", max_retries=0)
    if impl == "payi":
        from payi.lib.instrument import payi_instrument, track, track_context

        # Proxy mode needs no Pay-i client (the call itself goes to Pay-i), but Pay-i's SDK
        # creates its default clients anyway: PAYI_API_KEY / PAYI_BASE_URL are set.
        payi_instrument(config={"proxy": mode == "proxy"})
        finish: Callable[[], object] = dict  # nothing to flush: it ingests inline
    else:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        from payi_otel import PayiIngestExporter, payi_instrument, track, track_context

        provider = TracerProvider()
        if mode == "proxy":
            payi_instrument(tracer_provider=provider, header_dialect="payi-proxy")
            finish = provider.shutdown
        elif mode in ("ingest", "logged"):  # one record per call, from the provider seam
            exporter = PayiIngestExporter()
            payi_instrument(
                tracer_provider=provider,
                header_hosts=[],
                ingest=exporter,
                log_prompt_and_response=mode == "logged",
            )
            finish = exporter.shutdown
        else:  # "spans": the span exporter form
            span_exporter = PayiIngestExporter()
            provider.add_span_processor(BatchSpanProcessor(span_exporter))
            payi_instrument(tracer_provider=provider, header_hosts=[])

            def finish_spans() -> None:
                provider.shutdown()
                span_exporter.shutdown()

            finish = finish_spans

    labels: list[str] = []

    def call(headers: dict[str, str] | None = None) -> None:
        labels.append(SCENARIOS[-1])
        client.chat.completions.create(
            model="gpt-4",
            messages=[{"role": "user", "content": "Hello"}],
            **({"extra_headers": headers} if headers else {}),
        )

    scenarios(track, track_context, call)
    finish()
    print(json.dumps({"labels": labels, "last_result": last_result()}))


def last_result() -> Any:
    """Pay-i's last answer as the app sees it: Pay-i's SDK's ``get_context()["last_result"]``
    (a model), payi_otel's ``last_result()`` (a mapping); as plain data."""
    import payi_otel

    if payi_otel._instrumentor.PayiInstrumentor().is_instrumented_by_opentelemetry:
        return payi_otel.last_result()
    from payi.lib.instrument import get_context

    found = get_context().get("last_result")
    return None if found is None else found.model_dump(exclude_none=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])

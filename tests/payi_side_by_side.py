"""Runs the seed scenarios with Pay-i's SDK (``payi``) or with payi_otel, in a process of its
own (each instruments ``openai`` globally), against local servers only.

    python payi_side_by_side.py {payi|payi_otel} MODE LLM_BASE_URL PAYI_BASE_URL [MODE ...]

Each MODE with its own LLM server and its own Pay-i (``PAYI_BASE_URL``); several modes run
at once, each in a process of its own forked from this one once it has imported the SDKs
(an interpreter's imports and ``payi_instrument``'s, ~5 s, paid once, not per mode; nothing
is instrumented before the fork). Prints one JSON line: each mode's labels and last result.

``proxy``: Pay-i's SDK with ``config={"proxy": True}`` / payi_otel with
``header_dialect="payi-proxy"``: the attribution goes to the LLM server as headers.
``ingest``: Pay-i's SDK in its default mode / payi_otel with ``payi_instrument(ingest=...)``
(and no attribution header on the LLM call); ``spans``: the same with ``PayiIngestExporter``
as a span exporter; ``logged``: ``ingest`` with ``log_prompt_and_response=True`` (Pay-i's
SDK logs them by default): the attribution goes to ``PAYI_BASE_URL``'s
``/api/v1/ingest``. Per-call headers use Pay-i's spelling (``xProxy-*``), which both read.
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import sys
import traceback
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


def run(impl: str, mode: str, llm_base_url: str) -> dict[str, Any]:
    """One mode's run in this process: its labels and Pay-i's last answer."""
    import openai

    # The fake LLM server's OpenAI routes (its ``openai_base_url``).
    client = openai.OpenAI(base_url=llm_base_url + "/v1", api_key="test", max_retries=0)
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
    return {"labels": labels, "last_result": last_result()}


def last_result() -> Any:
    """Pay-i's last answer as the app sees it: Pay-i's SDK's ``get_context()["last_result"]``
    (a model), payi_otel's ``last_result()`` (a mapping); as plain data."""
    import payi_otel

    if payi_otel._instrumentor.PayiInstrumentor().is_instrumented_by_opentelemetry:
        return payi_otel.last_result()
    from payi.lib.instrument import get_context

    found = get_context().get("last_result")
    return None if found is None else found.model_dump(exclude_none=True)


def preload(*modules: str) -> None:
    """Import ``modules`` and the GenAI instrumentations payi_otel's ``payi_instrument``
    would import (import only: nothing is instrumented)."""
    import opentelemetry.sdk.trace.export  # noqa: F401

    from payi_otel import _genai, _on_import

    found = [inst.module for family in _genai.FAMILIES for inst in family.instrumentations]
    for name in [*modules, *found]:
        if _on_import.installed(name.rsplit(".", 1)[0]) and _on_import.installed(name):
            importlib.import_module(name)


Runner = Callable[[str, str, str], Any]


def forked(
    run: Runner, impl: str, mode: str, llm_base_url: str, payi_base_url: str
) -> tuple[int, int]:
    """``run`` in a child process; its pid and the pipe its JSON result comes on."""
    read, write = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write)
        return pid, read
    os.close(read)
    code = 1
    try:
        os.environ["PAYI_BASE_URL"] = payi_base_url
        result = json.dumps(run(impl, mode, llm_base_url)).encode()
        with os.fdopen(write, "wb") as out:
            out.write(result)
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        atexit._run_exitfuncs()  # as the process's normal exit would
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main(run: Runner, imports: tuple[str, ...], impl: str, *args: str) -> None:
    """``args``: MODE LLM_BASE_URL PAYI_BASE_URL, once per mode. One mode runs here; several
    (payi_otel's) run at once, each forked from this process once ``imports`` and the GenAI
    instrumentations are imported. Prints each mode's result as one JSON line."""
    modes = [args[i : i + 3] for i in range(0, len(args), 3)]
    if len(modes) == 1:
        mode, llm_base_url, payi_base_url = modes[0]
        os.environ["PAYI_BASE_URL"] = payi_base_url
        print(json.dumps({mode: run(impl, mode, llm_base_url)}))
        return
    preload(*imports)
    children = [(found[0], *forked(run, impl, *found)) for found in modes]
    results, failed = {}, []
    for mode, pid, read in children:
        with os.fdopen(read, "rb") as pipe:
            data = pipe.read()
        if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0:
            failed.append(mode)
        else:
            results[mode] = json.loads(data)
    if failed:
        sys.exit(f"failed: {failed}")
    print(json.dumps(results))


if __name__ == "__main__":
    main(run, ("openai",), *sys.argv[1:])

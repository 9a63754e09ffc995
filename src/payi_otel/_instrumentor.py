"""``PayiInstrumentor`` (entry point ``payi``), ``payi_instrument()``, and the
``opentelemetry-instrument`` hooks (entry points ``opentelemetry_pre_instrument`` /
``opentelemetry_post_instrument``).

Instrumenting builds the settings (``_settings``: keyword arguments over ``PAYI_*`` variables)
and puts them in force, carries context into threads, installs the span processor that
attributes GenAI spans, stamps ``x-payi-*`` headers on the requests of the installed GenAI SDKs
and turns on their GenAI spans (``_genai``). Uninstrumenting undoes each of those and puts the
default settings back.

Zero-code: the loader instruments every installed instrumentor, in no set order. So while it
runs (:func:`before_instrumentors` .. :func:`after_instrumentors`), ``PayiInstrumentor`` leaves
the GenAI instrumentations to it, and once it is done :func:`after_instrumentors` makes sure
each installed SDK has exactly one GenAI instrumentation on (one the loader skipped is turned
on; a duplicate is turned off). Under the loader a ``PAYI_*`` variable that does not parse is
one ERROR line naming it, and the app runs on.
"""

from __future__ import annotations

import sys
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Callable, List, Optional, Tuple

from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from payi_otel import _destinations as destinations
from payi_otel import _gc_guard, _settings
from payi_otel._cost import CostObserver
from payi_otel._deferred import flush
from payi_otel._extracted import keep_scopes_on_extract
from payi_otel._genai import enable_genai_spans
from payi_otel._ingest import ingest_exporter
from payi_otel._invocations import keep_inner_scopes
from payi_otel._log import internal_error, logger
from payi_otel._outgoing import guard_hops
from payi_otel._payi_answer import answers_in_responses, observe_answer
from payi_otel._providers import providers
from payi_otel._providers._core import instrument_providers
from payi_otel._spans import install_processor
from payi_otel._stream_context import suspend_genai_streams
from payi_otel._threads import instrument_threads

__all__ = [
    "PayiInstrumentor",
    "after_instrumentors",
    "before_instrumentors",
    "payi_instrument",
]


class PayiInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Pay-i attribution for OpenTelemetry: ``PayiInstrumentor().instrument(**kwargs)``.

    Keyword arguments: ``tracer_provider``, ``config`` (a mapping of Pay-i parameters for the
    global level), ``propagate_baggage`` (default: ``PAYI_PROPAGATE_BAGGAGE``, else False),
    ``genai_spans`` (default True: turn on the GenAI instrumentation of each installed SDK),
    ``meter_provider`` (default: the global one) for the token and cost metrics,
    ``metrics_user_id`` (default: ``PAYI_METRICS_USER_ID``, else False: ``payi.user_id`` as
    a metric dimension).
    ``header_dialect`` (``x-payi`` | ``payi-proxy``; default ``PAYI_HEADER_DIALECT``, else
    ``x-payi``), ``header_hosts`` (the hosts that get attribution headers; default
    ``PAYI_HEADER_HOSTS``, else every host but the providers' public API hosts).
    ``scope_spans`` (default: ``PAYI_SCOPE_SPANS``, else True; False is the spanless mode:
    scopes attribute calls and GenAI spans exactly as before but start no span),
    ``scope_span_attributes`` (default: ``PAYI_SCOPE_SPAN_ATTRIBUTES``, else ``"own"``: a
    scope span carries what its scope set; ``"effective"``: the whole effective set).
    ``native_attribution`` (default: ``PAYI_NATIVE_ATTRIBUTION``, else False): the providers'
    own request fields carry the use case, user and account too (Bedrock's
    ``requestMetadata``, Vertex AI's ``labels``; README "Providers").
    ``model_mappings`` (default: ``PAYI_MODEL_MAPPINGS``, a JSON array): what to price a call
    naming a deployment or another model as (see :func:`payi_instrument`).
    ``prices`` (default: ``PAYI_PRICES_FILE``), ``metric_properties`` (default:
    ``PAYI_METRIC_PROPERTIES``), ``scope_totals`` (default: ``PAYI_SCOPE_TOTALS``, else False):
    see :func:`payi_instrument` (issue 20).
    """

    # No __init__: BaseInstrumentor is a singleton whose __init__ would run on every
    # PayiInstrumentor() call and forget what the instrumented one must undo.
    _undo: Tuple[Callable[[], Any], ...] = ()
    _pending_genai: Optional[Tuple[Optional[TracerProvider]]] = None

    def instrumentation_dependencies(self) -> Collection[str]:
        # Nothing is required: the global level, scopes, baggage and threads work with no SDK,
        # and each of openai / anthropic is instrumented when it is installed. So the
        # distribution declares no ``instruments`` / ``instruments-any`` extra either, and
        # ``opentelemetry-instrument`` always loads it (docs: README, "Zero-code").
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        global _by_loader
        _by_loader = _loading
        settings = _settings.build(kwargs, lenient=_loading)
        _settings.install(settings)
        provider = settings.tracer_provider
        # First: every finalizer below may run inside a collection (see _gc_guard).
        undo: List[Callable[[], Any]] = [_gc_guard.install()]
        undo.extend(instrument_threads())
        undo.append(keep_scopes_on_extract())
        undo.extend(keep_inner_scopes())
        undo.extend(guard_hops())
        undo.append(install_processor(provider or trace.get_tracer_provider()))
        undo.extend(instrument_providers(providers()))
        undo.extend(suspend_genai_streams())
        undo.append(
            _settings.add_observer(
                CostObserver(
                    settings.meter_provider,
                    metrics_user_id=settings.metrics_user_id,
                    prices=settings.prices,  # issue 20
                    metric_properties=settings.metric_properties,
                )
            )
        )
        undo.append(destinations.unguard_all)
        undo.extend(_issue21_hooks(settings))  # issue 21
        # issue 19: Pay-i's answer in a proxied call's response; one ingest record per call.
        if answers_in_responses(settings.wire):
            undo.append(_settings.add_observer(observe_answer))
        if settings.ingest:
            undo.append(ingest_exporter(kwargs.get("ingest"), settings.meter_provider).attach())
        self._undo = tuple(undo)
        if settings.genai_spans:
            if _loading:  # the loader instruments them; see finish_zero_code()
                self._pending_genai = (provider,)
            else:
                self._undo += tuple(enable_genai_spans(provider))

    def finish_zero_code(self) -> None:
        """After ``opentelemetry-instrument`` loaded every instrumentor: GenAI spans on."""
        pending, self._pending_genai = self._pending_genai, None
        if pending is not None and self.is_instrumented_by_opentelemetry:
            self._undo += tuple(enable_genai_spans(pending[0]))

    def _uninstrument(self, **kwargs: Any) -> None:
        flush()  # the sums of the calls made so far (``_deferred``)
        for undo in reversed(self._undo):
            undo()
        self._undo = ()
        self._pending_genai = None
        _settings.install(_settings.default())


def payi_instrument(
    config: Optional[Mapping[str, object]] = None,
    *,
    tracer_provider: Optional[TracerProvider] = None,
    propagate_baggage: Optional[bool] = None,
    genai_spans: bool = True,
    meter_provider: Optional[MeterProvider] = None,
    metrics_user_id: Optional[bool] = None,
    baggage_accept: Optional[Iterable[str]] = None,
    header_dialect: Optional[str] = None,
    header_hosts: Optional[Sequence[str]] = None,
    scope_spans: Optional[bool] = None,
    scope_span_attributes: Optional[str] = None,
    native_attribution: Optional[bool] = None,
    model_mappings: Optional[Sequence[Mapping[str, object]]] = None,
    agent_steps: Optional[bool] = None,
    standard_attributes: Optional[bool] = None,
    session_property: Optional[str] = None,
    ingest: Optional[object] = None,
    log_prompt_and_response: Optional[bool] = None,
    prices: Optional[Sequence[Mapping[str, object]]] = None,
    metric_properties: Optional[Sequence[str]] = None,
    scope_totals: Optional[bool] = None,
) -> None:
    """Initialise Pay-i attribution once, at application start-up.

    Sets the global context from ``config`` over ``PAYI_*`` environment variables (its
    ``use_case_name`` defaults to the calling file's stem, with a fresh id), installs the span
    processor on ``tracer_provider`` (default: the global one) and instruments the installed
    GenAI SDKs. With ``genai_spans`` (default), each installed SDK also gets GenAI spans from
    its official OpenTelemetry instrumentation unless one is already on. Every call's usage
    and cost go on its GenAI span and into the ``payi.genai.tokens`` / ``payi.genai.cost``
    counters of ``meter_provider`` (default: the global one), with ``payi.user_id`` among
    their dimensions only with ``metrics_user_id`` (default: ``PAYI_METRICS_USER_ID``).
    With baggage on, incoming baggage may set only the parameters in ``baggage_accept``
    (default: ``PAYI_BAGGAGE_ACCEPT``, else all but limits, price-as and resource scope).
    ``header_dialect`` (``x-payi`` | ``payi-proxy``, default ``PAYI_HEADER_DIALECT``, else
    ``x-payi``) is the wire form of the attribution headers; ``header_hosts`` (default
    ``PAYI_HEADER_HOSTS``) the only hosts that get them, else every host but the model
    providers' public API hosts. Spans carry the values either way.
    ``scope_spans=False``
    (or ``PAYI_SCOPE_SPANS=false``) is the spanless mode for hot paths: ``@track`` and
    ``track_context`` start no span; headers and GenAI spans' ``payi.*`` attributes are the same.
    A scope span carries the ``payi.*`` values its scope set (``scope_span_attributes="own"``,
    the default) or the whole effective set (``"effective"``, costlier: docs/performance.md).
    ``native_attribution=True`` (or ``PAYI_NATIVE_ATTRIBUTION=true``; off by default) also
    puts the use case, user and account in the providers' own request fields, which go to
    the provider itself (Bedrock's ``requestMetadata``, in AWS invocation logs; Vertex AI's
    ``labels``, in Google Cloud billing): personal data goes to the provider then, so it is
    opt-in, as baggage is (README "Providers").
    ``model_mappings`` (default: ``PAYI_MODEL_MAPPINGS``, the same as a JSON array) says what
    to price a call as when the model it sends is not a model (an Azure OpenAI deployment, a
    Bedrock application inference profile), in the shape of Pay-i's
    ``PayiInstrumentModelMapping``: ``[{"model": "prod-chat", "host": "my-res.openai.azure.com",
    "price_as_category": "system.azureopenai", "price_as_resource": "gpt-4o",
    "resource_scope": "global"}]`` (``host``, ``resource_scope`` and one of the ``price_as_*``
    optional). A mapping matches a call on its model as sent (and its host, when it names
    one); it gives the call its ``price_as_*`` (and ``resource_scope``) only when the call has
    no ``price_as_*`` of its own from a scope or its headers, and they then travel like any
    parameter: headers, span, cost, ingest (README, "Model mappings").
    ``agent_steps=True`` (or ``PAYI_AGENT_STEPS=true``): an agent's or tool's name is the
    ``use_case_step`` of the calls it makes (README "Agent frameworks").
    ``standard_attributes=True`` (or ``PAYI_STANDARD_ATTRIBUTES=true``): GenAI spans also carry
    ``user.id``; ``session_property="<key>"`` (or ``PAYI_SESSION_PROPERTY``) the request
    property of that key as ``session.id`` / ``gen_ai.conversation.id`` (README "Web services").
    ``ingest=True`` (or ``PAYI_INGEST=true``), or ``ingest=PayiIngestExporter(...)`` with
    its options, sends one Pay-i ingest record per inference call, sampled or not (README,
    "Using with Pay-i"); ``log_prompt_and_response=True`` (or
    ``PAYI_LOG_PROMPT_AND_RESPONSE=true``; off by default) is the global level of that
    parameter (over ``config``'s): a call resolving to True (scopes and the call's own
    headers rank above it) has its request and response bodies in its record.
    ``prices`` (default: ``PAYI_PRICES_FILE``, a JSON file of the same list) is the user's
    price table, over genai-prices': ``[{"model": "ft:gpt-4o-mini:acme:*", "provider":
    "openai", "input": 0.30, "output": 1.20, "cache_read": 0.15, "currency": "USD"}]``, per
    million tokens (README, "Cost and usage"). ``metric_properties`` (default:
    ``PAYI_METRIC_PROPERTIES``, comma-separated) names ``request_properties`` keys to add as
    metric dimensions (at most 100 values each, then ``_other``). ``scope_totals=True`` (or
    ``PAYI_SCOPE_TOTALS=true``) puts each scope's calls' usage and cost on its span at its end
    (``payi_otel.scope.*``).
    A second call logs a warning and changes nothing.
    """
    instrumentor = PayiInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        if _by_loader:  # (a review: the app's own call looked ignored for no reason)
            logger.warning(
                "payi_instrument() was already called by opentelemetry-instrument (zero-code), "
                "so this call changes nothing: give its settings as PAYI_* variables, or run "
                "the app without opentelemetry-instrument"
            )
        else:
            logger.warning("payi_instrument() was already called; this call changes nothing")
        return
    caller = sys._getframe(1).f_code.co_filename
    instrumentor.instrument(
        config=config,
        tracer_provider=tracer_provider,
        propagate_baggage=propagate_baggage,
        caller_file=caller,
        genai_spans=genai_spans,
        meter_provider=meter_provider,
        metrics_user_id=metrics_user_id,
        baggage_accept=baggage_accept,
        header_dialect=header_dialect,
        header_hosts=header_hosts,
        scope_spans=scope_spans,
        scope_span_attributes=scope_span_attributes,
        native_attribution=native_attribution,
        model_mappings=model_mappings,
        agent_steps=agent_steps,
        standard_attributes=standard_attributes,
        session_property=session_property,
        ingest=ingest,
        log_prompt_and_response=log_prompt_and_response,
        prices=prices,
        metric_properties=metric_properties,
        scope_totals=scope_totals,
    )


# --- issue 21: request scopes (zero-code), agent steps ---------------------------------------


def _issue21_hooks(settings: _settings.Settings) -> List[Callable[[], Any]]:
    """``PAYI_WEB_HEADERS`` / ``PAYI_WEB_ROUTE_STEP``: a request scope in every Starlette /
    FastAPI route and Flask app (``payi_otel.web``); ``agent_steps``: agent and tool names as
    steps (``_agents``)."""
    undo: List[Callable[[], Any]] = []
    if settings.web_headers or settings.web_route_step:
        from payi_otel.web import RequestMapping, instrument_web

        mapping = RequestMapping(dict(settings.web_headers), settings.web_route_step)
        undo.extend(instrument_web(mapping))
    if settings.agent_steps:
        from payi_otel._agents import instrument_agent_steps

        undo.extend(instrument_agent_steps())
    return undo


# --- end issue 21 ------------------------------------------------------------------------------


# --- opentelemetry-instrument (zero-code) -----------------------------------------------------

#: Whether the auto-instrumentation loader is running its instrumentors now.
_loading = False
#: The instrumentation in force was made by ``opentelemetry-instrument``'s loader.
_by_loader = False


def before_instrumentors() -> None:
    global _loading
    _loading = True


def after_instrumentors() -> None:
    global _loading
    _loading = False
    try:
        PayiInstrumentor().finish_zero_code()
    except Exception:  # never into the app's start-up
        internal_error("zero-code", "finishing zero-code instrumentation failed")

"""``PayiInstrumentor`` (entry point ``payi``) and ``payi_instrument()``.

Instrumenting sets the global level (config over ``PAYI_*`` variables), carries context into
threads, installs the span processor that attributes GenAI spans, stamps ``x-payi-*`` headers
on the requests of the installed GenAI SDKs and turns on their GenAI spans (``_genai``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Callable, List, Optional, Tuple

from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from payi_otel import _config as payi_config
from payi_otel import _context as payi_state
from payi_otel import _destinations as destinations
from payi_otel import _zero_code
from payi_otel._cost import CostObserver
from payi_otel._genai import enable_genai_spans
from payi_otel._log import logger
from payi_otel._model import wire_policy
from payi_otel._model.parameters import ParameterError, ParameterValueError
from payi_otel._outgoing import guard_hops
from payi_otel._providers import providers
from payi_otel._providers._core import add_observer, instrument_providers
from payi_otel._spans import install_processor, set_payi_tracer_provider
from payi_otel._stream_context import suspend_genai_streams
from payi_otel._threads import instrument_threads

__all__ = ["PayiInstrumentor", "payi_instrument"]


def _main_script() -> Optional[str]:
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if isinstance(path, str):
        return path
    return sys.argv[0] if sys.argv and sys.argv[0] else None


def _scope_span_options(kwargs: Mapping[str, Any], zero_code: bool) -> Tuple[bool, str]:
    """``scope_spans`` (else ``PAYI_SCOPE_SPANS``, else True) and ``scope_span_attributes``
    (else ``PAYI_SCOPE_SPAN_ATTRIBUTES``, else ``"own"``). A bad variable raises, or under
    ``opentelemetry-instrument`` is logged and ignored."""
    spans = kwargs.get("scope_spans")
    if spans is None:
        try:
            spans = payi_config.parse_bool_env(os.environ, payi_config.SCOPE_SPANS_ENV)
        except ParameterError as exc:
            if not zero_code:
                raise
            logger.error("payi_otel: %s; the variable is ignored", exc)
    elif not isinstance(spans, bool):
        raise TypeError(f"scope_spans must be a bool, not {type(spans).__name__}")
    attributes = kwargs.get("scope_span_attributes")
    choices = payi_config.SCOPE_SPAN_ATTRIBUTES
    if attributes is None:
        text = os.environ.get(payi_config.SCOPE_SPAN_ATTRIBUTES_ENV, "").strip().lower()
        if text and text not in choices:
            message = (
                f"{payi_config.SCOPE_SPAN_ATTRIBUTES_ENV} must be one of {choices}, got {text!r}"
            )
            if not zero_code:
                raise ParameterValueError(message)
            logger.error("payi_otel: %s; the variable is ignored", message)
            text = ""
        attributes = text or "own"
    elif attributes not in choices:
        raise ValueError(f"scope_span_attributes must be one of {choices}, got {attributes!r}")
    return (True if spans is None else spans), attributes


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
        zero_code = _zero_code.loading()
        config: Optional[Mapping[str, object]] = kwargs.get("config")
        caller_file: Optional[str] = kwargs.get("caller_file") or _main_script()
        errors: Optional[List[ParameterError]] = [] if zero_code else None
        params, env_propagate = payi_config.global_params(config, os.environ, caller_file, errors)
        for error in errors or ():
            logger.error("payi_otel: %s; the variable is ignored", error)
        propagate = kwargs.get("propagate_baggage")
        if propagate is None:
            propagate = bool(env_propagate)
        elif not isinstance(propagate, bool):
            raise TypeError(f"propagate_baggage must be a bool, not {type(propagate).__name__}")
        metrics_user_id = _bool_option(
            kwargs.get("metrics_user_id"),
            "metrics_user_id",
            payi_config.METRICS_USER_ID_ENV,
            zero_code,
        )
        scope_spans, span_attributes = _scope_span_options(kwargs, zero_code)
        provider: Optional[TracerProvider] = kwargs.get("tracer_provider")
        try:
            accept = payi_config.baggage_accept(kwargs.get("baggage_accept"), os.environ)
            wire = wire_policy.policy_from(
                kwargs.get("header_dialect"), kwargs.get("header_hosts"), os.environ
            )
        except ParameterError as exc:
            if not zero_code:
                raise
            logger.error("payi_otel: %s; the default is used", exc)
            accept = payi_config.baggage_accept(None, {})
            wire = wire_policy.WirePolicy()
        destinations.set_current(wire)
        payi_state.set_global(
            params,
            propagate_baggage=propagate,
            instrumented=True,
            baggage_accept=accept,
            scope_spans=scope_spans,
            effective_scope_spans=span_attributes == "effective",
        )
        set_payi_tracer_provider(provider)
        undo: List[Callable[[], Any]] = list(instrument_threads())
        undo.extend(guard_hops())
        undo.append(install_processor(provider or trace.get_tracer_provider()))
        undo.extend(instrument_providers(providers()))
        undo.extend(suspend_genai_streams())
        undo.append(
            add_observer(
                CostObserver(kwargs.get("meter_provider"), metrics_user_id=metrics_user_id)
            )
        )
        undo.append(destinations.unguard_all)
        self._undo = tuple(undo)
        if kwargs.get("genai_spans", True):
            if zero_code:  # the loader instruments them; see finish_zero_code()
                self._pending_genai = (provider,)
            else:
                self._undo += tuple(enable_genai_spans(provider))

    def finish_zero_code(self) -> None:
        """After ``opentelemetry-instrument`` loaded every instrumentor: GenAI spans on."""
        pending, self._pending_genai = self._pending_genai, None
        if pending is not None and self.is_instrumented_by_opentelemetry:
            self._undo += tuple(enable_genai_spans(pending[0]))

    def _uninstrument(self, **kwargs: Any) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo = ()
        self._pending_genai = None
        payi_state.set_global({}, propagate_baggage=False, instrumented=False)
        destinations.set_current(wire_policy.WirePolicy())
        set_payi_tracer_provider(None)


def _bool_option(value: object, name: str, env: str, zero_code: bool) -> bool:
    """A keyword's bool, else the variable's (under zero-code a bad one is logged, not
    raised), else False."""
    if value is None:
        try:
            return bool(payi_config.parse_bool_env(os.environ, env))
        except ParameterError as error:
            if not zero_code:
                raise
            logger.error("payi_otel: %s; the variable is ignored", error)
            return False
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, not {type(value).__name__}")
    return value


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
    A second call logs a warning and changes nothing.
    """
    instrumentor = PayiInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
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
    )

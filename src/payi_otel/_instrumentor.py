"""``PayiInstrumentor`` (entry point ``payi``) and ``payi_instrument()``.

Instrumenting sets the global level (config over ``PAYI_*`` variables), carries context into
threads, installs the span processor that attributes GenAI spans, stamps ``x-payi-*`` headers
on the requests of the installed GenAI SDKs and turns on their GenAI spans (``_genai``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Collection, Mapping
from typing import Any, Callable, List, Optional, Tuple

from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.trace import TracerProvider

from payi_otel import _config as payi_config
from payi_otel import _context as payi_state
from payi_otel import _zero_code
from payi_otel._genai import enable_genai_spans
from payi_otel._log import logger
from payi_otel._parameters import ParameterError, ParameterValueError
from payi_otel._providers import PROVIDERS, instrument_providers
from payi_otel._spans import install_processor, set_payi_tracer_provider
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
            message = (f"{payi_config.SCOPE_SPAN_ATTRIBUTES_ENV} must be one of {choices}, "
                       f"got {text!r}")
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
        params, env_propagate = payi_config.global_params(
            config, os.environ, caller_file, errors
        )
        for error in errors or ():
            logger.error("payi_otel: %s; the variable is ignored", error)
        propagate = kwargs.get("propagate_baggage")
        if propagate is None:
            propagate = bool(env_propagate)
        elif not isinstance(propagate, bool):
            raise TypeError(
                f"propagate_baggage must be a bool, not {type(propagate).__name__}"
            )
        scope_spans, span_attributes = _scope_span_options(kwargs, zero_code)
        provider: Optional[TracerProvider] = kwargs.get("tracer_provider")
        payi_state.set_global(
            params, propagate_baggage=propagate, instrumented=True, scope_spans=scope_spans,
            effective_scope_spans=span_attributes == "effective",
        )
        set_payi_tracer_provider(provider)
        undo: List[Callable[[], Any]] = list(instrument_threads())
        undo.append(install_processor(provider or trace.get_tracer_provider()))
        undo.extend(instrument_providers(PROVIDERS))
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
        set_payi_tracer_provider(None)


def payi_instrument(
    config: Optional[Mapping[str, object]] = None,
    *,
    tracer_provider: Optional[TracerProvider] = None,
    propagate_baggage: Optional[bool] = None,
    genai_spans: bool = True,
    scope_spans: Optional[bool] = None,
    scope_span_attributes: Optional[str] = None,
) -> None:
    """Initialise Pay-i attribution once, at application start-up.

    Sets the global context from ``config`` over ``PAYI_*`` environment variables (its
    ``use_case_name`` defaults to the calling file's stem, with a fresh id), installs the span
    processor on ``tracer_provider`` (default: the global one) and instruments the installed
    GenAI SDKs. With ``genai_spans`` (default), each installed SDK also gets GenAI spans from
    its official OpenTelemetry instrumentation unless one is already on. ``scope_spans=False``
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
        scope_spans=scope_spans,
        scope_span_attributes=scope_span_attributes,
    )

"""``PayiInstrumentor`` (entry point ``payi``) and ``payi_instrument()``.

Instrumenting sets the global level (config over ``PAYI_*`` variables), carries context into
threads, installs the span processor that attributes GenAI spans, and stamps ``x-payi-*``
headers on the requests of the installed GenAI SDKs.
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

from payi_otel import config as payi_config
from payi_otel import state as payi_state
from payi_otel._log import log_once, logger
from payi_otel.tracing import set_payi_tracer_provider

__all__ = ["PayiInstrumentor", "payi_instrument"]


def _main_script() -> Optional[str]:
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if isinstance(path, str):
        return path
    return sys.argv[0] if sys.argv and sys.argv[0] else None


class PayiInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Pay-i attribution for OpenTelemetry: ``PayiInstrumentor().instrument(**kwargs)``.

    Keyword arguments: ``tracer_provider``, ``config`` (a mapping of Pay-i parameters for the
    global level), ``propagate_baggage`` (default: ``PAYI_PROPAGATE_BAGGAGE``, else False).
    """

    # No __init__: BaseInstrumentor is a singleton whose __init__ would run on every
    # PayiInstrumentor() call and forget what the instrumented one must undo.
    _undo: Tuple[Callable[[], Any], ...] = ()

    def instrumentation_dependencies(self) -> Collection[str]:
        # openai / anthropic are optional: each is instrumented when it is installed.
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        config: Optional[Mapping[str, object]] = kwargs.get("config")
        caller_file: Optional[str] = kwargs.get("caller_file") or _main_script()
        params, env_propagate = payi_config.global_params(
            config, os.environ, caller_file
        )
        propagate = kwargs.get("propagate_baggage")
        if propagate is None:
            propagate = bool(env_propagate)
        elif not isinstance(propagate, bool):
            raise TypeError(
                f"propagate_baggage must be a bool, not {type(propagate).__name__}"
            )
        provider: Optional[TracerProvider] = kwargs.get("tracer_provider")
        payi_state.set_global(params, propagate_baggage=propagate)
        set_payi_tracer_provider(provider)
        undo: List[Callable[[], Any]] = []
        undo.extend(self._instrument_threading(provider))
        from payi_otel.processor import install_processor

        undo.append(install_processor(provider or trace.get_tracer_provider()))
        from payi_otel.hooks import instrument_sdks

        undo.extend(instrument_sdks())
        if kwargs.get("genai_spans"):
            undo.extend(self._instrument_openai_v2(provider))
        self._undo = tuple(undo)

    def _instrument_threading(
        self, provider: Optional[TracerProvider]
    ) -> List[Callable[[], Any]]:
        from opentelemetry.instrumentation.threading import (
            ThreadingInstrumentor,
        )

        threading_instrumentor = ThreadingInstrumentor()
        if not threading_instrumentor.is_instrumented_by_opentelemetry:
            threading_instrumentor.instrument(tracer_provider=provider)
            return [threading_instrumentor.uninstrument]
        return []

    def _instrument_openai_v2(
        self, provider: Optional[TracerProvider]
    ) -> List[Callable[[], Any]]:
        """GenAI spans for OpenAI calls, if ``opentelemetry-instrumentation-openai-v2`` and
        ``openai`` import and nothing instrumented them yet."""
        try:
            import openai  # noqa: F401
            from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
        except ImportError as exc:
            logger.info("payi_otel: no OpenAI GenAI spans (%s)", exc)
            return []
        except Exception:
            log_once("openai_v2", "payi_otel: cannot load openai-v2", exc_info=True)
            return []
        openai_instrumentor = OpenAIInstrumentor()  # type: ignore[no-untyped-call]
        if openai_instrumentor.is_instrumented_by_opentelemetry:
            return []
        try:
            openai_instrumentor.instrument(tracer_provider=provider)
        except Exception:  # e.g. an openai-v2 release that does not fit the installed wrapt
            log_once("openai_v2", "payi_otel: openai-v2 failed to instrument; no OpenAI "
                     "GenAI spans (headers are still stamped)", exc_info=True)
            return []
        return [openai_instrumentor.uninstrument]

    def _uninstrument(self, **kwargs: Any) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo = ()
        payi_state.set_global({}, propagate_baggage=False)
        set_payi_tracer_provider(None)


def payi_instrument(
    config: Optional[Mapping[str, object]] = None,
    *,
    tracer_provider: Optional[TracerProvider] = None,
    propagate_baggage: Optional[bool] = None,
    genai_spans: bool = True,
) -> None:
    """Initialise Pay-i attribution once, at application start-up.

    Sets the global context from ``config`` over ``PAYI_*`` environment variables (its
    ``use_case_name`` defaults to the calling file's stem, with a fresh id), installs the span
    processor on ``tracer_provider`` (default: the global one) and instruments the installed
    GenAI SDKs. With ``genai_spans`` (default), OpenAI calls also get GenAI spans from
    ``opentelemetry-instrumentation-openai-v2`` unless it is already instrumented.
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
    )

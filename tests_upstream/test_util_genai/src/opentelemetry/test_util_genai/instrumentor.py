"""``instrument()``: instrument for one test with the content-capture variable set, then undo."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.util.genai.environment_variables import (
    OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT,
)

_NOT_GIVEN: Any = object()


@contextmanager
def instrument(
    instrumentor: BaseInstrumentor,
    *,
    tracer_provider: Any,
    logger_provider: Any,
    meter_provider: Any,
    content_capture: str | None = None,
    extra_env: Mapping[str, str] | None = None,
    completion_hook: Any = _NOT_GIVEN,
    **extra: Any,
) -> Iterator[BaseInstrumentor]:
    """Instrument with the given providers; the environment is restored on exit.

    ``content_capture`` sets ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``;
    ``completion_hook`` (and any other keyword) is passed to ``instrument()`` only if given.
    """
    env = dict(extra_env or {})
    if content_capture is not None:
        env[OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT] = content_capture
    saved = {name: os.environ.get(name) for name in env}
    kwargs: dict[str, Any] = dict(
        tracer_provider=tracer_provider,
        logger_provider=logger_provider,
        meter_provider=meter_provider,
        **extra,
    )
    if completion_hook is not _NOT_GIVEN:
        kwargs["completion_hook"] = completion_hook
    os.environ.update(env)
    try:
        instrumentor.instrument(**kwargs)
        try:
            yield instrumentor
        finally:
            instrumentor.uninstrument()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

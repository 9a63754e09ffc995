"""payi_otel: Pay-i GenAI usage attribution, OpenTelemetry-native.

``payi_instrument()`` once at start-up; ``@track`` and ``track_context`` for scopes (each one a
span); ``get_context()`` for the effective parameters; ``PayiInstrumentor`` for
``opentelemetry-instrument``; ``PayiIngestExporter`` sends one Pay-i ingest record per GenAI
call (``payi_instrument(ingest=...)``); ``last_result()`` is Pay-i's last answer.
"""

from payi_otel._ingest import PayiIngestExporter
from payi_otel._instrumentor import PayiInstrumentor, payi_instrument
from payi_otel._model.parameters import ParameterError, ParameterTypeError, ParameterValueError
from payi_otel._payi_answer import last_result  # issue 19
from payi_otel._scopes import get_context, track, track_context
from payi_otel.version import __version__

__all__ = [
    "ParameterError",
    "ParameterTypeError",
    "ParameterValueError",
    "PayiIngestExporter",
    "PayiInstrumentor",
    "__version__",
    "get_context",
    "last_result",
    "payi_instrument",
    "track",
    "track_context",
]

"""``PayiIngestExporter``: finished GenAI spans as Pay-i ingest records (Pay-i's "ingest mode").

Each GenAI call's span becomes one ``POST /api/v1/ingest`` made with Pay-i's own client
library (``payi``, the ``payi-otel[payi]`` extra): category and resource (``price_as_*`` win,
as in Pay-i's SDK; else the category of the service the call went to - ``payi_otel.category``
on the span of an Azure OpenAI / Claude-on-Bedrock / Claude-on-Vertex call, the GenAI provider
name otherwise - and the model, in Pay-i's resource name: ``anthropic.`` + a Claude model on
Vertex AI), token units, latency, time to first token of a stream when the span has
it, the HTTP status, and the span's ``payi.*`` attribution. Use it behind the SDK's
``BatchSpanProcessor``: the app's threads only enqueue spans (a bounded queue that drops when
full); this exporter runs on the processor's worker thread. Each record is retried by the Pay-i
client with exponential backoff (``max_retries``); when Pay-i stays down the rest of the batch
is dropped at once, and no batch runs longer than ``export_timeout``; every drop is counted
(:meth:`PayiIngestExporter.stats`). Pay-i's answers are logged at DEBUG.

One call can have two nested GenAI spans (anthropic 2.x starts its own span inside the
instrumentation's): a span that is the parent of an already ingested GenAI span is not a call
of its own and is skipped (the inner span ends, and is exported, first).
"""

from __future__ import annotations

import fnmatch
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Optional, Tuple

from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode

from payi_otel._log import logger
from payi_otel._model.attributes import params_from_attributes
from payi_otel._providers import derived, providers
from payi_otel._spans import CATEGORY_ATTRIBUTE, is_genai_span

__all__ = ["INSTALL_HINT", "PayiIngestExporter", "categories", "ingest_record"]

INSTALL_HINT = "pip install 'payi-otel[payi]'"


@derived
def categories() -> Mapping[str, str]:
    """GenAI provider names (``gen_ai.provider.name`` / ``gen_ai.system``) -> Pay-i categories
    (``PayiCategories`` in ``payi/lib/helpers.py``), from every registered provider's services
    (the first provider to name one wins)."""
    found: Dict[str, str] = {}
    for provider in providers():
        for service in provider.services:
            if service.category:
                for name in service.genai_names:
                    found.setdefault(name, service.category)
    return found


Resource = Callable[[Optional[str], Optional[str]], Optional[str]]


@derived
def _resources() -> Mapping[str, Resource]:
    """Pay-i categories -> how Pay-i names the resource of the calls filed under them, for
    the services that do not name it by the request model (``Service.ingest_resource``; the
    first service of a category to give one: google.genai's names Gemini and Claude on
    Vertex AI alike)."""
    found: Dict[str, Resource] = {}
    for provider in providers():
        for service in provider.services:
            if service.category and service.ingest_resource is not None:
                found.setdefault(service.category, service.ingest_resource)
    return found


@derived
def _addressed() -> Mapping[str, Tuple[Tuple[str, str], ...]]:
    """A provider's own GenAI name -> (``server.address`` pattern, category) of its services
    told apart by address (an Azure OpenAI call named ``openai``)."""
    return {
        p.name: tuple(
            (pattern, s.category) for s in p.services if s.category for pattern in s.addresses
        )
        for p in providers()
    }


def _text(value: object) -> Optional[str]:
    return value if isinstance(value, str) and value else None


def _resource(category: str, attributes: Mapping[str, Any]) -> Optional[str]:
    """Pay-i's resource name of a call of the service filed under ``category``
    (``Service.ingest_resource``: ``google.`` + Gemini's model version, ``anthropic.`` + a
    Claude model on Vertex AI, as Pay-i's SDK names them); else the request's model (the
    response's when the request names none)."""
    request = _text(attributes.get("gen_ai.request.model"))
    response = _text(attributes.get("gen_ai.response.model"))
    named = _resources().get(category)
    if named is not None:
        return named(request, response)
    return request or response


#: Parameters sent as ``ingest.units`` keyword arguments (the client puts the attribution
#: ones in ``xProxy-*`` headers of the ingest request, the properties in its body).
#: ``experience_*`` and ``request_tags`` have no place there (the client drops request tags).
_INGEST_ARGUMENTS: Mapping[str, str] = {
    "use_case_name": "use_case_name",
    "use_case_id": "use_case_id",
    "use_case_version": "use_case_version",
    "use_case_step": "use_case_step",
    "use_case_properties": "use_case_properties",
    "limit_ids": "limit_ids",
    "user_id": "user_id",
    "account_name": "account_name",
    "request_properties": "properties",
    "resource_scope": "resource_scope",
}


def _int(value: object) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@derived
def _uncached_input_scopes() -> Tuple[str, ...]:
    """Instrumentation scopes whose spans' input tokens leave out the cache counts (every
    registered provider's ``uncached_input_scopes``)."""
    return tuple(scope for p in providers() for scope in p.uncached_input_scopes)


def _input_includes_cache(span: ReadableSpan) -> bool:
    scope = getattr(span.instrumentation_scope, "name", None) or ""
    uncached = _uncached_input_scopes()
    return not (uncached and scope.startswith(uncached))


def _units(
    attributes: Mapping[str, Any], input_includes_cache: bool = True
) -> Dict[str, Dict[str, int]]:
    """Pay-i's units: ``text`` (input without the cached tokens), ``text_cache_read``,
    ``text_cache_write``, ``reasoning`` (out of the output) when not zero. The span's input
    count includes the cached tokens (the GenAI conventions), unless ``input_includes_cache``
    is False (an instrumentation that reports the provider's uncached count as it is)."""
    input_tokens = _int(attributes.get("gen_ai.usage.input_tokens")) or 0
    output_tokens = _int(attributes.get("gen_ai.usage.output_tokens")) or 0
    read = _int(attributes.get("gen_ai.usage.cache_read.input_tokens")) or 0
    write = (
        _int(attributes.get("gen_ai.usage.cache_creation.input_tokens"))
        or _int(attributes.get("gen_ai.usage.cache_write.input_tokens"))
        or 0
    )
    reasoning = _int(attributes.get("gen_ai.usage.reasoning.output_tokens")) or 0
    units: Dict[str, Dict[str, int]] = {}
    if read:
        units["text_cache_read"] = {"input": read, "output": 0}
    if write:
        units["text_cache_write"] = {"input": write, "output": 0}
    if reasoning:
        units["reasoning"] = {"input": 0, "output": reasoning}
    if input_includes_cache:
        input_tokens -= read + write
    units["text"] = {
        "input": max(input_tokens, 0),
        "output": max(output_tokens - reasoning, 0),
    }
    return units


def _category(attributes: Mapping[str, Any]) -> str:
    provider = attributes.get("gen_ai.provider.name") or attributes.get("gen_ai.system") or ""
    address = str(attributes.get("server.address") or "")
    for pattern, category in _addressed().get(str(provider), ()):
        if fnmatch.fnmatchcase(address, pattern):
            return category
    return categories().get(str(provider), f"system.{provider}" if provider else "system.unknown")


def ingest_record(span: ReadableSpan) -> Dict[str, Any]:
    """The ``ingest.units`` keyword arguments for one GenAI span."""
    attributes: Mapping[str, Any] = span.attributes or {}
    params = params_from_attributes(attributes)
    # The service the call went to: another than its SDK's own says so on the span (an
    # Azure OpenAI / Claude-on-Bedrock / Claude-on-Vertex call); else its GenAI name's.
    service = str(attributes.get(CATEGORY_ATTRIBUTE) or _category(attributes))
    record: Dict[str, Any] = {
        "category": params.get("price_as_category") or service,
        "resource": params.get("price_as_resource")
        or _resource(service, attributes)
        or "system.unknown_model",
        "units": _units(attributes, _input_includes_cache(span)),
    }
    if span.start_time is not None:
        record["event_timestamp"] = datetime.fromtimestamp(span.start_time / 1e9, timezone.utc)
        if span.end_time is not None:
            record["end_to_end_latency_ms"] = (span.end_time - span.start_time) // 1_000_000
    first_chunk = attributes.get("gen_ai.response.time_to_first_chunk")
    if isinstance(first_chunk, (int, float)) and not isinstance(first_chunk, bool):
        record["time_to_first_token_ms"] = int(first_chunk * 1000)
    status = _int(attributes.get("http.response.status_code"))
    if status is None and span.status.status_code is not StatusCode.ERROR:
        status = 200
    if status is not None:
        record["http_status_code"] = status
    response_id = attributes.get("gen_ai.response.id")
    if isinstance(response_id, str):
        record["provider_response_id"] = response_id
    url = attributes.get("url.full")
    if isinstance(url, str):
        record["provider_uri"] = url
    for name, argument in _INGEST_ARGUMENTS.items():
        if name in params:
            value = params[name]
            record[argument] = list(value) if isinstance(value, tuple) else value
    return record


class PayiIngestExporter(SpanExporter):
    """Sends every finished GenAI span to Pay-i's ingest API (use behind a
    ``BatchSpanProcessor``).

    ``api_key`` / ``base_url`` default to ``PAYI_API_KEY`` / ``PAYI_BASE_URL`` as Pay-i's client
    reads them; ``client`` is a ready ``payi.Payi`` instead. ``max_retries`` (with the
    client's exponential backoff) and ``timeout`` apply to each record; ``export_timeout``
    bounds one batch.
    """

    #: How many ingested span ids are remembered to skip their outer GenAI spans.
    SEEN_LIMIT = 4096

    def __init__(
        self,
        api_key: Optional[str] = None,
        base_url: Optional[str] = None,
        *,
        client: Any = None,
        max_retries: int = 3,
        timeout: float = 10.0,
        export_timeout: float = 30.0,
    ) -> None:
        self._options: Dict[str, Any] = {
            "api_key": api_key,
            "base_url": base_url,
            "max_retries": max_retries,
            "timeout": timeout,
        }
        self._client = client
        self._export_timeout = export_timeout
        self._lock = threading.Lock()
        self._stats = {"exported": 0, "failed": 0, "dropped": 0, "skipped": 0}
        self._parents: OrderedDict[Tuple[int, int], None] = OrderedDict()
        self._unavailable = False
        self._shutdown = False
        if client is None:
            try:
                import payi  # noqa: F401
            except ImportError:
                self._unavailable = True
                logger.warning(
                    "payi_otel: PayiIngestExporter needs Pay-i's client library, which is not "
                    "installed; no usage is sent to Pay-i. Install it with: %s",
                    INSTALL_HINT,
                )

    def stats(self) -> Mapping[str, int]:
        """Counts so far: ``exported`` (Pay-i accepted), ``failed`` (Pay-i refused or could not
        be reached after retries), ``dropped`` (not tried: Pay-i down in that batch, the batch
        out of time, no client), ``skipped`` (spans that are not a GenAI call)."""
        with self._lock:
            return dict(self._stats)

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._stats[key] += n

    def _get_client(self) -> Any:
        if self._client is None and not self._unavailable:
            try:
                from payi import Payi

                options = {k: v for k, v in self._options.items() if v is not None}
                self._client = Payi(**options)
            except Exception as exc:  # e.g. no PAYI_API_KEY
                self._unavailable = True
                logger.warning(
                    "payi_otel: PayiIngestExporter cannot create Pay-i's client "
                    "(%s); no usage is sent to Pay-i",
                    exc,
                )
        return self._client

    def _calls(self, spans: Sequence[ReadableSpan]) -> List[ReadableSpan]:
        """The GenAI spans of ``spans`` that are calls (not the outer span of one)."""
        calls = []
        for span in spans:
            context = span.get_span_context()
            key = (context.trace_id, context.span_id) if context else (0, 0)
            if not is_genai_span(span) or key in self._parents:
                self._parents.pop(key, None)  # the outer span of an ingested call
                self._count("skipped")
                continue
            calls.append(span)
            if span.parent is not None:
                self._parents[(span.parent.trace_id, span.parent.span_id)] = None
                while len(self._parents) > self.SEEN_LIMIT:
                    self._parents.popitem(last=False)
        return calls

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            calls = self._calls(spans)
            if not calls:
                return SpanExportResult.SUCCESS
            client = None if self._shutdown else self._get_client()
            if client is None:
                self._count("dropped", len(calls))
                return SpanExportResult.FAILURE
            with suppress_instrumentation():
                return self._send(client, calls)
        except Exception:  # never raise into the processor's worker
            logger.exception("payi_otel: PayiIngestExporter failed")
            return SpanExportResult.FAILURE

    def _send(self, client: Any, calls: List[ReadableSpan]) -> SpanExportResult:
        from payi import APIConnectionError, APIStatusError

        deadline = time.monotonic() + self._export_timeout
        result = SpanExportResult.SUCCESS
        for index, span in enumerate(calls):
            if self._shutdown or time.monotonic() > deadline:
                self._count("dropped", len(calls) - index)
                return SpanExportResult.FAILURE
            try:
                answer = client.ingest.units(**ingest_record(span))
                self._count("exported")
                logger.debug("payi_otel: Pay-i ingest answered %r", answer)
            except (APIConnectionError, APIStatusError) as exc:
                self._count("failed")
                result = SpanExportResult.FAILURE
                status = getattr(exc, "status_code", None)
                logger.debug("payi_otel: Pay-i ingest failed: %r", exc)
                if status is None or status >= 500 or status == 429:
                    # Pay-i is down or overloaded after the client's retries: the rest of
                    # this batch is not tried (the next batch tries again).
                    self._count("dropped", len(calls) - index - 1)
                    return result
        return result

    def shutdown(self) -> None:
        self._shutdown = True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

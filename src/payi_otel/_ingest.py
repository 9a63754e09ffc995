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
import json
import os
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Optional, Tuple

from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, StatusCode

from payi_otel import _environment as env
from payi_otel import _settings
from payi_otel._ingest_queue import (
    IngestQueue,
    Item,
    QueueOptions,
    Refused,
    Retry,
    Unavailable,
)
from payi_otel._log import internal_error, log_once, logger
from payi_otel._model.attributes import params_from_attributes
from payi_otel._model.codec import to_header_value
from payi_otel._model.dialects import PAYI_PROXY
from payi_otel._payi_answer import answer_attributes, answer_of, note_answer
from payi_otel._providers import CallRecord, Service, derived, is_generation, providers
from payi_otel._spans import CATEGORY_ATTRIBUTE, NOT_CALLS, is_call_span, is_genai_span
from payi_otel._spool import DEFAULT_MAX_BYTES, Spool

__all__ = [
    "INSTALL_HINT",
    "NOT_CALLS",
    "PayiIngestExporter",
    "call_record",
    "categories",
    "ingest_exporter",
    "ingest_record",
    "is_inference",
    "is_proxied",
]

INSTALL_HINT = "pip install 'payi>=0.1.0a183' (the payi-otel[payi] extra)"


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
    return resource_name(
        category,
        _text(attributes.get("gen_ai.request.model")),
        _text(attributes.get("gen_ai.response.model")),
    )


def resource_name(category: str, request: Optional[str], response: Optional[str]) -> Optional[str]:
    """Pay-i's resource name of a call of the service filed under ``category``
    (``Service.ingest_resource``: ``google.`` + Gemini's model version, ``anthropic.`` + a
    Claude model on Vertex AI, as Pay-i's SDK names them); else the request's model (the
    response's when the request names none)."""
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
    """Pay-i's units of a span's ``gen_ai.usage.*`` counts (:func:`units`)."""
    return units(
        _int(attributes.get("gen_ai.usage.input_tokens")) or 0,
        _int(attributes.get("gen_ai.usage.output_tokens")) or 0,
        _int(attributes.get("gen_ai.usage.cache_read.input_tokens")) or 0,
        _int(attributes.get("gen_ai.usage.cache_creation.input_tokens"))
        or _int(attributes.get("gen_ai.usage.cache_write.input_tokens"))
        or 0,
        _int(attributes.get("gen_ai.usage.reasoning.output_tokens")) or 0,
        input_includes_cache,
    )


def units(
    input_tokens: int,
    output_tokens: int,
    read: int = 0,
    write: int = 0,
    reasoning: int = 0,
    input_includes_cache: bool = True,
    write_1h: int = 0,
) -> Dict[str, Dict[str, int]]:
    """Pay-i's units: ``text`` (input without the cached tokens), ``text_cache_read``,
    ``text_cache_write`` (the cache writes kept 5 minutes), ``text_cache_write_1h`` (those
    kept an hour, ``write_1h`` of ``write``), ``reasoning`` (out of the output) when not
    zero, as Pay-i's SDK reports them. The input count includes the cached tokens (the
    GenAI conventions, ``Usage``), unless ``input_includes_cache`` is False (an
    instrumentation that reports the provider's uncached count as it is)."""
    found: Dict[str, Dict[str, int]] = {}
    if read:
        found["text_cache_read"] = {"input": read, "output": 0}
    write_1h = min(max(write_1h, 0), write)
    if write - write_1h:
        found["text_cache_write"] = {"input": write - write_1h, "output": 0}
    if write_1h:
        found["text_cache_write_1h"] = {"input": write_1h, "output": 0}
    if reasoning:
        found["reasoning"] = {"input": 0, "output": reasoning}
    if input_includes_cache:
        input_tokens -= read + write
    found["text"] = {
        "input": max(input_tokens, 0),
        "output": max(output_tokens - reasoning, 0),
    }
    return found


def _category(attributes: Mapping[str, Any]) -> str:
    provider = attributes.get("gen_ai.provider.name") or attributes.get("gen_ai.system") or ""
    address = str(attributes.get("server.address") or "")
    for pattern, category in _addressed().get(str(provider), ()):
        if fnmatch.fnmatchcase(address, pattern):
            return category
    return categories().get(str(provider), f"system.{provider}" if provider else "system.unknown")


def _timestamp(seconds: float) -> str:
    """An event time as Pay-i's client sends a ``datetime`` (ISO 8601), kept as text so a
    record is JSON as it is (the spool)."""
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat()


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
        record["event_timestamp"] = _timestamp(span.start_time / 1e9)
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
    record.update(attribution(params))
    return record


#: ``ingest.units`` arguments Pay-i's client sends in ``xProxy-*`` headers (the rest go in
#: the body, as JSON).
_IN_HEADERS = frozenset(
    {
        "use_case_name",
        "use_case_id",
        "use_case_version",
        "use_case_step",
        "limit_ids",
        "user_id",
        "account_name",
    }
)


def attribution(params: Mapping[str, Any]) -> Dict[str, Any]:
    """The attribution arguments of ``ingest.units`` from resolved parameters (a cleared
    one - ``""``, ``[]``, ``{}`` - is not sent, as Pay-i's SDK sends none). A value that goes
    in a header is in the form a call's own ``xProxy-*`` header carries it (the codec's:
    percent-encoded where it cannot go as it is, e.g. non-ASCII): as given, the HTTP client
    refuses the header, and the record was lost."""
    found: Dict[str, Any] = {}
    for name, argument in _INGEST_ARGUMENTS.items():
        value = params.get(name)
        if value is not None and value != "" and value != () and value != {}:
            if argument in _IN_HEADERS:
                if isinstance(value, str):
                    value = to_header_value(value)
                elif isinstance(value, tuple):
                    value = tuple(to_header_value(v) if isinstance(v, str) else v for v in value)
            found[argument] = list(value) if isinstance(value, tuple) else value
    return found


# --- one record per inference call, from the provider seam's CallRecord --------------------


@derived
def _own_services() -> Mapping[str, Service]:
    """Each registered provider's name -> its own service (the first of its services)."""
    return {p.name: p.services[0] for p in providers() if p.services}


@derived
def _cache_units() -> Mapping[str, Tuple[bool, bool]]:
    """Each registered provider's name -> how Pay-i's SDK reports its cache writes
    (``Provider.ingests_cache_writes``, ``ingests_hour_cache_writes``)."""
    return {p.name: (p.ingests_cache_writes, p.ingests_hour_cache_writes) for p in providers()}


def _status_of(error: BaseException) -> Optional[int]:
    """The HTTP status of a failed call: the Stainless SDKs' ``status_code``, botocore's
    ``ClientError`` (its response's metadata), google-genai's ``APIError`` (``code``, its
    response's ``status_code``)."""
    status = _int(getattr(error, "status_code", None))
    if status is None:
        response = getattr(error, "response", None)
        if isinstance(response, Mapping):
            metadata = response.get("ResponseMetadata")
            if isinstance(metadata, Mapping):
                status = _int(metadata.get("HTTPStatusCode"))
        elif response is not None:
            status = _int(getattr(response, "status_code", None))
    if status is None:
        code = _int(getattr(error, "code", None))
        status = code if code is not None and 100 <= code <= 599 else None
    return status


def _response_id(response: object) -> Optional[str]:
    value = response.get("id") if isinstance(response, Mapping) else getattr(response, "id", None)
    return value if isinstance(value, str) and value else None


def is_inference(record: CallRecord) -> bool:
    """Whether a completed call is an inference call Pay-i bills: a generation
    (``_registry.is_generation``: ``responses.retrieve``, ``models.list``, files are not), and
    it reached the provider (no error, an error with an HTTP status, or a stream the provider
    had begun to answer when it broke or was cancelled: :func:`_answered`)."""
    if not is_generation(record):
        return False
    error = record.error
    return error is None or _status_of(error) is not None or _answered(record)


def _answered(record: CallRecord) -> bool:
    """A failed call the provider answered: a stream whose first item came, or a call whose
    usage was read (a stream's, or the reply an SDK raised with: ``Provider.reply_of``).
    Billed by the provider (reviews found such calls counted in the metrics, never sent to
    Pay-i)."""
    if record.usage is not None:
        return True
    return record.streamed and record.first_item_s is not None


def is_proxied(record: CallRecord) -> bool:
    """Whether Pay-i already saw the call: it went to Pay-i's proxy (the ``payi-proxy``
    dialect, to a host that gets the headers), or its response carries Pay-i's answer."""
    wire = _settings.current.wire
    url = record.request.url if record.request is not None else None
    if wire.dialect.name == PAYI_PROXY.name and wire.sends_to(url):
        return True
    return answer_of(record.response) is not None


def call_record(record: CallRecord) -> Dict[str, Any]:
    """The ``ingest.units`` keyword arguments of one completed inference call, with its
    ``provider_response_id`` (the provider's response id, else a fresh ``payi_<uuid>``, as
    Pay-i's SDK makes one)."""
    params = record.call.params
    service = record.service or _own_services().get(record.provider)
    category = (service.category if service is not None else None) or f"system.{record.provider}"
    usage = record.usage
    writes, hour = _cache_units().get(record.provider, (True, False))
    out: Dict[str, Any] = {
        "category": params.get("price_as_category") or category,
        "resource": params.get("price_as_resource")
        or resource_name(category, record.request_model, record.response_model)
        or "system.unknown_model",
        "units": units(
            (usage.input_tokens or 0) if usage else 0,
            (usage.output_tokens or 0) if usage else 0,
            (usage.cache_read_tokens or 0) if usage else 0,
            (usage.cache_write_tokens or 0) if usage and writes else 0,
            (usage.reasoning_tokens or 0) if usage else 0,
            write_1h=(usage.cache_write_1h_tokens or 0) if usage and hour else 0,
        ),
        "event_timestamp": _timestamp(record.started_at or time.time() - record.duration_s),
        "end_to_end_latency_ms": int(record.duration_s * 1000),
    }
    if record.streamed and record.first_item_s is not None:
        out["time_to_first_token_ms"] = int(record.first_item_s * 1000)
    status = 200 if record.error is None or _answered(record) else _status_of(record.error)
    if status is not None:
        out["http_status_code"] = status
    out["provider_response_id"] = _response_id(record.response) or f"payi_{uuid.uuid4()}"
    out.update(attribution(params))
    # The call's resolved switch: global level, scopes, the call's own headers - where
    # ``xProxy-Logging-Disable`` (any value) is False (docs/parameters.md). Off unless given.
    if params.get("log_prompt_and_response") is True:
        out.update(prompt_and_response(record))
    return out


def _request_options(record: CallRecord) -> Any:
    """The request options of a call through a Stainless SDK (openai, anthropic): the
    argument with the request's JSON body."""
    if record.arguments is None:
        return None
    args, kwargs = record.arguments
    for value in (*args, *kwargs.values()):
        if hasattr(value, "json_data") and hasattr(value, "headers"):
            return value
    return None


_NOT_GIVEN = frozenset({"Omit", "NotGiven", "Omitted"})


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def prompt_and_response(record: CallRecord) -> Dict[str, Any]:
    """``provider_request_json`` (the request's JSON body, compact) and
    ``provider_response_json`` (a list with the response's JSON; a stream's items are not
    kept), as Pay-i's SDK sends them with ``log_prompt_and_response``."""
    out: Dict[str, Any] = {}
    options = _request_options(record)
    body: object = None
    if options is not None:
        body = options.json_data
    elif record.arguments is not None:  # botocore: (operation, params); others: keywords
        args, kwargs = record.arguments
        body = next((a for a in args if isinstance(a, Mapping)), None) or kwargs or None
    if isinstance(body, Mapping):
        # Not the SDKs' "not given" markers (anthropic leaves ``Omit`` in its body's data).
        body = {
            k: v
            for k, v in body.items()
            if k != "extra_headers" and type(v).__name__ not in _NOT_GIVEN
        }
        out["provider_request_json"] = _json(body)
    response = record.response
    if response is not None and not record.streamed:
        dump = getattr(response, "model_dump", None)
        data = dump(mode="json") if callable(dump) else response
        if isinstance(data, Mapping):
            out["provider_response_json"] = [_json(data)]
    return out


# --- the exporter: per call, or as a span exporter ------------------------------------------

#: Whether an exporter takes every call from the provider seam (then no span exporter sends
#: records too: one record per call).
_per_call: Optional[PayiIngestExporter] = None


class PayiIngestExporter(SpanExporter):
    """Sends one Pay-i ingest record per inference call.

    **Per call** (complete, whatever the trace sampling): ``payi_instrument(ingest=True)`` (or
    ``PAYI_INGEST=true``), or ``payi_instrument(ingest=PayiIngestExporter(...))`` to set its
    options: every completed inference call of the provider seam, sampled or not, becomes
    one record. **As a span exporter** (behind a ``BatchSpanProcessor``): each exported
    GenAI call span becomes one record - only as complete as the sampling lets spans through
    (``ALWAYS_ON``); while an exporter takes calls per call, span exporters send nothing.

    Either way the record goes through one bounded queue and one worker (``_ingest_queue``):
    ``timeout`` bounds each attempt; a record Pay-i does not take is retried for
    ``retry_for`` seconds (or ``max_retries`` retries); ``max_queue`` bounds memory;
    ``shutdown_timeout`` bounds :meth:`shutdown`; ``spool`` (a file path; or
    ``PAYI_INGEST_SPOOL``) keeps unsent records across a crash, up to ``spool_max_bytes``.
    ``api_key`` / ``base_url`` default to ``PAYI_API_KEY`` / ``PAYI_BASE_URL`` as Pay-i's
    client reads them; ``client`` is a ready ``payi.Payi`` instead.
    """

    #: How many ingested span ids are remembered to skip their outer GenAI spans.
    SEEN_LIMIT = 4096

    def __init__(
        self,
        api_key: Optional[str] = None,
        base_url: Optional[str] = None,
        *,
        client: Any = None,
        timeout: float = 10.0,
        retry_for: float = QueueOptions.retry_for,
        max_retries: Optional[int] = QueueOptions.max_retries,
        max_queue: int = QueueOptions.max_queue,
        shutdown_timeout: float = QueueOptions.shutdown_timeout,
        export_timeout: float = 30.0,
        spool: Optional[str] = None,
        spool_max_bytes: int = DEFAULT_MAX_BYTES,
        meter_provider: Optional[MeterProvider] = None,
        backoff: float = QueueOptions.backoff,
        max_backoff: float = QueueOptions.max_backoff,
    ) -> None:
        for name, value in (
            ("timeout", timeout),
            ("retry_for", retry_for),
            ("shutdown_timeout", shutdown_timeout),
            ("export_timeout", export_timeout),
            ("backoff", backoff),
            ("max_backoff", max_backoff),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 1:
            raise ValueError(f"max_queue must be a positive int, got {max_queue!r}")
        self._options: Dict[str, Any] = {
            "api_key": api_key,
            "base_url": base_url,
            "max_retries": 0,  # retried by the queue, within its deadlines
            "timeout": timeout,
        }
        self._client = client
        #: Whether Pay-i's client is one this exporter makes (:meth:`_get_client`): a forked
        #: child makes its own (the parent's pools its connections).
        self._makes_client = client is None
        _exporters.add(self)
        self._export_timeout = export_timeout
        self._lock = threading.Lock()
        self._skipped = 0
        self._parents: OrderedDict[Tuple[int, int], None] = OrderedDict()
        self._unavailable = False
        self._shutdown = False
        if spool is None:
            spool = os.environ.get(env.INGEST_SPOOL) or None
        options = QueueOptions(
            max_queue, retry_for, max_retries, backoff, max_backoff, shutdown_timeout
        )
        self._queue = IngestQueue(
            self._send,
            options,
            spool=None if spool is None else Spool(spool, spool_max_bytes),
            on_answer=self._answered,
            meter_provider=meter_provider,
        )
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

    # -- counts ---------------------------------------------------------------------------------

    def stats(self) -> Mapping[str, int]:
        """Records so far, each counted once as ``exported`` (Pay-i took it), ``failed``
        (Pay-i refused it, or could not be reached for ``retry_for``), ``dropped`` (queue
        full, after shutdown, or unsent at shutdown without a spool) or ``spooled`` (unsent
        at shutdown, in the spool for the next start); ``replayed`` (records of an earlier
        run sent again from the spool), ``pending`` (not settled yet), ``skipped`` (spans
        that are no call, as a span exporter)."""
        with self._lock:
            skipped = self._skipped
        return {**self._queue.stats(), "skipped": skipped}

    def _drops(self) -> bool:
        """Whether a record is dropped as it comes: the exporter is shut down, or it cannot
        send (no client) and no spool keeps the record for a start that can."""
        return self._shutdown or (self._unavailable and not self._queue.spooling)

    # -- per call -------------------------------------------------------------------------------

    def __call__(self, record: CallRecord) -> None:
        """The response observer: one record per completed inference call not already seen
        by Pay-i (a proxied call's answer is read from its response: ``_payi_answer``)."""
        try:
            if not is_inference(record) or is_proxied(record):
                return
            if self._drops():
                self._queue.drop()  # (shut down: said when it was given again, attach())
                return
            body = call_record(record)
            self._queue.submit(body["provider_response_id"], body, record.span)
        except Exception:
            internal_error("ingest", "making a Pay-i ingest record failed")

    def attach(self) -> Callable[[], None]:
        """Take every call from the provider seam (``payi_instrument(ingest=...)`` does it);
        returns the undo."""
        global _per_call
        if self._shutdown:
            logger.warning(
                "payi_otel: payi_instrument(ingest=...) was given a PayiIngestExporter that is "
                "shut down (uninstrument() shuts its exporter down): its records are dropped, "
                "nothing is sent to Pay-i. Pass a new PayiIngestExporter(...)"
            )
        _per_call = self
        remove = _settings.add_observer(self)

        def detach() -> None:
            global _per_call
            remove()
            if _per_call is self:
                _per_call = None
            self.shutdown()

        return detach

    # -- as a span exporter ---------------------------------------------------------------------

    def _calls(self, spans: Sequence[ReadableSpan]) -> List[ReadableSpan]:
        """The GenAI spans of ``spans`` that are billed calls (not the outer span of one). A
        span that names no GenAI operation is an SDK's span of an API call that is no
        inference (anthropic's own spans of ``count_tokens``, ``models.list``, files): never
        a Pay-i request, as in the per-call form (a review found them sent as billed)."""
        calls = []
        for span in spans:
            context = span.get_span_context()
            key = (context.trace_id, context.span_id) if context else (0, 0)
            operation = (span.attributes or {}).get("gen_ai.operation.name")
            if (
                not is_genai_span(span)
                or key in self._parents
                or not is_call_span(span)
                or not isinstance(operation, str)
                or not operation
            ):
                self._parents.pop(key, None)  # the outer span of an ingested call
                with self._lock:
                    self._skipped += 1
                continue
            calls.append(span)
            if span.parent is not None:
                self._parents[(span.parent.trace_id, span.parent.span_id)] = None
                while len(self._parents) > self.SEEN_LIMIT:
                    self._parents.popitem(last=False)
        return calls

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Queue one record per GenAI call span (never waits for Pay-i)."""
        try:
            if _per_call is not None:
                log_once(
                    "ingest-span-and-call",
                    "payi_otel: PayiIngestExporter as a span exporter sends nothing while "
                    "payi_instrument(ingest=...) sends every call (one record per call)",
                )
                with self._lock:
                    self._skipped += len(spans)
                return SpanExportResult.SUCCESS
            # A span exporter: closed by the tracer provider's shutdown, not at exit.
            self._queue.closes_at_exit = False
            for span in self._calls(spans):
                body = ingest_record(span)
                body.setdefault("provider_response_id", f"payi_{uuid.uuid4()}")
                if self._drops():
                    self._queue.drop()
                    continue
                self._queue.submit(body["provider_response_id"], body, span.get_span_context())
            return SpanExportResult.SUCCESS
        except Exception:  # never raise into the processor's worker
            internal_error("ingest-export", "PayiIngestExporter failed")
            return SpanExportResult.FAILURE

    # -- sending ---------------------------------------------------------------------------------

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

    def _send(self, item: Item) -> Any:
        client = self._get_client()
        if client is None:
            raise Unavailable("no Pay-i client")
        from payi import APIConnectionError, APIStatusError

        record = item.record
        with suppress_instrumentation():
            try:
                return client.ingest.units(
                    **record, extra_query={"id": record["provider_response_id"]}
                )
            except APIStatusError as error:
                if error.status_code in (408, 429) or error.status_code >= 500:
                    raise Retry(f"Pay-i answered {error.status_code}") from None
                if error.status_code in (401, 403):  # the key, not the record
                    raise Unavailable(f"Pay-i answered {error.status_code}") from None
                raise Refused(f"Pay-i answered {error.status_code}: {error.body}") from None
            except APIConnectionError as error:  # unreachable, reset, timed out
                raise Retry(f"{type(error).__name__}: {error.__cause__ or error}") from None
            except json.JSONDecodeError:
                # A 2xx whose body is not JSON: Pay-i took the record, its answer is unknown.
                # (Only that: any other error is the record's failure, counted as one.)
                log_once(
                    "ingest-not-json",
                    "payi_otel: Pay-i answered an ingest record with a body that is not JSON; "
                    "the record counts as exported, its answer is unknown",
                )
                return None

    def _answered(self, item: Item, reply: Any) -> None:
        answer = answer_of(reply)
        if answer is None:
            return
        note_answer(answer)
        logger.debug("payi_otel: Pay-i ingest answered %r", answer)
        _answer_span(item.context, answer)

    def shutdown(self) -> None:
        self._shutdown = True
        self._queue.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._queue.flush(min(timeout_millis / 1000, self._export_timeout))


#: Every live exporter, for a forked child (:func:`_after_fork_in_child`).
_exporters: weakref.WeakSet[PayiIngestExporter] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """In a forked child, an exporter that made Pay-i's client makes a new one: the parent's
    pools connections the parent still reads from (a request sent on one, its answer lost,
    was sent again: a duplicate Pay-i had to drop)."""
    for exporter in list(_exporters):
        if exporter._makes_client:
            exporter._client = None


if hasattr(os, "register_at_fork"):  # once, at import
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _answer_span(context: object, answer: Mapping[str, Any]) -> None:
    """Pay-i's answer to an ingested call, which comes after the call's span ended: on a
    short ``payi ingest`` span, a child of the call's span (so it shows under the call and
    is sampled with it)."""
    if isinstance(context, Span):
        context = context.get_span_context()
    if (
        not isinstance(context, SpanContext)
        or not context.is_valid
        or not context.trace_flags.sampled
    ):
        return
    tracer = _settings.current.tracer
    parent = trace.set_span_in_context(NonRecordingSpan(context))
    with suppress_instrumentation():
        span = tracer.start_span(
            "payi ingest",
            context=parent,
            kind=SpanKind.CLIENT,
            attributes=answer_attributes(answer),
        )
        span.end()


def ingest_exporter(
    given: object, meter_provider: Optional[MeterProvider] = None
) -> PayiIngestExporter:
    """The exporter ``payi_instrument(ingest=...)`` sends every call with: the one given, or
    a new one (``True`` / ``PAYI_INGEST``) with its defaults."""
    if isinstance(given, PayiIngestExporter):
        return given
    if given is not None and not isinstance(given, bool):
        raise TypeError(
            f"ingest must be a bool or a PayiIngestExporter, not {type(given).__name__}"
        )
    return PayiIngestExporter(meter_provider=meter_provider)

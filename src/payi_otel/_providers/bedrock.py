"""AWS Bedrock through ``boto3`` / ``botocore`` behind the seam: the ``bedrock-runtime``
operations ``converse``, ``converse_stream``, ``invoke_model`` and
``invoke_model_with_response_stream`` (sync; aiobotocore's async client: ``aiobotocore.py``).

* **Entry**: ``botocore.client.BaseClient._make_api_call(operation_name, api_params)``, once
  per logical call, whatever the client (every AWS service goes through it: :meth:`read` is
  None for any other service or operation, which then pass untouched). genai-bedrock wraps the
  same method, so the entry is wrapped beneath whatever is already there
  (``PatchPoint.beneath``): its GenAI span is current when the call is read.
* **Per-call overrides**: botocore has no per-call headers parameter, so payi_otel takes the
  one Pay-i's SDK users already write, ``extra_headers={...}`` on these four operations: taken
  out of the call before botocore validates it (:meth:`prepare`; without payi_otel botocore
  refuses it). Its ``x-payi-*`` / ``xProxy-*`` entries are the call's level (the same rules as
  every provider's per-call headers); its other entries are sent as they are.
* **Send**: ``botocore.endpoint.Endpoint.prepare_request(request)``, once per attempt (botocore
  builds and signs the request again for each retry), after SigV4 signing: the headers are not
  among the signed ones, so a gateway may read or strip them without breaking the signature
  (AWS ignores unsigned headers it does not know). Every attempt gets the headers resolved
  once at the entry. botocore follows no redirect. A header botocore has signed is never
  changed (that would break the signature).
* **Wire**: the public ``bedrock-runtime`` hosts are refused by the default policy; a gateway
  or Pay-i proxy ``endpoint_url`` gets the headers in the dialect in force.
* **Usage**: Converse's ``usage`` and ConverseStream's ``metadata`` event (``inputTokens``
  leaves out cache reads and writes: :meth:`usage_totals` adds them); InvokeModel's response
  headers (``x-amzn-bedrock-input-token-count``, ... - its body is the caller's, never read
  here); InvokeModelWithResponseStream's ``amazon-bedrock-invocationMetrics`` in its last
  chunk. The streams nest in the response (``response["stream"]``, ``response["body"]``).
* **Native attribution** (``native_attribution=True``): the use case, user and account also go
  in the request's ``requestMetadata`` (AWS invocation logs), within AWS's limits; the
  caller's own entries win.
* **Spans**: opentelemetry-instrumentation-genai-bedrock; opentelemetry-instrumentation-botocore
  makes Bedrock GenAI spans too, and cannot be switched off for Bedrock only: while
  genai-bedrock is on, botocore's Bedrock spans of these operations are not made (its spans of
  every other AWS service stay), with one WARNING (:meth:`patch_more`).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import string
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Callable, ClassVar, Dict, FrozenSet, List, Optional, Tuple

import wrapt

from payi_otel import _settings
from payi_otel._destinations import sends_to
from payi_otel._log import internal_error, log_once, logger
from payi_otel._model.codec import format_value
from payi_otel._model.dialects import is_attribution_header
from payi_otel._model.effective import Effective
from payi_otel._model.in_force import emitted
from payi_otel._model.parameters import (
    ATTRIBUTE_NAMES,
    ParameterTypeError,
    ParameterValueError,
)
from payi_otel._providers._base import (
    Args,
    Call,
    Instrumentation,
    Kwargs,
    PatchPoint,
    Provider,
    Role,
    Usage,
)
from payi_otel._providers._clouds import BEDROCK
from payi_otel._wrapping import unwrapper

__all__ = ["NATIVE_PARAMETERS", "BedrockProvider", "native_entries"]

SERVICE = "bedrock-runtime"
#: The operations read here (genai-bedrock's); any other goes out untouched.
OPERATIONS = frozenset(
    {"Converse", "ConverseStream", "InvokeModel", "InvokeModelWithResponseStream"}
)
_CONVERSE = frozenset({"Converse", "ConverseStream"})
#: The per-call headers option payi_otel takes on those operations (Pay-i's SDK's name).
EXTRA_HEADERS = "extra_headers"
#: The DNS suffixes of AWS's partitions, as botocore's ``partitions.json`` names them (its
#: ``dnsSuffix`` and dual-stack ``dualStackDnsSuffix``): commercial and GovCloud, China, the
#: European sovereign cloud, and the ISO partitions (``tests/test_bedrock.py`` holds this to
#: the installed botocore's data).
AWS_DNS_SUFFIXES = (
    "amazonaws.com",
    "api.aws",
    "amazonaws.com.cn",
    "api.amazonwebservices.com.cn",
    "amazonaws.eu",
    "api.amazonwebservices.eu",
    "c2s.ic.gov",
    "api.aws.ic.gov",
    "sc2s.sgov.gov",
    "api.aws.scloud",
    "cloud.adc-e.uk",
    "api.cloud-aws.adc-e.uk",
    "csp.hci.ic.gov",
    "api.aws.hci.ic.gov",
)
#: The public Bedrock runtime hosts in every partition (FIPS too), and its VPC interface
#: endpoints: nobody there reads Pay-i's headers. (A dot follows the service's name: a load
#: balancer of one's own named ``bedrock-runtime-gateway`` is not AWS's.)
HOSTS = tuple(
    pattern
    for suffix in AWS_DNS_SUFFIXES
    for pattern in (
        f"bedrock-runtime.*.{suffix}",
        f"bedrock-runtime-fips.*.{suffix}",
        f"*.bedrock-runtime.*.vpce.{suffix}",
        f"*.bedrock-runtime-fips.*.vpce.{suffix}",
    )
)

#: A Bedrock ARN of anything but a foundation model or a system inference profile names no
#: model (an application inference profile, provisioned throughput, a prompt router, an
#: imported or custom model): genai-prices cannot price it.
_APPLICATION_PROFILE = re.compile(
    r"arn:aws[a-z-]*:bedrock:[^:]*:[0-9]*:(?!foundation-model/|inference-profile/)[a-z-]+/"
)

# -- usage ----------------------------------------------------------------------------------

_METRICS = "amazon-bedrock-invocationMetrics"
_METRICS_BYTES = _METRICS.encode()


def _stream_metrics(item: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
    """The ``amazon-bedrock-invocationMetrics`` of an InvokeModelWithResponseStream chunk:
    the top-level key of its JSON, in the last chunk only (a chunk whose text merely names
    it - the model quoting the word - has none: read as such, it ended the call early
    without usage)."""
    chunk = item.get("chunk")
    data = chunk.get("bytes") if isinstance(chunk, Mapping) else None
    if not isinstance(data, (bytes, bytearray)) or _METRICS_BYTES not in data:
        return None  # (the common chunk: no JSON parsed)
    try:
        parsed = json.loads(data)
    except ValueError:
        return None
    metrics = parsed.get(_METRICS) if isinstance(parsed, Mapping) else None
    return metrics if isinstance(metrics, Mapping) else None


#: InvokeModel's usage response headers (botocore lower-cases them).
_HEADER_USAGE = (
    ("input_tokens", "x-amzn-bedrock-input-token-count"),
    ("output_tokens", "x-amzn-bedrock-output-token-count"),
    ("cache_read_tokens", "x-amzn-bedrock-cache-read-input-token-count"),
    ("cache_write_tokens", "x-amzn-bedrock-cache-write-input-token-count"),
)
#: Converse's ``TokenUsage`` fields.
_CONVERSE_USAGE = (
    ("input_tokens", "inputTokens"),
    ("output_tokens", "outputTokens"),
    ("cache_read_tokens", "cacheReadInputTokens"),
    ("cache_write_tokens", "cacheWriteInputTokens"),
)
#: ``amazon-bedrock-invocationMetrics`` fields.
_STREAM_USAGE = (
    ("input_tokens", "inputTokenCount"),
    ("output_tokens", "outputTokenCount"),
    ("cache_read_tokens", "cacheReadInputTokenCount"),
    ("cache_write_tokens", "cacheWriteInputTokenCount"),
)

# -- native attribution: requestMetadata ----------------------------------------------------

#: The parameters put in ``requestMetadata`` (keys: their ``payi.*`` span attribute names).
NATIVE_PARAMETERS = ("use_case_name", "use_case_id", "user_id", "account_name")
#: AWS's limits (``RequestMetadata``): at most 16 entries, keys 1-256 and values 0-256
#: characters of ``[a-zA-Z0-9 ._:/=+$@-]`` (the charset both the runtime model and the
#: invocation-log filters accept); InvokeModel's JSON text at most 8,500 characters.
_MAX_ENTRIES = 16
_MAX_TEXT = 256
_MAX_JSON = 8500
#: Kept as they are in a value; every other character is escaped as ``$XX`` per UTF-8 byte
#: (percent-encoding, as baggage values are, with ``$`` for ``%``, which AWS refuses).
_KEPT = frozenset(string.ascii_letters + string.digits + " ._:/=+@-")


def _int(value: object) -> Optional[int]:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _usage(source: Mapping[str, Any], fields: Sequence[Tuple[str, str]]) -> Optional[Usage]:
    counts: Dict[str, Any] = {field: _int(source.get(key)) for field, key in fields}
    if all(count is None for count in counts.values()):
        return None
    return Usage(**counts)


def _converse_usage(source: Mapping[str, Any]) -> Optional[Usage]:
    """Converse's ``TokenUsage``, with the cache writes kept an hour (``cacheDetails``: the
    cache writes by TTL, ``1h`` priced above ``5m``)."""
    usage = _usage(source, _CONVERSE_USAGE)
    details = source.get("cacheDetails")
    if usage is None or not isinstance(details, list):
        return usage
    hour = sum(
        _int(d.get("inputTokens")) or 0
        for d in details
        if isinstance(d, Mapping) and d.get("ttl") == "1h"
    )
    return replace(usage, cache_write_1h_tokens=hour) if hour else usage


def aws_text(text: str) -> str:
    """``text`` within AWS's ``requestMetadata`` charset: other characters as ``$XX`` per
    UTF-8 byte (``$`` itself included, so the text decodes back)."""
    if all(c in _KEPT for c in text):
        return text
    return "".join(c if c in _KEPT else "".join(f"${b:02X}" for b in c.encode()) for c in text)


def native_entries(call: Effective) -> Dict[str, str]:
    """The ``requestMetadata`` entries of a call: each of :data:`NATIVE_PARAMETERS` in force,
    under its ``payi.*`` attribute name, its text escaped (:func:`aws_text`); one that is
    still too long is left out (one WARNING)."""
    entries: Dict[str, str] = {}
    for name, value in emitted(call.params):
        if name not in NATIVE_PARAMETERS:
            continue
        text = aws_text(format_value(name, value))
        if len(text) > _MAX_TEXT:
            log_once(
                f"bedrock:metadata-length:{name}",
                "payi_otel: %s is longer than Bedrock's requestMetadata takes (%d characters "
                "once escaped); it is left out of requestMetadata",
                ATTRIBUTE_NAMES[name],
                _MAX_TEXT,
            )
            continue
        entries[ATTRIBUTE_NAMES[name]] = text
    return entries


def _merged(given: Mapping[str, Any], ours: Mapping[str, str]) -> Dict[str, Any]:
    """The caller's entries, and ours whose keys they do not have, at most 16 in all."""
    merged: Dict[str, Any] = dict(given)
    for key, value in ours.items():
        if len(merged) >= _MAX_ENTRIES:
            break
        merged.setdefault(key, value)
    return merged


def _with_metadata(params: Dict[str, Any], operation: object, ours: Mapping[str, str]) -> bool:
    """Put ``ours`` in ``params``' ``requestMetadata`` (a map for Converse, a JSON object's
    text for InvokeModel); False when the caller's is of a shape not ours to change."""
    given = params.get("requestMetadata")
    if operation in _CONVERSE:
        if given is not None and not isinstance(given, Mapping):
            return False
        params["requestMetadata"] = _merged(given or {}, ours)
        return True
    existing: Any = {}
    if given is not None:
        if not isinstance(given, str):
            return False
        try:
            existing = json.loads(given) if given.strip() else {}
        except ValueError:
            return False
        if not isinstance(existing, dict):
            return False
    text = json.dumps(_merged(existing, ours), separators=(",", ":"), ensure_ascii=False)
    if len(text) > _MAX_JSON:
        return False
    params["requestMetadata"] = text
    return True


# -- the caller's extra_headers -------------------------------------------------------------


def _split_extra(extra: object) -> Tuple[Dict[str, object], Dict[str, str]]:
    """``extra_headers``: its attribution entries (for the codec), and the others."""
    if extra is None:
        return {}, {}
    if not isinstance(extra, Mapping):
        raise ParameterTypeError(
            f"extra_headers must be a mapping of header names to values, not {type(extra).__name__}"
        )
    attribution: Dict[str, object] = {}
    other: Dict[str, str] = {}
    for name, value in extra.items():
        if not isinstance(name, str):
            raise ParameterTypeError(f"extra_headers names must be str, not {type(name).__name__}")
        if is_attribution_header(name):
            attribution[name] = value
            continue
        if value is None:
            continue  # not given
        if not isinstance(value, str):
            raise ParameterTypeError(
                f"extra_headers[{name!r}] must be a str, not {type(value).__name__}"
            )
        if any(c in text for text in (name, value) for c in "\r\n\x00"):
            raise ParameterValueError(
                f"extra_headers[{name!r}] must not contain CR, LF or NUL characters"
            )
        other[name] = value
    return attribution, other


def _signed(headers: Any) -> FrozenSet[str]:
    """The names (lower-cased) a SigV4 ``Authorization`` header signed."""
    authorization = headers.get("Authorization")
    if isinstance(authorization, bytes):
        authorization = authorization.decode("latin-1")
    if not isinstance(authorization, str) or "SignedHeaders=" not in authorization:
        return frozenset()
    names = authorization.split("SignedHeaders=", 1)[1].split(",", 1)[0]
    return frozenset(name.strip().lower() for name in names.split(";"))


# -- opentelemetry-instrumentation-botocore's Bedrock spans ---------------------------------

_BOTOCORE_EXTENSIONS = "opentelemetry.instrumentation.botocore.extensions"


def _quiet_loader(original: Callable[[], Any], on: Callable[[], bool]) -> Callable[[], Any]:
    """A loader of botocore's Bedrock extension that makes no span of :data:`OPERATIONS`
    while ``on()`` (genai-bedrock is instrumented)."""
    made: Dict[Any, Any] = {}

    def loader() -> Any:
        extension = original()
        if not isinstance(extension, type):
            return extension
        quiet = made.get(extension)
        if quiet is None:

            class Quiet(extension):  # type: ignore[misc,valid-type]
                def should_trace_service_call(self) -> bool:
                    try:
                        if self._call_context.operation in OPERATIONS and on():
                            log_once(
                                "bedrock:botocore-spans",
                                "payi_otel: opentelemetry-instrumentation-genai-bedrock and "
                                "opentelemetry-instrumentation-botocore both make a GenAI span "
                                "of every Bedrock call; botocore's Bedrock spans are switched "
                                "off (its spans of every other AWS service stay). To keep "
                                "botocore's instead, disable genai-bedrock: "
                                "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=bedrock, or pip "
                                "uninstall opentelemetry-instrumentation-genai-bedrock",
                            )
                            return False
                    except Exception:
                        logger.debug("payi_otel: botocore's extension changed", exc_info=True)
                    result: bool = super().should_trace_service_call()
                    return result

            Quiet.__name__ = Quiet.__qualname__ = f"PayiQuiet{extension.__name__}"
            quiet = made[extension] = Quiet
        return quiet

    return loader


# -- the provider ---------------------------------------------------------------------------


def _checked_send(wrapped: Callable[..., Any], instance: Any, args: Args, kwargs: Kwargs) -> Any:
    """``Endpoint._send(request)``: no attribution header to a host the policy refuses."""
    try:
        request = args[0] if args else kwargs.get("request")
        headers = getattr(request, "headers", None)
        if headers is not None and any(is_attribution_header(name) for name in headers):
            url = getattr(request, "url", None)
            if not sends_to(url if isinstance(url, str) else None):
                signed = _signed(headers)
                for name in [k for k in headers if is_attribution_header(k)]:
                    if name.lower() not in signed:
                        del headers[name]
    except Exception:
        internal_error("bedrock:send", "checking where a Bedrock request goes failed")
    return wrapped(*args, **kwargs)


class BedrockProvider(Provider):
    name = "botocore"
    label = "AWS Bedrock (botocore bedrock-runtime)"
    ready_module = "botocore.client"  # with botocore.endpoint and botocore.eventstream
    instrumentations: ClassVar[Tuple[Instrumentation, ...]] = (
        Instrumentation(
            "opentelemetry-instrumentation-genai-bedrock",
            "opentelemetry.instrumentation.genai.bedrock",
            "BedrockInstrumentor",
            patches=("aiobotocore.client",),
            works_without=("boto3",),
        ),
    )
    services = (replace(BEDROCK, hosts=HOSTS),)
    # Both report Bedrock's own input count, without the cache reads and writes.
    uncached_input_scopes = (
        "opentelemetry.instrumentation.genai.bedrock",
        "opentelemetry.instrumentation.botocore.bedrock-runtime",
    )

    def __init__(self) -> None:
        self._streams: Tuple[type, ...] = ()

    # -- the request side ---------------------------------------------------------------------

    def patch_points(self) -> Sequence[PatchPoint]:
        eventstream = importlib.import_module("botocore.eventstream")
        self._streams = (eventstream.EventStream,)
        return (
            PatchPoint("botocore.client", "BaseClient._make_api_call", False, beneath=True),
            PatchPoint("botocore.endpoint", "Endpoint.prepare_request", False, Role.SEND),
        )

    @staticmethod
    def _operation(args: Args, kwargs: Kwargs) -> Tuple[object, object]:
        operation = args[0] if args else kwargs.get("operation_name")
        params = args[1] if len(args) > 1 else kwargs.get("api_params")
        return operation, params

    def read(self, instance: Any, args: Args, kwargs: Kwargs) -> Optional[Call]:
        service = getattr(getattr(instance, "_service_model", None), "service_name", None)
        if service != SERVICE:
            return None
        operation, params = self._operation(args, kwargs)
        if operation not in OPERATIONS or not isinstance(params, Mapping):
            return None
        attribution, other = _split_extra(params.get(EXTRA_HEADERS))
        model = params.get("modelId")
        url = getattr(getattr(instance, "meta", None), "endpoint_url", None)
        return Call(
            (attribution,) if attribution else (),
            model if isinstance(model, str) else None,
            url if isinstance(url, str) else None,
            other,
        )

    def prepare(
        self, instance: Any, args: Args, kwargs: Kwargs, call: Effective
    ) -> Tuple[Args, Kwargs]:
        operation, params = self._operation(args, kwargs)
        assert isinstance(params, Mapping)  # read() said so
        model = params.get("modelId")
        if (
            isinstance(model, str)
            and _APPLICATION_PROFILE.match(model)
            and not call.params.get("price_as_resource")
        ):
            log_once(
                f"bedrock:unpriced:{model}",
                "payi_otel: the Bedrock ARN %s (an application inference profile, "
                "provisioned throughput, a prompt router, an imported or custom model) names no "
                "model, so its calls get usage but no cost; give the model it runs as "
                "price_as_resource (track_context(price_as_resource=...), or an "
                "x-payi-price-as-resource header in extra_headers)",
                model,
            )
        changed: Optional[Dict[str, Any]] = None
        if EXTRA_HEADERS in params:
            changed = {k: v for k, v in params.items() if k != EXTRA_HEADERS}
        if _settings.current.native_attribution:
            entries = native_entries(call)
            if entries:
                updated = dict(params) if changed is None else changed
                if _with_metadata(updated, operation, entries):
                    changed = updated
        if changed is None:
            return args, kwargs
        if len(args) > 1:
            return (args[0], changed, *args[2:]), kwargs
        return args, {**kwargs, "api_params": changed}

    def send_url(self, instance: Any, args: Args, kwargs: Kwargs) -> Optional[str]:
        request = args[0] if args else kwargs.get("request")
        url = getattr(request, "url", None)
        return url if isinstance(url, str) else None

    def stamp(
        self, instance: Any, args: Args, kwargs: Kwargs, headers: Mapping[str, str]
    ) -> Tuple[Args, Kwargs]:
        # A request of another service sent inside the call (credentials fetched from STS
        # while it is signed) is not the call's.
        if getattr(instance, "_endpoint_prefix", SERVICE) != SERVICE:
            return args, kwargs
        request = args[0] if args else kwargs["request"]
        fields = request.headers  # this attempt's, built and signed for it alone
        signed = _signed(fields)
        for name in [k for k in fields if is_attribution_header(k)]:
            if name.lower() in signed:
                log_once(
                    "bedrock:signed-attribution",
                    "payi_otel: a Bedrock request carries %s, signed by botocore (added by an "
                    "event handler before signing); it is left as it is, as changing it breaks "
                    "the signature, so it may differ from the call's payi.* attributes: pass "
                    "it as extra_headers= instead",
                    name,
                )
                continue
            del fields[name]
        for name, value in headers.items():
            if name.lower() in signed:
                # botocore signed one of that name: it stays (changing it breaks the
                # signature), and the caller's extra_headers entry is not sent: said once.
                log_once(
                    f"bedrock:signed-extra:{name.lower()}",
                    "payi_otel: extra_headers entry %s is not sent on Bedrock requests: "
                    "botocore signs a header of that name, and changing it would break the "
                    "signature",
                    name,
                )
                continue
            del fields[name]
            fields[name] = value
        return args, kwargs

    def patch_more(self) -> List[Callable[[], None]]:
        return [self._guard_sends(), *self._quiet_botocore_spans()]

    @staticmethod
    def _guard_sends() -> Callable[[], None]:
        """The wire policy held where botocore sends, after its ``before-send`` handlers: one
        that sent the request elsewhere (a failover from a gateway to AWS's public host)
        sends it without attribution headers (the ones botocore signed stay: removing them
        breaks the signature, and one is signed only if the caller's own handler added it
        before signing, which logs a WARNING)."""
        endpoint = importlib.import_module("botocore.endpoint").Endpoint
        wrapt.wrap_function_wrapper(endpoint, "_send", _checked_send)
        return unwrapper(endpoint, "_send", _checked_send)

    def _quiet_botocore_spans(self) -> List[Callable[[], None]]:
        if importlib.util.find_spec("opentelemetry.instrumentation.botocore") is None:
            return []
        extensions = importlib.import_module(_BOTOCORE_EXTENSIONS)
        table = getattr(extensions, "_BOTOCORE_EXTENSIONS", None)
        original = table.get(SERVICE) if isinstance(table, dict) else None
        if original is None:
            logger.debug("payi_otel: opentelemetry-instrumentation-botocore has no %s", SERVICE)
            return []
        assert isinstance(table, dict)
        quiet = _quiet_loader(original, self._genai_spans_on)
        table[SERVICE] = quiet

        def undo() -> None:
            if table.get(SERVICE) is quiet:
                table[SERVICE] = original

        return [undo]

    def _genai_spans_on(self) -> bool:
        """Whether genai-bedrock is instrumented (its singleton, as it is)."""
        inst = self.instrumentations[0]
        cls = getattr(sys.modules.get(inst.module), inst.instrumentor, None)
        instance = getattr(cls, "_instance", None)
        return bool(getattr(instance, "_is_instrumented_by_opentelemetry", False))

    # -- the response side --------------------------------------------------------------------

    def usage(self, item: object) -> Optional[Usage]:
        if not isinstance(item, Mapping):
            return None
        found = item.get("usage")  # Converse
        if isinstance(found, Mapping):
            return _converse_usage(found)
        metadata = item.get("metadata")  # ConverseStream's last event
        if isinstance(metadata, Mapping):
            found = metadata.get("usage")
            return _converse_usage(found) if isinstance(found, Mapping) else None
        if "chunk" in item:  # InvokeModelWithResponseStream: its last chunk's metrics
            metrics = _stream_metrics(item)
            return None if metrics is None else _usage(metrics, _STREAM_USAGE)
        headers = (item.get("ResponseMetadata") or {}).get("HTTPHeaders")  # InvokeModel
        if isinstance(headers, Mapping) and _HEADER_USAGE[0][1] in headers:
            return _usage(headers, _HEADER_USAGE)
        return None

    def is_last(self, item: object) -> bool:
        # ConverseStream's metadata event; InvokeModelWithResponseStream's metrics chunk
        # (botocore's instrumentation ends its span on either).
        if not isinstance(item, Mapping):
            return False
        if "metadata" in item:
            return True
        return _stream_metrics(item) is not None

    def usage_totals(self, usage: Usage) -> Usage:
        # Bedrock's input count is the uncached part; the total adds cache reads and writes.
        if usage.input_tokens is None:
            return usage
        total = (
            usage.input_tokens + (usage.cache_read_tokens or 0) + (usage.cache_write_tokens or 0)
        )
        return replace(usage, input_tokens=total)

    def _nested(self, result: object) -> Optional[str]:
        """Where ``result`` nests its stream: ``"stream"`` (ConverseStream), ``"body"``
        (InvokeModelWithResponseStream; InvokeModel's ``body`` is the caller's bytes)."""
        if not self._streams or not isinstance(result, dict):
            return None
        for key in ("stream", "body"):
            if isinstance(result.get(key), self._streams):
                return key
        return None

    def stream_of(self, result: object) -> Optional[object]:
        key = self._nested(result)
        return None if key is None else result[key]  # type: ignore[index]

    def with_stream(self, result: object, stream: object) -> object:
        key = self._nested(result)
        if key is not None:
            result[key] = stream  # type: ignore[index]
        return result

"""The ``google-genai`` SDK (``google.genai``) behind the seam: the Gemini API and Vertex AI
(``genai.Client(vertexai=True)``), sync (``client.models``) and async (``client.aio.models``),
``client.chats`` too (it calls the same methods).

**Where.** A logical call is ``Models.generate_content``, ``generate_content_stream`` or
``embed_content`` (and their ``AsyncModels`` twins): the entry points, where the call is read,
resolved, attributed and observed. Automatic Function Calling (a Python function among the
tools) makes one ``generate_content`` several HTTP requests, one per turn, all below it; each
attempt of each request goes through ``BaseApiClient._request_once`` /
``_async_request_once`` with the request built (``HttpRequest``: URL, headers, body): the send
points, where it is stamped with the headers resolved once at the entry - so every turn of one
call carries the same ids. (Not ``BaseApiClient.request`` with a copied ``http_options``: the
SDK merges those *over* the client's headers, so a client-level ``x-payi-*`` header could
not be replaced by the other dialect, nor removed for a public host.) A stream is a generator
that sends its first request when first read, and the next turn's while it is read: it is
read in the call's context (:meth:`GoogleGenAIProvider.sends_when_read`).

Every other API (``count_tokens``, ``compute_tokens``, files, caches, batches, tunings,
``models.list``, live) goes out as the caller wrote it: no GenAI span, nothing billed, no
attribution.

**Per-call headers**, the SDK's own idiom: ``config=GenerateContentConfig(http_options=
HttpOptions(headers={...}))`` (or the same as a dict; ``EmbedContentConfig`` alike), over the
client's ``genai.Client(http_options=HttpOptions(headers={...}))``: one per-call level, client
first, as openai's ``default_headers`` and ``extra_headers``.

**Usage** (``usage_metadata``): ``prompt_token_count`` includes the cached tokens
(``cached_content_token_count``), ``tool_use_prompt_token_count`` is apart;
``candidates_token_count`` leaves out the thoughts (``thoughts_token_count``). So input =
prompt + tool-use prompt, output = candidates + thoughts: their sum is
``total_token_count``. The model is the response's ``model_version`` (and the request's name
without Google's resource prefixes: ``models/``, ``publishers/google/models/``).

**Native attribution** (``payi_instrument(native_attribution=True)``, Vertex AI only): the
body's ``labels`` (Google Cloud billing labels) also carry the use case name, user id and
account name (:func:`label_value`); the caller's own labels win.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import re
import types
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Dict, Optional, Tuple

from payi_otel import _settings
from payi_otel._context import call_effective
from payi_otel._destinations import guard_client
from payi_otel._model.dialects import is_attribution_header
from payi_otel._model.in_force import emitted
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
from payi_otel._providers._clouds import VERTEX, model_name

__all__ = ["LABELS", "GoogleGenAIProvider", "label_value", "model_name"]

_MODELS = "google.genai.models"
_API_CLIENT = "google.genai._api_client"
_EXTRA_UTILS = "google.genai._extra_utils"

#: ``usage_metadata``'s token counts by modality -> the usage part each modality counts in
#: ("input": ``input_<modality>_tokens``), as genai-prices reads them (a document is priced
#: as image tokens; the text is what is left).
_MODALITY_DETAILS = (
    ("prompt_tokens_details", "input_{}_tokens"),
    ("tool_use_prompt_tokens_details", "input_{}_tokens"),
    ("cache_tokens_details", "cache_{}_read_tokens"),
    ("candidates_tokens_details", "output_{}_tokens"),
)
_MODALITIES = {"AUDIO": "audio", "IMAGE": "image", "DOCUMENT": "image", "VIDEO": "video"}


def _add_modalities(parts: Dict[str, int], details: object, part: str) -> None:
    """Adds the audio, image and video counts of one ``*_tokens_details`` list to
    ``parts``, each under its usage part (``part`` formatted with the modality)."""
    if not isinstance(details, list):
        return
    for detail in details:
        modality = getattr(detail, "modality", None)
        name = _MODALITIES.get(str(getattr(modality, "value", modality)).upper())
        count = _int(getattr(detail, "token_count", None))
        if name is not None and count:
            key = part.format(name)
            parts[key] = parts.get(key, 0) + count


def _int(value: object) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _field(obj: object, name: str) -> Any:
    """``obj.name``, or ``obj[name]`` of a dict (the SDK takes its configs as either), the
    name in snake case or in the camel case its pydantic models also accept
    (``httpOptions``)."""
    if isinstance(obj, Mapping):
        found = obj.get(name)
        if found is None and "_" in name:
            found = obj.get(_camel(name))
        return found
    return getattr(obj, name, None)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _attribution(headers: object) -> Mapping[str, object]:
    if not isinstance(headers, Mapping):
        return {}
    return {k: v for k, v in headers.items() if is_attribution_header(k)}


# --- Vertex AI labels (native attribution) ---------------------------------------------------

#: Parameter -> its Vertex AI label key, with ``native_attribution``.
LABELS: Tuple[Tuple[str, str], ...] = (
    ("use_case_name", "payi_use_case_name"),
    ("user_id", "payi_user_id"),
    ("account_name", "payi_account_name"),
)
#: Google's limits: labels per call, characters per key and value.
MAX_LABELS = 64
MAX_LABEL_LENGTH = 63
_NOT_IN_LABEL = re.compile(r"[^a-z0-9_-]")
_DIGEST = 8


def label_value(value: str) -> str:
    """A parameter's value as a Vertex AI label value (lowercase letters, digits, ``_`` and
    ``-``, at most 63 characters), deterministically: lower-cased; every other character
    (``.``, ``@``, spaces, non-ASCII) becomes ``_``; a result longer than 63 characters keeps
    its first 54 and ends in ``-`` and 8 hex digits of the SHA-256 of the value as given (so
    two long values that share a beginning stay apart). ``Alice@Example.com`` ->
    ``alice_example_com``."""
    text = _NOT_IN_LABEL.sub("_", value.lower())
    if len(text) > MAX_LABEL_LENGTH:
        digest = hashlib.sha256(value.encode("utf-8")).hexdigest()[:_DIGEST]
        text = f"{text[: MAX_LABEL_LENGTH - _DIGEST - 1]}-{digest}"
    return text


def _with_labels(body: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """``body`` (a Vertex AI ``GenerateContentRequest``) with the call's use case name, user
    id and account name added to its ``labels``, those in force; the caller's own labels win,
    and none is added past Google's 64. None: nothing to add."""
    in_force = dict(emitted(call_effective(None).params))
    ours = {key: label_value(str(in_force[name])) for name, key in LABELS if name in in_force}
    if not ours:
        return None
    given = body.get("labels")
    labels: Dict[str, Any] = dict(given) if isinstance(given, Mapping) else {}
    for key, value in ours.items():
        if key not in labels and len(labels) < MAX_LABELS:
            labels[key] = value
    return {**body, "labels": labels}


# --- the provider ----------------------------------------------------------------------------


class GoogleGenAIProvider(Provider):
    name = "google.genai"
    instrumentations = (
        Instrumentation(
            "opentelemetry-instrumentation-google-genai",
            "opentelemetry.instrumentation.google_genai",
            "GoogleGenAiSdkInstrumentor",
            # 1.3b0 declares google-genai < 3; `pip install google-genai` gives 3.x, with
            # which it works (README, "Providers").
            forced_majors=(3,),
        ),
    )
    services = (
        # Vertex AI's category, which Pay-i files Gemini API calls under too.
        replace(
            VERTEX,
            hosts=(
                "generativelanguage.googleapis.com",
                "generativelanguage.mtls.googleapis.com",
                "aiplatform.googleapis.com",
                "*-aiplatform.googleapis.com",
                "aiplatform.mtls.googleapis.com",
                "*-aiplatform.mtls.googleapis.com",
                # Multi-region endpoints (``location="us"`` / ``"eu"``).
                "aiplatform.*.rep.googleapis.com",
            ),
        ),
    )

    def __init__(self) -> None:
        self._request_type: Optional[type] = None

    # -- the request side ---------------------------------------------------------------------

    def patch_points(self) -> Sequence[PatchPoint]:
        importlib.import_module(_MODELS)
        self._request_type = importlib.import_module(_API_CLIENT).HttpRequest
        # The official instrumentation wraps the same methods: below it, whichever is
        # instrumented first (its span open around the whole call).
        return (
            PatchPoint(_MODELS, "Models.generate_content", False, beneath=True),
            PatchPoint(_MODELS, "Models.generate_content_stream", False, beneath=True),
            PatchPoint(_MODELS, "Models.embed_content", False, beneath=True),
            PatchPoint(_MODELS, "AsyncModels.generate_content", True, beneath=True),
            PatchPoint(_MODELS, "AsyncModels.generate_content_stream", True, beneath=True),
            PatchPoint(_MODELS, "AsyncModels.embed_content", True, beneath=True),
            # Imagen and Veo: attributed where the headers go (a gateway, Pay-i's proxy); their
            # cost is per image or second, not read here (``Call.billed``).
            *(
                PatchPoint(_MODELS, f"{cls}.{method}", is_async, beneath=True, optional=True)
                for cls, is_async in (("Models", False), ("AsyncModels", True))
                for method in ("generate_images", "edit_image", "upscale_image", "generate_videos")
            ),
            PatchPoint(_API_CLIENT, "BaseApiClient._request_once", False, Role.SEND),
            PatchPoint(_API_CLIENT, "BaseApiClient._async_request_once", True, Role.SEND),
            # Automatic Function Calling runs the caller's tools inside the call.
            PatchPoint(_EXTRA_UTILS, "get_function_response_parts", False, Role.TOOLS),
            PatchPoint(_EXTRA_UTILS, "get_function_response_parts_async", True, Role.TOOLS),
        )

    def read(self, instance: Any, args: Args, kwargs: Kwargs) -> Optional[Call]:
        client = getattr(instance, "_api_client", None)
        defaults = getattr(client, "_http_options", None)
        options = _field(kwargs.get("config"), "http_options")
        base_url = _field(options, "base_url") or _field(defaults, "base_url")
        return Call(
            (_attribution(_field(defaults, "headers")), _attribution(_field(options, "headers"))),
            model_name(kwargs.get("model")),
            base_url if isinstance(base_url, str) else None,
            # generate_content and embed_content take ``contents``; Imagen's and Veo's
            # methods do not, and report no token usage.
            billed="contents" in kwargs,
        )

    @staticmethod
    def _request(args: Args, kwargs: Kwargs) -> Any:
        return args[0] if args else kwargs.get("http_request")

    def _is_request(self, request: object) -> bool:
        """Whether ``request`` is the SDK's ``HttpRequest`` (a dataclass)."""
        return self._request_type is not None and isinstance(request, self._request_type)

    def send_url(self, instance: Any, args: Args, kwargs: Kwargs) -> Optional[str]:
        url = getattr(self._request(args, kwargs), "url", None)
        return url if isinstance(url, str) else None

    def stamp(
        self, instance: Any, args: Args, kwargs: Kwargs, headers: Mapping[str, str]
    ) -> Tuple[Args, Kwargs]:
        request: Any = self._request(args, kwargs)
        if not self._is_request(request):
            return args, kwargs
        given: Mapping[str, str] = request.headers or {}
        changes: Dict[str, Any] = {}
        if headers or any(is_attribution_header(name) for name in given):
            # The resolved set replaces every attribution header the request carries (the
            # client's and the call's, in any case or spelling), on a copy: a retry stamps
            # the SDK's request again, and the SDK adds its credentials to the copy sent.
            sent = {k: v for k, v in given.items() if not is_attribution_header(k)}
            sent.update(headers)
            changes["headers"] = sent
            guard_client(getattr(instance, "_httpx_client", None))
            guard_client(getattr(instance, "_async_httpx_client", None))
        if _settings.current.native_attribution and getattr(instance, "vertexai", False):
            body = request.data
            if isinstance(body, dict) and "contents" in body:  # a GenerateContentRequest
                labelled = _with_labels(body)
                if labelled is not None:
                    changes["data"] = labelled
        if not changes:
            return args, kwargs
        request = dataclasses.replace(request, **changes)
        if args:
            return (request, *args[1:]), kwargs
        return args, {**kwargs, "http_request": request}

    # -- the response side --------------------------------------------------------------------

    def usage(self, item: object) -> Optional[Usage]:
        metadata = getattr(item, "usage_metadata", None)
        if metadata is None:
            return None
        prompt = _int(getattr(metadata, "prompt_token_count", None))
        tool_use = _int(getattr(metadata, "tool_use_prompt_token_count", None))
        candidates = _int(getattr(metadata, "candidates_token_count", None))
        thoughts = _int(getattr(metadata, "thoughts_token_count", None))
        cached = _int(getattr(metadata, "cached_content_token_count", None))
        input_tokens = (
            None if prompt is None and tool_use is None else (prompt or 0) + (tool_use or 0)
        )
        output_tokens = (
            None if candidates is None and thoughts is None else (candidates or 0) + (thoughts or 0)
        )
        if input_tokens is None and output_tokens is None:
            return None
        usage = Usage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=cached,
            reasoning_tokens=thoughts,
        )
        parts: Dict[str, Any] = {}
        for details, part in _MODALITY_DETAILS:
            found = getattr(metadata, details, None)
            if found:
                _add_modalities(parts, found, part)
        return replace(usage, **parts) if parts else usage

    def response_model(self, item: object) -> Optional[str]:
        version = getattr(item, "model_version", None)
        return version if isinstance(version, str) and version else None

    def is_stream(self, result: object) -> bool:
        return isinstance(result, (types.GeneratorType, types.AsyncGeneratorType))

    def sends_when_read(self, result: object) -> bool:
        return self.is_stream(result)

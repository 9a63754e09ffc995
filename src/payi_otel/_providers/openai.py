"""The ``openai`` SDK behind the seam: chat completions, responses, embeddings, ... (Stainless
layout, see ``_stainless``). Usage: ``prompt_tokens``/``completion_tokens`` (chat,
embeddings) or ``input_tokens``/``output_tokens`` (responses), with their details.

Chat and completions streams report usage only when asked (``stream_options.include_usage``),
in one last chunk with no choices: when the caller did not ask, the hook asks and that chunk
is kept from the caller (:meth:`OpenAIProvider.ask_usage`, :meth:`~OpenAIProvider.is_usage_only`).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, ClassVar, Optional, Tuple

from payi_otel._providers._base import Args, Call, Instrumentation, Kwargs, Service
from payi_otel._providers._clouds import BEDROCK, VERTEX
from payi_otel._providers._stainless import StainlessProvider

__all__ = ["OpenAIProvider"]

#: The endpoints whose streams take ``stream_options`` (also under an Azure deployment path).
_USAGE_ON_REQUEST = ("/chat/completions", "/completions")
#: The SDK's marker header of ``with_raw_response`` / ``with_streaming_response``: the caller
#: reads the raw events, so nothing may be asked for on their behalf.
_RAW_RESPONSE = "x-stainless-raw-response"
#: A responses stream's last event (with the response's usage).
_RESPONSE_DONE = frozenset({"response.completed", "response.incomplete", "response.failed"})
#: ``OpenAI(provider=...)``'s runtime name -> the service it calls.
_CLOUDS = {"bedrock": BEDROCK, "vertex": VERTEX}
#: A background response's statuses while it runs, and once it has ended.
_RUNNING = frozenset({"queued", "in_progress"})
_ENDED = frozenset({"completed", "incomplete", "failed", "cancelled"})


def _response_of(item: object) -> Optional[Any]:
    """``item`` when it is a Responses API ``Response``, or the one a stream event carries."""
    fields = getattr(item, "__dict__", None)
    if not fields:
        return None
    if fields.get("object") == "response":
        return item
    inner = fields.get("response")
    inner_fields = getattr(inner, "__dict__", None)
    return inner if inner_fields and inner_fields.get("object") == "response" else None


class OpenAIProvider(StainlessProvider):
    name = "openai"
    instrumentations = (
        Instrumentation(
            "opentelemetry-instrumentation-genai-openai",
            "opentelemetry.instrumentation.genai.openai",
            "OpenAIInstrumentor",
        ),
        # Deprecated, but the only one on Python 3.9.
        Instrumentation(
            "opentelemetry-instrumentation-openai-v2",
            "opentelemetry.instrumentation.openai_v2",
            "OpenAIInstrumentor",
            min_python=(3, 9),
        ),
    )
    services = (
        # OpenAI's API and its regional hosts (``OpenAI(data_residency="eu")``: eu., us., jp.).
        Service(
            "system.openai",
            "openai",
            genai_names=("openai",),
            hosts=("api.openai.com", "*.api.openai.com"),
        ),
        # AzureOpenAI / AsyncAzureOpenAI (genai-openai names their calls "openai" too: the
        # hook names them "azure.ai.openai" on the span). genai-prices' "azure" only by this
        # exact id ("azure.ai.openai" would find openai). A call names a deployment: priced as
        # the model its reply names, or as a model mapping says.
        Service(
            "system.azureopenai",
            "azure",
            genai_names=("azure.ai.openai", "az.ai.openai"),
            category_aliases=("azure.openai",),
            # Azure's public cloud, Azure Government (.us) and Azure China (.cn); the regional
            # Cognitive Services and serverless model endpoints.
            hosts=(
                *(
                    f"*.{name}.{cloud}"
                    for cloud in ("azure.com", "azure.us", "azure.cn")
                    for name in ("openai", "services.ai", "cognitiveservices", "models.ai")
                ),
                "*.api.cognitive.microsoft.com",
                "*.api.cognitive.microsoft.us",
            ),
            addresses=("*.openai.azure.com", "*.openai.azure.us", "*.openai.azure.cn"),
            clients=("BaseAzureClient", "AzureOpenAI", "AsyncAzureOpenAI"),
            deployments=True,
        ),
        # ``OpenAI(provider=openai.providers.bedrock(...))``: OpenAI-compatible models on
        # Amazon Bedrock (``openai.gpt-oss-120b-1:0``), priced and filed as Bedrock's, by the
        # model as sent; and ``providers.vertex(...)``, on Google Vertex AI. Told by the
        # client's provider runtime (:meth:`OpenAIProvider.service_of`); their hosts are the
        # bedrock and google.genai providers'.
        BEDROCK,
        VERTEX,
        # The OpenAI-compatible APIs an OpenAI client is pointed at (``base_url``); Gemini's
        # (generativelanguage.googleapis.com) is the google.genai provider's host.
        Service(
            hosts=(
                "api.mistral.ai",
                "api.cohere.com",
                "api.cohere.ai",
                "api.groq.com",
                "api.x.ai",
                "api.deepseek.com",
                "api.together.xyz",
                "api.fireworks.ai",
            )
        ),
    )
    # Calls that name a model but generate nothing billed per call (a batch's or a job's
    # tokens are billed when it runs, not here).
    unbilled_paths = (
        "/moderations",
        "/responses/input_tokens",
        "/fine_tuning/",
        "/batches",
        "/evals",
    )
    # Pay-i's SDK reports OpenAI's cache writes in ``text`` (it has no unit for them).
    ingests_cache_writes = False
    # responses.create with a stored prompt names no model (responses.retrieve, which ends
    # in the response's id, is not a generation).
    modelless_generations = ("/responses",)
    # genai-prices' own extractors read these (chat, responses, images, transcriptions:
    # ``tests/test_usage_parts.py`` holds the two to each other): cache writes (priced above
    # the input by the models that charge them), and the audio and image parts of the input
    # and output, each at its own rate where the model has one.
    usage_fields: ClassVar[Mapping[str, Tuple[str, ...]]] = {
        "input_tokens": ("prompt_tokens", "input_tokens"),
        "output_tokens": ("completion_tokens", "output_tokens"),
        "cache_read_tokens": (
            "prompt_tokens_details.cached_tokens",
            "input_tokens_details.cached_tokens",
            "input_token_details.cached_tokens",
        ),
        "cache_write_tokens": (
            "prompt_tokens_details.cache_write_tokens",
            "input_tokens_details.cache_write_tokens",
        ),
        "reasoning_tokens": (
            "completion_tokens_details.reasoning_tokens",
            "output_tokens_details.reasoning_tokens",
        ),
        "input_audio_tokens": (
            "prompt_tokens_details.audio_tokens",
            "input_token_details.audio_tokens",
        ),
        "output_audio_tokens": (
            "completion_tokens_details.audio_tokens",
            "output_token_details.audio_tokens",
        ),
        "cache_audio_read_tokens": ("input_token_details.cached_tokens_details.audio_tokens",),
        "input_image_tokens": (
            "input_tokens_details.image_tokens",
            "input_token_details.image_tokens",
        ),
        "output_image_tokens": ("output_tokens_details.image_tokens",),
        "cache_image_read_tokens": ("input_token_details.cached_tokens_details.image_tokens",),
    }
    # A chat chunk carries ``usage`` (with stream_options.include_usage); a responses stream
    # event carries it on its ``response``.
    usage_holders = ("usage", "response.usage")

    def plan_key(
        self, instance: Any, args: Args, kwargs: Kwargs
    ) -> Optional[Tuple[Tuple[object, ...], object]]:
        # A client with a provider runtime: its service is its runtime's, which the plan key
        # (class, base URL object, ...) does not name (another client may share that URL).
        if getattr(instance, "_provider_runtime", None) is not None:
            return None
        return super().plan_key(instance, args, kwargs)

    def reply_of(self, error: BaseException) -> object:
        # ``chat.completions.parse``: a completion cut short or filtered is answered (and
        # billed) before the SDK refuses to parse it.
        return getattr(error, "completion", None)

    def service_of(self, instance: Any, call: Call) -> Optional[Service]:
        # A client made with ``provider=`` (openai >= 3) calls that cloud.
        runtime = getattr(instance, "_provider_runtime", None)
        if runtime is not None:
            name = getattr(runtime, "name", None)
            cloud = _CLOUDS.get(name) if isinstance(name, str) else None
            if cloud is not None:
                return cloud
        return super().service_of(instance, call)

    def ask_usage(self, args: Args, kwargs: Kwargs) -> Optional[Tuple[Args, Kwargs]]:
        if not kwargs.get("stream"):
            return None  # not a stream (every call's path: first)
        options = self._options(args, kwargs)
        body = getattr(options, "json_data", None)
        if (
            not isinstance(body, Mapping)
            or body.get("stream") is not True
            or not str(getattr(options, "url", "")).endswith(_USAGE_ON_REQUEST)
        ):
            return None
        given: Any = body.get("stream_options")
        if isinstance(given, Mapping) and given.get("include_usage"):
            return None  # the caller asked: they get it
        if given is not None and not isinstance(given, Mapping):
            return None  # an SDK marker (NotGiven / Omit) or something unknown
        headers = getattr(options, "headers", None)
        if isinstance(headers, Mapping) and any(str(k).lower() == _RAW_RESPONSE for k in headers):
            return None
        assert self._markers is not None
        options = self._markers[2](options)  # model_copy: the caller's options stay as given
        options.json_data = {**body, "stream_options": {**(given or {}), "include_usage": True}}
        if len(args) > 1:
            return (args[0], options, *args[2:]), kwargs
        return args, {**kwargs, "options": options}

    def pending(self, item: object, error: Optional[BaseException] = None) -> Optional[str]:
        # responses.create(background=True): queued, its usage reported by a later retrieve;
        # a stream of it broken by the connection may be resumed (not one the API ended
        # with an error event).
        if error is not None and not isinstance(error, self._resumable()):
            return None
        response = _response_of(item)
        if response is None:
            return None
        fields = response.__dict__
        running = fields.get("background") is True and fields.get("status") in _RUNNING
        found = fields.get("id")
        return found if running and isinstance(found, str) else None

    @staticmethod
    def _resumable() -> Tuple[type, ...]:
        found = getattr(sys.modules.get("openai"), "APIConnectionError", None)
        return (found,) if isinstance(found, type) else ()

    def settled(self, item: object) -> Optional[str]:
        # responses.retrieve / cancel, or a resumed stream's last event, of a background
        # response that has ended.
        response = _response_of(item)
        if response is None:
            return None
        fields = response.__dict__
        if fields.get("background") is not True or fields.get("status") not in _ENDED:
            return None
        found = fields.get("id")
        return found if isinstance(found, str) else None

    def is_last(self, item: object) -> bool:
        # genai-openai ends a responses stream's span on this event, before the stream ends.
        return getattr(item, "type", None) in _RESPONSE_DONE

    def is_usage_only(self, item: object) -> bool:
        return getattr(item, "choices", None) == [] and getattr(item, "usage", None) is not None

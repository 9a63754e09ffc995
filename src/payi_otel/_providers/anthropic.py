"""The ``anthropic`` SDK behind the seam: messages, sync and async, streamed or not (Stainless
layout, see ``_stainless``). Usage: ``input_tokens``/``output_tokens`` and the cache counts;
a stream reports input counts on ``message_start`` and output counts on ``message_delta``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Tuple

from payi_otel._providers._base import Instrumentation, Service
from payi_otel._providers._stainless import StainlessProvider

__all__ = ["AnthropicProvider"]


class AnthropicProvider(StainlessProvider):
    name = "anthropic"
    instrumentations = (
        Instrumentation(
            "opentelemetry-instrumentation-genai-anthropic",
            "opentelemetry.instrumentation.genai.anthropic",
            "AnthropicInstrumentor",
        ),
    )
    # anthropic >= 1.14 starts its own GenAI call spans.
    native_spans_module = "anthropic._tracing"
    services = (
        Service(
            "system.anthropic",
            "anthropic",
            genai_names=("anthropic",),
            hosts=("api.anthropic.com",),
        ),
        # AnthropicBedrock: Claude on AWS Bedrock (its public hosts are the botocore
        # provider's: ``bedrock.py``).
        Service(
            "system.aws.bedrock",
            "aws",
            genai_names=("aws.bedrock",),
            category_aliases=("bedrock",),
        ),
        # AnthropicVertex: Claude on Google Vertex AI (with Gemini's GenAI names; its public
        # hosts are the google.genai provider's).
        Service(
            "system.google.vertex",
            "google",
            genai_names=("gcp.vertex_ai", "gcp.gemini", "gcp.gen_ai"),
            category_aliases=("vertex",),
        ),
    )
    usage_fields: ClassVar[Mapping[str, Tuple[str, ...]]] = {
        "input_tokens": ("input_tokens",),
        "output_tokens": ("output_tokens",),
        "cache_read_tokens": ("cache_read_input_tokens",),
        "cache_write_tokens": ("cache_creation_input_tokens",),
    }
    usage_holders = ("usage", "message.usage")
    # ``input_tokens`` is the uncached part; the total adds cache reads and writes.
    input_excludes_cache = True

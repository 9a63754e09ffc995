"""The ``openai`` SDK behind the seam: chat completions, responses, embeddings, ... (Stainless
layout, see ``_stainless``). Usage: ``prompt_tokens``/``completion_tokens`` (chat,
embeddings) or ``input_tokens``/``output_tokens`` (responses), with their details."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Tuple

from payi_otel._providers._stainless import StainlessProvider

__all__ = ["OpenAIProvider"]


class OpenAIProvider(StainlessProvider):
    name = "openai"
    usage_fields: ClassVar[Mapping[str, Tuple[str, ...]]] = {
        "input_tokens": ("prompt_tokens", "input_tokens"),
        "output_tokens": ("completion_tokens", "output_tokens"),
        "cache_read_tokens": ("prompt_tokens_details.cached_tokens",
                              "input_tokens_details.cached_tokens"),
        "reasoning_tokens": ("completion_tokens_details.reasoning_tokens",
                             "output_tokens_details.reasoning_tokens"),
    }
    # A chat chunk carries ``usage`` (with stream_options.include_usage); a responses stream
    # event carries it on its ``response``.
    usage_holders = ("usage", "response.usage")

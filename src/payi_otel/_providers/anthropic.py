"""The ``anthropic`` SDK behind the seam: messages, sync and async, streamed or not (Stainless
layout, see ``_stainless``). Usage: ``input_tokens``/``output_tokens`` and the cache counts;
a stream reports input counts on ``message_start`` and output counts on ``message_delta``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Tuple

from payi_otel._providers._stainless import StainlessProvider

__all__ = ["AnthropicProvider"]


class AnthropicProvider(StainlessProvider):
    name = "anthropic"
    usage_fields: ClassVar[Mapping[str, Tuple[str, ...]]] = {
        "input_tokens": ("input_tokens",),
        "output_tokens": ("output_tokens",),
        "cache_read_tokens": ("cache_read_input_tokens",),
        "cache_write_tokens": ("cache_creation_input_tokens",),
    }
    usage_holders = ("usage", "message.usage")
    # ``input_tokens`` is the uncached part; the total adds cache reads and writes.
    input_excludes_cache = True

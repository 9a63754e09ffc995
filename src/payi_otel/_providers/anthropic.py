"""The ``anthropic`` SDK behind the seam: messages, sync and async, streamed or not (Stainless
layout, see ``_stainless``). Usage: ``input_tokens``/``output_tokens`` and the cache counts;
a stream reports input counts on ``message_start`` and output counts on ``message_delta``.

The cloud clients (``AnthropicBedrock``, ``AnthropicVertex``, their async twins) take the same
path: ``SyncAPIClient.request`` is the entry, where the model and URL are read before the
client's ``_prepare_options`` rewrites ``/v1/messages`` to Bedrock's ``/model/{id}/invoke`` or
Vertex's ``.../publishers/anthropic/models/{model}:rawPredict``; the cloud is told by the
client's class (or a Mantle host: ``Provider.service_of``). On ``AnthropicBedrock`` the headers
stamped here are SigV4-signed with the rest (the client signs in ``_prepare_request``,
after the entry): a gateway between it and AWS must forward them unchanged, or re-sign.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from functools import partial
from typing import ClassVar, Optional, Tuple

from payi_otel._providers._base import Instrumentation, Service, Usage
from payi_otel._providers._clouds import BEDROCK, VERTEX
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
            # Anthropic's API, and its own API served on AWS (``AnthropicAWS``) and Google
            # Cloud (``AnthropicGoogleCloud``) at their default hosts.
            hosts=(
                "api.anthropic.com",
                "aws-external-anthropic.*.api.aws",
                "claude.googleapis.com",
            ),
        ),
        # AnthropicBedrock (+ Mantle): Claude on AWS Bedrock. Its ``bedrock-runtime`` hosts
        # are the botocore provider's (``bedrock.py``); the Mantle hosts (Anthropic's own API
        # on Bedrock) are this one's.
        replace(
            BEDROCK,
            hosts=("bedrock-mantle.*.api.aws",),
            clients=(
                "AnthropicBedrock",
                "AsyncAnthropicBedrock",
                "AnthropicBedrockMantle",
                "AsyncAnthropicBedrockMantle",
            ),
        ),
        # AnthropicVertex: Claude on Google Vertex AI, priced by its ``claude-...@date`` id,
        # Pay-i's resource ``anthropic.`` + the model. Its public hosts are the google.genai
        # provider's.
        replace(VERTEX, clients=("AnthropicVertex", "AsyncAnthropicVertex")),
    )
    usage_fields: ClassVar[Mapping[str, Tuple[str, ...]]] = {
        "input_tokens": ("input_tokens",),
        "output_tokens": ("output_tokens",),
        "cache_read_tokens": ("cache_read_input_tokens",),
        "cache_write_tokens": ("cache_creation_input_tokens",),
        # The cache writes kept an hour (``cache_control.ttl: "1h"``), of those above.
        "cache_write_1h_tokens": ("cache_creation.ephemeral_1h_input_tokens",),
    }
    usage_holders = ("usage", "message.usage")
    # Token counting is free; a batch's tokens are billed when it runs, not here.
    unbilled_paths = ("/count_tokens", "/messages/batches")
    # Pay-i's SDK reports the hour-long cache writes as ``text_cache_write_1h``.
    ingests_hour_cache_writes = True
    # ``input_tokens`` is the uncached part; the total adds cache reads and writes.
    input_excludes_cache = True

    def usage(self, item: object) -> Optional[Usage]:
        usage = super().usage(item)
        if usage is None:
            return None
        # Beta context management: a ``compaction`` iteration (the server's summarizing
        # request) is billed with the call and "not included in the top-level usage fields".
        # (Read from the instances' own fields: once per call and per stream item.)
        own = getattr(item, "__dict__", None) or {}
        holder = own.get("usage")
        if holder is None:
            holder = (getattr(own.get("message"), "__dict__", None) or {}).get("usage")
        fields = getattr(holder, "__dict__", None)
        iterations = fields.get("iterations") if fields else None
        if iterations is None:  # the non-beta client's models keep it as an extra (dicts)
            extra = getattr(holder, "__pydantic_extra__", None)
            iterations = extra.get("iterations") if extra else None
        if not iterations or not isinstance(iterations, list):
            return usage
        counts = [0, 0, 0, 0]
        for entry in iterations:
            read = entry.get if isinstance(entry, dict) else partial(getattr, entry)
            if read("type", None) != "compaction":
                continue
            for index, name in enumerate(_ITERATION_COUNTS):
                value = read(name, None)
                if isinstance(value, int) and not isinstance(value, bool):
                    counts[index] += value
        if not any(counts):
            return usage
        return replace(usage, iterations=(counts[0], counts[1], counts[2], counts[3]))

    def usage_totals(self, usage: Usage) -> Usage:
        extra = usage.iterations
        if extra:
            usage = replace(
                usage,
                input_tokens=_plus(usage.input_tokens, extra[0]),
                output_tokens=_plus(usage.output_tokens, extra[1]),
                cache_read_tokens=_plus(usage.cache_read_tokens, extra[2]),
                cache_write_tokens=_plus(usage.cache_write_tokens, extra[3]),
                iterations=None,
            )
        return super().usage_totals(usage)


#: A compaction iteration's counts, in :attr:`Usage.iterations`' order.
_ITERATION_COUNTS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)


def _plus(count: Optional[int], more: int) -> Optional[int]:
    return count if not more else (count or 0) + more

"""Providers: one module per SDK family behind the seam of ``_base``; ``_core`` is the generic
request hook. :data:`PROVIDERS` is every provider payi_otel instruments."""

from __future__ import annotations

from typing import Tuple

from payi_otel._providers._base import CallRecord, Provider, ResponseObserver, Usage
from payi_otel._providers._core import add_observer, instrument_providers
from payi_otel._providers.anthropic import AnthropicProvider
from payi_otel._providers.openai import OpenAIProvider

__all__ = [
    "PROVIDERS",
    "CallRecord",
    "Provider",
    "ResponseObserver",
    "Usage",
    "add_observer",
    "instrument_providers",
]

PROVIDERS: Tuple[Provider, ...] = (OpenAIProvider(), AnthropicProvider())

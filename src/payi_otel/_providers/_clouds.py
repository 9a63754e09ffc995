"""The clouds several SDKs call: Amazon Bedrock (botocore, aiobotocore, ``AnthropicBedrock``,
``OpenAI(provider=bedrock(...))``) and Google Vertex AI (google-genai, ``AnthropicVertex``,
``OpenAI(provider=vertex(...))``).

What every call filed under one of their Pay-i categories shares is written here once: the
category, genai-prices' provider id, the GenAI names its spans go by, its names in
``price_as_category``, how it is priced and how Pay-i names its resource (each of these is
read per category by ``_cost`` and ``_ingest``, the first provider's word winning). A provider
whose clients call such a cloud adds only what is its own - the hosts it serves, the client
classes that call it::

    services = (dataclasses.replace(BEDROCK, hosts=HOSTS),)

``tests/test_provider_recipe.py`` holds every registered service of a category to the same
facts.
"""

from __future__ import annotations

import re
from typing import Optional

from payi_otel._providers._base import Service

__all__ = ["BEDROCK", "VERTEX", "model_name"]

#: Google's resource prefixes of a model name: ``models/`` (Gemini API),
#: ``[projects/P/locations/L/]publishers/<publisher>/models/`` and ``google/`` (Vertex AI).
_MODEL_PREFIX = re.compile(
    r"^(?:(?:projects/[^/]+/locations/[^/]+/)?publishers/[^/]+/models/|models/|google/)"
)


def model_name(model: object) -> Optional[str]:
    """``model`` without Google's resource prefixes (``models/gemini-2.5-flash`` ->
    ``gemini-2.5-flash``); a tuned model or an endpoint stays as it is."""
    if not isinstance(model, str) or not model:
        return None
    return _MODEL_PREFIX.sub("", model, count=1) or model


def _vertex_resource(request: Optional[str], response: Optional[str]) -> Optional[str]:
    """Pay-i's resource name of a Vertex AI / Gemini API call: ``google.`` + the response's
    model version (else the request's model), as Pay-i's SDK names it; ``anthropic.`` + the
    model for Claude on Vertex AI."""
    if request and request.startswith("claude"):
        return "anthropic." + request
    model = model_name(response) or model_name(request)
    return "google." + model if model else None


#: Amazon Bedrock. genai-prices knows its calls by the model id as sent (``us.`` /
#: ``global.`` inference profiles have their own prices, ARNs name them).
BEDROCK = Service(
    "system.aws.bedrock",
    "aws",
    genai_names=("aws.bedrock",),
    category_aliases=("bedrock",),
    prices_as_sent=True,
)

#: Google Vertex AI; Pay-i files Gemini API calls under its category too. Its GenAI names:
#: the semantic conventions' (``gcp.vertex_ai`` first: the metrics' name of a call another
#: SDK makes there), and the older ``vertex_ai`` / ``gemini`` the google-genai
#: instrumentation gives its spans.
VERTEX = Service(
    "system.google.vertex",
    "google",
    genai_names=("gcp.vertex_ai", "gcp.gemini", "gcp.gen_ai", "vertex_ai", "gemini"),
    category_aliases=("vertex", "gemini"),
    ingest_resource=_vertex_resource,
)

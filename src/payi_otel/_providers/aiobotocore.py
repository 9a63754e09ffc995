"""AWS Bedrock through ``aiobotocore`` (async botocore) behind the seam: the same four
``bedrock-runtime`` operations as :mod:`.bedrock`, awaited, their streams read with ``async
for``. Everything but where the SDK is entered is botocore's, so this is
:class:`~.bedrock.BedrockProvider` with aiobotocore's own entry, send check and stream type:

* **Entry**: ``aiobotocore.client.AioBaseClient._make_api_call`` (async), beneath
  genai-bedrock's wrapper of it (which makes the GenAI span).
* **Send**: ``botocore.endpoint.Endpoint.prepare_request``, which aiobotocore's
  ``AioEndpoint.create_request`` calls once per attempt after signing, as botocore's does;
  and the wire policy held again at ``AioEndpoint._send`` (a ``before-send`` handler that
  re-routed the request).
* **Streams**: ``AioEventStream`` (ConverseStream, InvokeModelWithResponseStream), observed
  as the core observes every async stream.
"""

from __future__ import annotations

import importlib
from typing import Callable, List, Sequence

import wrapt

from payi_otel._providers._base import PatchPoint, Role
from payi_otel._providers.bedrock import BedrockProvider, _checked_send
from payi_otel._wrapping import unwrapper

__all__ = ["AioBedrockProvider"]


class AioBedrockProvider(BedrockProvider):
    name = "aiobotocore"
    label = "AWS Bedrock (aiobotocore bedrock-runtime)"
    # (imports aiobotocore.endpoint and aiobotocore.eventstream, and botocore's client)
    ready_module = "aiobotocore.client"
    # (genai-bedrock, botocore's instrumentation, instruments aiobotocore's client too: it is
    # turned on once, by whichever of the two SDKs is ready first)

    def patch_points(self) -> Sequence[PatchPoint]:
        eventstream = importlib.import_module("aiobotocore.eventstream")
        self._streams = (eventstream.AioEventStream,)
        return (
            PatchPoint("aiobotocore.client", "AioBaseClient._make_api_call", True, beneath=True),
            PatchPoint("botocore.endpoint", "Endpoint.prepare_request", False, Role.SEND),
        )

    def patch_more(self) -> List[Callable[[], None]]:
        endpoint = importlib.import_module("aiobotocore.endpoint").AioEndpoint
        wrapt.wrap_function_wrapper(endpoint, "_send", _checked_send)
        return [unwrapper(endpoint, "_send", _checked_send)]

"""A local stand-in for the OpenAI, Anthropic, AWS Bedrock, Google (Gemini API and Vertex AI)
and Azure OpenAI HTTP APIs, using only the standard library.

The real ``openai``, ``anthropic``, ``boto3`` and ``google-genai`` SDKs can be pointed at it
and complete their calls (plain JSON, server-sent-event streams, AWS event streams). Every
request is recorded, headers included, so tests can check what a client sent, and failures
and redirects can be injected to exercise retries and redirect hops.

Use it from Python::

    with FakeLLMServer() as server:
        client = OpenAI(base_url=server.openai_base_url, api_key="test")
        client.chat.completions.create(model="gpt-4o-mini", messages=[...])
        server.requests[-1].headers["authorization"]  # "Bearer test"

or on its own, serving until interrupted::

    python examples/fake_llm_server.py --host 127.0.0.1 --port 8000

Endpoints (replies echo the last user message as ``"echo: <text>"`` and carry usage):

* OpenAI: ``POST /v1/chat/completions``, ``POST /v1/completions`` (both also with
  ``"stream": true``), ``POST /v1/embeddings``, ``POST /v1/responses`` (also streamed),
  ``GET /v1/models``.
* Anthropic: ``POST /v1/messages`` (also streamed), ``POST /v1/messages/count_tokens``,
  ``GET /v1/models`` (when the request carries an ``anthropic-version`` header).
* AWS Bedrock runtime (``boto3.client("bedrock-runtime", endpoint_url=...)``,
  ``AnthropicBedrock(base_url=...)``): ``POST /model/{modelId}/converse``,
  ``/converse-stream`` (an ``application/vnd.amazon.eventstream`` of ``messageStart``,
  ``contentBlockDelta``, ``contentBlockStop``, ``messageStop``, ``metadata``), ``/invoke`` and
  ``/invoke-with-response-stream`` (``chunk`` events, base64 ``bytes``) with the model's own
  body: Anthropic Messages (``anthropic_version`` required, as at AWS), Amazon Nova, Meta Llama,
  Titan embeddings (not streamed). The model id may be a percent-encoded ARN or inference
  profile. Requests must be signed (SigV4) or carry a Bedrock API key (``Bearer``); SigV4
  signatures by the keys in :attr:`FakeLLMServer.aws_credentials` (``test``/``test``) are
  verified as AWS does.
* Google (``genai.Client(http_options=HttpOptions(base_url=...))``): Gemini API
  ``POST /v1beta/models/{model}:generateContent``, ``:streamGenerateContent`` (``?alt=sse``:
  server-sent events; without it one JSON array), ``:countTokens``; with declared functions
  the first reply is a ``functionCall`` of the first one and the reply to its
  ``functionResponse`` echoes its result (Automatic Function Calling); the same on Vertex AI,
  ``/v1beta1/projects/{project}/locations/{location}/publishers/google/models/{model}:...``
  (and ``/v1beta1/publishers/google/models/...``, Vertex AI with an API key).
* Claude on Vertex AI (``AnthropicVertex(base_url=...)``):
  ``POST [/v1]/projects/{p}/locations/{l}/publishers/anthropic/models/{model}:rawPredict`` and
  ``:streamRawPredict`` (the Messages API), ``.../models/count-tokens:rawPredict``.
* Azure OpenAI (``AzureOpenAI(azure_endpoint=...)``):
  ``POST /openai/deployments/{deployment}/chat/completions``, ``/completions``,
  ``/embeddings`` and ``POST /openai/responses`` (all ``?api-version=`` required), and the v1
  API ``POST /openai/v1/...``. A deployment exists once listed in
  :attr:`FakeLLMServer.azure_deployments` (``{"prod-chat": "gpt-4o-2024-08-06"}``; others get
  Azure's 404 ``DeploymentNotFound``); replies name its model, carry Azure's content filter
  results and its ``x-ms-deployment-name`` / ``x-ms-region`` / ``apim-request-id`` headers.

Errors (injected or not) take each API's own shape: Bedrock's ``x-amzn-ErrorType`` header and
``{"message": ...}``, Google's ``{"error": {"code", "message", "status"}}``.

Token counts are a deterministic approximation: one token per word or punctuation mark.
A request header ``x-fake-usage: {"cached_tokens": 6, "cache_write_tokens": 4,
"reasoning_tokens": 3}`` (any of them) adds cached, cache-written and reasoning tokens to the
usage of chat completions, responses and messages, in each API's own shape
(``cache_write_1h_tokens``: that many of the cache writes kept an hour, Anthropic's
``cache_creation`` and Converse's ``cacheDetails``; ``audio_input_tokens`` /
``audio_output_tokens``: audio tokens in chat completions' and Gemini's input and output,
in their details): OpenAI counts
cached tokens inside ``prompt_tokens`` / ``input_tokens`` (cache writes are not reported),
Anthropic next to ``input_tokens`` (``cache_read_input_tokens``,
``cache_creation_input_tokens``); reasoning tokens are inside the output count. Bedrock
reports cache reads and writes next to ``inputTokens`` (``cacheReadInputTokens``,
``cacheWriteInputTokens``; ``...TokenCount`` for Nova and in stream invocation metrics) and
reasoning inside ``outputTokens``; Gemini counts cached tokens inside ``promptTokenCount``
(``cachedContentTokenCount``) and thoughts apart (``thoughtsTokenCount``, outside
``candidatesTokenCount``, inside ``totalTokenCount``).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import contextvars
import hashlib
import hmac
import json
import random
import re
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import MappingProxyType
from typing import Any, Callable, Optional, Union
from urllib.parse import parse_qsl, quote, unquote, urlsplit

__all__ = ["FAIL_MODES", "FakeLLMServer", "RecordedRequest"]

FAIL_MODES = ("500", "429", "reset")
"""The documented failure modes of :meth:`FakeLLMServer.fail_next`. Any other HTTP error
status given as a string (for example ``"503"`` or ``"400"``) is accepted too."""

DEFAULT_EMBEDDING_DIMENSIONS = 8
_TOKEN_RE = re.compile(r"\w+|[^\w\s]")


# --------------------------------------------------------------------------------------------
# Public data types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it."""

    method: str
    path: str
    """The request path without the query string, e.g. ``/v1/chat/completions``, as sent
    (percent-encoding kept: botocore sends the model id ``us.anthropic.claude-x-v1:0`` as
    ``/model/us.anthropic.claude-x-v1%3A0/converse``)."""
    headers: dict[str, str]
    """Header names lower-cased; when a header is repeated the last value wins."""
    raw_headers: list[tuple[str, str]]
    """Headers exactly as received, in order, with their original case (to spot duplicates)."""
    body: Any
    """The parsed JSON body, or ``None`` when there was none or it was not JSON."""
    query: str = ""
    """The query string without the ``?`` (``api-version=2024-10-21``, ``alt=sse``)."""


# --------------------------------------------------------------------------------------------
# Replies
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Redirect:
    """An injected redirect (:meth:`FakeLLMServer.redirect_next`)."""

    status: int
    target: str


@dataclass
class _JSONReply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


_SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"


@dataclass
class _SSEReply:
    """A streamed reply: server-sent events, or (with ``content_type``) any framed stream such
    as AWS event-stream messages; sent chunked, one event per chunk."""

    events: list[bytes]
    content_type: str = _SSE_CONTENT_TYPE
    headers: dict[str, str] = field(default_factory=dict)


_Reply = Union[_JSONReply, _SSEReply]
_Endpoint = Callable[[dict[str, Any]], _Reply]


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _sse(data: Any, event: Optional[str] = None) -> bytes:
    prefix = f"event: {event}\n" if event else ""
    return f"{prefix}data: {_dumps(data)}\n\n".encode()


_SSE_DONE = b"data: [DONE]\n\n"


#: The extra usage the current request asked for (``x-fake-usage``), by field.
_extra_usage: contextvars.ContextVar[Mapping[str, int]] = contextvars.ContextVar(
    "fake_extra_usage", default=MappingProxyType({})
)


def _parse_extra_usage(text: Optional[str]) -> Mapping[str, int]:
    if not text:
        return {}
    value = json.loads(text)
    fields = (
        "cached_tokens",
        "cache_write_tokens",
        "cache_write_1h_tokens",
        "reasoning_tokens",
        "audio_input_tokens",
        "audio_output_tokens",
    )
    return {k: int(value[k]) for k in fields if isinstance(value.get(k), int)}


def _new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def _count_tokens(text: str) -> int:
    return len(_TOKEN_RE.findall(text))


def _pieces(text: str) -> list[str]:
    """Split ``text`` into stream deltas (roughly one word each) that join back to ``text``."""
    pieces = re.findall(r"\S+\s*|\s+", text)
    return pieces or [""]


def _text_of(content: Any) -> str:
    """Text of a message ``content``: a string, or a list of parts/blocks with ``text``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _last_user_text(messages: Any) -> str:
    if not isinstance(messages, list) or not messages:
        return ""
    dicts = [m for m in messages if isinstance(m, dict)]
    for message in reversed(dicts):
        if message.get("role") == "user":
            return _text_of(message.get("content"))
    return _text_of(dicts[-1].get("content")) if dicts else ""


def _all_text(messages: Any) -> str:
    if not isinstance(messages, list):
        return ""
    return " ".join(_text_of(m.get("content")) for m in messages if isinstance(m, dict))


def _echo(text: str) -> str:
    return f"echo: {text}"


# --------------------------------------------------------------------------------------------
# OpenAI endpoints
# --------------------------------------------------------------------------------------------


def _openai_error(status: int, message: str, type_: str, code: Optional[str] = None) -> _JSONReply:
    return _JSONReply(
        status, {"error": {"message": message, "type": type_, "param": None, "code": code}}
    )


def _chat_completions(body: dict[str, Any]) -> _Reply:
    tool_turn = _chat_tool_turn(body)  # issue 21
    if tool_turn is not None:
        return tool_turn
    messages = body.get("messages")
    model = str(body.get("model") or "gpt-4o-mini")
    reply = _echo(_last_user_text(messages))
    last = messages[-1] if isinstance(messages, list) and messages else None
    if isinstance(last, dict) and last.get("role") == "tool":  # issue 21: echo the tool result
        reply = _echo(_text_of(last.get("content")))
    requested_n = body.get("n")
    n = requested_n if isinstance(requested_n, int) and requested_n > 0 else 1
    extra = _extra_usage.get()
    cached, reasoning = extra.get("cached_tokens", 0), extra.get("reasoning_tokens", 0)
    audio_in, audio_out = extra.get("audio_input_tokens", 0), extra.get("audio_output_tokens", 0)
    prompt_tokens = max(1, _count_tokens(_all_text(messages))) + cached + audio_in
    completion_tokens = _count_tokens(reply) * n + reasoning + audio_out
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": audio_in},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": audio_out,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    completion_id = _new_id("chatcmpl-")
    created = int(time.time())
    common = {"id": completion_id, "created": created, "model": model, "system_fingerprint": None}

    if not body.get("stream"):
        choices: list[dict[str, Any]] = [
            {
                "index": i,
                "message": {
                    "role": "assistant",
                    "content": reply,
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
            for i in range(n)
        ]
        return _JSONReply(
            200, {**common, "object": "chat.completion", "choices": choices, "usage": usage}
        )

    stream_options = body.get("stream_options")
    include_usage = isinstance(stream_options, dict) and bool(stream_options.get("include_usage"))
    no_usage = {"usage": None} if include_usage else {}

    def chunk(index: int, delta: dict[str, Any], finish_reason: Optional[str]) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return _sse({**common, "object": "chat.completion.chunk", "choices": [choice], **no_usage})

    events: list[bytes] = []
    for i in range(n):
        events.append(chunk(i, {"role": "assistant", "content": "", "refusal": None}, None))
        events.extend(chunk(i, {"content": piece}, None) for piece in _pieces(reply))
        events.append(chunk(i, {}, "stop"))
    if include_usage:
        events.append(
            _sse({**common, "object": "chat.completion.chunk", "choices": [], "usage": usage})
        )
    events.append(_SSE_DONE)
    return _SSEReply(events)


def _completions(body: dict[str, Any]) -> _Reply:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        prompts: list[str] = prompt
    else:
        prompts = [prompt if isinstance(prompt, str) else ""]
    model = str(body.get("model") or "gpt-3.5-turbo-instruct")
    replies = [_echo(p) for p in prompts]
    prompt_tokens = max(1, sum(_count_tokens(p) for p in prompts))
    completion_tokens = sum(_count_tokens(r) for r in replies)
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    common = {
        "id": _new_id("cmpl-"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
    }

    if not body.get("stream"):
        choices = [
            {"index": i, "text": text, "logprobs": None, "finish_reason": "stop"}
            for i, text in enumerate(replies)
        ]
        return _JSONReply(200, {**common, "choices": choices, "usage": usage})

    stream_options = body.get("stream_options")
    include_usage = isinstance(stream_options, dict) and bool(stream_options.get("include_usage"))
    extra = {"usage": None} if include_usage else {}
    events: list[bytes] = []
    for i, text in enumerate(replies):
        for piece in _pieces(text):
            choice = {"index": i, "text": piece, "logprobs": None, "finish_reason": None}
            events.append(_sse({**common, "choices": [choice], **extra}))
        choice = {"index": i, "text": "", "logprobs": None, "finish_reason": "stop"}
        events.append(_sse({**common, "choices": [choice], **extra}))
    if include_usage:
        events.append(_sse({**common, "choices": [], "usage": usage}))
    events.append(_SSE_DONE)
    return _SSEReply(events)


def _embedding_vector(key: str, dimensions: int) -> list[float]:
    """A deterministic unit vector for ``key``, rounded to float32 (as the real API's are)."""
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    rng = random.Random(seed)
    values = [rng.uniform(-1.0, 1.0) for _ in range(dimensions)]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    packed = struct.pack(f"<{dimensions}f", *(v / norm for v in values))
    return list(struct.unpack(f"<{dimensions}f", packed))


def _embeddings(body: dict[str, Any]) -> _Reply:
    raw_input = body.get("input")
    items: list[Any]
    if isinstance(raw_input, str):
        items = [raw_input]
    elif isinstance(raw_input, list) and raw_input and all(isinstance(x, int) for x in raw_input):
        items = [raw_input]  # a single list of token ids
    elif isinstance(raw_input, list) and raw_input:
        items = raw_input
    else:
        return _openai_error(
            400, "'input' must be a non-empty string or array", "invalid_request_error"
        )
    dims = body.get("dimensions")
    dimensions = dims if isinstance(dims, int) and dims > 0 else DEFAULT_EMBEDDING_DIMENSIONS
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    prompt_tokens = 0
    for index, item in enumerate(items):
        if isinstance(item, str):
            key, tokens = item, _count_tokens(item)
        else:
            key, tokens = _dumps(item), len(item) if isinstance(item, list) else 1
        prompt_tokens += tokens
        vector = _embedding_vector(key, dimensions)
        embedding: Any = (
            base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode("ascii")
            if as_base64
            else vector
        )
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    return _JSONReply(
        200,
        {
            "object": "list",
            "data": data,
            "model": str(body.get("model") or "text-embedding-3-small"),
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        },
    )


def _responses_input_text(value: Any) -> tuple[str, str]:
    """(last user text, all text) of a Responses API ``input``."""
    if isinstance(value, str):
        return value, value
    if not isinstance(value, list):
        return "", ""
    items = [item for item in value if isinstance(item, dict)]
    all_text = " ".join(_text_of(item.get("content")) for item in items)
    for item in reversed(items):
        if item.get("role") == "user":
            return _text_of(item.get("content")), all_text
    return (_text_of(items[-1].get("content")) if items else ""), all_text


def _responses(body: dict[str, Any]) -> _Reply:
    tool_turn = _responses_tool_turn(body)  # issue 21
    if tool_turn is not None:
        return tool_turn
    last_text, all_text = _responses_input_text(body.get("input"))
    tool_output = _responses_tool_output(body)  # issue 21: echo the tool's result
    if tool_output is not None:
        last_text = tool_output
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        all_text = f"{instructions} {all_text}"
    reply = _echo(last_text)
    extra = _extra_usage.get()
    cached, reasoning = extra.get("cached_tokens", 0), extra.get("reasoning_tokens", 0)
    input_tokens = max(1, _count_tokens(all_text)) + cached
    output_tokens = _count_tokens(reply) + reasoning
    usage = {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": input_tokens + output_tokens,
    }
    response_id = _new_id("resp_")
    message_id = _new_id("msg_")
    created_at = int(time.time())
    text_part = {"type": "output_text", "text": reply, "annotations": [], "logprobs": []}
    message = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [text_part],
    }
    base: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "model": str(body.get("model") or "gpt-4o-mini"),
        "error": None,
        "incomplete_details": None,
        "instructions": instructions if isinstance(instructions, str) else None,
        "max_output_tokens": body.get("max_output_tokens"),
        "metadata": body.get("metadata") or {},
        "parallel_tool_calls": bool(body.get("parallel_tool_calls", True)),
        "previous_response_id": body.get("previous_response_id"),
        "temperature": body.get("temperature", 1.0),
        "text": {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": [],
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "user": body.get("user"),
    }
    completed = {
        **base,
        "status": "completed",
        "completed_at": created_at,
        "output": [message],
        "usage": usage,
    }
    if not body.get("stream"):
        return _JSONReply(200, completed)

    in_progress = {**base, "status": "in_progress", "output": [], "usage": None}
    ids = {"item_id": message_id, "output_index": 0, "content_index": 0}
    payloads: list[dict[str, Any]] = [
        {"type": "response.created", "response": in_progress},
        {"type": "response.in_progress", "response": in_progress},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {**message, "status": "in_progress", "content": []},
        },
        {
            "type": "response.content_part.added",
            **ids,
            "part": {**text_part, "text": ""},
        },
    ]
    payloads.extend(
        {"type": "response.output_text.delta", **ids, "delta": piece, "logprobs": []}
        for piece in _pieces(reply)
    )
    payloads += [
        {"type": "response.output_text.done", **ids, "text": reply, "logprobs": []},
        {"type": "response.content_part.done", **ids, "part": text_part},
        {"type": "response.output_item.done", "output_index": 0, "item": message},
        {"type": "response.completed", "response": completed},
    ]
    events = [
        _sse({**payload, "sequence_number": number}, event=payload["type"])
        for number, payload in enumerate(payloads)
    ]
    return _SSEReply(events)


# --- issue 21: function calling (agent frameworks) ------------------------------------------
#
# With declared function tools, a chat completion or response whose input has no tool result
# yet calls the first tool (each of its declared arguments set to the last user text; numbers
# to 1); once the input carries a tool result, the reply echoes that result. (Streams: plain.)


def _tool_arguments(parameters: Any, text: str) -> str:
    properties = parameters.get("properties") if isinstance(parameters, dict) else None
    arguments: dict[str, Any] = {}
    for name, schema in (properties or {}).items():
        kind = schema.get("type") if isinstance(schema, dict) else None
        arguments[name] = 1 if kind in ("integer", "number") else text
    return _dumps(arguments)


def _first_function(tools: Any, nested: bool) -> Optional[dict[str, Any]]:
    for tool in tools if isinstance(tools, list) else ():
        if isinstance(tool, dict) and tool.get("type") == "function":
            function = tool.get("function") if nested else tool
            if isinstance(function, dict) and isinstance(function.get("name"), str):
                return function
    return None


def _chat_tool_turn(body: dict[str, Any]) -> Optional[_Reply]:
    function = _first_function(body.get("tools"), nested=True)
    messages = body.get("messages")
    if function is None or body.get("stream") or not isinstance(messages, list):
        return None
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    if last.get("role") == "tool":
        return None  # the plain reply echoes the tool's result (the last message)
    call = {
        "id": _new_id("call_"),
        "type": "function",
        "function": {
            "name": function["name"],
            "arguments": _tool_arguments(function.get("parameters"), _last_user_text(messages)),
        },
    }
    prompt_tokens = max(1, _count_tokens(_all_text(messages)))
    completion_tokens = _count_tokens(call["function"]["arguments"])
    return _JSONReply(
        200,
        {
            "id": _new_id("chatcmpl-"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(body.get("model") or "gpt-4o-mini"),
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                    "logprobs": None,
                    "finish_reason": "tool_calls",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        },
    )


def _responses_tool_output(body: dict[str, Any]) -> Optional[str]:
    """The last function call result in a Responses API input, if any."""
    items = body.get("input")
    for item in reversed(items if isinstance(items, list) else []):
        if isinstance(item, dict) and item.get("type") == "function_call_output":
            return str(item.get("output"))
    return None


def _responses_tool_turn(body: dict[str, Any]) -> Optional[_Reply]:
    function = _first_function(body.get("tools"), nested=False)
    if function is None or body.get("stream") or _responses_tool_output(body) is not None:
        return None
    last_text, all_text = _responses_input_text(body.get("input"))
    arguments = _tool_arguments(function.get("parameters"), last_text)
    input_tokens = max(1, _count_tokens(all_text))
    output_tokens = _count_tokens(arguments)
    created_at = int(time.time())
    call = {
        "type": "function_call",
        "id": _new_id("fc_"),
        "call_id": _new_id("call_"),
        "name": function["name"],
        "arguments": arguments,
        "status": "completed",
    }
    return _JSONReply(
        200,
        {
            "id": _new_id("resp_"),
            "object": "response",
            "created_at": created_at,
            "completed_at": created_at,
            "status": "completed",
            "model": str(body.get("model") or "gpt-4o-mini"),
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "metadata": {},
            "output": [call],
            "parallel_tool_calls": True,
            "temperature": 1.0,
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "text": {"format": {"type": "text"}},
            "truncation": "disabled",
            "usage": {
                "input_tokens": input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input_tokens + output_tokens,
            },
        },
    )


# --- end issue 21 ------------------------------------------------------------------------------


_OPENAI_MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-3.5-turbo-instruct", "text-embedding-3-small")
_ANTHROPIC_MODELS = ("claude-sonnet-4-6", "claude-haiku-4-5")


def _openai_models(body: dict[str, Any]) -> _Reply:
    data = [
        {"id": model, "object": "model", "created": 1700000000, "owned_by": "system"}
        for model in _OPENAI_MODELS
    ]
    return _JSONReply(200, {"object": "list", "data": data})


# --------------------------------------------------------------------------------------------
# Anthropic endpoints
# --------------------------------------------------------------------------------------------


def _anthropic_error(status: int, message: str, type_: str) -> _JSONReply:
    return _JSONReply(status, {"type": "error", "error": {"type": type_, "message": message}})


def _anthropic_prompt_tokens(body: dict[str, Any]) -> int:
    system = body.get("system")
    text = f"{_text_of(system)} {_all_text(body.get('messages'))}"
    return max(1, _count_tokens(text))


def _anthropic_message(body: dict[str, Any], id_prefix: str = "msg_") -> dict[str, Any]:
    """The complete (non-streamed) Messages API reply to ``body``."""
    reply = _echo(_last_user_text(body.get("messages")))
    return {
        "id": _new_id(id_prefix),
        "type": "message",
        "role": "assistant",
        "model": str(body.get("model") or "claude-sonnet-4-6"),
        "content": [{"type": "text", "text": reply}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": _anthropic_prompt_tokens(body),
            "output_tokens": _count_tokens(reply),
            "cache_creation_input_tokens": _extra_usage.get().get("cache_write_tokens", 0),
            "cache_read_input_tokens": _extra_usage.get().get("cached_tokens", 0),
            "cache_creation": _cache_creation(),
            "service_tier": "standard",
        },
    }


def _anthropic_stream_payloads(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The Messages API stream events (``message_start`` ... ``message_stop``) of ``message``."""
    reply = message["content"][0]["text"]
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "usage": {**message["usage"], "output_tokens": 1},
    }
    payloads: list[dict[str, Any]] = [
        {"type": "message_start", "message": start},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
    ]
    payloads.extend(
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
        for piece in _pieces(reply)
    )
    payloads += [
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": message["usage"]["output_tokens"]},
        },
        {"type": "message_stop"},
    ]
    return payloads


def _messages(body: dict[str, Any]) -> _Reply:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _anthropic_error(
            400, "messages: at least one message is required", "invalid_request_error"
        )
    message = _anthropic_message(body)
    if not body.get("stream"):
        return _JSONReply(200, message)
    return _SSEReply([_sse(p, p["type"]) for p in _anthropic_stream_payloads(message)])


def _count_tokens_endpoint(body: dict[str, Any]) -> _Reply:
    return _JSONReply(200, {"input_tokens": _anthropic_prompt_tokens(body)})


def _anthropic_models(body: dict[str, Any]) -> _Reply:
    data = [
        {
            "id": model,
            "type": "model",
            "display_name": model.replace("-", " ").title(),
            "created_at": "2025-01-01T00:00:00Z",
            "lifecycle": "active",
        }
        for model in _ANTHROPIC_MODELS
    ]
    return _JSONReply(
        200,
        {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]},
    )


_OPENAI_ROUTES: dict[tuple[str, str], _Endpoint] = {
    ("POST", "/v1/chat/completions"): _chat_completions,
    ("POST", "/v1/completions"): _completions,
    ("POST", "/v1/embeddings"): _embeddings,
    ("POST", "/v1/responses"): _responses,
    ("GET", "/v1/models"): _openai_models,
}
_ANTHROPIC_ROUTES: dict[tuple[str, str], _Endpoint] = {
    ("POST", "/v1/messages"): _messages,
    ("POST", "/v1/messages/count_tokens"): _count_tokens_endpoint,
    ("GET", "/v1/models"): _anthropic_models,
}
_KNOWN_PATHS = {path for _, path in (*_OPENAI_ROUTES, *_ANTHROPIC_ROUTES)}


def _is_anthropic(path: str, headers: dict[str, str]) -> bool:
    return path.startswith("/v1/messages") or "anthropic-version" in headers


# --------------------------------------------------------------------------------------------
# Routes with path parameters (Bedrock, Gemini / Vertex AI, Azure OpenAI, Claude on Vertex)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Call:
    """A request to a route with path parameters."""

    body: dict[str, Any]
    params: dict[str, str]
    """The path parameters, percent-decoded (a Bedrock ARN's ``%3A`` and ``%2F`` undone)."""
    query: dict[str, str]
    headers: dict[str, str]
    server: FakeLLMServer


@dataclass(frozen=True)
class _PatternRoute:
    method: str
    pattern: re.Pattern[str]
    dialect: str
    """How errors and request ids look: ``openai``, ``anthropic``, ``bedrock`` or ``google``."""
    endpoint: Callable[[_Call], _Reply]


def _padding() -> str:
    """The ``p`` field AWS adds to event-stream payloads to vary their length."""
    return "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"[: random.randint(8, 40)]


def _event_stream_message(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message: a prelude (total and headers length, CRC32), string
    headers, the payload and a CRC32 of all that (what botocore's EventStreamBuffer reads)."""
    encoded = b"".join(
        struct.pack("!B", len(name)) + name + b"\x07" + struct.pack("!H", len(value)) + value
        for name, value in ((k.encode(), v.encode()) for k, v in headers.items())
    )
    prelude = struct.pack("!II", 16 + len(encoded) + len(payload), len(encoded))
    prelude += struct.pack("!I", binascii.crc32(prelude))
    message = prelude + encoded + payload
    return message + struct.pack("!I", binascii.crc32(message))


def _aws_event(event_type: str, payload: Mapping[str, Any]) -> bytes:
    headers = {
        ":event-type": event_type,
        ":content-type": "application/json",
        ":message-type": "event",
    }
    return _event_stream_message(headers, _dumps({**payload, "p": _padding()}).encode())


# -- AWS Bedrock runtime ---------------------------------------------------------------------

_BEDROCK_ERROR_CODES = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}


def _bedrock_error(status: int, message: str, code: Optional[str] = None) -> _JSONReply:
    """A Bedrock (rest-json) error: the code in ``x-amzn-ErrorType``, ``{"message": ...}``."""
    code = code or _BEDROCK_ERROR_CODES.get(status, "InternalServerException")
    error_type = f"{code}:http://internal.amazon.com/coral/com.amazon.bedrock/"
    return _JSONReply(status, {"message": message}, {"x-amzn-ErrorType": error_type})


def _cache_creation() -> dict[str, int]:
    """Anthropic's ``usage.cache_creation``: the cache writes by TTL."""
    extra = _extra_usage.get()
    hour = extra.get("cache_write_1h_tokens", 0)
    return {
        "ephemeral_5m_input_tokens": extra.get("cache_write_tokens", 0) - hour,
        "ephemeral_1h_input_tokens": hour,
    }


@dataclass(frozen=True)
class _BedrockUsage:
    input: int
    output: int
    cache_read: int
    cache_write: int

    @property
    def total(self) -> int:
        return self.input + self.output + self.cache_read + self.cache_write

    def converse(self) -> dict[str, Any]:
        """Converse / ConverseStream ``usage`` (cache tokens are outside ``inputTokens``;
        ``cacheDetails``: the cache writes by TTL, 1h first)."""
        usage: dict[str, Any] = {"inputTokens": self.input, "outputTokens": self.output}
        usage["totalTokens"] = self.total
        if self.cache_read:
            usage["cacheReadInputTokens"] = self.cache_read
        if self.cache_write:
            usage["cacheWriteInputTokens"] = self.cache_write
            hour = _extra_usage.get().get("cache_write_1h_tokens", 0)
            details = [("1h", hour), ("5m", self.cache_write - hour)]
            usage["cacheDetails"] = [{"ttl": t, "inputTokens": n} for t, n in details if n]
        return usage

    def invocation_metrics(self) -> dict[str, int]:
        """``amazon-bedrock-invocationMetrics`` of an InvokeModel stream's last chunk."""
        metrics = {"inputTokenCount": self.input, "outputTokenCount": self.output}
        metrics.update(invocationLatency=12, firstByteLatency=8)
        if self.cache_read:
            metrics["cacheReadInputTokenCount"] = self.cache_read
        if self.cache_write:
            metrics["cacheWriteInputTokenCount"] = self.cache_write
        return metrics

    def headers(self) -> dict[str, str]:
        """InvokeModel's ``X-Amzn-Bedrock-*-Token-Count`` response headers."""
        headers = {
            "X-Amzn-Bedrock-Input-Token-Count": str(self.input),
            "X-Amzn-Bedrock-Output-Token-Count": str(self.output),
            "X-Amzn-Bedrock-Invocation-Latency": "12",
        }
        if self.cache_read:
            headers["X-Amzn-Bedrock-Cache-Read-Input-Token-Count"] = str(self.cache_read)
        if self.cache_write:
            headers["X-Amzn-Bedrock-Cache-Write-Input-Token-Count"] = str(self.cache_write)
        return headers


def _bedrock_usage(prompt_text: str, reply: str) -> _BedrockUsage:
    extra = _extra_usage.get()
    return _BedrockUsage(
        input=max(1, _count_tokens(prompt_text)),
        output=_count_tokens(reply) + extra.get("reasoning_tokens", 0),
        cache_read=extra.get("cached_tokens", 0),
        cache_write=extra.get("cache_write_tokens", 0),
    )


def _bedrock_stream(events: list[bytes], invoke: bool) -> _SSEReply:
    headers = {"X-Amzn-Bedrock-Content-Type": "application/json"} if invoke else {}
    return _SSEReply(events, content_type="application/vnd.amazon.eventstream", headers=headers)


def _converse(call: _Call) -> _Reply:
    """``POST /model/{modelId}/converse`` and ``/converse-stream``."""
    body = call.body
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _bedrock_error(400, "A conversation must start with a user message.")
    reply = _echo(_last_user_text(messages))
    usage = _bedrock_usage(f"{_text_of(body.get('system'))} {_all_text(messages)}", reply)
    metrics = {"latencyMs": 12}
    if call.params["operation"] == "converse":
        content = [{"text": reply}]
        return _JSONReply(
            200,
            {
                "output": {"message": {"role": "assistant", "content": content}},
                "stopReason": "end_turn",
                "usage": usage.converse(),
                "metrics": metrics,
            },
        )
    events = [_aws_event("messageStart", {"role": "assistant"})]
    events.extend(
        _aws_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}})
        for piece in _pieces(reply)
    )
    events += [
        _aws_event("contentBlockStop", {"contentBlockIndex": 0}),
        _aws_event("messageStop", {"stopReason": "end_turn"}),
        _aws_event("metadata", {"usage": usage.converse(), "metrics": metrics}),
    ]
    return _bedrock_stream(events, invoke=False)


def _bedrock_model_name(model_id: str) -> str:
    """The last part of a model id, inference profile id or ARN (``.../us.anthropic.x-v1:0``)."""
    return model_id.rsplit("/", 1)[-1]


def _claude_on_bedrock_name(model_id: str) -> str:
    """The model name Bedrock puts in a Claude reply: ``us.anthropic.claude-x-20241022-v1:0``
    -> ``claude-x-20241022``."""
    name = _bedrock_model_name(model_id)
    if "anthropic." not in name:
        return "claude-sonnet-4-6"
    return re.sub(r"-v\d+(:\d+)?$", "", name.split("anthropic.", 1)[1])


def _bedrock_family(model_id: str, body: dict[str, Any]) -> Optional[str]:
    """Which provider's native body an InvokeModel call carries (the model id first, the body
    for opaque ids such as application inference profile ARNs)."""
    name = _bedrock_model_name(model_id).lower()
    if "anthropic" in name or "anthropic_version" in body:
        return "anthropic"
    if "nova" in name or body.get("schemaVersion") == "messages-v1":
        return "nova"
    if "embed" in name or "inputText" in body:
        return "titan-embed"
    if "meta." in name or "llama" in name or "prompt" in body:
        return "meta"
    return None


def _invoke(call: _Call) -> _Reply:
    """``POST /model/{modelId}/invoke`` and ``/invoke-with-response-stream``: the model
    provider's own body (Anthropic Messages, Amazon Nova, Meta Llama, Titan embeddings)."""
    body, model_id = call.body, call.params["model"]
    stream = call.params["operation"] == "invoke-with-response-stream"
    family = _bedrock_family(model_id, body)
    if family == "anthropic":
        return _invoke_claude(body, model_id, stream)
    if family == "nova":
        return _invoke_nova(body, stream)
    if family == "meta":
        return _invoke_llama(body, stream)
    if family == "titan-embed" and not stream:
        return _invoke_titan_embed(body)
    return _bedrock_error(400, "The provided model identifier is invalid.")


def _chunk_event(payload: Mapping[str, Any]) -> bytes:
    """An InvokeModelWithResponseStream ``chunk`` event: the model's JSON, base64 in ``bytes``."""
    data = base64.b64encode(_dumps(payload).encode()).decode("ascii")
    return _aws_event("chunk", {"bytes": data})


def _invoke_claude(body: dict[str, Any], model_id: str, stream: bool) -> _Reply:
    if "anthropic_version" not in body:
        return _bedrock_error(
            400, "Malformed input request: #: required key [anthropic_version] not found"
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _bedrock_error(400, "Malformed input request: #: required key [messages] not found")
    model = _claude_on_bedrock_name(model_id)
    message = _anthropic_message({**body, "model": model}, id_prefix="msg_bdrk_")
    raw = message["usage"]
    usage = _BedrockUsage(
        raw["input_tokens"],
        raw["output_tokens"],
        raw["cache_read_input_tokens"],
        raw["cache_creation_input_tokens"],
    )
    if not stream:
        return _JSONReply(200, message, usage.headers())
    payloads = _anthropic_stream_payloads(message)
    payloads[-1] = {**payloads[-1], "amazon-bedrock-invocationMetrics": usage.invocation_metrics()}
    return _bedrock_stream([_chunk_event(p) for p in payloads], invoke=True)


def _invoke_nova(body: dict[str, Any], stream: bool) -> _Reply:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _bedrock_error(400, "Malformed input request: messages is required")
    reply = _echo(_last_user_text(messages))
    usage = _bedrock_usage(f"{_text_of(body.get('system'))} {_all_text(messages)}", reply)
    nova_usage: dict[str, int] = {"inputTokens": usage.input, "outputTokens": usage.output}
    nova_usage["totalTokens"] = usage.total
    if usage.cache_read:
        nova_usage["cacheReadInputTokenCount"] = usage.cache_read
    if usage.cache_write:
        nova_usage["cacheWriteInputTokenCount"] = usage.cache_write
    if not stream:
        message = {"role": "assistant", "content": [{"text": reply}]}
        result = {"output": {"message": message}, "stopReason": "end_turn", "usage": nova_usage}
        return _JSONReply(200, result, usage.headers())
    payloads: list[dict[str, Any]] = [{"messageStart": {"role": "assistant"}}]
    payloads.extend(
        {"contentBlockDelta": {"delta": {"text": piece}, "contentBlockIndex": 0}}
        for piece in _pieces(reply)
    )
    payloads += [
        {"contentBlockStop": {"contentBlockIndex": 0}},
        {"messageStop": {"stopReason": "end_turn"}},
        {
            "metadata": {"usage": nova_usage, "metrics": {}, "trace": {}},
            "amazon-bedrock-invocationMetrics": usage.invocation_metrics(),
        },
    ]
    return _bedrock_stream([_chunk_event(p) for p in payloads], invoke=True)


def _invoke_llama(body: dict[str, Any], stream: bool) -> _Reply:
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        return _bedrock_error(400, "Malformed input request: #: required key [prompt] not found")
    reply = _echo(prompt)
    usage = _bedrock_usage(prompt, reply)
    if not stream:
        result = {
            "generation": reply,
            "prompt_token_count": usage.input,
            "generation_token_count": usage.output,
            "stop_reason": "stop",
        }
        return _JSONReply(200, result, usage.headers())
    pieces = _pieces(reply)
    payloads: list[dict[str, Any]] = []
    generated = 0
    for index, piece in enumerate(pieces):
        generated += _count_tokens(piece)
        last = index == len(pieces) - 1
        payload: dict[str, Any] = {
            "generation": piece,
            "prompt_token_count": usage.input if index == 0 else None,
            "generation_token_count": usage.output if last else generated,
            "stop_reason": "stop" if last else None,
        }
        if last:
            payload["amazon-bedrock-invocationMetrics"] = usage.invocation_metrics()
        payloads.append(payload)
    return _bedrock_stream([_chunk_event(p) for p in payloads], invoke=True)


def _invoke_titan_embed(body: dict[str, Any]) -> _Reply:
    text = body.get("inputText")
    if not isinstance(text, str):
        return _bedrock_error(400, "Malformed input request: #: required key [inputText] not found")
    dims = body.get("dimensions")
    dimensions = dims if isinstance(dims, int) and dims > 0 else DEFAULT_EMBEDDING_DIMENSIONS
    vector = _embedding_vector(text, dimensions)
    tokens = _count_tokens(text)
    result = {"embedding": vector, "embeddingsByType": {"float": vector}}
    result["inputTextTokenCount"] = tokens
    return _JSONReply(200, result, {"X-Amzn-Bedrock-Input-Token-Count": str(tokens)})


_SIGV4_RE = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<scope>[^,]+),\s*"
    r"SignedHeaders=(?P<signed>[^,]+),\s*Signature=(?P<signature>[0-9a-f]+)"
)


def _aws_auth_problem(
    method: str,
    path: str,
    query: str,
    raw_headers: list[tuple[str, str]],
    payload: bytes,
    credentials: Mapping[str, str],
) -> Optional[_JSONReply]:
    """The 403 AWS answers a request whose SigV4 signature does not verify, or None.

    A request must be signed (``AWS4-HMAC-SHA256``) or carry a Bedrock API key (``Bearer``).
    The signature is checked when its access key id is in ``credentials`` (the server's
    ``aws_credentials``): canonical request, string to sign and signing key as botocore
    computes them, over the headers the client listed in ``SignedHeaders`` (headers added
    after signing are not part of it, as at AWS)."""
    values: dict[str, list[str]] = {}
    for name, value in raw_headers:
        values.setdefault(name.lower(), []).append(" ".join(value.split()))
    authorization = values.get("authorization", [""])[-1]
    if authorization.startswith("Bearer "):
        return None
    match = _SIGV4_RE.fullmatch(authorization.strip())
    if match is None:
        return _bedrock_error(
            403, "Missing Authentication Token", "MissingAuthenticationTokenException"
        )
    secret = credentials.get(match["key"])
    if secret is None:
        return None
    pairs = sorted(pair.partition("=")[::2] for pair in query.split("&") if query)
    signed = match["signed"]
    canonical_request = "\n".join(
        [
            method,
            quote(path, safe="/~"),
            "&".join(f"{key}={value}" for key, value in pairs),
            "".join(f"{name}:{','.join(values.get(name, []))}\n" for name in signed.split(";")),
            signed,
            hashlib.sha256(payload).hexdigest(),
        ]
    )
    date, region, service, _ = match["scope"].split("/")
    string_to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            values.get("x-amz-date", [""])[-1],
            match["scope"],
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    key = f"AWS4{secret}".encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    if hmac.compare_digest(expected, match["signature"]):
        return None
    return _bedrock_error(
        403,
        "The request signature we calculated does not match the signature you provided. "
        "Check your AWS Secret Access Key and signing method. Consult the service "
        "documentation for details.",
        "InvalidSignatureException",
    )


# -- Google: Gemini API and Vertex AI --------------------------------------------------------

_GOOGLE_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def _google_error(status: int, message: str) -> _JSONReply:
    status_name = _GOOGLE_STATUSES.get(status, "UNKNOWN")
    return _JSONReply(
        status, {"error": {"code": status, "message": message, "status": status_name}}
    )


def _gemini_messages(contents: Any) -> list[dict[str, Any]]:
    """``contents`` (``[{"role": "user", "parts": [{"text": ...}]}]``) as chat messages."""
    if not isinstance(contents, list):
        return []
    return [
        {"role": c.get("role") or "user", "content": c.get("parts")}
        for c in contents
        if isinstance(c, dict)
    ]


def _gemini_prompt_text(body: dict[str, Any]) -> str:
    system = body.get("systemInstruction")
    system_text = _text_of(system.get("parts")) if isinstance(system, dict) else ""
    return f"{system_text} {_all_text(_gemini_messages(body.get('contents')))}"


def _gemini_function_turn(body: dict[str, Any]) -> tuple[Optional[dict[str, Any]], Any]:
    """Function calling: a request that declares functions (``tools[].functionDeclarations``)
    and whose last turn is no function's response is answered with a call of the first
    declared function, with no arguments (as the API asks for a tool); a request whose last
    turn is a function's response is answered with that response's ``result`` (echoed). So
    google-genai's Automatic Function Calling makes two requests: (call, None), (None,
    result). Anything else: (None, None)."""
    contents = body.get("contents")
    last = contents[-1] if isinstance(contents, list) and contents else {}
    parts = last.get("parts") if isinstance(last, dict) else None
    for part in parts if isinstance(parts, list) else []:
        response = part.get("functionResponse") if isinstance(part, dict) else None
        if isinstance(response, dict):
            result = response.get("response")
            return None, result.get("result", result) if isinstance(result, dict) else result
    for tool in body.get("tools") or []:
        declarations = tool.get("functionDeclarations") if isinstance(tool, dict) else None
        if isinstance(declarations, list) and declarations:
            return {"name": declarations[0].get("name"), "args": {}}, None
    return None, None


def _generate_content(call: _Call) -> _Reply:
    """``models/{model}:generateContent`` / ``:streamGenerateContent`` / ``:countTokens`` of the
    Gemini API (``/v1beta/models/...``) and of Vertex AI
    (``/v1beta1/projects/{p}/locations/{l}/publishers/google/models/...``)."""
    body, method = call.body, call.params["method"]
    vertex = "publisher" in call.params
    extra = _extra_usage.get()
    cached, thoughts = extra.get("cached_tokens", 0), extra.get("reasoning_tokens", 0)
    audio_in, audio_out = extra.get("audio_input_tokens", 0), extra.get("audio_output_tokens", 0)
    text_tokens = max(1, _count_tokens(_gemini_prompt_text(body))) + cached
    prompt_tokens = text_tokens + audio_in
    text_details = [{"modality": "TEXT", "tokenCount": text_tokens}]
    if audio_in:
        text_details.append({"modality": "AUDIO", "tokenCount": audio_in})
    if method == "countTokens":
        return _JSONReply(200, {"totalTokens": prompt_tokens, "promptTokensDetails": text_details})
    if method not in ("generateContent", "streamGenerateContent"):
        return _google_error(404, f"Method not found: {method}.")
    messages = _gemini_messages(body.get("contents"))
    if not messages:
        return _google_error(400, "* GenerateContentRequest.contents: contents is not specified")
    function_call, function_result = _gemini_function_turn(body)
    reply = _echo(_last_user_text(messages) if function_result is None else function_result)
    candidates_tokens = _count_tokens(reply) + audio_out
    usage: dict[str, Any] = {
        "promptTokenCount": prompt_tokens,
        "candidatesTokenCount": candidates_tokens,
        "totalTokenCount": prompt_tokens + candidates_tokens + thoughts,
        "promptTokensDetails": text_details,
    }
    if cached:
        usage["cachedContentTokenCount"] = cached
        usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": cached}]
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    common: dict[str, Any] = {"modelVersion": call.params["model"], "responseId": _new_id("")}
    if vertex or audio_out:
        usage["candidatesTokensDetails"] = [
            {"modality": "TEXT", "tokenCount": candidates_tokens - audio_out}
        ]
        if audio_out:
            usage["candidatesTokensDetails"].append({"modality": "AUDIO", "tokenCount": audio_out})
        usage["trafficType"] = "ON_DEMAND"
        created = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
        common = {"createTime": created, **common}

    def candidate(text: str, done: bool) -> dict[str, Any]:
        parts = [{"functionCall": function_call}] if function_call else [{"text": text}]
        content = {"role": "model", "parts": parts}
        return {"content": content, **({"finishReason": "STOP"} if done else {}), "index": 0}

    if method == "generateContent":
        return _JSONReply(
            200, {"candidates": [candidate(reply, True)], "usageMetadata": usage, **common}
        )
    # Streamed: every chunk carries the prompt count; the last one the finish reason and
    # the complete usage.
    partial_usage = {"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens}
    pieces = [reply] if function_call else _pieces(reply)
    chunks = [
        {
            "candidates": [candidate(piece, i == len(pieces) - 1)],
            "usageMetadata": usage if i == len(pieces) - 1 else partial_usage,
            **common,
        }
        for i, piece in enumerate(pieces)
    ]
    if call.query.get("alt") == "sse":
        return _SSEReply([_sse(chunk) for chunk in chunks])
    return _JSONReply(200, chunks)  # without alt=sse the API answers one JSON array


# -- Claude on Vertex AI ---------------------------------------------------------------------


def _claude_on_vertex(call: _Call) -> _Reply:
    """``.../publishers/anthropic/models/{model}:rawPredict`` / ``:streamRawPredict``: the
    Messages API with the model in the path (``count-tokens:rawPredict`` counts tokens)."""
    model, method = call.params["model"], call.params["method"]
    if model == "count-tokens" and method == "rawPredict":
        return _count_tokens_endpoint(call.body)
    messages = call.body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _anthropic_error(
            400, "messages: at least one message is required", "invalid_request_error"
        )
    message = _anthropic_message({**call.body, "model": model}, id_prefix="msg_vrtx_")
    if method == "rawPredict":
        return _JSONReply(200, message)
    return _SSEReply([_sse(p, p["type"]) for p in _anthropic_stream_payloads(message)])


# -- Azure OpenAI ----------------------------------------------------------------------------

_AZURE_OPERATIONS: dict[str, _Endpoint] = {
    "chat/completions": _chat_completions,
    "completions": _completions,
    "embeddings": _embeddings,
    "responses": _responses,
}
_CONTENT_FILTER_RESULTS = {
    category: {"filtered": False, "severity": "safe"}
    for category in ("hate", "self_harm", "sexual", "violence")
}


def _azure_deployment(call: _Call) -> _Reply:
    """``/openai/deployments/{deployment}/...?api-version=...``."""
    return _azure(call, call.params["deployment"], versioned=True)


def _azure_resource(call: _Call) -> _Reply:
    """``/openai/responses?api-version=...`` and the v1 API ``/openai/v1/...``: the deployment
    is the body's ``model``."""
    return _azure(call, str(call.body.get("model") or ""), versioned="v1" not in call.params)


def _azure(call: _Call, deployment: str, versioned: bool) -> _Reply:
    if versioned and not call.query.get("api-version"):
        return _JSONReply(404, {"error": {"code": "404", "message": "Resource not found"}})
    if "api-key" not in call.headers and "authorization" not in call.headers:
        message = (
            "Access denied due to missing subscription key. Make sure to include subscription "
            "key when making requests to an API."
        )
        return _JSONReply(401, {"error": {"code": "401", "message": message}})
    operation = call.params["operation"]
    model = call.server.azure_model(deployment)
    if model is None:
        message = (
            "The API deployment for this resource does not exist. If you created the "
            "deployment within the last 5 minutes, please wait a moment and try again."
        )
        return _JSONReply(404, {"error": {"code": "DeploymentNotFound", "message": message}})
    reply = _AZURE_OPERATIONS[operation]({**call.body, "model": model})
    headers = {
        "x-ms-region": "East US",
        "x-ms-deployment-name": deployment,
        "apim-request-id": str(uuid.uuid4()),
    }
    if isinstance(reply, _JSONReply):
        reply.headers.update(headers)
        if operation == "chat/completions" and reply.status == 200:
            reply.body["prompt_filter_results"] = [
                {"prompt_index": 0, "content_filter_results": _CONTENT_FILTER_RESULTS}
            ]
            for choice in reply.body["choices"]:
                choice["content_filter_results"] = _CONTENT_FILTER_RESULTS
        return reply
    events = reply.events
    if operation == "chat/completions":
        # Azure's first chunk carries only the prompt's content filter results.
        first = {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": [
                {"prompt_index": 0, "content_filter_results": _CONTENT_FILTER_RESULTS}
            ],
        }
        events = [_sse(first), *events]
    return _SSEReply(events, headers=headers)


_GOOGLE_MODEL = r"models/(?P<model>[^/:]+):(?P<method>\w+)"
_PATTERN_ROUTES = tuple(
    _PatternRoute("POST", re.compile(pattern), dialect, endpoint)
    for pattern, dialect, endpoint in (
        (r"/model/(?P<model>[^/]+)/(?P<operation>converse|converse-stream)", "bedrock", _converse),
        (
            r"/model/(?P<model>[^/]+)/(?P<operation>invoke|invoke-with-response-stream)",
            "bedrock",
            _invoke,
        ),
        (r"/(?P<version>v1|v1alpha|v1beta)/" + _GOOGLE_MODEL, "google", _generate_content),
        (
            r"/(?P<version>v1|v1beta1)/"
            r"(?:projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/)?"
            r"publishers/(?P<publisher>google)/" + _GOOGLE_MODEL,
            "google",
            _generate_content,
        ),
        (
            r"(?:/v1|/v1beta1)?/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/"
            r"publishers/anthropic/models/(?P<model>[^/:]+):(?P<method>rawPredict|streamRawPredict)",
            "anthropic",
            _claude_on_vertex,
        ),
        (
            r"/openai/deployments/(?P<deployment>[^/]+)/"
            r"(?P<operation>chat/completions|completions|embeddings)",
            "openai",
            _azure_deployment,
        ),
        (r"/openai/(?P<operation>responses)", "openai", _azure_resource),
        (
            r"/openai/(?P<v1>v1)/(?P<operation>chat/completions|completions|embeddings|responses)",
            "openai",
            _azure_resource,
        ),
    )
)
"""Routes matched (whole path, before the fixed OpenAI / Anthropic routes) by pattern."""


def _match_route(path: str) -> Optional[tuple[_PatternRoute, dict[str, str]]]:
    for route in _PATTERN_ROUTES:
        match = route.pattern.fullmatch(path)
        if match is not None:
            params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
            return route, params
    return None


_REQUEST_ID_HEADERS = {
    "openai": "x-request-id",
    "anthropic": "request-id",
    "bedrock": "x-amzn-RequestId",
}


def _error_reply(status: int, dialect: str, message: str) -> _JSONReply:
    if dialect == "bedrock":
        return _bedrock_error(status, message)
    if dialect == "google":
        return _google_error(status, message)
    if dialect == "anthropic":
        anthropic_types = {
            400: "invalid_request_error",
            401: "authentication_error",
            403: "permission_error",
            404: "not_found_error",
            413: "request_too_large",
            429: "rate_limit_error",
            529: "overloaded_error",
        }
        return _anthropic_error(status, message, anthropic_types.get(status, "api_error"))
    if status == 429:
        return _openai_error(status, message, "requests", "rate_limit_exceeded")
    if status >= 500:
        return _openai_error(status, message, "server_error")
    return _openai_error(status, message, "invalid_request_error")


# --------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], owner: FakeLLMServer) -> None:
        self.owner = owner
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can stall
        # for seconds on a machine without network; the name is not needed here.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return  # the client went away; nothing to report
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeLLM/1.0"
    sys_version = ""
    server: _HTTPServer

    _reset_connection = False

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.owner._track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.owner._untrack(self.connection)
            if self._reset_connection:
                # SO_LINGER is 0, so closing the socket sends an RST instead of a FIN.
                self.connection.close()

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.owner.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    # -- request --------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline(65537)  # CRLF after each chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        try:
            self._handle()
        except (ConnectionError, TimeoutError):
            self.close_connection = True

    def _handle(self) -> None:
        owner = self.server.owner
        url = urlsplit(self.path)
        path, query = url.path, url.query
        raw = self._read_body()
        body: Any = None
        bad_json = False
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                bad_json = True
        raw_headers = [(str(k), str(v)) for k, v in self.headers.items()]
        headers = {k.lower(): v for k, v in raw_headers}
        request = RecordedRequest(self.command, path, headers, raw_headers, body, query)
        failure = owner._record(request)
        if isinstance(failure, _Redirect):
            self._redirect(failure)
            return

        if owner.latency > 0:
            time.sleep(owner.latency)

        matched = _match_route(path)
        if matched is not None:
            dialect = matched[0].dialect
        else:
            dialect = "anthropic" if _is_anthropic(path, headers) else "openai"
        if failure == "reset":
            self._reset()
            return
        if failure is not None:
            status = int(failure)
            injected = _error_reply(status, dialect, f"Injected failure (HTTP {status}).")
            if owner.retry_after_ms is not None and (status == 429 or status >= 500):
                injected.headers["retry-after-ms"] = f"{owner.retry_after_ms:g}"
            self._send(injected, dialect)
            return

        endpoint: Optional[_Endpoint]
        if matched is not None:
            route, params = matched
            endpoint = None
            if route.method == self.command:
                call_query = dict(parse_qsl(query, keep_blank_values=True))

                def endpoint(parsed: dict[str, Any]) -> _Reply:
                    return route.endpoint(_Call(parsed, params, call_query, headers, owner))

            if dialect == "bedrock":
                denied = _aws_auth_problem(
                    self.command, path, query, raw_headers, raw, owner.aws_credentials
                )
                if denied is not None:
                    self._send(denied, dialect)
                    return
        else:
            routes = _ANTHROPIC_ROUTES if dialect == "anthropic" else _OPENAI_ROUTES
            endpoint = routes.get((self.command, path))
        if endpoint is None:
            status = 405 if path in _KNOWN_PATHS or matched is not None else 404
            message = f"Unknown request URL: {self.command} {path}"
            self._send(_error_reply(status, dialect, message), dialect)
            return
        if bad_json or (raw and not isinstance(body, dict)):
            message = "We could not parse the JSON body of your request."
            self._send(_error_reply(400, dialect, message), dialect)
            return
        reply: _Reply
        try:
            _extra_usage.set(_parse_extra_usage(headers.get("x-fake-usage")))
            reply = endpoint(body if isinstance(body, dict) else {})
        except Exception as exc:  # a bug in this file: answer, and show it
            self.log_error("endpoint %s failed: %r", path, exc)
            reply = _error_reply(500, dialect, f"Fake server error: {exc!r}")
        self._send(reply, dialect)

    # -- response -------------------------------------------------------------------------

    def _head(self, status: int, headers: dict[str, str], dialect: str) -> bytes:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        all_headers = {"Server": self.server_version, "Date": self.date_time_string()}
        request_id_header = _REQUEST_ID_HEADERS.get(dialect)
        if request_id_header is not None:
            request_id = str(uuid.uuid4()) if dialect == "bedrock" else _new_id("req_")
            all_headers[request_id_header] = request_id
        all_headers["Connection"] = "close" if self.close_connection else "keep-alive"
        all_headers.update(headers)
        lines = [f"HTTP/1.1 {status} {phrase}"]
        lines.extend(f"{name}: {value}" for name, value in all_headers.items())
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send(self, reply: _Reply, dialect: str) -> None:
        if isinstance(reply, _JSONReply):
            payload = _dumps(reply.body).encode()
            head = self._head(
                reply.status,
                {
                    "Content-Type": "application/json",
                    "Content-Length": str(len(payload)),
                    **reply.headers,
                },
                dialect,
            )
            self.wfile.write(head + payload)
            return

        chunked = self.request_version == "HTTP/1.1"
        if not chunked:
            self.close_connection = True  # an HTTP/1.0 client reads the stream until EOF
        stream_headers = {"Content-Type": reply.content_type, "Cache-Control": "no-cache"}
        if chunked:
            stream_headers["Transfer-Encoding"] = "chunked"
        head = self._head(200, {**stream_headers, **reply.headers}, dialect)
        frames = [b"%x\r\n%s\r\n" % (len(e), e) for e in reply.events] if chunked else reply.events
        end = b"0\r\n\r\n" if chunked else b""
        delay = self.server.owner.stream_delay
        if delay <= 0:
            self.wfile.write(head + b"".join(frames) + end)
            return
        self.wfile.write(head)
        for frame in frames:
            time.sleep(delay)
            self.wfile.write(frame)
        self.wfile.write(end)

    def _redirect(self, redirect: _Redirect) -> None:
        location = redirect.target + self.path
        head = self._head(redirect.status, {"Location": location, "Content-Length": "0"}, "openai")
        self.wfile.write(head)

    def _reset(self) -> None:
        self.close_connection = True
        self._reset_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


class FakeLLMServer:
    """A threaded local HTTP server speaking enough OpenAI, Anthropic, Bedrock, Gemini / Vertex
    AI and Azure OpenAI for their SDKs.

    ``latency`` delays every reply, ``stream_delay`` each streamed event (both in seconds);
    ``retry_after_ms`` is sent as ``retry-after-ms`` on injected 429/5xx failures so that the
    SDKs retry at once rather than after their default backoff (``None`` to omit it).
    All of them may be changed while the server runs.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        latency: float = 0.0,
        stream_delay: float = 0.0,
        retry_after_ms: Optional[float] = 10.0,
        verbose: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.latency = latency
        self.stream_delay = stream_delay
        self.retry_after_ms = retry_after_ms
        self.verbose = verbose
        self.azure_deployments: dict[str, str] = {}
        """Azure OpenAI deployments: name -> the model its replies name. A deployment exists
        only once listed here (others get Azure's 404 ``DeploymentNotFound``); :meth:`reset`
        forgets them."""
        self.aws_credentials: dict[str, str] = {"test": "test"}
        """AWS access key id -> secret key: SigV4 signatures made with these keys are verified
        (a mismatch is answered 403 ``InvalidSignatureException``, as AWS does); requests
        signed with other keys are accepted unchecked."""
        self.requests: list[RecordedRequest] = []
        self._failures: list[Union[str, _Redirect]] = []
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._connections_idle = threading.Condition(self._lock)
        self._stopping = False
        self._httpd: Optional[_HTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> FakeLLMServer:
        """Bind and serve on a background daemon thread; returns ``self``."""
        if self._httpd is not None:
            raise RuntimeError("FakeLLMServer is already running")
        self._stopping = False
        httpd = _HTTPServer((self.host, self.port), self)
        self.port = int(httpd.server_address[1])
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"FakeLLMServer:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, drop open (keep-alive) connections and release the port."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        httpd.shutdown()  # returns once serve_forever has left its loop
        with self._lock:
            self._stopping = True
            for conn in self._connections:
                _shutdown_socket(conn)
            # Give handler threads a moment to notice and finish.
            self._connections_idle.wait_for(lambda: not self._connections, timeout=2.0)
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=5.0)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._httpd is not None

    # -- addresses ------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://<host>:<port>``; with ``port=0`` it is known only once started."""
        if self.port == 0:
            raise RuntimeError("the port is chosen at start(); start the server first")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """For ``OpenAI(base_url=...)``: the SDK appends paths such as ``chat/completions``."""
        return self.base_url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        """For ``Anthropic(base_url=...)``: the SDK appends paths such as ``/v1/messages``."""
        return self.base_url

    @property
    def bedrock_endpoint_url(self) -> str:
        """For ``boto3.client("bedrock-runtime", endpoint_url=...)`` and
        ``AnthropicBedrock(base_url=...)``: paths ``/model/{modelId}/converse`` and the like."""
        return self.base_url

    @property
    def google_genai_base_url(self) -> str:
        """For ``genai.Client(http_options=HttpOptions(base_url=...))``, Gemini API
        (``/v1beta/models/...``) and Vertex AI (``/v1beta1/projects/...``) alike."""
        return self.base_url

    @property
    def azure_endpoint(self) -> str:
        """For ``AzureOpenAI(azure_endpoint=...)``: the SDK appends ``/openai/deployments/...``."""
        return self.base_url

    @property
    def anthropic_vertex_base_url(self) -> str:
        """For ``AnthropicVertex(base_url=...)``: like its default, the host and ``/v1``."""
        return self.base_url + "/v1"

    def azure_model(self, deployment: str) -> Optional[str]:
        """The model an Azure OpenAI deployment runs, as its replies name it (from
        :attr:`azure_deployments`), or None: no such deployment (Azure answers 404
        ``DeploymentNotFound``)."""
        return self.azure_deployments.get(deployment)

    # -- recording and failure injection --------------------------------------------------

    def reset(self) -> None:
        """Forget recorded requests, pending failures and Azure deployments (settings such as
        latency stay)."""
        with self._lock:
            self.requests.clear()
            self._failures.clear()
            self.azure_deployments.clear()

    def fail_next(self, n: int, mode: str = "500") -> None:
        """Make the next ``n`` requests fail (they are still recorded).

        ``"500"``: HTTP 500 with a JSON error body (the SDKs retry it); ``"429"``: HTTP 429;
        ``"reset"``: the connection is reset without any response. Any other HTTP error
        status as a string (``"503"``, ``"400"``, ...) answers with that status.
        """
        mode = str(mode)
        if mode != "reset" and not (mode.isdigit() and 400 <= int(mode) <= 599):
            raise ValueError(f"unknown failure mode {mode!r}; use one of {FAIL_MODES}")
        if n < 0:
            raise ValueError("n must be >= 0")
        with self._lock:
            self._failures.extend([mode] * n)

    def redirect_next(self, n: int, status: int = 307, target: str = "") -> None:
        """Answer the next ``n`` requests (queued after any pending failure or redirect) with
        ``status`` (301, 302, 303, 307 or 308) and ``Location: <target><path>``: ``target``
        is a scheme and authority (``"http://localhost:8000"``: an absolute Location), or
        ``""`` for a relative one (the same path on this server). They are still recorded."""
        if status not in (301, 302, 303, 307, 308):
            raise ValueError(f"not a redirect status: {status}")
        if n < 0:
            raise ValueError("n must be >= 0")
        with self._lock:
            self._failures.extend([_Redirect(status, target.rstrip("/"))] * n)

    @property
    def pending_failures(self) -> int:
        with self._lock:
            return len(self._failures)

    def _record(self, request: RecordedRequest) -> Union[str, _Redirect, None]:
        """Record ``request``; return the failure mode or redirect it must get, if any."""
        with self._lock:
            self.requests.append(request)
            return self._failures.pop(0) if self._failures else None

    def _track(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.add(conn)
            if self._stopping:
                _shutdown_socket(conn)

    def _untrack(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.discard(conn)
            self._connections_idle.notify_all()


def _shutdown_socket(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each reply")
    parser.add_argument("--stream-delay", type=float, default=0.0, help="seconds per SSE event")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    server = FakeLLMServer(
        args.host,
        args.port,
        latency=args.latency,
        stream_delay=args.stream_delay,
        verbose=args.verbose,
    ).start()
    # Before the first line: whoever read it may send SIGTERM at once.
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stopped.set())
    print(f"fake LLM server listening on {server.base_url}", flush=True)
    print(f"  OpenAI:    OPENAI_BASE_URL={server.openai_base_url}", flush=True)
    print(f"  Anthropic: ANTHROPIC_BASE_URL={server.anthropic_base_url}", flush=True)
    print(f"  Bedrock:   endpoint_url={server.bedrock_endpoint_url}", flush=True)
    print(f"  Google:    HttpOptions(base_url={server.google_genai_base_url!r})", flush=True)
    print(f"  Azure:     AZURE_OPENAI_ENDPOINT={server.azure_endpoint}", flush=True)
    try:
        while not stopped.wait(1.0):  # a bounded wait keeps Ctrl-C responsive
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()

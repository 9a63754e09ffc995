"""A local stand-in for the OpenAI and Anthropic HTTP APIs, using only the standard library.

The real ``openai`` and ``anthropic`` SDKs can be pointed at it and complete their calls
(plain JSON and server-sent-event streams). Every request is recorded, headers included, so
tests can check what a client sent, and failures and redirects can be injected to exercise
retries and redirect hops.

Use it from Python::

    with FakeLLMServer() as server:
        client = OpenAI(base_url=server.openai_base_url, api_key="test")
        client.chat.completions.create(model="gpt-4o-mini", messages=[...])
        server.requests[-1].headers["authorization"]  # "Bearer test"

or on its own, serving until interrupted::

    python examples/fake_llm_server.py --host 127.0.0.1 --port 8000

Endpoints (replies echo the last user message as ``"echo: <text>"`` and carry ``usage``):

* OpenAI: ``POST /v1/chat/completions``, ``POST /v1/completions`` (both also with
  ``"stream": true``), ``POST /v1/embeddings``, ``POST /v1/responses`` (also streamed),
  ``GET /v1/models``.
* Anthropic: ``POST /v1/messages`` (also streamed), ``POST /v1/messages/count_tokens``,
  ``GET /v1/models`` (when the request carries an ``anthropic-version`` header).

Token counts are a deterministic approximation: one token per word or punctuation mark.
A request header ``x-fake-usage: {"cached_tokens": 6, "cache_write_tokens": 4,
"reasoning_tokens": 3}`` (any of them) adds cached, cache-written and reasoning tokens to the
usage of chat completions, responses and messages, in each API's own shape: OpenAI counts
cached tokens inside ``prompt_tokens`` / ``input_tokens`` (cache writes are not reported),
Anthropic next to ``input_tokens`` (``cache_read_input_tokens``,
``cache_creation_input_tokens``); reasoning tokens are inside the output count.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import contextvars
import hashlib
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
from urllib.parse import urlsplit

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
    """The request path without the query string, e.g. ``/v1/chat/completions``."""
    headers: dict[str, str]
    """Header names lower-cased; when a header is repeated the last value wins."""
    raw_headers: list[tuple[str, str]]
    """Headers exactly as received, in order, with their original case (to spot duplicates)."""
    body: Any
    """The parsed JSON body, or ``None`` when there was none or it was not JSON."""


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


@dataclass
class _SSEReply:
    events: list[bytes]


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
    fields = ("cached_tokens", "cache_write_tokens", "reasoning_tokens")
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
    messages = body.get("messages")
    model = str(body.get("model") or "gpt-4o-mini")
    reply = _echo(_last_user_text(messages))
    requested_n = body.get("n")
    n = requested_n if isinstance(requested_n, int) and requested_n > 0 else 1
    extra = _extra_usage.get()
    cached, reasoning = extra.get("cached_tokens", 0), extra.get("reasoning_tokens", 0)
    prompt_tokens = max(1, _count_tokens(_all_text(messages))) + cached
    completion_tokens = _count_tokens(reply) * n + reasoning
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
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
    last_text, all_text = _responses_input_text(body.get("input"))
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


def _messages(body: dict[str, Any]) -> _Reply:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _anthropic_error(
            400, "messages: at least one message is required", "invalid_request_error"
        )
    reply = _echo(_last_user_text(messages))
    input_tokens = _anthropic_prompt_tokens(body)
    output_tokens = _count_tokens(reply)
    message: dict[str, Any] = {
        "id": _new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": str(body.get("model") or "claude-sonnet-4-6"),
        "content": [{"type": "text", "text": reply}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": _extra_usage.get().get("cache_write_tokens", 0),
            "cache_read_input_tokens": _extra_usage.get().get("cached_tokens", 0),
            "service_tier": "standard",
        },
    }
    if not body.get("stream"):
        return _JSONReply(200, message)

    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "usage": {**message["usage"], "output_tokens": 1},
    }
    events = [
        _sse({"type": "message_start", "message": start}, "message_start"),
        _sse(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            "content_block_start",
        ),
        _sse({"type": "ping"}, "ping"),
    ]
    events.extend(
        _sse(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": piece},
            },
            "content_block_delta",
        )
        for piece in _pieces(reply)
    )
    events += [
        _sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        _sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": output_tokens},
            },
            "message_delta",
        ),
        _sse({"type": "message_stop"}, "message_stop"),
    ]
    return _SSEReply(events)


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


def _error_reply(status: int, anthropic: bool, message: str) -> _JSONReply:
    if anthropic:
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
        path = urlsplit(self.path).path
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
        failure = owner._record(RecordedRequest(self.command, path, headers, raw_headers, body))
        if isinstance(failure, _Redirect):
            self._redirect(failure)
            return

        if owner.latency > 0:
            time.sleep(owner.latency)

        anthropic = _is_anthropic(path, headers)
        if failure == "reset":
            self._reset()
            return
        if failure is not None:
            status = int(failure)
            injected = _error_reply(status, anthropic, f"Injected failure (HTTP {status}).")
            if owner.retry_after_ms is not None and (status == 429 or status >= 500):
                injected.headers["retry-after-ms"] = f"{owner.retry_after_ms:g}"
            self._send(injected, anthropic)
            return

        routes = _ANTHROPIC_ROUTES if anthropic else _OPENAI_ROUTES
        endpoint = routes.get((self.command, path))
        if endpoint is None:
            status = 405 if path in _KNOWN_PATHS else 404
            message = f"Unknown request URL: {self.command} {path}"
            self._send(_error_reply(status, anthropic, message), anthropic)
            return
        if bad_json or (raw and not isinstance(body, dict)):
            message = "We could not parse the JSON body of your request."
            self._send(_error_reply(400, anthropic, message), anthropic)
            return
        reply: _Reply
        try:
            _extra_usage.set(_parse_extra_usage(headers.get("x-fake-usage")))
            reply = endpoint(body if isinstance(body, dict) else {})
        except Exception as exc:  # a bug in this file: answer, and show it
            self.log_error("endpoint %s failed: %r", path, exc)
            reply = _error_reply(500, anthropic, f"Fake server error: {exc!r}")
        self._send(reply, anthropic)

    # -- response -------------------------------------------------------------------------

    def _head(self, status: int, headers: dict[str, str], anthropic: bool) -> bytes:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        request_id = _new_id("req_")
        all_headers = {
            "Server": self.server_version,
            "Date": self.date_time_string(),
            ("request-id" if anthropic else "x-request-id"): request_id,
            "Connection": "close" if self.close_connection else "keep-alive",
            **headers,
        }
        lines = [f"HTTP/1.1 {status} {phrase}"]
        lines.extend(f"{name}: {value}" for name, value in all_headers.items())
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send(self, reply: _Reply, anthropic: bool) -> None:
        if isinstance(reply, _JSONReply):
            payload = _dumps(reply.body).encode()
            head = self._head(
                reply.status,
                {
                    "Content-Type": "application/json",
                    "Content-Length": str(len(payload)),
                    **reply.headers,
                },
                anthropic,
            )
            self.wfile.write(head + payload)
            return

        chunked = self.request_version == "HTTP/1.1"
        if not chunked:
            self.close_connection = True  # an HTTP/1.0 client reads the stream until EOF
        stream_headers = {
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
        }
        if chunked:
            stream_headers["Transfer-Encoding"] = "chunked"
        head = self._head(200, stream_headers, anthropic)
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
        head = self._head(redirect.status, {"Location": location, "Content-Length": "0"}, False)
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
    """A threaded local HTTP server speaking enough OpenAI and Anthropic for their SDKs.

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

    # -- recording and failure injection --------------------------------------------------

    def reset(self) -> None:
        """Forget recorded requests and pending failures (settings such as latency stay)."""
        with self._lock:
            self.requests.clear()
            self._failures.clear()

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
    print(f"fake LLM server listening on {server.base_url}", flush=True)
    print(f"  OpenAI:    OPENAI_BASE_URL={server.openai_base_url}", flush=True)
    print(f"  Anthropic: ANTHROPIC_BASE_URL={server.anthropic_base_url}", flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stopped.set())
    try:
        while not stopped.wait(1.0):  # a bounded wait keeps Ctrl-C responsive
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()

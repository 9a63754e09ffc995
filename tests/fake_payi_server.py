"""A local stand-in for Pay-i's ingest API (``POST /api/v1/ingest``), standard library only.

Records every request (path, query, headers lower-cased, JSON body) and answers as Pay-i does
(an ``IngestResponse`` whose ``xproxy_result`` has the request id, a cost and the limits'
states, ``duplicate_request`` for an ``id`` seen before). Faults, for the exporter's tests:

* ``status``: the HTTP status of every answer (e.g. 500, 429; an error body);
* ``delay``: seconds before answering (slow);
* ``fault``: ``"not_json"`` (200 with an HTML body), ``"hang"`` (read the request, never
  answer), ``"reset"`` (read the request, send half a reply, then close);
* ``faults``: a list of faults (or statuses) used one per request before ``fault`` /
  ``status`` (e.g. ``["reset"]``: the first request is reset, the next answered);
* :meth:`down` / :meth:`up`: stop listening on the port (connections refused), then listen
  on the same port again (an outage and its recovery);
* ``limits``: the limits' states to answer (``{"l1": "blocked"}``).

It is Pay-i's proxy for OpenAI's chat completions too (:data:`PROXY_PATH`): the provider's
answer with Pay-i's ``xproxy_result`` in it.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional, Union
from urllib.parse import parse_qs, urlsplit

Fault = Union[str, int]
#: Pay-i's proxy for OpenAI: ``openai.OpenAI(base_url=server.base_url + PROXY_PATH)``.
PROXY_PATH = "/api/v1/proxy/openai/v1"


@dataclass(frozen=True)
class Ingested:
    path: str
    headers: dict[str, str]
    body: Any

    @property
    def id(self) -> Optional[str]:
        """The ``id`` query parameter (Pay-i's SDK sends the record's provider response id)."""
        ids = parse_qs(urlsplit(self.path).query).get("id")
        return ids[0] if ids else None


class _Server(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (timeouts in the fault tests) is not an error here


class FakePayiServer:
    def __init__(self) -> None:
        self.requests: list[Ingested] = []
        self.status = 200
        self.delay = 0.0
        self.fault: Optional[str] = None
        self.faults: list[Fault] = []
        self.limits: dict[str, str] = {}
        self.cost = 0.0042
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._release = threading.Event()  # ends the hangs at exit
        self._down = False
        self._server = self._make(0)
        self._port = self._server.server_address[1]
        self._thread: Optional[threading.Thread] = None

    def _make(self, port: int) -> _Server:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                if outer._down:  # a kept-alive connection of before the outage: closed
                    self.close_connection = True
                    return
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                request = Ingested(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                if self.path.startswith(PROXY_PATH):
                    with outer._lock:
                        outer.requests.append(request)
                    self._proxy(body or {})
                    return
                with outer._lock:
                    outer.requests.append(request)
                    fault: Fault = outer.faults.pop(0) if outer.faults else (outer.fault or "")
                    duplicate = request.id is not None and request.id in outer._seen
                if outer.delay:
                    time.sleep(outer.delay)
                if fault == "hang":
                    outer._release.wait(60)
                    self.close_connection = True
                    return
                if fault == "reset":
                    self.wfile.write(b'HTTP/1.1 200 OK\r\ncontent-length: 500\r\n\r\n{"event')
                    self.wfile.flush()
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                    )
                    self.close_connection = True
                    return
                status = fault if isinstance(fault, int) else outer.status
                if fault == "not_json":
                    self._answer(200, b"<html>maintenance</html>", "text/html")
                    outer._accept(request)
                    return
                if status >= 400:
                    reply: Any = {"xproxy_error": {"code": "test", "message": "injected"}}
                else:
                    reply = outer._reply(duplicate)
                    outer._accept(request)
                self._answer(status, json.dumps(reply).encode(), "application/json")

            def _proxy(self, body: dict[str, Any]) -> None:
                """Pay-i's proxy in front of OpenAI's chat completions: the provider's
                answer with Pay-i's ``xproxy_result`` in it (a stream: in its last chunk)."""
                result = outer._reply(False)["xproxy_result"]
                usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
                base = {"id": "chatcmpl-proxied", "created": 0, "model": body.get("model")}
                if not body.get("stream"):
                    reply = {
                        **base,
                        "object": "chat.completion",
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": "proxied"},
                            }
                        ],
                        "usage": usage,
                        "xproxy_result": result,
                    }
                    self._answer(200, json.dumps(reply).encode(), "application/json")
                    return
                chunk = {**base, "object": "chat.completion.chunk"}
                events = [
                    {**chunk, "choices": [{"index": 0, "delta": {"content": "proxied"}}]},
                    {**chunk, "choices": [], "usage": usage, "xproxy_result": result},
                ]
                data = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
                self._answer(200, data.encode(), "text/event-stream")

            def _answer(self, status: int, data: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        return _Server(("127.0.0.1", port), Handler)

    def _accept(self, request: Ingested) -> None:
        with self._lock:
            if request.id is not None:
                self._seen.add(request.id)

    def _reply(self, duplicate: bool) -> dict[str, Any]:
        now = datetime.now(timezone.utc).isoformat()
        request_id = str(uuid.uuid4())
        result: dict[str, Any] = {
            "request_id": request_id,
            "cost": {"currency": "usd", "total": {"base": self.cost}},
        }
        if self.limits:
            result["limits"] = {k: {"state": v} for k, v in self.limits.items()}
            result["blocked_limit_ids"] = [k for k, v in self.limits.items() if v == "blocked"]
        if duplicate:
            result["duplicate_request"] = True
        return {
            "event_timestamp": now,
            "ingest_timestamp": now,
            "request_id": request_id,
            "xproxy_result": result,
        }

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def ingested(self) -> list[Ingested]:
        """Every request to the ingest path (retries too)."""
        with self._lock:
            return [r for r in self.requests if r.path.split("?")[0] == "/api/v1/ingest"]

    def accepted_ids(self) -> set[str]:
        """The record ids Pay-i took (answered 2xx at least once)."""
        with self._lock:
            return set(self._seen)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._seen.clear()
            self.faults.clear()
        self.status, self.delay, self.fault, self.limits = 200, 0.0, None, {}

    def down(self) -> None:
        """Stop listening: connections to the port are refused until :meth:`up` (and
        connections kept alive from before are closed at their next request)."""
        self._down = True
        self._server.shutdown()
        self._server.server_close()

    def up(self) -> None:
        """Listen on the same port again."""
        self._server = self._make(self._port)
        self._down = False
        self._serve()

    def _serve(self) -> None:
        # Polled every 50 ms (not 0.5 s): each stop waits up to one poll for the loop to end.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def __enter__(self) -> FakePayiServer:
        self._serve()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()

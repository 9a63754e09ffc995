"""A local stand-in for Pay-i's ingest API (``POST /api/v1/ingest``), standard library only.

Records every request (path, headers lower-cased, JSON body) and answers as Pay-i does (an
``IngestResponse``). Faults for the exporter's tests: ``status`` (e.g. 500 for every request),
``delay`` (seconds before answering).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional


@dataclass(frozen=True)
class Ingested:
    path: str
    headers: dict[str, str]
    body: Any


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (timeouts in the fault tests) is not an error here


class FakePayiServer:
    def __init__(self) -> None:
        self.requests: list[Ingested] = []
        self.status = 200
        self.delay = 0.0
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                with outer._lock:
                    outer.requests.append(
                        Ingested(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                if outer.delay:
                    time.sleep(outer.delay)
                now = datetime.now(timezone.utc).isoformat()
                request_id = str(uuid.uuid4())
                if outer.status >= 400:
                    reply: Any = {"xproxy_error": {"code": "test", "message": "injected"}}
                else:
                    reply = {
                        "event_timestamp": now,
                        "ingest_timestamp": now,
                        "request_id": request_id,
                        "xproxy_result": {"request_id": request_id},
                    }
                data = json.dumps(reply).encode()
                self.send_response(outer.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread: Optional[threading.Thread] = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def ingested(self) -> list[Ingested]:
        with self._lock:
            return [r for r in self.requests if r.path.split("?")[0] == "/api/v1/ingest"]

    def __enter__(self) -> FakePayiServer:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

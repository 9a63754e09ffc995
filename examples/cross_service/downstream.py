"""A downstream service that continues its caller's Pay-i context through W3C baggage.

It answers ``POST /summarize`` by making one LLM call. With ``PAYI_PROPAGATE_BAGGAGE=true``
the caller's ``payi.*`` baggage entries become the *baggage* level of the precedence: above
this service's global context, below its own ``@track`` / ``track_context`` scopes.

    PAYI_PROPAGATE_BAGGAGE=true LLM_BASE_URL=http://127.0.0.1:8000/v1 \\
        python examples/cross_service/downstream.py --port 8081
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from openai import OpenAI
from opentelemetry import context, propagate, trace
from opentelemetry.sdk.trace import TracerProvider

from payi_otel import get_context, payi_instrument, track_context


def make_handler(client: OpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            text = json.loads(self.rfile.read(length) or b"{}").get("text", "")
            # What a server instrumentation does: continue the caller's trace and baggage.
            token = context.attach(propagate.extract(self.headers))
            try:
                with track_context(use_case_step="summarize"):
                    reply = client.chat.completions.create(
                        model="gpt-4o-mini",
                        messages=[{"role": "user", "content": f"Summarize: {text}"}],
                    )
                    seen: dict[str, Any] = dict(get_context())
            finally:
                context.detach(token)
            body = json.dumps(
                {"summary": reply.choices[0].message.content, "context": seen}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    provider = TracerProvider()
    trace.set_tracer_provider(provider)
    payi_instrument(tracer_provider=provider)  # PAYI_* variables configure it
    client = OpenAI(base_url=os.environ["LLM_BASE_URL"], api_key="demo", max_retries=0)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(client))
    print(f"LISTENING {server.server_port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()

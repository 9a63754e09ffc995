"""A Flask service whose every request is a Pay-i scope, until its streamed body ends
(README "Web services").

    python examples/web_flask/app.py

serves the app with werkzeug on 127.0.0.1, its LLM calls going to the local fake LLM server,
sends concurrent requests as four users, and prints what each LLM call carried.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # fake_llm_server

from example_support import ask_as, print_llm_calls
from fake_llm_server import FakeLLMServer
from flask import Flask, Response
from openai import OpenAI
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from werkzeug.serving import make_server

from payi_otel import payi_instrument
from payi_otel.web import PayiWSGIMiddleware

USERS = ["alice", "bob", "carol", "dave"]


def create_app(llm: OpenAI) -> Flask:
    app = Flask(__name__)

    @app.get("/stream/<topic>")
    def stream(topic: str) -> Response:
        def body() -> Iterator[str]:
            yield "thinking... "
            # The view has returned: the body is produced in the request's scope all the same.
            messages = [{"role": "user", "content": topic}]
            reply = llm.chat.completions.create(model="gpt-4o-mini", messages=messages)
            yield reply.choices[0].message.content or ""

        return Response(body(), mimetype="text/plain")

    # One scope per request: the X-User-Id header is the user, the route template the step.
    app.wsgi_app = PayiWSGIMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, headers={"X-User-Id": "user_id"}, route_step=True
    )
    return app


def main() -> None:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log
    trace.set_tracer_provider(TracerProvider())  # your exporter of choice goes here
    payi_instrument({"use_case_name": "web_flask"})
    with FakeLLMServer() as llm_server:
        llm = OpenAI(base_url=llm_server.openai_base_url, api_key="demo")
        server = make_server("127.0.0.1", 0, create_app(llm), threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        ask_as(f"http://127.0.0.1:{server.server_port}/stream/hello-", USERS)
        server.shutdown()
        print_llm_calls(llm_server)


if __name__ == "__main__":
    main()

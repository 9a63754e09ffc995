"""A FastAPI service whose every request is a Pay-i scope (README "Web services").

    python examples/web_fastapi/app.py

serves the app with uvicorn on 127.0.0.1, its LLM calls going to the local fake LLM server,
sends concurrent requests as four users through the one worker, and prints what each LLM
call carried: its own user, and the route template as its step.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # fake_llm_server

from example_support import ask_as, fastapi_chat_app, print_llm_calls, serve_uvicorn
from fake_llm_server import FakeLLMServer
from openai import AsyncOpenAI
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from payi_otel import payi_instrument
from payi_otel.web import PayiASGIMiddleware


def main() -> None:
    trace.set_tracer_provider(TracerProvider())  # your exporter of choice goes here
    payi_instrument({"use_case_name": "web_fastapi"})
    with FakeLLMServer() as llm_server:
        app = fastapi_chat_app(AsyncOpenAI(base_url=llm_server.openai_base_url, api_key="demo"))
        # One scope per request: the X-User-Id header is the user, the route template the step.
        app.add_middleware(PayiASGIMiddleware, headers={"X-User-Id": "user_id"}, route_step=True)
        url, stop = serve_uvicorn(app)
        ask_as(f"{url}/chat/hello-", ["alice", "bob", "carol", "dave"])
        stop()
        print_llm_calls(llm_server)


if __name__ == "__main__":
    main()

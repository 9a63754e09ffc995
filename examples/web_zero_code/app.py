"""A FastAPI service with no Pay-i code at all (README "Web services", zero-code):

    PAYI_WEB_HEADERS=X-User-Id=user_id PAYI_WEB_ROUTE_STEP=true \\
        OTEL_TRACES_EXPORTER=none OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none \\
        opentelemetry-instrument python examples/web_zero_code/app.py

serves the app with uvicorn on 127.0.0.1, its LLM calls going to the local fake LLM server,
sends a request as each of two users, and prints what each LLM call carried.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # fake_llm_server

from example_support import ask_as, fastapi_chat_app, print_llm_calls, serve_uvicorn
from fake_llm_server import FakeLLMServer
from openai import AsyncOpenAI

with FakeLLMServer() as llm_server:
    app = fastapi_chat_app(AsyncOpenAI(base_url=llm_server.openai_base_url, api_key="demo"))
    url, stop = serve_uvicorn(app)
    ask_as(f"{url}/chat/hello-", ["alice", "bob"])
    stop()
    print_llm_calls(llm_server)

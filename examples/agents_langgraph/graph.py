"""A LangGraph agent (LangChain's ``create_agent``) with a tool, attributed per user
(README "Agent frameworks").

    python examples/agents_langgraph/graph.py

runs the agent for two users from two threads against the local fake LLM server, with the
official GenAI instrumentation payi_otel turns on (LangChain's callbacks: ``invoke_agent``,
``execute_tool`` and ``chat`` spans; LangGraph runs the tool in a worker thread of its own)
and ``agent_steps``: it prints every span with its user, step and tokens.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # fake_llm_server

from example_support import print_spans
from fake_llm_server import FakeLLMServer
from langchain.agents import create_agent
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from payi_otel import payi_instrument, track_context


@tool
def lookup_order(order_id: str) -> str:
    """Look an order up."""
    return f"order {order_id}: shipped"


def main() -> None:
    spans = InMemorySpanExporter()  # your exporter of choice goes here
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    trace.set_tracer_provider(provider)
    payi_instrument({"use_case_name": "support"}, agent_steps=True)
    with FakeLLMServer() as llm_server:
        llm = ChatOpenAI(model="gpt-4o-mini", base_url=llm_server.openai_base_url, api_key="demo")
        agent = create_agent(llm, tools=[lookup_order], name="support_agent")

        def answer(user: str, question: str) -> str:
            with track_context(user_id=user):  # every span and call of the run is this user's
                out = agent.invoke({"messages": [HumanMessage(question)]})
            return str(out["messages"][-1].content)

        with ThreadPoolExecutor(2) as pool:
            for final in pool.map(answer, ["alice", "bob"], ["A-17", "B-42"]):
                print("answer:", final)
    print_spans(spans)


if __name__ == "__main__":
    main()

"""An OpenAI Agents SDK agent with a tool, attributed per user (README "Agent frameworks").

    python examples/agents_openai/agent.py

runs the agent for two users at once against the local fake LLM server, with the official
GenAI instrumentations payi_otel turns on (the Agents SDK's ``invoke_workflow`` /
``invoke_agent`` / ``execute_tool`` spans, openai's ``chat`` spans) and ``agent_steps``: it
prints every span with its user, step and tokens.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # fake_llm_server

from agents import Agent, Runner, function_tool, set_default_openai_client
from example_support import print_spans
from fake_llm_server import FakeLLMServer
from openai import AsyncOpenAI
from opentelemetry import trace
from opentelemetry.instrumentation.genai.openai_agents import OpenAIAgentsInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from payi_otel import payi_instrument, track_context


@function_tool
def lookup_order(order_id: str) -> str:
    """Look an order up."""
    return f"order {order_id}: shipped"


agent = Agent(
    name="support_agent",
    instructions="Answer order questions.",
    tools=[lookup_order],
    model="gpt-4o-mini",
)


async def answer(user: str, question: str) -> str:
    with track_context(user_id=user):  # every span and call of the run is this user's
        result = await Runner.run(agent, question)
    return str(result.final_output)


def main() -> None:
    spans = InMemorySpanExporter()  # your exporter of choice goes here
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    trace.set_tracer_provider(provider)
    # Spans through OpenTelemetry only (not the Agents SDK's own export to OpenAI);
    # payi_otel keeps an instrumentation that is already on, else turns it on itself.
    OpenAIAgentsInstrumentor().instrument(disable_openai_trace_export=True)
    payi_instrument({"use_case_name": "support"}, agent_steps=True)
    with FakeLLMServer() as llm_server:
        client = AsyncOpenAI(base_url=llm_server.openai_base_url, api_key="demo")
        set_default_openai_client(client, use_for_tracing=False)

        async def both() -> list[str]:
            return await asyncio.gather(answer("alice", "A-17"), answer("bob", "B-42"))

        for final in asyncio.run(both()):
            print("answer:", final)
    print_spans(spans)


if __name__ == "__main__":
    main()

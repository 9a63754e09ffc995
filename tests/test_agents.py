"""Agent frameworks (README "Agent frameworks"): a real OpenAI Agents SDK agent with a tool
and a real LangGraph graph (through LangChain's callbacks) against the fake LLM server, with
the official GenAI instrumentations payi_otel turns on: every span of the run carries the
scope's ``payi.*`` (the framework's own tasks and worker threads included), tokens are counted
once per inference call and never on agent spans, and with ``agent_steps`` an agent's or tool's
name is the ``use_case_step`` of the calls it makes."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, Callable, TypedDict

import openai
import pytest
from fake_llm_server import FakeLLMServer
from fixtures_otel import Metrics, Otel
from opentelemetry.sdk.trace import ReadableSpan

from payi_otel import PayiInstrumentor, track_context
from payi_otel._genai import genai_scope_prefixes
from payi_otel._model.parameters import REGISTRY

HEADER = {p.name: p.header for p in REGISTRY}
ATTRIBUTE = {p.name: p.attribute for p in REGISTRY}
USAGE = ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens")
AGENT_OPERATIONS = {"invoke_workflow", "invoke_agent", "execute_tool"}


def framework_spans(otel: Otel) -> list[ReadableSpan]:
    """Every span of a GenAI instrumentation (agent, workflow, tool and inference spans)."""
    return [
        s
        for s in otel.spans()
        if s.instrumentation_scope is not None
        and s.instrumentation_scope.name.startswith(genai_scope_prefixes())
    ]


def operation(span: ReadableSpan) -> str:
    return str((span.attributes or {}).get("gen_ai.operation.name"))


def check_counted_once(otel: Otel, metrics: Metrics, server: FakeLLMServer) -> None:
    """One inference span with usage per model call; no usage on agent spans; the token
    metric is exactly the inference spans' usage (per user)."""
    spans = framework_spans(otel)
    inference = [s for s in spans if operation(s) not in AGENT_OPERATIONS]
    llm_calls = [r for r in server.requests if r.path.startswith("/v1/")]
    assert len(inference) == len(llm_calls), [s.name for s in spans]
    for span in spans:
        if operation(span) in AGENT_OPERATIONS:
            assert not [k for k in span.attributes or {} if k.startswith("gen_ai.usage.")], span
    by_user: dict[Any, float] = {}
    for span in inference:
        user = span.attributes.get(ATTRIBUTE["user_id"])
        by_user[user] = by_user.get(user, 0) + sum(span.attributes[k] for k in USAGE)
    assert metrics.by("payi.genai.tokens", "payi.user_id") == pytest.approx(by_user)


# --- OpenAI Agents SDK ---------------------------------------------------------------------


@pytest.fixture
def agents_sdk(llm_server: FakeLLMServer) -> Iterator[Callable[[str], None]]:
    """The Agents SDK's default client on the fake server; its own trace export off."""
    import agents
    from agents.tracing import get_trace_provider, set_trace_processors

    provider = get_trace_provider()
    before = tuple(getattr(getattr(provider, "_multi_processor", None), "_processors", ()))
    set_trace_processors([])  # no export to OpenAI's tracing backend from the tests
    client = openai.AsyncOpenAI(base_url=llm_server.openai_base_url, api_key="test")
    agents.set_default_openai_client(client, use_for_tracing=False)

    def use_api(api: str) -> None:
        agents.set_default_openai_api(api)  # type: ignore[arg-type]

    yield use_api
    agents.set_default_openai_api("responses")
    set_trace_processors(list(before))


def weather_agent() -> Any:
    from agents import Agent, function_tool

    @function_tool
    def lookup(city: str) -> str:
        """Look the weather up."""
        return f"sunny in {city} ({threading.current_thread().name})"

    return Agent(
        name="weather_agent", instructions="Answer briefly.", tools=[lookup], model="gpt-4o-mini"
    )


@pytest.mark.parametrize("api", ["responses", "chat_completions"])
@pytest.mark.parametrize("steps", [False, True], ids=["plain", "agent_steps"])
async def test_openai_agents_every_span_attributed(
    agents_sdk: Callable[[str], None],
    llm_server: FakeLLMServer,
    instrument: Callable[..., PayiInstrumentor],
    otel: Otel,
    api: str,
    steps: bool,
) -> None:
    from agents import Runner

    metrics = Metrics()
    instrument(
        {"use_case_name": "agents_app"},
        meter_provider=metrics.provider,
        metrics_user_id=True,
        agent_steps=steps,
    )
    agents_sdk(api)
    agent = weather_agent()

    async def run_as(user: str, city: str) -> str:
        with track_context(user_id=user):
            result = await Runner.run(agent, city)
        return str(result.final_output)

    finals = await asyncio.gather(run_as("alice", "Paris"), run_as("bob", "Oslo"))
    assert "sunny in Paris" in finals[0] and "sunny in Oslo" in finals[1]

    spans = framework_spans(otel)
    assert {operation(s) for s in spans} >= AGENT_OPERATIONS
    # Every span of each run carries its own user: the trace's root is that run's scope.
    roots = {s.context.trace_id: s for s in otel.spans() if s.name == "payi.track_context"}
    for span in spans:
        root = roots[span.context.trace_id]
        assert span.attributes[ATTRIBUTE["user_id"]] == root.attributes[ATTRIBUTE["user_id"]]
        assert span.attributes[ATTRIBUTE["use_case_name"]] == "agents_app"
    # Each model call sent exactly its run's user (the request asks about the run's city).
    calls = [r for r in llm_server.requests if r.path.startswith("/v1/")]
    assert len(calls) == 4
    for call in calls:
        user = "alice" if "Paris" in str(call.body) else "bob"
        assert call.headers[HEADER["user_id"]] == user
        step = call.headers.get(HEADER["use_case_step"])
        assert step == ("weather_agent" if steps else None)
    for span in spans:
        want = {"execute_tool": "lookup", "invoke_workflow": None}.get(
            operation(span), "weather_agent"
        )
        assert span.attributes.get(ATTRIBUTE["use_case_step"]) == (want if steps else None)
    check_counted_once(otel, metrics, llm_server)


# --- LangGraph (LangChain callbacks) -----------------------------------------------------------


def chat_model(server: FakeLLMServer) -> Any:
    """ChatOpenAI on the fake server, with HTTP clients of its own (langchain-openai shares a
    cached async client across instances, bound to the first test's event loop)."""
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model="gpt-4o-mini",
        base_url=server.openai_base_url,
        api_key="test",
        http_client=openai.DefaultHttpxClient(),
        http_async_client=openai.DefaultAsyncHttpxClient(),
    )


def weather_graph(server: FakeLLMServer) -> Any:
    """A hand-built LangGraph graph: a model node and a tool node, looping."""
    from langchain_core.tools import tool
    from langgraph.graph import START, StateGraph
    from langgraph.graph.message import add_messages
    from langgraph.prebuilt import ToolNode, tools_condition

    @tool
    def lookup(city: str) -> str:
        """Look the weather up."""
        return f"sunny in {city} ({threading.current_thread().name})"

    # Evaluated here (this module's annotations are strings; add_messages is local).
    GraphState = TypedDict("GraphState", {"messages": Annotated[list, add_messages]})  # type: ignore[misc]  # noqa: UP013

    llm = chat_model(server)

    def model(state: Any) -> dict[str, Any]:
        return {"messages": [llm.bind_tools([lookup]).invoke(state["messages"])]}

    graph = StateGraph(GraphState)
    graph.add_node("model", model)
    graph.add_node("tools", ToolNode([lookup]))
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", tools_condition)
    graph.add_edge("tools", "model")
    return graph.compile(name="weather_graph")


def create_agent_graph(server: FakeLLMServer) -> Any:
    """LangChain's ``create_agent`` (a LangGraph graph): an ``invoke_agent`` span."""
    from langchain.agents import create_agent
    from langchain_core.tools import tool

    @tool
    def lookup(city: str) -> str:
        """Look the weather up."""
        return f"sunny in {city}"

    llm = chat_model(server)
    return create_agent(llm, tools=[lookup], name="weather_agent")


@pytest.mark.parametrize("surface", ["invoke-threads", "ainvoke-tasks"])
@pytest.mark.parametrize("steps", [False, True], ids=["plain", "agent_steps"])
async def test_langgraph_every_span_attributed(
    llm_server: FakeLLMServer,
    instrument: Callable[..., PayiInstrumentor],
    otel: Otel,
    surface: str,
    steps: bool,
) -> None:
    from langchain_core.messages import HumanMessage

    metrics = Metrics()
    instrument(
        {"use_case_name": "graph_app"},
        meter_provider=metrics.provider,
        metrics_user_id=True,
        agent_steps=steps,
    )
    graphs = {"graph": weather_graph(llm_server), "agent": create_agent_graph(llm_server)}
    jobs = [(f"user-{n}", f"City{n}", kind) for n, kind in enumerate(["graph", "agent"] * 2)]

    def run_sync(job: tuple[str, str, str]) -> str:
        user, city, kind = job
        with track_context(user_id=user):
            out = graphs[kind].invoke({"messages": [HumanMessage(city)]})
        return str(out["messages"][-1].content)

    async def run_async(job: tuple[str, str, str]) -> str:
        user, city, kind = job
        with track_context(user_id=user):
            out = await graphs[kind].ainvoke({"messages": [HumanMessage(city)]})
        return str(out["messages"][-1].content)

    if surface == "invoke-threads":
        with ThreadPoolExecutor(4) as pool:
            finals = list(pool.map(run_sync, jobs))
    else:
        finals = await asyncio.gather(*(run_async(job) for job in jobs))
    for (_, city, _), final in zip(jobs, finals):
        assert f"sunny in {city}" in final

    spans = framework_spans(otel)
    assert {operation(s) for s in spans} >= AGENT_OPERATIONS, {operation(s) for s in spans}
    roots = {s.context.trace_id: s for s in otel.spans() if s.name == "payi.track_context"}
    for span in spans:
        root = roots[span.context.trace_id]
        assert span.attributes[ATTRIBUTE["user_id"]] == root.attributes[ATTRIBUTE["user_id"]]
    users = {city: user for user, city, _ in jobs}
    kinds = {city: kind for _, city, kind in jobs}
    calls = [r for r in llm_server.requests if r.path.startswith("/v1/")]
    assert len(calls) == 2 * len(jobs)
    for call in calls:
        city = next(c for c in users if c in str(call.body))
        assert call.headers[HEADER["user_id"]] == users[city]
        want = "weather_agent" if steps and kinds[city] == "agent" else None
        assert call.headers.get(HEADER["use_case_step"]) == want
    if steps:
        tools = [s for s in spans if operation(s) == "execute_tool"]
        assert {s.attributes[ATTRIBUTE["use_case_step"]] for s in tools} == {"lookup"}
    check_counted_once(otel, metrics, llm_server)


@pytest.mark.parametrize("outer", [None, "carol"], ids=["no-outer-scope", "outer-scope"])
@pytest.mark.parametrize("steps", [False, True], ids=["plain", "agent_steps"])
async def test_a_scope_a_node_or_tool_opens_wins_for_its_langchain_calls(
    llm_server: FakeLLMServer,
    instrument: Callable[..., PayiInstrumentor],
    otel: Otel,
    outer: Any,
    steps: bool,
) -> None:
    """A node that learns its user from the graph's state, and a tool that bills its call to
    a service account, open ``track_context`` inside the run: their LangChain calls (sync and
    async) carry that scope, on the wire and on the chat span. (The LangChain instrumentation
    starts a model call in the context stored when its parent run started, and attached it
    around the call: a review found these calls billed to the outer user, or to nobody.)"""
    from langchain_core.messages import HumanMessage
    from langchain_core.tools import tool
    from langgraph.graph import START, StateGraph

    instrument({"use_case_name": "graph_app"}, agent_steps=steps)
    llm = chat_model(llm_server)
    State = TypedDict("State", {"user": str, "reply": str})  # noqa: UP013

    def node(state: Any) -> dict[str, Any]:
        with track_context(user_id=state["user"]):
            return {"reply": llm.invoke([HumanMessage(f"sync-{state['user']}")]).content}

    async def anode(state: Any) -> dict[str, Any]:
        with track_context(user_id=state["user"]):
            reply = await llm.ainvoke([HumanMessage(f"async-{state['user']}")])
            return {"reply": reply.content}

    @tool
    def summarize(text: str) -> str:
        """Summarize."""
        with track_context(user_id="svc-summarizer", use_case_step="summarize"):
            return str(llm.invoke([HumanMessage(f"tool-{text}")]).content)

    graphs = {}
    for name, fn in (("sync", node), ("async", anode)):
        graph = StateGraph(State)
        graph.add_node("n", fn)
        graph.add_edge(START, "n")
        graphs[name] = graph.compile()
    with track_context(user_id=outer) if outer else track_context():
        for user in ("alice", "bob"):
            graphs["sync"].invoke({"user": user, "reply": ""})
            await graphs["async"].ainvoke({"user": user, "reply": ""})
        summarize.invoke({"text": "x"})
    sent = {r.body["messages"][-1]["content"]: r.headers for r in llm_server.requests}
    for user in ("alice", "bob"):
        for kind in ("sync", "async"):
            assert sent[f"{kind}-{user}"][HEADER["user_id"]] == user, (kind, user)
    assert sent["tool-x"][HEADER["user_id"]] == "svc-summarizer"
    assert sent["tool-x"][HEADER["use_case_step"]] == "summarize"
    chats = [s for s in otel.all_genai_spans() if s.name.startswith("chat")]
    assert sorted(str(s.attributes[ATTRIBUTE["user_id"]]) for s in chats) == sorted(
        ["alice", "alice", "bob", "bob", "svc-summarizer"]
    )


def test_agent_steps_say_when_the_agents_sdks_tracing_is_off(
    agents_sdk: Callable[[str], None],
    instrument: Callable[..., PayiInstrumentor],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The OpenAI Agents SDK makes its agent and tool spans through its own tracing: turned
    off, or its processors replaced after ``payi_instrument()``, there are no steps (a review
    found it silent). One WARNING each says so; leaving it on says nothing."""
    import agents
    from agents.tracing import get_trace_provider

    provider = get_trace_provider()
    with caplog.at_level(logging.WARNING, "payi_otel"):
        instrument(agent_steps=True)
        kept = list(getattr(getattr(provider, "_multi_processor", None), "_processors", ()))
        agents.set_tracing_disabled(False)
        agents.set_trace_processors(kept)  # OpenTelemetry's still among them
        assert "tracing is" not in caplog.text
        try:
            for _ in range(2):
                agents.set_tracing_disabled(True)
                agents.set_trace_processors([])
        finally:
            agents.set_tracing_disabled(False)
            agents.set_trace_processors(kept)
    assert caplog.text.count("tracing is disabled (set_tracing_disabled(True))") == 1
    assert caplog.text.count("without OpenTelemetry's processor") == 1


def test_frameworks_turned_on_once_with_the_same_rules(
    instrument: Callable[..., PayiInstrumentor], monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry.instrumentation.genai.langchain import LangChainInstrumentor
    from opentelemetry.instrumentation.genai.openai_agents import OpenAIAgentsInstrumentor

    instrumentor = instrument()
    assert OpenAIAgentsInstrumentor().is_instrumented_by_opentelemetry
    assert LangChainInstrumentor().is_instrumented_by_opentelemetry
    instrumentor.uninstrument()
    assert not OpenAIAgentsInstrumentor().is_instrumented_by_opentelemetry
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "openai_agents,langchain")
    instrument()
    assert not OpenAIAgentsInstrumentor().is_instrumented_by_opentelemetry
    assert not LangChainInstrumentor().is_instrumented_by_opentelemetry


def test_one_warning_when_a_framework_instrumentation_is_missing(
    instrument: Callable[..., PayiInstrumentor],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The same rule as an SDK's: a framework installed without its instrumentation is one
    WARNING that says what to install (here the Agents SDK, its instrumentation missing)."""
    from dataclasses import replace

    from payi_otel import _genai

    [agents_family] = [f for f in _genai.FRAMEWORKS if f.sdk == "agents"]
    missing = _genai.Instrumentation(
        "opentelemetry-instrumentation-genai-openai-agents",
        "opentelemetry.instrumentation.genai.not_installed",
        "OpenAIAgentsInstrumentor",
    )
    monkeypatch.setattr(_genai, "FAMILIES", (replace(agents_family, instrumentations=(missing,)),))
    with caplog.at_level("WARNING", logger="payi_otel"):
        instrument()
        PayiInstrumentor().uninstrument()
        instrument()
    warned = [
        r.getMessage()
        for r in caplog.records
        if "no GenAI spans for OpenAI Agents SDK (agents) calls" in r.getMessage()
    ]
    assert len(warned) == 1, warned
    assert "pip install -U opentelemetry-instrumentation-genai-openai-agents" in warned[0]

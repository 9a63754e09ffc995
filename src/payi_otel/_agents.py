"""Agent and tool steps (opt-in: ``payi_instrument(agent_steps=True)`` /
``PAYI_AGENT_STEPS=true``): the name of an agent or tool a GenAI agent instrumentation reports
becomes the ``use_case_step`` of the calls it makes.

The agent instrumentations (``opentelemetry-instrumentation-genai-openai-agents``,
``-genai-langchain``) start their ``invoke_agent`` / ``execute_tool`` spans through
``opentelemetry-util-genai``'s ``GenAIInvocation``, which keeps the context it makes for the
span (``invocation.context``: what it attaches, and what the LangChain instrumentation hands
its child runs, in whatever thread or task LangGraph runs them). Wrapping its constructor, that
context gets one more scope level here - ``use_case_step=<agent or tool name>``, ranked as an
innermost ``track_context`` (a scope the step's own code opens still wins; per-call headers
too) - and the span carries it. Names that are not valid parameter values are skipped (logged
once).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

from opentelemetry import context as otel_context

from payi_otel import _context as payi_state
from payi_otel import _settings
from payi_otel._log import internal_error, log_once
from payi_otel._model.parameters import ParameterError, validate_value
from payi_otel._on_import import when_imported
from payi_otel._spans import apply_call_attributes
from payi_otel._wrapping import unwrapper

__all__ = ["STEP_ATTRIBUTES", "instrument_agent_steps"]

#: GenAI operation -> the start attribute naming the step.
STEP_ATTRIBUTES: Dict[str, str] = {
    "invoke_agent": "gen_ai.agent.name",
    "execute_tool": "gen_ai.tool.name",
}

_MODULE = "opentelemetry.util.genai._invocation"


def _step_of(invocation: Any) -> Optional[str]:
    attributes = getattr(invocation, "_start_attributes", None)
    if not isinstance(attributes, dict):
        return None
    key = STEP_ATTRIBUTES.get(str(attributes.get("gen_ai.operation.name")))
    name = attributes.get(key) if key else None
    if not isinstance(name, str) or not name:
        return None
    try:
        return str(validate_value("use_case_step", name))
    except ParameterError as error:
        log_once(f"agent-step:{name[:40]}", "payi_otel: no agent step (%s)", error)
        return None


def _name_step(invocation: Any) -> None:
    if not getattr(invocation, "_start_span", False):
        return
    step = _step_of(invocation)
    ctx = getattr(invocation, "_span_context", None)
    if step is None or ctx is None:
        return
    state, stepped = payi_state.enter_scope(
        payi_state.TRACK_CONTEXT, {"use_case_step": step}, ctx, (("use_case_step", step),)
    )
    if _settings.current.propagate_baggage:
        stepped = payi_state.with_outgoing(stepped, state.effective)
    token = getattr(invocation, "_context_token", None)
    if token is not None:
        if otel_context.get_current() is not ctx:
            return  # something attached on top already: leave it as it is
        otel_context.detach(token)
        invocation._context_token = otel_context.attach(stepped)
    invocation._span_context = stepped
    apply_call_attributes(invocation.span, state.effective)


def _init(wrapped: Callable[..., Any], instance: Any, args: Tuple[Any, ...], kwargs: Any) -> Any:
    result = wrapped(*args, **kwargs)
    try:
        _name_step(instance)
    except Exception:
        internal_error("agent-step", "naming an agent step failed")
    return result


def instrument_agent_steps() -> List[Callable[[], None]]:
    """Wrap ``GenAIInvocation.__init__`` (``opentelemetry-util-genai``); the undo, or nothing
    (one WARNING) when util-genai is not installed."""
    try:
        import importlib

        module = importlib.import_module(_MODULE)
        owner = module.GenAIInvocation
    except Exception:
        log_once(
            "agent-steps",
            "payi_otel: agent_steps is on but opentelemetry-util-genai (>= 1.3b0) is not "
            "installed, so agent and tool names do not become steps (pip install "
            "'opentelemetry-util-genai>=1.3b0', the payi-otel[agents] extra)",
        )
        return []
    from wrapt import wrap_function_wrapper

    wrap_function_wrapper(owner, "__init__", _init)
    undo = [unwrapper(owner, "__init__", _init)]
    undo.extend(when_imported(_AGENTS_PROVIDER, _watch_agents_tracing, "openai-agents"))
    return undo


# --- the OpenAI Agents SDK's tracing, which makes its agent and tool spans ---------------------

_AGENTS_PROVIDER = "agents.tracing.provider"
_AGENTS_OFF = (
    "payi_otel: agent_steps is on, but the OpenAI Agents SDK's tracing is %s, so its agent and "
    "tool spans - and the steps - are not made. Keep its tracing on; to stop it exporting to "
    "OpenAI, call agents.set_trace_processors([]) before payi_instrument()"
)


def _warn_agents_tracing(why: str) -> None:
    log_once(f"agent-steps-off:{why}", _AGENTS_OFF, why)


def _set_disabled(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    result = wrapped(*args, **kwargs)
    if (args[0] if args else kwargs.get("disabled")) is True:
        _warn_agents_tracing("disabled (set_tracing_disabled(True))")
    return result


def _set_processors(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    result = wrapped(*args, **kwargs)
    processors = args[0] if args else kwargs.get("processors")
    if not any(type(p).__module__.startswith(_OTEL_AGENTS) for p in processors or ()):
        _warn_agents_tracing(
            "without OpenTelemetry's processor (set_trace_processors after payi_instrument())"
        )
    return result


_OTEL_AGENTS = "opentelemetry.instrumentation.genai.openai_agents"


def _watch_agents_tracing() -> List[Callable[[], None]]:
    """Say once when the Agents SDK's tracing is off, or loses OpenTelemetry's processor
    (a review found agent_steps doing nothing, silently); the undo callables."""
    import importlib
    import os

    from wrapt import wrap_function_wrapper

    if os.environ.get("OPENAI_AGENTS_DISABLE_TRACING", "").lower() in ("true", "1"):
        _warn_agents_tracing("disabled (OPENAI_AGENTS_DISABLE_TRACING)")
    owner = getattr(importlib.import_module(_AGENTS_PROVIDER), "DefaultTraceProvider", None)
    if owner is None:
        return []
    wrap_function_wrapper(owner, "set_disabled", _set_disabled)
    wrap_function_wrapper(owner, "set_processors", _set_processors)
    return [
        unwrapper(owner, "set_disabled", _set_disabled),
        unwrapper(owner, "set_processors", _set_processors),
    ]

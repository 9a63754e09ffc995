"""GenAI stream wrappers hand the caller's context back (README, "Where the context travels",
"Scope lifecycle").

A GenAI instrumentation built on ``opentelemetry-util-genai`` starts an invocation that
attaches its span's context, and hands a stream back to the caller in a stream wrapper
(``SyncStreamWrapper`` / ``AsyncStreamWrapper``). ``genai-openai`` then calls
``invocation.suspend()`` (the util's API for exactly this: give the caller its context back,
make the span current again only around each read); ``genai-anthropic`` does not, so the
invocation stays attached until the stream ends, is closed or is collected - and a
``detach`` that late resets the context to what it was when the stream was made, bringing
back a scope that has exited since, or dropping one entered since.

Here every such wrapper of a model call (an inference or embedding invocation) suspends its
invocation as it is made, when that is still in order (the invocation's context is the
current one). An agent's or workflow's stream (genai-bedrock's ``invoke_agent`` /
``invoke_inline_agent`` completion) is left attached on purpose: the work its consumer does
while reading it (the calls the agent's loop body makes) belongs under the agent's span and
conversation, as that instrumentation's own tests require. Those, and streams of other
libraries that stay attached, are left to the scopes' own defence (``_scopes._Scope.detach``).
"""

from __future__ import annotations

import contextvars
import functools
import importlib
from typing import Any, Callable, List

from opentelemetry import context as otel_context

from payi_otel._log import internal_error
from payi_otel._on_import import installed, when_imported

__all__ = ["suspend_genai_streams"]

_MODULE = "opentelemetry.util.genai.stream"
_WRAPPERS = ("SyncStreamWrapper", "AsyncStreamWrapper")
#: Invocations whose stream keeps its context current while the consumer reads it (by class
#: name, as util-genai's releases name them: ``RemoteAgentInvocation``, ``AgentInvocation``,
#: ``WorkflowInvocation``).
_KEPT_ATTACHED = ("AgentInvocation", "WorkflowInvocation")


def _kept_attached(invocation: Any) -> bool:
    return any(cls.__name__.endswith(_KEPT_ATTACHED) for cls in type(invocation).__mro__)


def _suspend(wrapper: Any) -> None:
    """Suspend ``wrapper``'s invocation if it is still attached and its context is the
    current one (so the detach is in order)."""
    try:
        invocation = getattr(wrapper, "_self_invocation", None)
        suspend = getattr(invocation, "suspend", None)
        if (
            callable(suspend)
            and not _kept_attached(invocation)
            and getattr(invocation, "_context_token", None) is not None
            and otel_context.get_current() is getattr(invocation, "context", None)
        ):
            suspend()
    except Exception:
        internal_error("genai-stream-suspend", "suspending a GenAI stream's invocation failed")


def _suspending(owner: type) -> Callable[[], None]:
    """Make ``owner.__init__`` suspend the invocation once the wrapper is made; the undo.

    A plain function, not a ``wrapt`` wrapper: subclasses call ``Base.__init__(self, ...)``
    unbound on a proxy that is not initialised yet, which a ``wrapt`` wrapper would inspect.
    """
    original = owner.__dict__["__init__"]

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        _suspend(self)

    owner.__init__ = __init__  # type: ignore[misc]

    def undo() -> None:
        if owner.__dict__.get("__init__") is __init__:
            owner.__init__ = original  # type: ignore[misc]

    return undo


def _finalizing_in_a_copy(owner: type) -> Callable[[], None]:
    """Make ``owner.__del__`` run in a copy of the current ``contextvars.Context``; the undo.

    util-genai's wrappers finalize an abandoned stream in ``__del__`` with its invocation's
    context attached (a ``ContextVar.set``). The garbage collector runs ``__del__`` wherever
    it is triggered - also inside an allocation of the program's own ``ContextVar.set``
    (``context.attach``), where setting the same Context frees the mapping that set is still
    reading: CPython crashes (a segfault seen in this suite). In a copy, the finalizer's
    attach and detach never touch the interrupted Context; their net effect there was none.
    """
    original = owner.__dict__["__del__"]

    @functools.wraps(original)
    def __del__(self: Any) -> None:
        contextvars.copy_context().run(original, self)

    owner.__del__ = __del__  # type: ignore[attr-defined]

    def undo() -> None:
        if owner.__dict__.get("__del__") is __del__:
            owner.__del__ = original  # type: ignore[attr-defined]

    return undo


def suspend_genai_streams() -> List[Callable[[], None]]:
    """Make util-genai's stream wrappers suspend their invocation, and finalize out of the
    interrupted context (:func:`_finalizing_in_a_copy`), when a GenAI instrumentation
    imports them (``_on_import``); returns the undo."""
    if not installed(_MODULE):
        return []  # no GenAI instrumentation built on opentelemetry-util-genai
    return when_imported(_MODULE, _suspend_streams, _MODULE)


def _suspend_streams() -> List[Callable[[], None]]:
    module = importlib.import_module(_MODULE)
    undo: List[Callable[[], None]] = []
    for name in _WRAPPERS:
        owner = getattr(module, name, None)
        if isinstance(owner, type) and "__init__" in owner.__dict__:
            undo.append(_suspending(owner))
    for owner in vars(module).values():
        if (
            isinstance(owner, type)
            and owner.__module__ == module.__name__
            and "__del__" in owner.__dict__
        ):
            undo.append(_finalizing_in_a_copy(owner))
    return undo

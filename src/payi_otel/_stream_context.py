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

Here every such wrapper suspends its invocation as it is made, when that is still in order
(the invocation's context is the current one). Streams of other libraries that stay
attached are left to the scopes' own defence (``_scopes._Scope.detach``).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, List, Tuple

from opentelemetry import context as otel_context
from wrapt import wrap_function_wrapper

from payi_otel._log import internal_error
from payi_otel._wrapping import unwrapper

__all__ = ["suspend_genai_streams"]

_MODULE = "opentelemetry.util.genai.stream"
_WRAPPERS = ("SyncStreamWrapper", "AsyncStreamWrapper")


def _suspending_init(
    wrapped: Callable[..., Any], instance: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]
) -> Any:
    result = wrapped(*args, **kwargs)
    try:
        invocation = getattr(instance, "_self_invocation", None)
        suspend = getattr(invocation, "suspend", None)
        if (
            callable(suspend)
            and getattr(invocation, "_context_token", None) is not None
            and otel_context.get_current() is getattr(invocation, "context", None)
        ):
            suspend()
    except Exception:
        internal_error("genai-stream-suspend", "suspending a GenAI stream's invocation failed")
    return result


def suspend_genai_streams() -> List[Callable[[], None]]:
    """Make util-genai's stream wrappers suspend their invocation; returns the undo."""
    try:
        module = importlib.import_module(_MODULE)
    except ImportError:
        return []  # no GenAI instrumentation built on opentelemetry-util-genai
    undo: List[Callable[[], None]] = []
    for name in _WRAPPERS:
        owner = getattr(module, name, None)
        if not isinstance(owner, type):
            continue
        wrap_function_wrapper(module, f"{name}.__init__", _suspending_init)
        undo.append(unwrapper(owner, "__init__", _suspending_init))
    return undo

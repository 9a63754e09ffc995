"""GenAI invocations started with a stored context keep the scopes opened inside it since.

``opentelemetry-util-genai``'s ``GenAIInvocation`` takes the context to start its span in
(``context=``). The LangChain / LangGraph instrumentation passes the context it stored when the
parent run started, and attaches the invocation's context around the model call: a
``track_context`` the run's own code opened in between (a node or a tool choosing the user of
its calls) was dropped, and its calls billed to the outer scope's user, or to nobody (a review,
README "Agent frameworks"). When the current scopes are that stored context's and more, the
invocation starts in the stored context with the current scopes (``_context.with_inner_scopes``);
a stored context whose scopes the current ones are not built on is left as it is.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, List, Tuple

from payi_otel._context import with_inner_scopes
from payi_otel._log import internal_error
from payi_otel._on_import import when_imported
from payi_otel._wrapping import unwrapper

__all__ = ["keep_inner_scopes"]

_MODULE = "opentelemetry.util.genai._invocation"


def _init(wrapped: Callable[..., Any], instance: Any, args: Tuple[Any, ...], kwargs: Any) -> Any:
    given = kwargs.get("context")
    if given is not None:
        try:
            kwargs = {**kwargs, "context": with_inner_scopes(given)}
        except Exception:
            internal_error("invocation-context", "keeping inner scopes for an invocation failed")
    return wrapped(*args, **kwargs)


def keep_inner_scopes() -> List[Callable[[], None]]:
    """Wrap ``GenAIInvocation.__init__`` when the program imports util-genai (now if it has);
    the undo callables."""

    def wrap() -> List[Callable[[], None]]:
        owner = importlib.import_module(_MODULE).GenAIInvocation
        from wrapt import wrap_function_wrapper

        wrap_function_wrapper(owner, "__init__", _init)
        return [unwrapper(owner, "__init__", _init)]

    return when_imported(_MODULE, wrap, "opentelemetry-util-genai")

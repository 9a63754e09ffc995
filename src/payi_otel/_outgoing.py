"""Outgoing ``payi.*`` baggage goes only where attribution goes (opt-in baggage, README
"Across services").

A propagator injects baggage without knowing the destination, so the guard sits in the HTTP
clients, where the URL is known: a request to a host the destination policy
(``_destinations.WirePolicy``: by default every host but the model providers' public API
hosts; ``header_hosts`` / ``PAYI_HEADER_HOSTS`` to name exactly the hosts) does not allow
carries no ``payi.*`` baggage member.

* ``httpx`` / ``httpx2`` ``Client.send`` and ``AsyncClient.send``: the request is sent in a
  context without ``payi.*`` baggage, so whatever instrumentation injects inside (at the
  transport) finds none;
* ``requests``: ``HTTPAdapter.send`` (after any instrumentation of ``Session.send`` has
  injected) removes ``payi.*`` members from the ``baggage`` header.

Other HTTP clients are not guarded: keep baggage off, or strip it at your edge.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, List, Tuple
from urllib.parse import unquote

from opentelemetry import context as otel_context
from wrapt import wrap_function_wrapper

from payi_otel import _context as payi_state
from payi_otel import _destinations as destinations
from payi_otel._parameters import BAGGAGE_PREFIX
from payi_otel._wrapping import unwrapper

__all__ = ["guard_outgoing_baggage", "strip_payi_members"]


def _blocked(url: object) -> bool:
    """Whether a request to ``url`` must not carry payi baggage (baggage on, host refused)."""
    return payi_state.propagate_baggage() and not destinations.current().sends_to(str(url))


def strip_payi_members(header: str) -> str:
    """A W3C ``baggage`` header value without its ``payi.*`` members."""
    kept = [
        member for member in header.split(",")
        if not unquote(member.split("=", 1)[0].strip()).startswith(BAGGAGE_PREFIX)
    ]
    return ",".join(kept)


def _send(
    wrapped: Callable[..., Any], instance: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]
) -> Any:
    request = args[0] if args else kwargs.get("request")
    if not _blocked(getattr(request, "url", None)):
        return wrapped(*args, **kwargs)
    token = otel_context.attach(payi_state.without_payi_baggage(otel_context.get_current()))
    try:
        return wrapped(*args, **kwargs)
    finally:
        otel_context.detach(token)


async def _send_async(
    wrapped: Callable[..., Any], instance: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]
) -> Any:
    request = args[0] if args else kwargs.get("request")
    if not _blocked(getattr(request, "url", None)):
        return await wrapped(*args, **kwargs)
    token = otel_context.attach(payi_state.without_payi_baggage(otel_context.get_current()))
    try:
        return await wrapped(*args, **kwargs)
    finally:
        otel_context.detach(token)


def _adapter_send(
    wrapped: Callable[..., Any], instance: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]
) -> Any:
    request = args[0] if args else kwargs.get("request")
    headers = getattr(request, "headers", None)
    if headers is not None and "baggage" in headers and _blocked(getattr(request, "url", "")):
        stripped = strip_payi_members(headers["baggage"])
        if stripped:
            headers["baggage"] = stripped
        else:
            del headers["baggage"]
    return wrapped(*args, **kwargs)


_POINTS: Tuple[Tuple[str, str, Callable[..., Any]], ...] = (
    ("httpx", "Client.send", _send),
    ("httpx", "AsyncClient.send", _send_async),
    ("httpx2", "Client.send", _send),
    ("httpx2", "AsyncClient.send", _send_async),
    ("requests.adapters", "HTTPAdapter.send", _adapter_send),
)


def guard_outgoing_baggage() -> List[Callable[[], None]]:
    """Guard every installed client; returns the undo callables."""
    undo: List[Callable[[], None]] = []
    for module_name, attribute, wrapper in _POINTS:
        try:
            module = importlib.import_module(module_name)
            owner_name, method = attribute.split(".")
            owner = getattr(module, owner_name)
        except (ImportError, AttributeError):
            continue  # that client is not installed
        wrap_function_wrapper(module, attribute, wrapper)
        undo.append(unwrapper(owner, method, wrapper))
    return undo

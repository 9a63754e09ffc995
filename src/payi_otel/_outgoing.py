"""The destination policy on every hop an HTTP client sends (README "Which headers go where"
and "Across services").

The request hook decides once per call, for the call's first URL, but one ``send`` can go to
several URLs (redirects), and HTTP instrumentations inject the propagator's headers (W3C
``baggage`` among them) at the transport, once per hop, from the context they run in. So the
policy is held again where each hop is sent, for the hop's own URL:

* attribution headers: a redirect hop to another origin, at a URL the policy refuses, loses
  every ``x-payi-*`` / ``xProxy-*`` header, or another registered dialect's
  (``_destinations.strip_refused``), where the
  client builds the hop's headers: httpx / httpx2 ``_redirect_headers`` (next to where httpx
  drops ``Authorization``), requests' ``rebuild_auth`` (likewise). The first hop is not
  touched here: an SDK call's headers were resolved by the request hook, and a plain
  request's headers are the caller's.
* ``payi.*`` baggage (with ``propagate_baggage`` on): a hop to a URL the policy refuses is sent
  in a context without ``payi.*`` baggage, and its ``baggage`` header loses its ``payi.*``
  members (other members stay). The layer is the one every hop passes through and nothing
  injects below without our context: httpx / httpx2 ``Client._send_single_request`` (after the
  event hooks, before whichever transport the client picks: its own, a mounted or proxy one,
  the user's ``transport=``, a ``MockTransport``, or one an OTel instrumentation wraps - which
  is where ``opentelemetry-instrumentation-httpx`` injects), and requests'
  ``HTTPAdapter.send``, which requests calls once per hop (after
  ``opentelemetry-instrumentation-requests`` has injected in ``Session.send``; urllib3's
  instrumentation injects inside it). Each hop gets what its own URL allows.

An SDK call itself runs in a context without ``payi.*`` baggage (``_providers._core``): it
never carries them. Other HTTP clients (``urllib3``, ``aiohttp``, ``urllib`` used directly)
are not guarded: keep baggage off, or strip it at your edge.
"""

from __future__ import annotations

import importlib
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import unquote

from opentelemetry import baggage as otel_baggage
from opentelemetry import context as otel_context
from wrapt import wrap_function_wrapper

from payi_otel import _context as payi_state
from payi_otel import _destinations as destinations
from payi_otel import _settings
from payi_otel._log import internal_error, logger
from payi_otel._model.parameters import BAGGAGE_PREFIX
from payi_otel._on_import import installed, when_imported
from payi_otel._wrapping import unwrapper

__all__ = ["guard_hops", "strip_payi_members"]

Args = Tuple[Any, ...]
Kwargs = Dict[str, Any]


def strip_payi_members(header: str) -> str:
    """A W3C ``baggage`` header value without its ``payi.*`` members."""
    kept = [
        member
        for member in header.split(",")
        if not unquote(member.split("=", 1)[0].strip()).startswith(BAGGAGE_PREFIX)
    ]
    return ",".join(kept)


def _refused_hop(request: Any) -> Optional[otel_context.Context]:
    """Hold the baggage policy on one hop: when the hop's URL must not get ``payi.*`` baggage,
    its ``baggage`` header loses those members, and the context to send it in (without them)
    is returned; for an allowed hop, the context without scopes that exited here, where it
    differs. None: send it as it is (baggage off, nothing payi-related, or allowed)."""
    settings = _settings.current
    if not settings.propagate_baggage:
        return None
    headers = request.headers
    header = headers.get("baggage")
    in_header = header is not None and ("payi" in header or "%" in header)
    current = otel_context.get_current()
    # A context another library restored late may still carry a scope that exited here:
    # its baggage is not this hop's to send (README "Scope lifecycle").
    ctx = payi_state.settled(current)
    in_context = any(key.startswith(BAGGAGE_PREFIX) for key in otel_baggage.get_all(ctx))
    if not (in_header or in_context) or destinations.sends_to(str(request.url), settings.wire):
        return None if ctx is current else ctx
    if in_header:
        kept = strip_payi_members(header)
        if kept:
            headers["baggage"] = kept
        else:
            del headers["baggage"]
    return payi_state.without_payi_baggage(ctx) if in_context else None


def _hop(wrapped: Callable[..., Any], instance: Any, args: Args, kwargs: Kwargs) -> Any:
    ctx = _refused_hop(args[0] if args else kwargs["request"])
    if ctx is None:
        return wrapped(*args, **kwargs)
    token = otel_context.attach(ctx)
    try:
        return wrapped(*args, **kwargs)
    finally:
        otel_context.detach(token)


async def _hop_async(wrapped: Callable[..., Any], instance: Any, args: Args, kwargs: Kwargs) -> Any:
    ctx = _refused_hop(args[0] if args else kwargs["request"])
    if ctx is None:
        return await wrapped(*args, **kwargs)
    token = otel_context.attach(ctx)
    try:
        return await wrapped(*args, **kwargs)
    finally:
        otel_context.detach(token)


def _httpx_redirect_headers(
    wrapped: Callable[..., Any], instance: Any, args: Args, kwargs: Kwargs
) -> Any:
    """``BaseClient._redirect_headers(request, url, method)``: the hop's headers, held to the
    policy for the hop's URL."""
    headers = wrapped(*args, **kwargs)
    request = args[0] if args else kwargs["request"]
    destinations.strip_refused(headers, args[1] if len(args) > 1 else kwargs["url"], request.url)
    return headers


def _requests_rebuild_auth(
    wrapped: Callable[..., Any], instance: Any, args: Args, kwargs: Kwargs
) -> Any:
    """``Session.rebuild_auth(prepared_request, response)``, run on each redirect hop."""
    result = wrapped(*args, **kwargs)
    prepared = args[0] if args else kwargs["prepared_request"]
    response = args[1] if len(args) > 1 else kwargs["response"]
    destinations.strip_refused(prepared.headers, prepared.url, response.request.url)
    return result


def _websocket_handshake(
    wrapped: Callable[..., Any], instance: Any, args: Args, kwargs: Kwargs
) -> Any:
    """``websockets``' ``ClientProtocol.send_request(request)``, every WebSocket opening
    handshake (sync and asyncio clients alike: an SDK's realtime connection, e.g. openai's
    ``client.realtime.connect``, which sends the client's default headers): no attribution
    header to a host the policy refuses."""
    try:
        request = args[0] if args else kwargs.get("request")
        destinations.strip_refused_websocket(getattr(request, "headers", None), instance)
    except Exception:
        internal_error("hops:websockets", "checking a WebSocket handshake's headers failed")
    return wrapped(*args, **kwargs)


#: (module, candidate attributes: the first one present is wrapped, wrapper, only with
#: baggage on). httpx's ``_send_single_request`` is private: should a release drop it,
#: ``send`` (the first hop only) is guarded instead and the loss is logged. The per-hop baggage
#: wrappers are on every request's path, so they are installed only when baggage is on; the
#: header wrappers run on redirects only.
_Point = Tuple[str, Tuple[str, ...], Callable[..., Any], bool]
_POINTS: Tuple[_Point, ...] = (
    ("httpx", ("Client._send_single_request", "Client.send"), _hop, True),
    ("httpx", ("AsyncClient._send_single_request", "AsyncClient.send"), _hop_async, True),
    ("httpx._client", ("BaseClient._redirect_headers",), _httpx_redirect_headers, False),
    ("httpx2", ("Client._send_single_request", "Client.send"), _hop, True),
    ("httpx2", ("AsyncClient._send_single_request", "AsyncClient.send"), _hop_async, True),
    ("httpx2._client", ("BaseClient._redirect_headers",), _httpx_redirect_headers, False),
    ("requests.adapters", ("HTTPAdapter.send",), _hop, True),
    ("requests.sessions", ("SessionRedirectMixin.rebuild_auth",), _requests_rebuild_auth, False),
)


def guard_hops() -> List[Callable[[], None]]:
    """Guard every installed HTTP client when the program imports it (``_on_import``; after
    the global settings are in force: the baggage wrappers only with baggage on); returns
    the undo callables."""
    baggage_on = _settings.current.propagate_baggage
    by_package: Dict[str, List[_Point]] = {}
    for point in _POINTS:
        if baggage_on or not point[3]:
            by_package.setdefault(point[0].split(".")[0], []).append(point)
    undo: List[Callable[[], None]] = []
    for package, points in by_package.items():
        if installed(package):
            undo.extend(when_imported(package, partial(_guard, points), package))
    if installed("websockets"):
        undo.extend(when_imported("websockets", _guard_websockets, "websockets"))
    if installed("aiohttp"):
        undo.extend(when_imported("aiohttp", _guard_aiohttp, "aiohttp"))
    return undo


def _guard_aiohttp() -> List[Callable[[], None]]:
    """aiohttp follows redirects inside ``ClientSession._request``, copying the first
    request's headers to each hop (dropping only its credentials across origins); the one
    place a hop's headers can be changed before it is sent is the session's
    ``on_request_redirect`` trace signal, given that same headers object. Every session
    made while payi_otel is instrumented gets one frozen trace config with it: a review found
    google-genai's async client (aiohttp, its default when installed) carrying a call's
    ``x-payi-*`` headers to another origin."""
    import aiohttp

    config = aiohttp.TraceConfig()
    config.on_request_redirect.append(_aiohttp_redirect)
    config.freeze()

    def init(wrapped: Callable[..., Any], instance: Any, args: Args, kwargs: Kwargs) -> Any:
        result = wrapped(*args, **kwargs)
        try:
            configs = getattr(instance, "_trace_configs", None)
            if isinstance(configs, list) and config not in configs:
                configs.append(config)
        except Exception:
            internal_error("hops:aiohttp-session", "guarding an aiohttp session failed")
        return result

    wrap_function_wrapper("aiohttp.client", "ClientSession.__init__", init)
    return [unwrapper(aiohttp.ClientSession, "__init__", init)]


async def _aiohttp_redirect(session: Any, trace_ctx: Any, params: Any) -> None:
    """``on_request_redirect``: the hop about to be sent, held to the policy."""
    try:
        response = params.response
        location = response.headers.get("Location") or response.headers.get("URI")
        if not location:
            return
        target = params.url.join(type(params.url)(location))
        sdk_call = payi_state.sending_a_call(otel_context.get_current())
        destinations.strip_hop(params.headers, target, params.url, sdk_call)
    except Exception:
        internal_error("hops:aiohttp", "checking an aiohttp redirect hop's headers failed")


def _guard_websockets() -> List[Callable[[], None]]:
    """The WebSocket handshake point, where ``websockets`` has it (its sans-I/O client
    protocol, 11+; an older one's handshakes are not checked, said at DEBUG)."""
    owner = getattr(importlib.import_module("websockets.client"), "ClientProtocol", None)
    if owner is None or not hasattr(owner, "send_request"):
        logger.debug("payi_otel: this websockets has no ClientProtocol.send_request")
        return []
    wrap_function_wrapper(owner, "send_request", _websocket_handshake)
    return [unwrapper(owner, "send_request", _websocket_handshake)]


def _guard(points: List[_Point]) -> List[Callable[[], None]]:
    """Wrap one HTTP client's points; the undo callables."""
    undo: List[Callable[[], None]] = []
    for module_name, candidates, wrapper, _ in points:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue  # that client is not installed
        for position, attribute in enumerate(candidates):
            owner_name, method = attribute.split(".")
            owner = getattr(module, owner_name, None)
            if owner is None or not hasattr(owner, method):
                continue
            if position:
                internal_error(
                    f"hops:{module_name}:{candidates[0]}",
                    f"{module_name} has no {candidates[0]}; only {attribute} "
                    "is guarded (redirect hops are not)",
                )
            wrap_function_wrapper(module, attribute, wrapper)
            undo.append(unwrapper(owner, method, wrapper))
            break
        else:
            internal_error(
                f"hops:{module_name}:{candidates[0]}",
                f"{module_name} has no {candidates[0]}; its redirect hops are not guarded",
            )
    return undo

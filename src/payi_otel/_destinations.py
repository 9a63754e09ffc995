"""Where attribution headers go, hop by hop: the policy in force (``Settings.wire``, a
``_model.wire_policy.WirePolicy``) held on every redirect.

The request hook decides once per call, for the call's URL; a redirect sends the same headers
on to another URL (httpx and requests copy them, dropping only ``Authorization``), so the
policy is held again on every redirect hop (README "Which headers go where"):

* a hop to another origin whose URL the policy refuses loses every header under a registered
  dialect's prefix (``_model.dialects``: ``x-payi-*``, ``xProxy-*``; :func:`strip_refused`,
  run where the HTTP client builds each redirect's headers: ``_outgoing``), whoever set them;
* an SDK client's hop to another origin than the first request's loses them too, allowed or
  not: :func:`guard_client` adds a request event hook that drops them there;
* a hop never gains headers the first request did not carry (a call refused at its first URL
  stays without them after a redirect to an allowed host).
"""

from __future__ import annotations

import inspect
import threading
import weakref
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from payi_otel import _settings
from payi_otel._model import wire_policy
from payi_otel._model.dialects import is_dialect_header
from payi_otel._model.wire_policy import WirePolicy

__all__ = [
    "guard_client",
    "sends_to",
    "strip_refused",
    "unguard_all",
]

#: Verdicts remembered per URL (issue 20: the policy's host match is ~5 µs of every call).
VERDICTS_MAX = 1024
#: (the policy, the refused hosts it reads, {URL: verdict}) for the policy last asked.
_verdicts: Tuple[Optional[WirePolicy], object, Dict[Optional[str], bool]] = (None, None, {})


def sends_to(url: Optional[str], wire: Optional[WirePolicy] = None) -> bool:
    """``wire.sends_to(url)`` (default: the policy in force, ``_settings.current.wire``),
    remembered per URL. The verdict is a function of the policy (a frozen value: a new one
    comes with new settings), the hosts a default policy refuses (the registered providers',
    a new tuple when the registry changes: ``wire_policy.refuse_by_default``) and the URL, so
    the memory is kept while both are the same objects and dropped when either changes."""
    if wire is None:
        wire = _settings.current.wire
    hosts = wire_policy.refused_by_default()
    policy, refused, verdicts = _verdicts
    if policy is not wire or refused is not hosts:
        verdicts = {}
        _set_verdicts(wire, hosts, verdicts)
    verdict = verdicts.get(url)
    if verdict is None:
        verdict = wire.sends_to(url)
        if len(verdicts) >= VERDICTS_MAX:
            verdicts = {}
            _set_verdicts(wire, hosts, verdicts)
        verdicts[url] = verdict
    return verdict


def _set_verdicts(wire: WirePolicy, hosts: object, verdicts: Dict[Optional[str], bool]) -> None:
    global _verdicts
    _verdicts = (wire, hosts, verdicts)  # one reference: a thread reads a consistent triple


def _url_origin(url: str) -> Tuple[str, str, Optional[int]]:
    try:
        parts = urlsplit(url)
        return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port
    except ValueError:
        return "", url, None


def strip_refused(headers: Any, url: object, previous: object) -> None:
    """Drop every ``x-payi-*`` / ``xProxy-*`` header from a redirect hop's ``headers`` (httpx
    ``Headers`` or requests' case-insensitive dict) when the hop leaves ``previous``'s origin
    for a URL the policy sends none to. (A hop on the same origin tells that server nothing
    it was not just sent.) A hop without such a header costs one scan of the names."""
    names = [name for name in headers if is_dialect_header(name)]
    if not names or sends_to(str(url)):
        return
    if _url_origin(str(url)) == _url_origin(str(previous)):
        return
    _strip(headers)


def strip_refused_websocket(headers: Any, protocol: Any) -> None:
    """Drop every ``x-payi-*`` / ``xProxy-*`` header from a WebSocket handshake's ``headers``
    (``websockets`` ``Headers``) when ``protocol``'s URI is one the policy sends
    none to. (A WebSocket connection is not an attributed call: what it carries is what its
    client set - an SDK's default headers - and a refused host gets none of it.)"""
    if headers is None:
        return
    names = {name for name in headers if is_dialect_header(name)}
    if not names:
        return
    uri = getattr(protocol, "uri", None) or getattr(protocol, "wsuri", None)  # (older: wsuri)
    host = getattr(uri, "host", None)
    url = f"wss://{host}/" if isinstance(host, str) and host else None
    if sends_to(url):
        return
    for name in names:
        del headers[name]


_ORIGIN = "payi_otel.origin"


def _origin(url: Any) -> Tuple[object, object, object]:
    return (getattr(url, "scheme", None), getattr(url, "host", None), getattr(url, "port", None))


def strip_cross_origin(request: Any) -> None:
    """httpx request hook, run before every hop of a redirect chain: the first hop records
    its URL in the request's extensions (httpx copies them to each redirected request);
    a later hop to another origin loses every ``x-payi-*`` / ``xProxy-*`` header. (The
    origins are compared only on a later hop: reading an httpx URL's parts parses it.)

    The first hop loses them too where the policy in force sends none to its host: the
    request hook decided for the URL the call named, and what the HTTP client sends may go
    elsewhere by now - an SDK's own request hooks or middleware rewrote it, another thread
    set the client's base URL in between."""
    extensions = request.extensions
    first = extensions.get(_ORIGIN)
    url = request.url
    if first is None:
        extensions[_ORIGIN] = url  # immutable: its origin is read if a hop follows
        host = getattr(url, "host", None)
        if isinstance(host, str) and not sends_to("//" + host):
            _strip(request.headers)
        return
    if _origin(first) != _origin(url):
        _strip(request.headers)


def _strip(headers: Any) -> None:
    for name in [n for n in headers if is_dialect_header(n)]:
        if name in headers:  # (a multidict's del takes every spelling of a name at once)
            del headers[name]


def strip_hop(headers: Any, url: object, previous: object, sdk_call: bool) -> None:
    """A redirect hop from ``previous`` to ``url`` that an HTTP client builds from the first
    request's ``headers`` (aiohttp): an SDK call's hop to another origin loses every
    attribution header, as the SDK clients' request hook has it (:func:`strip_cross_origin`);
    any other request's, where the policy refuses ``url`` (:func:`strip_refused`)."""
    if not sdk_call:
        strip_refused(headers, url, previous)
    elif _url_origin(str(url)) != _url_origin(str(previous)):
        _strip(headers)


async def strip_cross_origin_async(request: Any) -> None:
    strip_cross_origin(request)


_guarded: weakref.WeakSet[Any] = weakref.WeakSet()
_guard_lock = threading.Lock()


def _hook_for(client: Any) -> Callable[..., Any]:
    return (
        strip_cross_origin_async
        if inspect.iscoroutinefunction(client.send)
        else (strip_cross_origin)
    )


def guard_client(client: Any) -> None:
    """Add the redirect guard to an httpx ``Client`` / ``AsyncClient`` (once)."""
    if client is None or client in _guarded:
        return
    with _guard_lock:
        if client in _guarded:
            return
        hooks = client.event_hooks
        hook = _hook_for(client)
        if hook not in hooks.get("request", []):
            hooks["request"] = [*hooks.get("request", []), hook]
            client.event_hooks = hooks
        _guarded.add(client)


def unguard_all() -> None:
    """Remove the redirect guard from every client it was added to."""
    with _guard_lock:
        clients: List[Any] = list(_guarded)
        _guarded.clear()
    for client in clients:
        try:
            hooks = client.event_hooks
            hooks["request"] = [
                h
                for h in hooks.get("request", [])
                if h not in (strip_cross_origin, strip_cross_origin_async)
            ]
            client.event_hooks = hooks
        except Exception:  # a closed or replaced client: nothing to undo
            continue

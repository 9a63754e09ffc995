"""Where attribution headers go, and in which dialect (contract section 3a), hop by hop.

Attribution headers are personal and business data: they are sent only where they are read.
:class:`WirePolicy` says, for a request URL, whether the resolved headers are stamped on it at
all (the values go on the spans either way), and in which dialect (``x-payi`` or Pay-i's
``payi-proxy``). The default sends them everywhere but to the model providers' public API hosts
(:data:`PROVIDER_HOSTS`); an allow-list (``header_hosts=`` / ``PAYI_HEADER_HOSTS``) replaces that
default with exactly the hosts it names.

The request hook decides once per call, for the call's URL; a redirect sends the same headers
on to another URL (httpx and requests copy them, dropping only ``Authorization``), so the
policy is held again on every redirect hop (README "Which headers go where"):

* a hop to another origin whose URL the policy refuses loses every ``x-payi-*`` /
  ``xProxy-*`` header (:func:`strip_refused`, run where the HTTP client builds each
  redirect's headers: ``_outgoing``), whoever set them;
* an SDK client's hop to another origin than the first request's loses them too, allowed or
  not: :func:`guard_client` adds a request event hook that drops them there;
* a hop never gains headers the first request did not carry (a call refused at its first URL
  stays without them after a redirect to an allowed host).
"""

from __future__ import annotations

import fnmatch
import inspect
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Tuple
from urllib.parse import urlsplit

from payi_otel._codec import is_pay_i_header
from payi_otel._parameters import ParameterTypeError, ParameterValueError
from payi_otel._resolved import DIALECTS, X_PAYI

__all__ = [
    "HEADER_DIALECT_ENV",
    "HEADER_HOSTS_ENV",
    "PROVIDER_HOSTS",
    "WirePolicy",
    "current",
    "guard_client",
    "policy_from",
    "set_current",
    "strip_refused",
    "unguard_all",
]

HEADER_DIALECT_ENV = "PAYI_HEADER_DIALECT"
HEADER_HOSTS_ENV = "PAYI_HEADER_HOSTS"

#: The model providers' public API hosts (shell patterns): nobody there reads Pay-i's headers.
PROVIDER_HOSTS: Tuple[str, ...] = (
    "api.openai.com",
    "*.openai.azure.com",
    "*.services.ai.azure.com",
    "*.cognitiveservices.azure.com",
    "api.anthropic.com",
    "bedrock-runtime.*.amazonaws.com",
    "*-aiplatform.googleapis.com",
    "aiplatform.googleapis.com",
    "generativelanguage.googleapis.com",
    "api.mistral.ai",
    "api.cohere.com",
    "api.cohere.ai",
    "api.groq.com",
    "api.x.ai",
    "api.deepseek.com",
    "api.together.xyz",
    "api.fireworks.ai",
)


def _matches(host: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(host, pattern) for pattern in patterns)


@dataclass(frozen=True)
class WirePolicy:
    """The dialect, and the hosts that get attribution headers: ``hosts`` None is the
    default (all but :data:`PROVIDER_HOSTS`), else exactly the hosts matching one of its
    patterns (``*`` matches every host, ``*.example.com`` every subdomain)."""

    dialect: str = X_PAYI
    hosts: Optional[Tuple[str, ...]] = None

    def sends_to(self, url: Optional[str]) -> bool:
        """Whether a request to ``url`` carries attribution headers (an unknown URL: as an
        unknown host does)."""
        host = ""
        if url:
            try:
                host = (urlsplit(url).hostname or "").lower().rstrip(".")
            except ValueError:
                host = ""
        if self.hosts is not None:
            return bool(host) and _matches(host, self.hosts)
        return not (host and _matches(host, PROVIDER_HOSTS))


def _hosts(value: object, what: str) -> Tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ParameterTypeError(f"{what} must be a list of host names, not {type(value).__name__}")
    hosts = []
    for item in value:
        if not isinstance(item, str):
            raise ParameterTypeError(f"{what} elements must be str, not {type(item).__name__}")
        host = item.strip().lower().rstrip(".")
        if not host or "/" in host or " " in host:
            raise ParameterValueError(f"{what} elements must be host names, got {item!r}")
        hosts.append(host)
    return tuple(hosts)


def policy_from(
    dialect: Optional[str], hosts: Optional[Sequence[str]], environ: Mapping[str, str]
) -> WirePolicy:
    """The policy from ``payi_instrument(header_dialect=, header_hosts=)`` over
    ``PAYI_HEADER_DIALECT`` and ``PAYI_HEADER_HOSTS`` (comma-separated; empty: no host)."""
    what = "header_dialect"
    if dialect is None:
        dialect, what = environ.get(HEADER_DIALECT_ENV) or X_PAYI, HEADER_DIALECT_ENV
    if not isinstance(dialect, str):
        raise ParameterTypeError(f"header_dialect must be a str, not {type(dialect).__name__}")
    dialect = dialect.strip().lower()
    if dialect not in DIALECTS:
        raise ParameterValueError(f"{what} must be one of {', '.join(DIALECTS)}, got {dialect!r}")
    allowed: Optional[Tuple[str, ...]] = None
    if hosts is not None:
        allowed = _hosts(hosts, "header_hosts")
    elif HEADER_HOSTS_ENV in environ:
        text = environ[HEADER_HOSTS_ENV]
        allowed = _hosts([h for h in text.split(",") if h.strip()], HEADER_HOSTS_ENV)
    return WirePolicy(dialect, allowed)


_current = WirePolicy()


def current() -> WirePolicy:
    return _current


def set_current(policy: WirePolicy) -> None:
    global _current
    _current = policy


# --- redirects -------------------------------------------------------------------------------


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
    names = [name for name in headers if is_pay_i_header(name)]
    if not names or _current.sends_to(str(url)):
        return
    if _url_origin(str(url)) == _url_origin(str(previous)):
        return
    for name in names:
        del headers[name]


_ORIGIN = "payi_otel.origin"


def _origin(url: Any) -> Tuple[object, object, object]:
    return (getattr(url, "scheme", None), getattr(url, "host", None), getattr(url, "port", None))


def strip_cross_origin(request: Any) -> None:
    """httpx request hook, run before every hop of a redirect chain: the first hop records
    its origin in the request's extensions (httpx copies them to each redirected request);
    a later hop to another origin loses every ``x-payi-*`` / ``xProxy-*`` header."""
    origin = _origin(request.url)
    first = request.extensions.get(_ORIGIN)
    if first is None:
        request.extensions[_ORIGIN] = origin
        return
    if first != origin:
        for name in [n for n in request.headers if is_pay_i_header(n)]:
            del request.headers[name]


async def strip_cross_origin_async(request: Any) -> None:
    strip_cross_origin(request)


_guarded: weakref.WeakSet[Any] = weakref.WeakSet()
_guard_lock = threading.Lock()


def _hook_for(client: Any) -> Callable[..., Any]:
    return strip_cross_origin_async if inspect.iscoroutinefunction(client.send) else (
        strip_cross_origin)


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
            hooks["request"] = [h for h in hooks.get("request", [])
                                if h not in (strip_cross_origin, strip_cross_origin_async)]
            client.event_hooks = hooks
        except Exception:  # a closed or replaced client: nothing to undo
            continue

"""Web services: one Pay-i scope per incoming request, from a declared mapping.

``PayiASGIMiddleware`` (Starlette, FastAPI, Django's ASGI handler, any ASGI app) and
``PayiWSGIMiddleware`` (Flask, Django's WSGI handler, any WSGI app) open one scope around each
HTTP request, with parameters read from the request:

* ``headers={"X-User-Id": "user_id", ...}``: request header -> parameter, each value read by
  the one codec as its header form (lists comma-separated, dicts JSON, ints decimal);
* ``route_step=True``: the matched route template (``/users/{user_id}/chat``, Flask's
  ``/users/<int:user_id>/chat``) as ``use_case_step`` (Starlette / FastAPI routes, Flask /
  werkzeug URL maps);
* ``params=callable``: called with the ASGI scope / WSGI environ, returns a mapping of
  parameters (e.g. from the authenticated principal, ``scope["user"]``); it wins over the
  headers and the route.

Incoming values are untrusted: each goes through the parameter registry's validation, and one
that does not pass is left out (one log line: a WARNING the first time per header, DEBUG
after), never an error for the request. The request scope ranks as the outermost ``@track``:
above the global level and incoming ``payi.*`` baggage, below every ``@track`` /
``track_context`` of the handler and per-call headers (README, "Web services"). It is one
INTERNAL span (none in spanless mode) under the server span of
``opentelemetry-instrumentation-asgi`` / ``-wsgi`` when they wrap this middleware, and it lasts
until the response body ends (an ASGI streaming body, a WSGI generator).

Zero-code (:func:`instrument_web`, under ``opentelemetry-instrument`` or
``payi_instrument()``): ``PAYI_WEB_HEADERS`` (``X-User-Id=user_id,X-Tenant=account_name``)
and ``PAYI_WEB_ROUTE_STEP=true`` wrap Starlette's ``Route.handle`` (FastAPI too: inside every
middleware, so after authentication, with the route known) and Flask's ``Flask.wsgi_app``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from opentelemetry import baggage as otel_baggage
from opentelemetry import context as otel_context
from opentelemetry.context import Context

from payi_otel import _context as payi_state
from payi_otel import _settings
from payi_otel._extracted import REQUEST_CARRIER, RequestMark, fingerprint
from payi_otel._log import internal_error, log_once, logger
from payi_otel._model.codec import parse_value
from payi_otel._model.parameters import (
    BAGGAGE_PREFIX,
    PARAMETERS,
    ParameterError,
    ParameterTypeError,
    ParameterValueError,
    Params,
    params_key,
    validate_value,
)
from payi_otel._model.scope_attributes import ScopeAttributes
from payi_otel._on_import import installed, when_imported
from payi_otel._scopes import ScopeSpec, _await_in_scope, _enter, _Scope
from payi_otel._wrapping import unwrapper

__all__ = ["PayiASGIMiddleware", "PayiWSGIMiddleware", "RequestMapping", "instrument_web"]

#: The scope span's name when the request scope sets no ``use_case_step``.
SPAN_NAME = "payi.request"

ParamsFrom = Callable[[Any], Optional[Mapping[str, object]]]


def _rejected(where: str, error: Exception) -> None:
    """One bad incoming value: a WARNING the first time for ``where``, DEBUG after."""
    message = "payi_otel: %s is not taken for this request (%s)"
    log_once(f"web:{where}", message, where, error)
    logger.debug(message, where, error)


class RequestMapping:
    """What a request's scope is made of (validated once, when the middleware is made)."""

    __slots__ = ("_headers", "_params", "route_step")

    def __init__(
        self,
        headers: Optional[Mapping[str, str]] = None,
        route_step: bool = False,
        params: Optional[ParamsFrom] = None,
    ) -> None:
        if headers is not None and not isinstance(headers, Mapping):
            raise ParameterTypeError(
                f"headers must be a mapping of header name to parameter, not "
                f"{type(headers).__name__}"
            )
        found: Dict[str, str] = {}
        for header, name in (headers or {}).items():
            if not isinstance(header, str) or not header.strip():
                raise ParameterTypeError(f"headers: {header!r} is not a header name")
            if name not in PARAMETERS:
                raise ParameterValueError(
                    f"headers maps {header!r} to {name!r}, which is not a Pay-i parameter "
                    f"(one of {', '.join(PARAMETERS)})"
                )
            found[header.strip().lower()] = name
        if not isinstance(route_step, bool):
            raise ParameterTypeError(f"route_step must be a bool, not {type(route_step).__name__}")
        if params is not None and not callable(params):
            raise ParameterTypeError(f"params must be callable, not {type(params).__name__}")
        self._headers = found
        self.route_step = route_step
        self._params = params

    def __bool__(self) -> bool:
        return bool(self._headers or self.route_step or self._params)

    def level(
        self, headers: Iterable[Tuple[str, str]], route: Optional[str], request: Any
    ) -> Params:
        """The request's parameters: headers, then the route, then the callable's."""
        params: Params = {}
        if self._headers:
            seen: Dict[str, List[str]] = {}
            for key, text in headers:
                name = self._headers.get(key.lower())
                if name is not None:
                    seen.setdefault(key.lower(), []).append(text)
            for header, texts in seen.items():
                name = self._headers[header]
                what = f"request header {header!r}"
                if len(texts) > 1:
                    _rejected(what, ValueError(f"sent {len(texts)} times"))
                    continue
                if not texts[0].strip():
                    continue  # an empty header is not given: a client cannot clear a value
                try:
                    params[name] = parse_value(name, texts[0], what=what)
                except ParameterError as error:
                    _rejected(what, error)
        if route:
            try:
                params["use_case_step"] = validate_value("use_case_step", route)
            except ParameterError as error:
                _rejected("the route template", error)
        if self._params is not None:
            params.update(self._from_callable(request))
        return params

    def _from_callable(self, request: Any) -> Params:
        try:
            given = self._params(request) if self._params is not None else None
        except Exception:  # the app's own callable: its bug must not fail the request
            log_once(
                "web:params",
                "payi_otel: the request params callable %r raised; its parameters are "
                "left out of this request's scope",
                self._params,
                exc_info=True,
            )
            return {}
        if given is None:
            return {}
        if not isinstance(given, Mapping):
            _rejected("the params callable's result", TypeError(type(given).__name__))
            return {}
        params: Params = {}
        for name, value in given.items():
            if value is None:
                continue
            if name not in PARAMETERS:
                _rejected(f"params callable's {name!r}", ValueError("not a Pay-i parameter"))
                continue
            try:
                params[name] = validate_value(name, value)
            except ParameterError as error:
                _rejected(f"params callable's {name!r}", error)
        return params

    def enter(
        self,
        headers: List[Tuple[str, str]],
        route: Optional[str],
        request: Any,
        parent: Context,
    ) -> Optional[_Scope]:
        """The request's scope, entered (not attached) over ``parent``, or None when it sets
        nothing."""
        try:
            if _settings.current.propagate_baggage:
                _check_baggage_read(headers, parent)
            params = self.level(headers, route, request)
            if not params:
                return None
            step = params.get("use_case_step")
            name = step if isinstance(step, str) and step else SPAN_NAME
            spec = ScopeSpec(
                payi_state.TRACK,
                params,
                params_key(params),
                name,
                ScopeAttributes(params, payi_state.TRACK),
            )
            return _enter(spec, parent)
        except Exception:
            internal_error("web-enter", "opening a request's scope failed")
            return None


class _Begun(NamedTuple):
    """A request as :func:`_begin` starts it."""

    #: Its scope, entered (not attached); None when it sets nothing.
    scope: Optional[_Scope]
    #: The context it runs in when it sets nothing (its mark in it).
    context: Context
    mark: RequestMark


def _begin(
    mapping: RequestMapping, headers: Iterable[Tuple[str, str]], route: Optional[str], request: Any
) -> Optional[_Begun]:
    """Start a request: over the current context, or - where another request's context
    leaked here - over it without that request's scopes (:func:`_request_base`); its
    :class:`RequestMark` in its context, scope or not (the request's trace headers, for the
    server tracing that extracts them in it, ``_extracted``; what a later request that finds
    it leaked knows it by). None on an internal failure: the request goes on as it is."""
    try:
        listed = list(headers)
        base = _request_base(request)
        if base is None:
            base = otel_context.get_current()
        carrier = fingerprint(lambda name: [v for k, v in listed if k.lower() == name])
        mark = RequestMark(carrier, _request_token(request), base)
        marked = otel_context.set_value(REQUEST_CARRIER, mark, base)
        return _Begun(mapping.enter(listed, route, request, marked), marked, mark)
    except Exception:
        internal_error("web-begin", "starting a request failed")
        return None


#: Where a request's token is kept in its ASGI scope / WSGI environ (:func:`_request_token`).
_TOKEN_KEY = "payi_otel.request"


def _request_token(request: Any) -> object:
    """The token of ``request`` (an ASGI scope, a WSGI environ), made and kept in it on first
    asked: a middleware below that copies the scope (as ASGI asks) keeps it, so a nested
    request scope knows its own request's scope in force."""
    try:
        token: object = request.get(_TOKEN_KEY)
        if token is None:
            token = request[_TOKEN_KEY] = object()
        return token
    except Exception:  # not a mapping that takes keys: a token no other request has
        return object()


def _request_base(request: Any) -> Optional[Context]:
    """None when no finished request's context is current (the common case); else the
    current context without what that request set. An asyncio server can start a request's
    task in the context of an earlier request on the same connection (uvicorn after a body
    over 64 KiB or a pipelined request, CPython gh-140947): that request's scopes must not be
    this one's. (A request whose mark is not over yet is the one this is nested in: a sub-app
    behind a bridge, an in-process call; its scopes stay.)"""
    mark = otel_context.get_value(REQUEST_CARRIER)
    if not isinstance(mark, RequestMark) or not mark.over:
        return None
    if mark.request is _request_token(request):
        return None
    log_once(
        "web-leaked-request",
        "payi_otel: a request started in the context of an earlier, finished request (an "
        "asyncio server resuming a kept-alive connection from that request's task: uvicorn "
        "after a body over 64 KiB or pipelining, CPython gh-140947); payi_otel leaves that "
        "request's scopes, but a scope opened around the Payi middleware, and the trace "
        "context, still leak: run uvicorn with --reset-contextvars (reset_contextvars=True)",
    )
    try:
        return payi_state.as_outside(otel_context.get_current(), mark.outer)
    except Exception:
        internal_error("web-base", "leaving another request's scope failed")
        return None


def _check_baggage_read(headers: Iterable[Tuple[str, str]], base: Context) -> None:
    """With baggage on: a request whose ``baggage`` header carries ``payi.*`` members, while
    the current context has no baggage, had it read by nobody - no server instrumentation
    extracted it before this middleware - so its baggage level is not there: said once."""
    if otel_baggage.get_all(base):
        return
    for name, value in headers:
        if name.lower() == "baggage" and BAGGAGE_PREFIX in value:
            log_once(
                "web-baggage-unread",
                "payi_otel: a request carries payi.* baggage, but no server instrumentation "
                "extracted it before the Payi web middleware, so it is not read: wrap the app "
                "with opentelemetry-instrumentation-asgi / -wsgi's middleware around the Payi "
                "middleware (or use FastAPI's telemetry, app.add_middleware inside it)",
            )
            return


def _mapping(
    mapping: Optional[RequestMapping],
    headers: Optional[Mapping[str, str]],
    route_step: bool,
    params: Optional[ParamsFrom],
) -> RequestMapping:
    if mapping is not None:
        if not isinstance(mapping, RequestMapping):
            raise ParameterTypeError(f"mapping must be a RequestMapping, not {mapping!r}")
        return mapping
    return RequestMapping(headers, route_step, params)


# --- ASGI ------------------------------------------------------------------------------------


def _asgi_headers(scope: Mapping[str, Any]) -> Iterator[Tuple[str, str]]:
    for key, value in scope.get("headers") or ():
        try:
            yield key.decode("latin-1"), _text(value)
        except Exception:  # not bytes: not a header this middleware reads
            continue


def _text(value: bytes) -> str:
    """A header value's text: UTF-8 where it is, else Latin-1 (HTTP's own)."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def _starlette_route(app: Any, scope: Mapping[str, Any]) -> Optional[str]:
    """The template of the Starlette / FastAPI route ``scope`` will be routed to (the router
    found below ``app`` by its ``.app`` chain, else the Starlette app the request is in:
    ``scope["app"]``, for a middleware added with ``add_middleware`` below one that keeps no
    ``.app``), or None. No router found at all is said once (a WARNING)."""
    for candidate in (app, scope.get("app")):
        for _ in range(32):
            if candidate is None:
                break
            routes = getattr(candidate, "routes", None)
            if isinstance(routes, list):
                return _match_routes(routes, dict(scope), "")
            candidate = getattr(candidate, "app", None)
    log_once(
        "web-no-router",
        "payi_otel: PayiASGIMiddleware(route_step=True) finds no Starlette / FastAPI router "
        "below it (by the .app chain or the request's scope['app']), so requests get no "
        "use_case_step from their route; add it with app.add_middleware on the Starlette / "
        "FastAPI app",
    )
    return None


def _match_routes(routes: List[Any], scope: Dict[str, Any], prefix: str) -> Optional[str]:
    try:
        from starlette.routing import Match
    except ImportError:  # another framework's routes: not read
        return None
    for route in routes:
        matches = getattr(route, "matches", None)
        if matches is None:
            continue
        match, child = matches(scope)
        if match is not Match.FULL:
            continue
        inner = getattr(route, "routes", None)
        path = getattr(route, "path", "")
        if isinstance(inner, list) and inner:  # a Mount: on into its routes
            return _match_routes(inner, {**scope, **child}, prefix + path)
        return prefix + path if isinstance(path, str) and path else None
    return None


class _Middleware:
    """The keywords both middlewares take (or one ``mapping=RequestMapping(...)``)."""

    def __init__(
        self,
        app: Any,
        *,
        headers: Optional[Mapping[str, str]] = None,
        route_step: bool = False,
        params: Optional[ParamsFrom] = None,
        mapping: Optional[RequestMapping] = None,
    ) -> None:
        self.app = app
        self.mapping = _mapping(mapping, headers, route_step, params)


class PayiASGIMiddleware(_Middleware):
    """ASGI middleware: one Pay-i scope per HTTP (and WebSocket) request.

    ``app.add_middleware(PayiASGIMiddleware, headers={"X-User-Id": "user_id"},
    route_step=True, params=lambda scope: {...})`` - add it before an authentication
    middleware (Starlette runs the last one added first) for ``scope["user"]`` to be set when
    ``params`` reads it.
    """

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        route = _asgi_route(self.app, scope) if self.mapping.route_step else None
        await _run_asgi(self.mapping, route, self.app, scope, receive, send)


def _asgi_route(app: Any, scope: Mapping[str, Any]) -> Optional[str]:
    """The route template for ``route_step``; a failure is internal (logged once), the
    request goes on without a step."""
    try:
        return _starlette_route(app, scope)
    except Exception:
        internal_error("web-route", "reading a request's route template failed")
        return None


async def _run_asgi(
    mapping: RequestMapping, route: Optional[str], app: Any, scope: Any, receive: Any, send: Any
) -> None:
    begun = _begin(mapping, _asgi_headers(scope), route, scope)
    if begun is None:
        await app(scope, receive, send)
        return
    mark = begun.mark
    try:
        send = _marking(send, mark)
        if begun.scope is None:
            token = otel_context.attach(begun.context)
            try:
                await app(scope, receive, send)
            finally:
                otel_context.detach(token)
            return
        # The app called and awaited in the request's scope (a streaming body is sent before
        # it returns), as ``@track`` awaits a coroutine.
        await _await_in_scope(_called(app, scope, receive, send), begun.scope)
    finally:
        mark.over = True


def _marking(send: Any, mark: RequestMark) -> Any:
    """``send``, noting the request over once its response is complete (uvicorn starts a
    pipelined request's task inside that last ``send``)."""

    async def marked(message: Any) -> None:
        if (
            isinstance(message, dict)
            and message.get("type") == "http.response.body"
            and not message.get("more_body", False)
        ):
            mark.over = True
        await send(message)

    return marked


async def _called(app: Any, scope: Any, receive: Any, send: Any) -> None:
    await app(scope, receive, send)


# --- WSGI ------------------------------------------------------------------------------------


def _wsgi_headers(environ: Mapping[str, Any]) -> Iterator[Tuple[str, str]]:
    for key, value in environ.items():
        if not isinstance(value, str):
            continue
        if key.startswith("HTTP_"):
            name = key[5:]
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            name = key
        else:
            continue
        # PEP 3333: header values arrive as Latin-1 text; read UTF-8 where they are.
        yield name.replace("_", "-").lower(), _text(value.encode("latin-1", "replace"))


#: Where a WSGI middleware keeps the app it wraps (werkzeug's ``ProxyFix`` and most:
#: ``.app``; OpenTelemetry's: ``.wsgi``; a bound ``Flask.wsgi_app``: ``__self__``).
_WRAPPED_APP = ("__self__", "app", "wsgi", "wsgi_app", "application", "__wrapped__")


def _url_map_of(app: Any) -> Any:
    """The werkzeug ``Map`` of the Flask app below ``app`` (itself, its bound ``wsgi_app``,
    or the app of the WSGI middleware wrapping it, ``ProxyFix`` and OpenTelemetry's
    included), else None, said once (a WARNING)."""
    seen: List[Any] = []
    stack: List[Any] = [app]
    while stack and len(seen) < 64:
        candidate = stack.pop(0)
        if candidate is None or any(candidate is s for s in seen):
            continue
        seen.append(candidate)
        url_map = getattr(candidate, "url_map", None)
        if url_map is not None and hasattr(url_map, "bind_to_environ"):
            return url_map
        stack.extend(getattr(candidate, name, None) for name in _WRAPPED_APP)
    log_once(
        "web-no-url-map",
        "payi_otel: PayiWSGIMiddleware(route_step=True) finds no Flask URL map below it, so "
        "requests get no use_case_step from their route; wrap the Flask app's wsgi_app "
        "(app.wsgi_app = PayiWSGIMiddleware(app.wsgi_app, ...))",
    )
    return None


def _werkzeug_route(url_map: Any, environ: Mapping[str, Any]) -> Optional[str]:
    if url_map is None:
        return None
    try:
        rule, _ = url_map.bind_to_environ(environ).match(return_rule=True)
    except Exception:  # werkzeug's NotFound, MethodNotAllowed, RequestRedirect: no route
        return None
    text = getattr(rule, "rule", None)
    return text if isinstance(text, str) else None


class _ScopedBody:
    """A WSGI response body produced inside the request's scope, which ends when the body
    is closed (PEP 3333: the server always calls ``close()``), the body's own ``close()`` run
    inside it too - work an app does when its response is closed (Flask's
    ``response.call_on_close``, werkzeug's ``ClosingIterator`` callbacks) is the request's.
    A body without ``close()`` ends its scope when it is exhausted."""

    def __init__(self, body: Iterable[Any], scope: _Scope, mark: RequestMark) -> None:
        self._body = body
        self._mark = mark
        self._iterator: Optional[Iterator[Any]] = None
        self._scope: Optional[_Scope] = scope
        #: What the body raised, when it has a ``close()`` still to run in the scope.
        self._error: Optional[BaseException] = None

    def __iter__(self) -> _ScopedBody:
        return self

    def __next__(self) -> Any:
        scope = self._scope
        if scope is None:
            raise StopIteration
        scope.attach()
        try:
            if self._iterator is None:
                self._iterator = iter(self._body)
            item = next(self._iterator)
        except StopIteration:
            scope.restore()
            if getattr(self._body, "close", None) is None:
                self._end(None)
            raise
        except BaseException as exc:
            scope.restore()
            if getattr(self._body, "close", None) is None:
                self._end(exc)
            else:  # the server still closes it: its close() runs in the scope, ends it
                self._error = exc
            raise
        scope.restore()
        return item

    def close(self) -> None:
        scope = self._scope
        close = getattr(self._body, "close", None)
        if scope is None or close is None:
            self._end(None)
            if close is not None:
                close()
            return
        scope.attach()
        try:
            close()
        except BaseException as exc:
            scope.restore()
            self._end(exc)
            raise
        scope.restore()
        self._end(self._error)

    def _end(self, exc: Optional[BaseException]) -> None:
        scope, self._scope, self._error = self._scope, None, None
        if scope is not None:
            scope.end(exc)
            self._mark.over = True


class _SizedScopedBody(_ScopedBody):
    """A :class:`_ScopedBody` of a body with a length: a server sets ``Content-Length`` from a
    one-item body (wsgiref, waitress). Only such bodies have one: waitress calls ``len()`` on
    any body that has ``__len__``, and a failing one is a 500."""

    def __len__(self) -> int:
        return len(self._body)  # type: ignore[arg-type]


class PayiWSGIMiddleware(_Middleware):
    """WSGI middleware: one Pay-i scope per request, until its response body ends.

    ``app.wsgi_app = PayiWSGIMiddleware(app.wsgi_app, headers={"X-User-Id": "user_id"},
    route_step=True)`` (Flask: the route template from the app's URL map).
    """

    _url_map: Any = None
    _url_map_read = False

    def __call__(self, environ: Any, start_response: Any) -> Any:
        url_map = None
        if self.mapping.route_step:
            if not self._url_map_read:  # once: the app below does not change
                self._url_map = _url_map_of(self.app)
                self._url_map_read = True
            url_map = self._url_map
        route = _werkzeug_route(url_map, environ)
        return _run_wsgi(self.mapping, route, self.app, environ, start_response)


def _run_wsgi(
    mapping: RequestMapping, route: Optional[str], app: Any, environ: Any, start_response: Any
) -> Any:
    begun = _begin(mapping, _wsgi_headers(environ), route, environ)
    if begun is None:
        return app(environ, start_response)
    entered, mark = begun.scope, begun.mark
    if entered is None:
        token = otel_context.attach(begun.context)
        try:
            return app(environ, start_response)
        finally:
            otel_context.detach(token)
            mark.over = True
    entered.attach()
    try:
        body = app(environ, start_response)
    except BaseException as exc:
        entered.restore()
        entered.end(exc)
        mark.over = True
        raise
    entered.restore()
    file_wrapper = environ.get("wsgi.file_wrapper") if isinstance(environ, Mapping) else None
    if isinstance(file_wrapper, type) and isinstance(body, file_wrapper):
        # A file sent as it is (the server may use sendfile): no code of the app runs while
        # it is sent, so the scope ends now and the body goes out unwrapped.
        entered.end(None)
        mark.over = True
        return body
    if hasattr(body, "__len__"):
        return _SizedScopedBody(body, entered, mark)
    return _ScopedBody(body, entered, mark)


# --- zero-code -------------------------------------------------------------------------------


def instrument_web(mapping: RequestMapping) -> List[Callable[[], None]]:
    """Open a request scope in every Starlette / FastAPI route and every Flask app, from
    ``mapping`` (``PAYI_WEB_HEADERS``, ``PAYI_WEB_ROUTE_STEP``), each when the program
    imports it (``_on_import``); the undo callables."""
    from wrapt import wrap_function_wrapper

    undo: List[Callable[[], None]] = []

    if installed("starlette"):

        async def route_handle(
            wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any
        ) -> Any:
            if len(args) != 3 or kwargs or args[0].get("type") != "http":
                return await wrapped(*args, **kwargs)
            scope, receive, send = args
            path = getattr(instance, "path", None)
            route = path if mapping.route_step and isinstance(path, str) else None
            await _run_asgi(mapping, route, wrapped, scope, receive, send)

        def wrap_starlette() -> List[Callable[[], None]]:
            wrap_function_wrapper("starlette.routing", "Route.handle", route_handle)
            return [unwrapper(_module("starlette.routing").Route, "handle", route_handle)]

        undo.extend(when_imported("starlette.routing", wrap_starlette, "starlette"))

    if installed("flask"):

        def wsgi_app(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
            if len(args) != 2 or kwargs:
                return wrapped(*args, **kwargs)
            environ, start_response = args
            url_map = getattr(instance, "url_map", None) if mapping.route_step else None
            route = _werkzeug_route(url_map, environ)
            return _run_wsgi(mapping, route, wrapped, environ, start_response)

        def wrap_flask() -> List[Callable[[], None]]:
            wrap_function_wrapper("flask.app", "Flask.wsgi_app", wsgi_app)
            return [unwrapper(_module("flask.app").Flask, "wsgi_app", wsgi_app)]

        # On flask itself: its package imports flask.app, and a hook on a submodule whose
        # package imports it makes another thread importing it wait for the package (wrapt).
        undo.extend(when_imported("flask", wrap_flask, "flask"))
    if not undo:
        log_once(
            "web-none",
            "payi_otel: PAYI_WEB_HEADERS / PAYI_WEB_ROUTE_STEP are set but neither starlette "
            "nor flask is installed; wrap your app in payi_otel.web.PayiASGIMiddleware or "
            "PayiWSGIMiddleware instead",
        )
    return undo


def _module(name: str) -> Any:
    return importlib.import_module(name)

"""Scopes: ``@track`` and ``track_context``. Each scope entry is one INTERNAL span (none in
spanless mode, ``payi_instrument(scope_spans=False)``).

A scope computes its effective parameters when it is entered (``state.enter_scope``), starts
its span with them as ``payi.*`` attributes, and attaches a context carrying span, state and
(opt-in) baggage. Leaving detaches that context, records an exception on the span, ends it.
"""

from __future__ import annotations

import functools
import inspect
import sys
import weakref
from collections.abc import AsyncGenerator, Generator, Mapping
from contextvars import ContextVar, Token
from types import FrameType, TracebackType
from typing import (
    Any,
    Callable,
    Dict,
    Hashable,
    NamedTuple,
    Optional,
    Tuple,
    Type,
    TypeVar,
    cast,
)

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from typing_extensions import Unpack

from payi_otel import _context as payi_baggage
from payi_otel import _context as payi_state
from payi_otel import _gc_guard, _settings
from payi_otel import _scope_totals as scope_totals  # issue 20
from payi_otel._log import internal_error, log_once
from payi_otel._model.parameters import Params, ScopeParameters, params_key, validate_params
from payi_otel._model.scope_attributes import ScopeAttributes

__all__ = ["get_context", "track", "track_context"]

F = TypeVar("F", bound=Callable[..., Any])


class ScopeSpec(NamedTuple):
    """What a scope is, made once by ``track()`` (per decorated function) or
    ``track_context()`` and handed to each of its entries (each entry a :class:`_Scope`).

    Immutable, like logfire's ``LogfireArgs``: an entry reads it, never changes it. A
    ``track_context`` made while scope spans are off has no ``name`` / ``own`` yet: it makes
    a new spec with them on its first entry that starts a span (see ``track_context``).
    """

    #: ``TRACK`` or ``TRACK_CONTEXT`` (``_context``): the scope's rank in precedence.
    method: str
    #: The validated parameters (``validate_params``).
    params: Params
    #: ``params``' hashable form (``params_key``), the key of the merge cache.
    key: Hashable
    #: The scope span's name ("" until a ``track_context`` starts its first span).
    name: str = ""
    #: The scope span's attributes (``scope_span_attributes="own"``), built on first use.
    own: Optional[ScopeAttributes] = None


class _Scope:
    """One entered scope: its state (level), its span (``None`` in spanless mode) and the
    token of the context it attached.

    Attribution never depends on tracing: the scope state is entered first, and a span that
    cannot be started (e.g. a span processor that raises) leaves a scope without a span.
    """

    __slots__ = ("_level", "_owner", "_recorded", "_span", "_token", "_totals", "context")

    def __init__(self, spec: ScopeSpec, parent: Context) -> None:
        settings = _settings.current  # read once: this is the hot path
        if not settings.instrumented:
            log_once(
                "not-instrumented",
                "payi_otel: @track / track_context run but payi_instrument() was not called, "
                "so no x-payi-* header is stamped on LLM calls (scopes and spans still work). "
                "Call payi_instrument() once at start-up, or run under opentelemetry-instrument.",
            )
        method = spec.method
        state, ctx = payi_state.enter_scope(method, spec.params, parent, spec.key)
        self._level = state.tracks[-1] if method == payi_state.TRACK else state.contexts[-1]
        self._recorded = False
        self._span: Optional[Span] = None
        self._totals: Optional[scope_totals.ScopeTotals] = None  # issue 20
        if settings.scope_spans:
            if payi_state.exited_here():
                parent = _settled(parent)
            # By default the span carries what this scope set (``own``), not the whole
            # effective set: see ScopeAttributes and docs/performance.md.
            if settings.effective_scope_spans:
                attributes = state.effective.scope_attributes(method)
            else:
                own = spec.own
                if own is None:
                    own = ScopeAttributes(spec.params, method)
                attributes = own.for_entry(state.effective)
            try:
                self._span = settings.tracer.start_span(
                    spec.name or "payi.track_context",
                    context=parent,
                    kind=SpanKind.INTERNAL,
                    attributes=attributes,
                )
            except Exception:  # tracing failed, not payi_otel: the scope holds, no span
                log_once(
                    "scope-span",
                    "payi_otel: a scope span could not be started; the "
                    "scope still applies to its calls",
                    exc_info=True,
                )
            if self._span is not None:
                _OUTER_SPANS[self._span] = trace.get_current_span(parent)
                ctx = trace.set_span_in_context(self._span, ctx)
                if settings.scope_totals:  # issue 20: what the calls inside cost
                    ctx = scope_totals.enter(ctx)
                    self._totals = scope_totals.innermost(ctx)
        if settings.propagate_baggage:
            ctx = payi_baggage.with_outgoing(ctx, state.effective)
        self.context: Context = ctx
        self._token: Optional[object] = None
        self._owner: Optional[Token[Optional[_Scope]]] = None

    def attach(self) -> None:
        if self._recorded:  # resumed after a stale exit was noted (see restore)
            payi_state.remember_here(self._level)
        self._token = otel_context.attach(self.context)

    def restore(self) -> None:
        """Put back exactly the context from before :meth:`attach`, discarding whatever the
        code run in between left attached (a driven generator's body between resumes).

        When something is still attached on top of this scope's context (a stream left
        open in the body), its later detach would bring this scope back between resumes:
        the scope is noted as exited here until it is attached again."""
        token, self._token = self._token, None
        if token is None:
            return
        stale = self._recorded or otel_context.get_current() is not self.context
        otel_context.detach(token)  # type: ignore[arg-type]
        if stale:
            self._leave_stale()

    def _leave_stale(self) -> None:
        """Leave while another context is current (something attached on top has not
        detached, or a late detach restored a context from inside this scope): take this
        scope and its span out of the current context, and note that the scope exited here,
        as the context that something restores when it detaches still carries it."""
        current = otel_context.get_current()
        ctx = payi_state.without_level(current, self._level)
        span = trace.get_current_span(ctx)
        if span is self._span or (span in _OUTER_SPANS and not span.is_recording()):
            ctx = trace.set_span_in_context(_live_outer(span, self._span), ctx)
        if ctx is not current:
            if _settings.current.propagate_baggage:
                ctx = payi_baggage.with_outgoing(ctx, payi_state.current_effective(ctx))
            otel_context.attach(ctx)
        payi_state.forget_here(self._level)
        self._recorded = True

    def detach(self) -> None:
        """Leave the scope. In order (this scope's context is the current one): restore what
        was there before. Out of order (scopes held by generators advanced in turn, exits
        called by hand): take only this scope out of the current context - never bring back
        a scope that already ended, never leave this one's span current."""
        token, self._token = self._token, None
        if token is None:
            return
        if _gc_guard.collecting is not None and _gc_guard.in_collection():
            # Left by a finalizer of a collection (a generator abandoned inside the scope):
            # what is detached below may be undone when the collection returns (see
            # _gc_guard), so the scope is gone everywhere (README "Scope lifecycle").
            payi_state.orphan(self._level)
        owner, self._owner = self._owner, None
        if owner is not None:
            try:
                _OWNER.reset(owner)
            except ValueError:
                # Left in another contextvars.Context than the one it was entered in: that
                # one still carries it and cannot be reached from here (README "Scope
                # lifecycle"): the scope is gone everywhere.
                payi_state.orphan(self._level)
                return
        if otel_context.get_current() is self.context:
            otel_context.detach(token)  # type: ignore[arg-type]
            return
        self._leave_stale()

    def own(self) -> None:
        """Remember the ``contextvars.Context`` this scope is entered in (``with`` /
        ``async with``), so that leaving it from another one is recognised."""
        self._owner = _OWNER.set(self)

    def end(self, exc: Optional[BaseException] = None) -> None:
        if self._span is None:  # spanless mode
            return
        try:
            if exc is not None and not isinstance(exc, (GeneratorExit, StopIteration)):
                self._span.record_exception(exc)
                self._span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            if self._totals is not None:  # issue 20: the scope's totals
                self._totals.end(self._span)
            self._span.end()
        except Exception:  # e.g. a span processor that raises: never into the app
            internal_error("scope-end", "ending a scope span failed")


#: Set when a ``with`` scope is entered: resetting its token fails in another Context.
_OWNER: ContextVar[Optional[_Scope]] = ContextVar("payi_otel_scope_owner", default=None)


# Each scope span's outer span (weakly): where an out-of-order exit sends the current span.
_OUTER_SPANS: weakref.WeakKeyDictionary[Span, Span] = weakref.WeakKeyDictionary()


def _live_outer(span: Span, leaving: Optional[Span] = None) -> Span:
    """The nearest span around ``span`` that has not ended (scopes may end out of order),
    nor is ``leaving``'s (a scope span about to end)."""
    outer = _OUTER_SPANS.get(span, trace.INVALID_SPAN)
    seen = 0
    while (
        outer is not trace.INVALID_SPAN
        and seen < 1000
        and (outer is leaving or not outer.is_recording())
    ):
        outer = _OUTER_SPANS.get(outer, trace.INVALID_SPAN)
        seen += 1
    return outer


def _settled(parent: Context) -> Context:
    """``parent`` with a live current span, when a stale context (restored by someone
    else's detach after its scope exited) left an ended scope span current there: a new
    scope span is not made the child of a span that ended."""
    span = trace.get_current_span(parent)
    if span.is_recording() or span not in _OUTER_SPANS:
        return parent
    return trace.set_span_in_context(_live_outer(span), parent)


class _NoScope(_Scope):
    """Stands in for a scope that could not be entered: the app's code runs unscoped."""

    __slots__ = ()

    def __init__(self) -> None:
        self._token = None
        self._recorded = False
        self.context = otel_context.get_current()

    def attach(self) -> None:
        return None

    def end(self, exc: Optional[BaseException] = None) -> None:
        return None


def _enter(spec: ScopeSpec, parent: Context) -> _Scope:
    """A new scope; an unexpected failure is logged once and gives a no-op scope instead."""
    try:
        return _Scope(spec, parent)
    except Exception:
        internal_error("scope-enter", "entering a scope failed")
        return _NoScope()


def _track_sync(fn: Callable[..., Any], spec: ScopeSpec) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        scope = _enter(spec, otel_context.get_current())
        scope.attach()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            scope.detach()
            scope.end(exc)
            raise
        scope.detach()
        # What the call returned decides when the scope ends, not how fn was declared (an
        # async function behind a plain decorator). An awaitable runs where it is awaited,
        # as a coroutine function's does: the scope of its call ends here, and the work
        # gets a scope of its own over the context it is awaited in (a review found it run
        # in the call's context: billed to a scope closed meanwhile, or to nobody).
        if inspect.isawaitable(result):
            scope.end()
            return _await_tracked(result, spec)
        if inspect.isgenerator(result):
            return _drive_generator(result, spec, scope.context, scope)
        if inspect.isasyncgen(result):
            return _drive_async_generator(result, spec, scope.context, scope)
        scope.end()
        return result

    return wrapper


async def _await_in_scope(awaitable: Any, scope: _Scope) -> Any:
    """Await ``awaitable`` inside ``scope``, then end it."""
    scope.attach()
    try:
        result = await awaitable
    except BaseException as exc:
        scope.restore()
        scope.end(exc)
        raise
    scope.restore()
    scope.end()
    return result


async def _await_tracked(awaitable: Any, spec: ScopeSpec) -> Any:
    """Await ``awaitable`` in a scope entered where it is awaited."""
    return await _await_in_scope(awaitable, _enter(spec, otel_context.get_current()))


def _track_async(fn: Callable[..., Any], spec: ScopeSpec) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        scope = _enter(spec, otel_context.get_current())
        try:
            awaitable = fn(*args, **kwargs)  # not run yet: only the coroutine is made
        except BaseException as exc:
            scope.end(exc)
            raise
        return await _await_in_scope(awaitable, scope)

    return wrapper


def _drive_generator(
    gen: Generator[Any, Any, Any],
    spec: ScopeSpec,
    parent: Context,
    entered: Optional[_Scope] = None,
) -> Generator[Any, Any, Any]:
    """Run ``gen`` inside its scope on every resume, and outside it between resumes (the
    scope is entered at the first resume unless already ``entered``)."""
    scope = entered or _enter(spec, parent)
    error: Optional[BaseException] = None
    try:
        to_send: Any = None
        to_throw: Optional[BaseException] = None
        while True:
            scope.attach()
            try:
                item = gen.send(to_send) if to_throw is None else gen.throw(to_throw)
            except StopIteration as stop:
                return stop.value
            finally:
                scope.restore()
            to_send, to_throw = None, None
            try:
                to_send = yield item
            except GeneratorExit:
                scope.attach()
                try:
                    gen.close()
                finally:
                    scope.restore()
                raise
            except BaseException as exc:
                to_throw = exc
    except BaseException as exc:
        error = exc
        raise
    finally:
        scope.end(error)


async def _drive_async_generator(
    agen: AsyncGenerator[Any, Any],
    spec: ScopeSpec,
    parent: Context,
    entered: Optional[_Scope] = None,
) -> AsyncGenerator[Any, Any]:
    """Async counterpart of :func:`_drive_generator`."""
    scope = entered or _enter(spec, parent)
    error: Optional[BaseException] = None
    try:
        to_send: Any = None
        to_throw: Optional[BaseException] = None
        while True:
            scope.attach()
            try:
                if to_throw is None:
                    item = await agen.asend(to_send)
                else:
                    item = await agen.athrow(to_throw)
            except StopAsyncIteration:
                return
            finally:
                scope.restore()
            to_send, to_throw = None, None
            try:
                to_send = yield item
            except GeneratorExit:
                scope.attach()
                try:
                    await agen.aclose()
                finally:
                    scope.restore()
                raise
            except BaseException as exc:
                to_throw = exc
    except BaseException as exc:
        error = exc
        raise
    finally:
        scope.end(error)


def _track_driven(
    fn: Callable[..., Any], spec: ScopeSpec, drive: Callable[..., Any]
) -> Callable[..., Any]:
    """``@track`` of a generator or async generator function: ``drive`` (one of the two
    drivers above) runs its body in the scope of the place it was called."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        parent = otel_context.get_current()
        return drive(fn(*args, **kwargs), spec, parent)

    return wrapper


def track(**params: Unpack[ScopeParameters]) -> Callable[[F], F]:
    """Decorate a function so each invocation is a Pay-i scope and an INTERNAL span.

    Works on plain and ``async`` functions, generators and async generators (the body of a
    generator runs inside its scope on every resume, and not outside it). Parameters are
    validated here, at decoration time.
    """
    valid = validate_params(params, source="track")
    key = params_key(valid)
    step = valid.get("use_case_step")

    def decorator(fn: F) -> F:
        if isinstance(fn, (staticmethod, classmethod)):
            # (a staticmethod is callable from 3.10, but its wrapper would be a plain
            # function: bound, called with the instance too; a review)
            raise TypeError(
                f"@track must decorate a function, not {type(fn).__name__} (put @track "
                "below @staticmethod / @classmethod)"
            )
        if not callable(fn):
            raise TypeError(f"@track must decorate a function, not {type(fn).__name__}")
        name = step if isinstance(step, str) and step else getattr(fn, "__qualname__", "track")
        own = ScopeAttributes(valid, payi_state.TRACK)
        spec = ScopeSpec(payi_state.TRACK, valid, key, name, own)
        if inspect.isasyncgenfunction(fn):
            wrapped = _track_driven(fn, spec, _drive_async_generator)
        elif inspect.iscoroutinefunction(fn) or (
            not inspect.isroutine(fn)
            and not isinstance(fn, type)
            and inspect.iscoroutinefunction(inspect.getattr_static(type(fn), "__call__", None))
        ):  # (an object with ``async def __call__``: a coroutine function, called)
            wrapped = _track_async(fn, spec)
        elif inspect.isgeneratorfunction(fn):
            wrapped = _track_driven(fn, spec, _drive_generator)
        else:
            wrapped = _track_sync(fn, spec)
        return cast(F, wrapped)

    return decorator


# The track_context entries in force in this context (task, thread), innermost last, so one
# instance can be entered by concurrent tasks and threads, each exiting its own entry.
_ENTERED: ContextVar[Tuple[Tuple[track_context, _Scope], ...]] = ContextVar(
    "payi_otel_track_context_entries", default=()
)


class track_context:
    """A Pay-i scope for a block: ``with track_context(user_id=...):`` (or ``async with``).

    Parameters are validated when it is created; each entry is a new scope and a new span.
    """

    __slots__ = ("_open", "_spec")

    def __init__(self, **params: Unpack[ScopeParameters]) -> None:
        #: This instance's entries not exited yet, in any context: ``id(scope)`` -> (``id``
        #: of the frame whose ``with`` entered it, the scope); see ``__exit__``. (A dict: one
        #: item set or popped at a time is atomic, for entries by concurrent threads.)
        self._open: Dict[int, Tuple[int, _Scope]] = {}
        valid = validate_params(params, source="track_context")
        # The span's name and attributes are made on the first entry that starts a span (none
        # in spanless mode, where creating a track_context per request is the hot path).
        self._spec = ScopeSpec(payi_state.TRACK_CONTEXT, valid, params_key(valid))

    @property
    def _params(self) -> Params:
        """The validated parameters (what tests/test_validation.py checks)."""
        return self._spec.params

    def _spanned(self, spec: ScopeSpec) -> ScopeSpec:
        """``spec`` with its span's name and attributes, kept for the next entries."""
        params = spec.params
        step = params.get("use_case_step")
        name = params.get("use_case_name")
        if isinstance(step, str) and step:
            span_name = step
        elif isinstance(name, str) and name:
            span_name = name
        else:
            span_name = "payi.track_context"
        own = ScopeAttributes(params, payi_state.TRACK_CONTEXT)
        spanned = self._spec = ScopeSpec(spec.method, params, spec.key, span_name, own)
        return spanned

    def __enter__(self) -> None:
        self._enter_at(sys._getframe(1))

    def _enter_at(self, frame: FrameType) -> None:
        spec = self._spec
        if spec.own is None and _settings.current.scope_spans:
            spec = self._spanned(spec)
        scope = _enter(spec, otel_context.get_current())
        scope.attach()
        scope.own()
        _ENTERED.set((*_ENTERED.get(), (self, scope)))
        self._open[id(scope)] = (id(frame), scope)

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self._exit_at(sys._getframe(1), exc)

    def _exit_at(self, frame: FrameType, exc: Optional[BaseException]) -> None:
        entered = _ENTERED.get()
        if entered and entered[-1][0] is self:  # the common case: the innermost entry
            scope = entered[-1][1]
            _ENTERED.set(entered[:-1])
            self._exited(scope, exc)
            return
        for index in range(len(entered) - 2, -1, -1):
            if entered[index][0] is self:
                scope = entered[index][1]
                _ENTERED.set(entered[:index] + entered[index + 1 :])
                self._exited(scope, exc)
                return
        mine = [scope for at, scope in list(self._open.values()) if at == id(frame)]
        if len(mine) == 1:
            # Entered by this same ``with`` (its frame), in another context than this one: a
            # generator holding ``with track_context(...)`` resumed in a fresh context each
            # time (Starlette's iterate_in_threadpool). Its scope held only until its first
            # yield; it is gone everywhere now, and its span ends.
            log_once(
                "exit-elsewhere",
                "payi_otel: track_context exited in another context than it was entered in "
                "(a generator resumed in a new context each time, as Starlette's "
                "iterate_in_threadpool does): its scope held only until the generator's "
                "first yield; decorate the generator with @track(...) instead, whose scope "
                "holds on every resume (a FastAPI dependency with yield that sets the "
                "request's scope: make it async, or use payi_otel.web's middleware)",
            )
            self._exited(mine[0], exc)
            return
        log_once("exit", "payi_otel: track_context exited where it was not entered")

    def _exited(self, scope: _Scope, exc: Optional[BaseException]) -> None:
        self._open.pop(id(scope), None)
        scope.detach()
        scope.end(exc)

    async def __aenter__(self) -> None:
        self._enter_at(sys._getframe(1))

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self._exit_at(sys._getframe(1), exc)


def get_context() -> Mapping[str, object]:
    """The effective parameters in force here, as a read-only mapping (unset ones absent)."""
    return payi_state.current_effective().public()

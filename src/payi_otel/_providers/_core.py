"""The generic request hook, the same for every provider: resolve, stamp, attribute, run the
call in its context, observe the response (docs/architecture.md).

For each call: the caller's ``x-payi-*`` headers (the client's defaults and the call's own,
one level) are parsed into the highest level and merged over the effective context (a fresh
id for a name given without one is made here, once per logical call, so retries resend it);
the call is sent with exactly the resolved headers, in the configured dialect, or with none
where the destination policy says nobody reads them (``_destinations``); the current GenAI
span gets the same values as ``payi.*`` attributes; while the SDK handles the call the
resolved parameters are in the context, so a GenAI span the SDK starts itself gets them too;
and when observers are registered, each completed call (a stream: when exhausted or
closed, a stream nested in a response too) is reported with its usage.

All of it happens at a provider's entry points (``Role.ENTRY``), except for a provider that
builds its HTTP request below its per-call method: there the request is stamped at its send
points (``Role.SEND``) with the headers resolved at the entry for the call in the context. A
stream that sends its requests only as it is read (a generator: ``Provider.sends_when_read``)
is read in the call's context, item by item, so its send points find the call too.
"""

from __future__ import annotations

import importlib
import inspect
import time
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import wrapt
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span

from payi_otel import _settings
from payi_otel._context import CallBasis, call_basis, with_call, without_payi_baggage
from payi_otel._destinations import sends_to
from payi_otel._log import internal_error, log_once
from payi_otel._model.dialects import parse_headers
from payi_otel._model.effective import Effective
from payi_otel._model.merge import Level, combine
from payi_otel._model.model_mappings import ModelMapping, find_mapping, mapped_params
from payi_otel._model.parameters import ParameterError, params_key
from payi_otel._on_import import installed, when_imported
from payi_otel._providers import _background
from payi_otel._providers._base import (
    Args,
    Call,
    CallRecord,
    Kwargs,
    Provider,
    Role,
    Service,
    Usage,
)
from payi_otel._settings import Settings, add_observer
from payi_otel._spans import apply_call_attributes, name_service
from payi_otel._wrapping import unwrapper

__all__ = ["add_observer", "instrument_providers", "resolve_call"]


def resolve_call(effective: Effective, sources: Sequence[Mapping[Any, object]]) -> Effective:
    """The parameters of one call: the caller's header sources (client defaults, then the
    call's own), one per-call level, merged over the effective context (docs/precedence.md,
    "The per-call level"). A call with no attribution headers costs nothing here."""
    if not any(sources):
        return effective
    for level in combine([parse_headers(source) for source in sources]):
        effective = effective.child(level)
    return effective


#: Marks the cache key of a model mapping's level (``Effective.child``).
_MAPPING_KEY = ("payi_otel.model_mapping",)


def map_model(
    effective: Effective,
    mappings: Sequence[ModelMapping],
    model: Optional[str],
    url: Optional[str],
) -> Effective:
    """The call's parameters with what the first model mapping matching its model (and
    host) gives, where the call has no ``price_as_*`` of its own (``_model.model_mappings``)."""
    mapping = find_mapping(mappings, model, url)
    if mapping is None:
        return effective
    added = mapped_params(effective.params, mapping)
    if added is None:
        return effective
    return effective.child(Level(added, key=(*_MAPPING_KEY, *params_key(added))))


class _Observation:
    """One call on its way: what the response side reports when it completes."""

    __slots__ = (
        "arguments",  # issue 19
        "call",
        "context",
        "done",
        "first",  # a stream's first item (_background)
        "first_item",  # issue 19
        "hide_usage_only",
        "model",
        "provider",
        "request",  # issue 19
        "response",  # issue 19
        "response_model",
        "service",
        "span",
        "started",
        "started_at",  # issue 19
        "streamed",
        "unsent",
        "usage",
    )

    def __init__(
        self,
        provider: Provider,
        call: Effective,
        model: Optional[str],
        service: Optional[Service] = None,
        request: Optional[Call] = None,
        span: Optional[Span] = None,
        context: Optional[otel_context.Context] = None,
    ) -> None:
        self.provider = provider
        self.call = call
        self.model = model
        self.service = service
        #: The span current when the call is sent (``span``: the caller read it already).
        self.span = trace.get_current_span() if span is None else span
        #: The context it is sent from (issue 20: CallRecord.context).
        self.context = otel_context.get_current() if context is None else context
        self.started = time.perf_counter()
        self.started_at = time.time()
        self.request = request
        self.response: Any = None
        self.first_item: Optional[float] = None
        #: A stream's first item (a background response's id is in it: ``_background``).
        self.first: object = None
        self.arguments: Optional[Tuple[Args, Kwargs]] = None
        self.usage: Optional[Usage] = None
        self.response_model: Optional[str] = None
        self.streamed = False
        self.done = False
        #: A stream that sends its request when first read, not read yet: a call that
        #: never went out (``Provider.sends_when_read``), reported as none.
        self.unsent = False
        #: The hook asked the stream for its usage: the item carrying only it is not passed on.
        self.hide_usage_only = False

    def hidden(self, item: object) -> bool:
        """Observe a stream's ``item`` (reported at once when it is the call's last word);
        True when the caller must not see it."""
        self.see(item)
        try:
            if self.provider.is_last(item):
                # Before the item goes on: an instrumentation that ends its span on it
                # (botocore's Bedrock streams, genai-openai's responses streams) gets the
                # usage and cost first.
                self.finish()
            return self.hide_usage_only and self.provider.is_usage_only(item)
        except Exception:
            internal_error(f"observe:{self.provider.name}", "reading a stream item failed")
            return False

    def see(self, item: object) -> None:
        self.response = item
        if self.streamed and self.first_item is None:
            self.first_item = time.perf_counter()
            self.first = item
        try:
            usage = self.provider.usage(item)
            if usage is not None:
                self.usage = usage if self.usage is None else self.usage.updated(usage)
            self.response_model = self.provider.response_model(item) or self.response_model
        except Exception:
            internal_error(f"observe:{self.provider.name}", "reading a response failed")

    def failed(self, error: BaseException) -> None:
        """The SDK raised ``error`` from the call: reported with the reply it carries, if
        any (:meth:`Provider.reply_of`)."""
        try:
            reply = self.provider.reply_of(error)
            if reply is not None and not self.done:
                self.see(reply)
        except Exception:
            internal_error(f"observe:{self.provider.name}", "reading a failed call failed")
        self.finish(error)

    def finish(self, error: Optional[BaseException] = None) -> None:
        if self.done:
            return
        self.done = True
        if self.unsent:
            return  # never read: nothing was sent, nothing to bill (a review)
        usage = self.usage
        if usage is not None:
            try:
                usage = self.provider.usage_totals(usage)
            except Exception:
                internal_error(f"observe:{self.provider.name}", "reading usage failed")
        elif self.streamed and error is None:
            # Billed by the provider, counted here without tokens or cost: said once.
            log_once(
                f"stream-without-usage:{self.provider.name}",
                "payi_otel: a stream of %s ended without its usage, so that call is counted "
                "without tokens or cost: it was left early (a break, close(), or dropped; "
                "Bedrock's ConverseStream sends its usage after messageStop: read streams to "
                "their end), or its server sent none (a raw or streaming response of openai's "
                "is not asked for it; stream_options={'include_usage': True} asks)",
                self.provider.label or self.provider.name,
            )
        record = CallRecord(
            self.provider.name,
            self.call,
            self.model,
            self.response_model,
            usage,
            self.span,
            time.perf_counter() - self.started,
            self.streamed,
            error,
            self.service,
            self.request,
            self.response,
            self.started_at,
            None if self.first_item is None else self.first_item - self.started,
            self.arguments,
            self.context,
        )
        try:
            # (a background generation is held until a later call shows it finished)
            records = _background.records_of(self.provider, record, self.first)
        except Exception:
            internal_error("observe:background", "reading a background generation failed")
            records = (record,)
        for done in records:
            for observer in _settings.current.observers:
                try:
                    observer(done)
                except Exception:
                    internal_error("observer", "a response observer failed")


class _Observing(wrapt.ObjectProxy):  # type: ignore[type-arg,unused-ignore]
    """A proxy that reports its call once, at the latest when it is collected."""

    def __init__(self, wrapped: Any, observation: _Observation) -> None:
        super().__init__(wrapped)
        self._self_observation = observation
        finalizer = self._self_finalizer = weakref.finalize(self, observation.finish)
        finalizer.atexit = False  # not at interpreter exit: the observers may be shut down


class _ClosingResponse(wrapt.ObjectProxy):  # type: ignore[type-arg,unused-ignore]
    """A stream's HTTP response: closing it ends the call's observation (the SDKs' stream
    helpers close a stream this way: ``chat.completions.stream()``, ``responses.stream()``)."""

    def __init__(self, wrapped: Any, observation: _Observation) -> None:
        super().__init__(wrapped)
        self._self_observation = observation

    def close(self) -> Any:
        self._self_observation.finish()
        return self.__wrapped__.close()

    async def aclose(self) -> Any:
        self._self_observation.finish()
        return await self.__wrapped__.aclose()


class _StreamProxy(_Observing):
    """What sync and async streams share: their ``response`` closes the observation too."""

    def __init__(self, wrapped: Any, observation: _Observation) -> None:
        super().__init__(wrapped, observation)
        self._self_response: Optional[_ClosingResponse] = None

    @property
    def response(self) -> Any:
        response = self._self_response
        if response is None:
            response = self._self_response = _ClosingResponse(
                self.__wrapped__.response, self._self_observation
            )
        return response


class _ObservedStream(_StreamProxy):
    """The SDK's stream, unchanged for the caller, reporting usage as its items pass.

    Every way of using a stream goes through here: iteration (``for``, ``next``, the SDK's
    helpers that iterate it: ``messages.stream()``, ``chat.completions.stream()``,
    ``responses.stream()``), ``with`` (which gives this proxy, not the bare stream),
    ``close()``. The call is reported once: when the stream ends, is closed, or - left
    unfinished and dropped - is collected, with the usage seen so far (README, "Cost and
    usage"). Sync and async streams get distinct proxies, each with only its own protocol,
    as instrumentations tell them apart by shape (``__next__`` / ``__anext__``).
    """

    def __iter__(self) -> Iterator[Any]:
        observation = self._self_observation
        try:
            for item in self.__wrapped__:
                if not observation.hidden(item):
                    yield item
        except GeneratorExit:
            # The caller left this loop (``break``, ``next(iter(stream))``), not the stream:
            # it may read on in another loop. Reported when the stream ends, is closed, or
            # is collected, with all the usage it showed.
            raise
        except BaseException as exc:
            observation.finish(exc)
            raise
        observation.finish()

    def __next__(self) -> Any:
        observation = self._self_observation
        while True:
            try:
                item = next(self.__wrapped__)
            except StopIteration:
                observation.finish()
                raise
            except BaseException as exc:
                observation.finish(exc)
                raise
            if not observation.hidden(item):
                return item

    def __enter__(self) -> Any:
        self.__wrapped__.__enter__()
        return self  # not the bare stream: its items still pass the observer

    def __exit__(self, *exc_info: Any) -> Any:
        self._self_observation.finish()
        return self.__wrapped__.__exit__(*exc_info)

    def close(self) -> Any:
        self._self_observation.finish()
        return self.__wrapped__.close()


class _ObservedAsyncStream(_StreamProxy):
    """The async counterpart of :class:`_ObservedStream`."""

    async def __aiter__(self) -> AsyncIterator[Any]:
        observation = self._self_observation
        try:
            async for item in self.__wrapped__:
                if not observation.hidden(item):
                    yield item
        except GeneratorExit:  # the loop was left, not the stream (see __iter__)
            raise
        except BaseException as exc:
            observation.finish(exc)
            raise
        observation.finish()

    async def __anext__(self) -> Any:
        observation = self._self_observation
        while True:
            try:
                item = await self.__wrapped__.__anext__()
            except StopAsyncIteration:
                observation.finish()
                raise
            except BaseException as exc:
                observation.finish(exc)
                raise
            if not observation.hidden(item):
                return item

    async def __aenter__(self) -> Any:
        await self.__wrapped__.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> Any:
        self._self_observation.finish()
        return await self.__wrapped__.__aexit__(*exc_info)

    async def close(self) -> Any:
        self._self_observation.finish()
        return await self.__wrapped__.close()


class _ObservedAsyncSyncClose(_ObservedAsyncStream):
    """An async stream whose ``close()`` is synchronous (aiobotocore's ``AioEventStream``):
    so is the proxy's (an ``async def`` one would make ``stream.close()`` a coroutine that
    never runs, and one that instrumentations await fail on the stream's ``None``)."""

    def close(self) -> Any:
        self._self_observation.finish()
        return self.__wrapped__.close()


class _ObservedAsyncClosable(_ObservedAsyncStream):
    """An async stream that also has ``aclose()`` (openai's alias of ``close()``); a
    stream without one must not seem to have it (instrumentations look for it)."""

    async def aclose(self) -> Any:
        self._self_observation.finish()
        return await self.__wrapped__.aclose()


class _ObservedResponse(_Observing):
    """A raw response (``with_raw_response``, ``with_streaming_response``), unchanged for
    the caller: what its ``parse()`` gives is observed (a stream as it is read); a response
    read only as bytes or lines reports no usage (payi_otel does not parse the caller's raw
    body). Reported once: when parsed (a stream: when it ends), closed, or collected."""

    def __init__(self, wrapped: Any, observation: _Observation) -> None:
        super().__init__(wrapped, observation)
        self._self_parsed: Optional[Tuple[Any, Any]] = None

    def parse(self, *args: Any, **kwargs: Any) -> Any:
        return self._self_observe(self.__wrapped__.parse(*args, **kwargs))

    def _self_observe(self, parsed: Any) -> Any:
        known = self._self_parsed
        if known is not None and known[0] is parsed:  # the SDK caches what it parsed
            return known[1]
        observed = _observed(parsed, self._self_observation)
        self._self_parsed = (parsed, observed)
        if isinstance(observed, _Observing):  # a stream: it reports when it ends, not this
            self._self_finalizer.detach()
        return observed

    def close(self) -> Any:
        self._self_observation.finish()
        return self.__wrapped__.close()  # sync, or the async response's coroutine


class _ObservedAsyncResponse(_ObservedResponse):
    """An async client's raw response: ``parse()`` is a coroutine function here too, as
    callers (and the GenAI instrumentations' own response proxies, which replay a memoized
    parse through a fresh awaitable only for one) tell it by ``iscoroutinefunction``."""

    async def parse(self, *args: Any, **kwargs: Any) -> Any:
        return self._self_observe(await self.__wrapped__.parse(*args, **kwargs))


class _InContext(wrapt.ObjectProxy):  # type: ignore[type-arg,unused-ignore]
    """A stream that sends its requests as it is read (``Provider.sends_when_read``): each
    read, and its closing, runs in its call's context (attached around that one step only:
    the caller's code between items keeps the caller's context). Its call is unsent until
    it is first read."""

    def __init__(
        self, wrapped: Any, ctx: otel_context.Context, observation: Optional[_Observation]
    ) -> None:
        super().__init__(wrapped)
        self._self_ctx = ctx
        self._self_observation = observation
        if observation is not None:
            observation.unsent = True

    def _sent(self) -> None:
        observation = self._self_observation
        if observation is not None:
            observation.unsent = False


class _ReadInContext(_InContext):
    """A sync :class:`_InContext` (a generator)."""

    def __iter__(self) -> Any:
        return self

    def __next__(self) -> Any:
        self._sent()
        token = otel_context.attach(self._self_ctx)
        try:
            return next(self.__wrapped__)
        finally:
            otel_context.detach(token)

    def close(self) -> Any:
        token = otel_context.attach(self._self_ctx)
        try:
            return self.__wrapped__.close()
        finally:
            otel_context.detach(token)


class _AsyncReadInContext(_InContext):
    """An async :class:`_InContext` (an async generator)."""

    def __aiter__(self) -> Any:
        return self

    async def __anext__(self) -> Any:
        self._sent()
        token = otel_context.attach(self._self_ctx)
        try:
            return await self.__wrapped__.__anext__()
        finally:
            otel_context.detach(token)

    async def aclose(self) -> Any:
        token = otel_context.attach(self._self_ctx)
        try:
            return await self.__wrapped__.aclose()
        finally:
            otel_context.detach(token)


def _read_in_context(
    provider: Provider,
    result: Any,
    ctx: Optional[otel_context.Context],
    observation: Optional[_Observation],
) -> Any:
    """``result``, read in ``ctx`` (None: the current context, which is the call's) when it
    is a stream that sends its requests as it is read (``observation``: not sent until it
    is)."""
    try:
        if not provider.sends_when_read(result):
            return result
        if ctx is None:
            ctx = otel_context.get_current()
        if hasattr(result, "__anext__"):
            return _AsyncReadInContext(result, ctx, observation)
        return _ReadInContext(result, ctx, observation)
    except Exception:
        internal_error(f"observe:{provider.name}", "reading a stream in its context failed")
        return result


def _observed_stream(stream: Any, observation: _Observation) -> Any:
    observation.streamed = True
    if hasattr(stream, "__anext__"):
        if hasattr(stream, "aclose"):
            return _ObservedAsyncClosable(stream, observation)
        close = getattr(stream, "close", None)
        if close is not None and not inspect.iscoroutinefunction(close):
            return _ObservedAsyncSyncClose(stream, observation)
        return _ObservedAsyncStream(stream, observation)
    return _ObservedStream(stream, observation)


def _observed(result: Any, observation: Optional[_Observation]) -> Any:
    if observation is None:
        return result
    provider = observation.provider
    try:
        if provider.is_stream(result):
            return _observed_stream(result, observation)
        if provider.is_raw_response(result):
            if inspect.iscoroutinefunction(getattr(result, "parse", None)):
                return _ObservedAsyncResponse(result, observation)
            return _ObservedResponse(result, observation)
        nested = provider.stream_of(result)
        if nested is not None:
            # The response is handed over now, its stream read later: the call is reported
            # when the stream ends, with what the response and the stream showed.
            observation.see(result)
            observation.response = None  # issue 19: not the stream's holder (a cycle)
            return provider.with_stream(result, _observed_stream(nested, observation))
        observation.see(result)
        observation.finish()
    except Exception:
        internal_error(f"observe:{observation.provider.name}", "observing a response failed")
    return result


@dataclass(frozen=True)
class _InFlight:
    """In the context of a call being sent, for its provider's send points: the call's
    provider and resolved parameters, its URL as read at the entry, and the caller's other
    headers for it."""

    provider: Provider
    call: Effective
    url: Optional[str]
    #: The caller's other headers for the call (``Call.other_headers``), sent as they are.
    other_headers: Mapping[str, str]
    #: The context the call was made from, for the caller's code the SDK runs inside the
    #: call (:attr:`Role.TOOLS`).
    caller: otel_context.Context


_IN_FLIGHT_KEY = otel_context.create_key("payi_otel.in_flight")


def _prepare(
    provider: Provider,
    instance: Any,
    args: Args,
    kwargs: Kwargs,
    stamp_here: bool,
    plans: Optional[Dict[Tuple[object, ...], _Plan]] = None,
) -> Optional[Tuple[Args, Kwargs, Optional[otel_context.Context], Optional[_Observation]]]:
    """Resolve one call, and stamp it unless its provider stamps at a send point
    (``stamp_here`` False): the arguments to send it with, the context to send it in (None:
    the current one already is that context), and its observation (None when nobody
    observes). None: send it unchanged. ``plans``: the entry point's remembered plans, for
    a provider whose common calls have them (:func:`_planned`).

    A ``ParameterError`` from the caller's headers propagates: the caller's mistake, nothing
    is sent. Anything else is internal: logged once, the call goes out unchanged.
    """
    try:
        planned = (
            _WHOLE_PATH if plans is None else _planned(provider, instance, args, kwargs, plans)
        )
        if planned is not _WHOLE_PATH:
            # The common call: what it reads and its service are its plan's, its parameters
            # the effective ones (no per-call header, no model mapping).
            request, service, settings, current, basis = planned
            effective = call = basis.effective
        else:
            request = provider.read(instance, args, kwargs)
            if request is None:
                return None  # not a GenAI call of this provider
            settings = _settings.current
            current = otel_context.get_current()
            basis = call_basis(current)
            effective = basis.effective
            call = resolve_call(effective, request.headers)
            if settings.model_mappings:
                call = map_model(call, settings.model_mappings, request.model, request.url)
            service = provider.service_of(instance, request)
        new_args, new_kwargs = provider.prepare(instance, args, kwargs, call)
        if stamp_here:
            wire = settings.wire
            headers = call.headers(wire.dialect) if sends_to(request.url, wire) else {}
            new_args, new_kwargs = provider.stamp(instance, new_args, new_kwargs, headers)
        span = trace.get_current_span(current)
        apply_call_attributes(span, call)
        if service is not None:
            name_service(span, service.category)
        observation = None
        if settings.observers:
            observation = _Observation(
                provider, call, request.model, service, request, span, current
            )
            observation.arguments = (new_args, new_kwargs)
            asked = provider.ask_usage(new_args, new_kwargs)
            if asked is not None:
                new_args, new_kwargs = asked
                observation.hide_usage_only = True
        if stamp_here and call is effective and basis.as_is:
            # Issue 20: the current context already is the call's - its parameters are the
            # effective ones (no per-call header, no model mapping: what a span started
            # inside finds there), it holds no payi.* baggage and no outer call's
            # parameters - so nothing is attached around the call.
            return new_args, new_kwargs, None, observation
        # A model provider has no use for payi.* baggage (user ids, properties): none to it.
        ctx = with_call(without_payi_baggage(current), call)
        if not stamp_here:
            flight = _InFlight(provider, call, request.url, request.other_headers, current)
            ctx = otel_context.set_value(_IN_FLIGHT_KEY, flight, ctx)
        return new_args, new_kwargs, ctx, observation
    except ParameterError:
        raise
    except Exception:
        internal_error(f"hook:{provider.name}", "the request hook failed")
        return None


class _Plan(NamedTuple):
    """What the calls of one plan key (``Provider.plan_key``) read and which service they
    go to: the same for every such call, whatever its parameters and the settings."""

    #: What the plan key names by id (kept alive with it, so no other object takes the id).
    keep: object
    request: Call
    service: Optional[Service]


#: Plans remembered per provider (at most this many, then forgotten).
PLANS_MAX = 256

#: ``_planned``: the call is not one a plan decides; it takes the whole path.
_WHOLE_PATH: Any = object()


class _Planned(NamedTuple):
    """A planned call: its plan's request and service, and what it was checked against."""

    request: Call
    service: Optional[Service]
    settings: Settings
    current: otel_context.Context
    basis: CallBasis


def _planned(
    provider: Provider,
    instance: Any,
    args: Args,
    kwargs: Kwargs,
    plans: Dict[Tuple[object, ...], _Plan],
) -> _Planned:
    """Issue 20: for the common call, what ``read`` and ``service_of`` give, remembered per
    plan key; :data:`_WHOLE_PATH` for any other call. The call names no attribution header,
    no model mapping applies, and its context can be sent in as it is (``call_basis``): so its
    parameters are the effective ones, and what it reads (its URL and model) and which
    service it goes to depend only on its plan key. ``_prepare`` does the rest as for any
    call (``tests/test_planned_calls.py`` compares the two paths call by call)."""
    found = provider.plan_key(instance, args, kwargs)
    if found is None:
        return _WHOLE_PATH  # type: ignore[no-any-return]
    key, keep = found
    settings = _settings.current
    if settings.model_mappings:
        return _WHOLE_PATH  # type: ignore[no-any-return]
    current = otel_context.get_current()
    basis = call_basis(current)
    if not basis.as_is:
        return _WHOLE_PATH  # type: ignore[no-any-return]
    plan = plans.get(key)
    if plan is None:
        request = provider.read_planned(instance, args, kwargs, keep)
        if request is None:
            return _WHOLE_PATH  # type: ignore[no-any-return]  # (which sends it unchanged)
        plan = _Plan(keep, request, provider.service_of(instance, request))
        if len(plans) >= PLANS_MAX:
            plans.clear()
        plans[key] = plan
    return _Planned(plan.request, plan.service, settings, current, basis)


class _Sending:
    """While the SDK sends a call: its resolved context attached; a failure ends its
    observation. (A class, not a generator context manager: this is every call's path.)"""

    __slots__ = ("_ctx", "_observation", "_token")

    def __init__(
        self, ctx: Optional[otel_context.Context], observation: Optional[_Observation]
    ) -> None:
        self._ctx = ctx
        self._observation = observation

    def __enter__(self) -> None:
        ctx = self._ctx
        self._token = None if ctx is None else otel_context.attach(ctx)

    def __exit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> None:
        token = self._token
        if token is not None:
            otel_context.detach(token)
        if exc is not None and self._observation is not None:
            self._observation.failed(exc)


def _make_wrapper(provider: Provider, is_async: bool, stamp_here: bool) -> Callable[..., Any]:
    """The wrapper of an entry point."""
    # Only a provider with streams that send as they are read needs them read in context.
    reads_in_context = type(provider).sends_when_read is not Provider.sends_when_read
    # Issue 20: the common call's plan, for a provider that stamps here, knows its plan keys
    # and leaves the arguments to its SDK (no ``prepare`` of its own).
    kind = type(provider)
    plans: Optional[Dict[Tuple[object, ...], _Plan]] = (
        {}
        if stamp_here
        and kind.plan_key is not Provider.plan_key
        and kind.prepare is Provider.prepare
        else None
    )

    def wrapper(wrapped: Callable[..., Any], instance: Any, args: Args, kwargs: Kwargs) -> Any:
        prepared = _prepare(provider, instance, args, kwargs, stamp_here, plans)
        if prepared is None:
            with _Sending(_not_in_flight(), None):
                return wrapped(*args, **kwargs)
        new_args, new_kwargs, ctx, observation = prepared
        with _Sending(ctx, observation):
            result = wrapped(*new_args, **new_kwargs)
        if reads_in_context:
            result = _read_in_context(provider, result, ctx, observation)
        return _observed(result, observation)

    async def async_wrapper(
        wrapped: Callable[..., Any], instance: Any, args: Args, kwargs: Kwargs
    ) -> Any:
        prepared = _prepare(provider, instance, args, kwargs, stamp_here, plans)
        if prepared is None:
            with _Sending(_not_in_flight(), None):
                return await wrapped(*args, **kwargs)
        new_args, new_kwargs, ctx, observation = prepared
        with _Sending(ctx, observation):
            result = await wrapped(*new_args, **new_kwargs)
        if reads_in_context:
            result = _read_in_context(provider, result, ctx, observation)
        return _observed(result, observation)

    return async_wrapper if is_async else wrapper


def _stamp_sent(
    provider: Provider, instance: Any, args: Args, kwargs: Kwargs
) -> Optional[Tuple[Args, Kwargs]]:
    """At a send point: the arguments that send the request with the resolved headers of
    the call in the context (None: no call of this provider is being sent here, or the hook
    failed: the request goes out unchanged)."""
    flight = otel_context.get_value(_IN_FLIGHT_KEY)
    if not isinstance(flight, _InFlight) or flight.provider is not provider:
        return None
    try:
        url = provider.send_url(instance, args, kwargs) or flight.url
        wire = _settings.current.wire
        headers = flight.call.headers(wire.dialect) if sends_to(url, wire) else {}
        if flight.other_headers:  # the caller's own, wherever the call goes
            headers = {**flight.other_headers, **headers}
        return provider.stamp(instance, args, kwargs, headers)
    except Exception:
        internal_error(f"hook:{provider.name}:send", "stamping a request failed")
        return None


def _make_send_wrapper(provider: Provider, is_async: bool) -> Callable[..., Any]:
    """The wrapper of a send point (every attempt of a call is stamped alike)."""

    def wrapper(wrapped: Callable[..., Any], instance: Any, args: Args, kwargs: Kwargs) -> Any:
        stamped = _stamp_sent(provider, instance, args, kwargs)
        if stamped is None:
            return wrapped(*args, **kwargs)
        return wrapped(*stamped[0], **stamped[1])

    async def async_wrapper(
        wrapped: Callable[..., Any], instance: Any, args: Args, kwargs: Kwargs
    ) -> Any:
        stamped = _stamp_sent(provider, instance, args, kwargs)
        if stamped is None:
            return await wrapped(*args, **kwargs)
        return await wrapped(*stamped[0], **stamped[1])

    return async_wrapper if is_async else wrapper


def _not_in_flight() -> Optional[otel_context.Context]:
    """For a request an entry point does not take as a call (another API of the SDK), made
    while a call is being sent (from an event handler of the SDK's, a tool): the current
    context without that call's in-flight record, so its send points do not stamp it with
    that call's headers; None when no call is in flight here."""
    ctx = otel_context.get_current()
    if otel_context.get_value(_IN_FLIGHT_KEY, ctx) is None:
        return None
    return otel_context.set_value(_IN_FLIGHT_KEY, None, ctx)


def _make_tools_wrapper(provider: Provider, is_async: bool) -> Callable[..., Any]:
    """The wrapper of a point that runs the caller's code inside a call (:attr:`Role.TOOLS`):
    in the context the call was made from."""

    def wrapper(wrapped: Callable[..., Any], instance: Any, args: Args, kwargs: Kwargs) -> Any:
        with _Sending(_caller_of(provider), None):
            return wrapped(*args, **kwargs)

    async def async_wrapper(
        wrapped: Callable[..., Any], instance: Any, args: Args, kwargs: Kwargs
    ) -> Any:
        with _Sending(_caller_of(provider), None):
            return await wrapped(*args, **kwargs)

    return async_wrapper if is_async else wrapper


def _caller_of(provider: Provider) -> Optional[otel_context.Context]:
    """The context the call of ``provider`` being sent here was made from (None: none is)."""
    flight = otel_context.get_value(_IN_FLIGHT_KEY)
    if isinstance(flight, _InFlight) and flight.provider is provider:
        return flight.caller
    return None


def instrument_providers(providers: Sequence[Provider]) -> List[Callable[[], None]]:
    """Wrap the patch points of every installed provider when the program imports its SDK
    (``_on_import``: now if it is imported); returns the undo callables."""
    undo: List[Callable[[], None]] = []
    for provider in providers:
        if installed(provider.name):
            step = partial(_instrument_provider, provider)
            undo.extend(when_imported(provider.ready, step, provider.name))
    return undo


def _instrument_provider(provider: Provider) -> List[Callable[[], None]]:
    """Wrap the patch points of one provider whose SDK is imported; the undo callables."""
    undo: List[Callable[[], None]] = []
    try:
        points = provider.patch_points()
    except ImportError:
        return undo  # the SDK is not installed
    except Exception:
        internal_error(f"sdk:{provider.name}", f"cannot instrument {provider.name}")
        return undo
    stamp_at_entry = not any(point.role is Role.SEND for point in points)
    for point in points:
        try:
            module = importlib.import_module(point.module)
            owner_name, _, method = point.attribute.rpartition(".")
            owner = getattr(module, owner_name) if owner_name else module
            getattr(owner, method)
        except Exception:
            if point.optional:
                continue  # (this release of the SDK has none)
            internal_error(
                f"sdk:{provider.name}:{point.attribute}",
                f"{provider.name} has no {point.attribute}",
            )
            continue
        if point.role is Role.SEND:
            wrapper = _make_send_wrapper(provider, point.is_async)
        elif point.role is Role.TOOLS:
            wrapper = _make_tools_wrapper(provider, point.is_async)
        else:
            wrapper = _make_wrapper(provider, point.is_async, stamp_at_entry)
        if point.beneath:
            _wrap_beneath(owner, method, wrapper)
        else:
            wrapt.wrap_function_wrapper(module, point.attribute, wrapper)
        undo.append(unwrapper(owner, method, wrapper))
    try:
        undo.extend(provider.patch_more())
    except Exception:
        internal_error(f"sdk:{provider.name}:more", f"cannot instrument {provider.name}")
    return undo


def _wrap_beneath(owner: Any, method: str, wrapper: Callable[..., Any]) -> None:
    """Wrap ``owner.method`` with ``wrapper`` beneath the ``wrapt`` wrappers already on it
    (``PatchPoint.beneath``): the innermost one's ``__wrapped__`` becomes ours, which wraps
    the method itself. Those wrappers' own undo (``unwrap``: their wrapper off the top) keeps
    ours; ours comes out wherever it sits (``_wrapping.unwrap_own``)."""
    outer: Any = None
    inner = owner.__dict__.get(method)
    while isinstance(inner, (wrapt.FunctionWrapper, wrapt.BoundFunctionWrapper)):
        # A bound wrapper (what ``unwrap`` leaves on the class when it takes the top one
        # off) binds again through its parent at every call: the chain is the parent's.
        outer = getattr(inner, "_self_parent", None) or inner
        inner = outer.__wrapped__
    if outer is None:
        wrapt.wrap_function_wrapper(owner, method, wrapper)
    else:
        outer.__wrapped__ = wrapt.FunctionWrapper(inner, wrapper)

"""The request hook for the ``openai`` and ``anthropic`` SDKs.

Both SDKs send every API call (every resource method, sync and async, streaming or not,
``with_raw_response`` too) through ``SyncAPIClient.request`` / ``AsyncAPIClient.request`` in
their ``_base_client`` module, once per logical call; retries happen inside it. Wrapping it
(with ``wrapt``) is the one choke point per SDK, independent of the HTTP transport, and
retries resend exactly the headers resolved once.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, Dict, List, Tuple

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from wrapt import wrap_function_wrapper

from payi_otel._log import log_once
from payi_otel._wrapping import unwrapper
from payi_otel.headers import is_payi_header, parse_headers, resolve_call
from payi_otel.parameters import ParameterError
from payi_otel.processor import apply_call_attributes, with_call
from payi_otel.state import current_effective

__all__ = ["SDKS", "instrument_sdks"]

#: The SDKs whose requests get headers: the module holding ``SyncAPIClient``/``AsyncAPIClient``.
SDKS: Tuple[str, ...] = ("openai", "anthropic")


class _Sdk:
    """What the hook needs from one SDK: its ``Omit``/``NotGiven`` markers and ``model_copy``."""

    def __init__(self, package: str) -> None:
        types = importlib.import_module(f"{package}._types")
        compat = importlib.import_module(f"{package}._compat")
        self.package = package
        self.omit: type = types.Omit
        self.absent: Tuple[type, ...] = (types.Omit, types.NotGiven)
        self.model_copy: Callable[[Any], Any] = compat.model_copy


def _split_options(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
    if len(args) > 1:
        return args[1]
    return kwargs.get("options")


def _with_options(
    args: Tuple[Any, ...], kwargs: Dict[str, Any], options: Any
) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
    if len(args) > 1:
        return (args[0], options, *args[2:]), kwargs
    return args, {**kwargs, "options": options}


def _prepare(
    sdk: _Sdk, client: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]
) -> Tuple[Tuple[Any, ...], Dict[str, Any], Context]:
    """Resolve the call's parameters: the arguments with the resolved headers, and the
    context to send them in.

    A ``ParameterError`` from parsing the caller's headers propagates (the caller's mistake,
    nothing is sent); any other failure is the caller's to catch as internal.
    """
    options = _split_options(args, kwargs)
    call_headers = options.headers
    if isinstance(call_headers, sdk.absent) or call_headers is None:
        call_headers = {}
    defaults: Mapping[str, Any] = getattr(client, "_custom_headers", None) or {}
    call = resolve_call(
        current_effective(), parse_headers((defaults, call_headers), skip=sdk.absent)
    )
    headers: Dict[str, Any] = {k: v for k, v in call_headers.items() if not is_payi_header(k)}
    # The resolved set replaces the client's payi defaults and any case variant the caller
    # used: each is omitted, then the canonical lower-case names are set.
    for key in (*defaults, *call_headers):
        if is_payi_header(key):
            headers[key] = sdk.omit()
    headers.update(call.headers())
    apply_call_attributes(trace.get_current_span(), call)
    options = sdk.model_copy(options)
    options.headers = headers
    new_args, new_kwargs = _with_options(args, kwargs, options)
    return new_args, new_kwargs, with_call(otel_context.get_current(), call)


def _make_wrapper(sdk: _Sdk, is_async: bool) -> Callable[..., Any]:
    """The ``wrapt`` wrapper of ``request``: resolve, stamp, then send.

    While the SDK handles the call, the resolved parameters are in the context, so a GenAI
    span the SDK starts itself (e.g. anthropic's own call span) gets the per-call values.
    """

    def prepare(instance: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
        try:
            return _prepare(sdk, instance, args, kwargs)
        except ParameterError:
            raise  # the caller's own mistake: nothing is sent
        except Exception:
            log_once(f"hook:{sdk.package}", "payi_otel request hook failed", exc_info=True)
            return None

    def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]
    ) -> Any:
        prepared = prepare(instance, args, kwargs)
        if prepared is None:
            return wrapped(*args, **kwargs)
        new_args, new_kwargs, ctx = prepared
        token = otel_context.attach(ctx)
        try:
            return wrapped(*new_args, **new_kwargs)
        finally:
            otel_context.detach(token)

    async def async_wrapper(
        wrapped: Callable[..., Any], instance: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]
    ) -> Any:
        prepared = prepare(instance, args, kwargs)
        if prepared is None:
            return await wrapped(*args, **kwargs)
        new_args, new_kwargs, ctx = prepared
        token = otel_context.attach(ctx)
        try:
            return await wrapped(*new_args, **new_kwargs)
        finally:
            otel_context.detach(token)

    return async_wrapper if is_async else wrapper


def instrument_sdks() -> List[Callable[[], None]]:
    """Wrap ``request`` of every installed SDK; returns the undo callables."""
    undo: List[Callable[[], None]] = []
    for package in SDKS:
        try:
            sdk = _Sdk(package)
            module = importlib.import_module(f"{package}._base_client")
        except ImportError:
            continue
        except Exception:
            log_once(f"sdk:{package}", "payi_otel cannot instrument %s", package, exc_info=True)
            continue
        for cls_name, is_async in (("SyncAPIClient", False), ("AsyncAPIClient", True)):
            cls = getattr(module, cls_name, None)
            if cls is None or not hasattr(cls, "request"):
                log_once(f"sdk:{package}:{cls_name}", "payi_otel: %s has no %s.request",
                         package, cls_name)
                continue
            wrapper = _make_wrapper(sdk, is_async)
            wrap_function_wrapper(module, f"{cls_name}.request", wrapper)
            undo.append(unwrapper(cls, "request", wrapper))
    return undo

"""Where the parameters live: the process-wide global level and the per-context scope state.

The scope state is an immutable value stored in the OpenTelemetry context (contextvars), so
asyncio tasks, threads (with context propagation) and generators each see their own scopes.
The effective parameters are computed when a scope is entered; reading them is O(1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Optional, Tuple

from opentelemetry import context as otel_context
from opentelemetry.context import Context

from payi_otel import baggage as payi_baggage
from payi_otel.effective import Effective
from payi_otel.merge import Level, merge, new_level
from payi_otel.parameters import Params

__all__ = [
    "ScopeState",
    "current_effective",
    "enter_scope",
    "propagate_baggage",
    "set_global",
]

_STATE_KEY = otel_context.create_key("payi_otel.scope_state")

TRACK = "track"
TRACK_CONTEXT = "track_context"


@dataclass(frozen=True)
class _Global:
    effective: Effective
    propagate_baggage: bool
    version: int
    instrumented: bool = False


_global = _Global(Effective({}), False, 0)


def set_global(params: Params, *, propagate_baggage: bool, instrumented: bool) -> None:
    """Replace the global level (``payi_instrument`` / the instrumentor)."""
    global _global
    _global = _Global(
        Effective(merge({}, new_level(params))), propagate_baggage, _global.version + 1,
        instrumented,
    )


def propagate_baggage() -> bool:
    return _global.propagate_baggage


def instrumented() -> bool:
    """Whether ``payi_instrument()`` (or the instrumentor) is in force: headers get stamped."""
    return _global.instrumented


@dataclass(frozen=True)
class ScopeState:
    """The scopes in force in one context, by method, and their effective parameters."""

    version: int
    baggage: Optional[Level]
    tracks: Tuple[Level, ...]
    contexts: Tuple[Level, ...]
    track_result: Effective
    effective: Effective


def _incoming_baggage(glob: _Global, ctx: Optional[Context]) -> Optional[Level]:
    return payi_baggage.read_incoming(ctx) if glob.propagate_baggage else None


def _chain(base: Effective, levels: Tuple[Level, ...]) -> Effective:
    """``levels`` merged over ``base``, lowest first (each step cached, see ``child``)."""
    for level in levels:
        base = base.child(level)
    return base


def _build(
    glob: _Global,
    baggage: Optional[Level],
    tracks: Tuple[Level, ...],
    contexts: Tuple[Level, ...],
) -> ScopeState:
    base = glob.effective if baggage is None else glob.effective.child(baggage)
    track_result = _chain(base, tracks)
    return ScopeState(
        glob.version, baggage, tracks, contexts, track_result, _chain(track_result, contexts)
    )


def _state(ctx: Optional[Context]) -> Optional[ScopeState]:
    state = otel_context.get_value(_STATE_KEY, ctx)
    return state if isinstance(state, ScopeState) else None


def enter_scope(
    method: str, params: Params, parent: Context, key: Optional[Hashable] = None
) -> Tuple[ScopeState, Context]:
    """A new scope of ``method`` over ``parent``: its state and the context carrying it.

    Precedence is by method first, nesting second (contract section 2): a ``@track`` entered
    inside ``track_context`` scopes still ranks below them, so they are re-applied over it.
    ``key`` is ``params``' hashable form (see :class:`Level`).
    """
    glob = _global
    level = new_level(params, key)
    state = _state(parent)
    if state is None or state.version != glob.version:
        tracks: Tuple[Level, ...]
        contexts: Tuple[Level, ...]
        if state is None:
            baggage, tracks, contexts = _incoming_baggage(glob, parent), (), ()
        else:
            baggage, tracks, contexts = state.baggage, state.tracks, state.contexts
        if method == TRACK:
            state = _build(glob, baggage, (*tracks, level), contexts)
        else:
            state = _build(glob, baggage, tracks, (*contexts, level))
    elif method == TRACK:
        track_result = state.track_result.child(level)
        state = ScopeState(
            glob.version, state.baggage, (*state.tracks, level), state.contexts,
            track_result, _chain(track_result, state.contexts),
        )
    else:
        state = ScopeState(
            glob.version, state.baggage, state.tracks, (*state.contexts, level),
            state.track_result, state.effective.child(level),
        )
    return state, otel_context.set_value(_STATE_KEY, state, parent)


def current_effective(ctx: Optional[Context] = None) -> Effective:
    """The effective parameters in ``ctx`` (default: the current context)."""
    glob = _global
    state = _state(ctx)
    if state is not None:
        if state.version == glob.version:
            return state.effective
        return _build(glob, state.baggage, state.tracks, state.contexts).effective
    baggage = _incoming_baggage(glob, ctx)
    return glob.effective if baggage is None else glob.effective.child(baggage)

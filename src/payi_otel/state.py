"""Where the parameters live: the process-wide global level and the per-context scope state.

The scope state is an immutable value stored in the OpenTelemetry context (contextvars), so
asyncio tasks, threads (with context propagation) and generators each see their own scopes.
The effective parameters are computed when a scope is entered; reading them is O(1).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Hashable, Optional, Tuple

from opentelemetry import context as otel_context
from opentelemetry.context import Context

from payi_otel import baggage as payi_baggage
from payi_otel.effective import Effective
from payi_otel.merge import Level, fold, merge, new_level
from payi_otel.parameters import Params

__all__ = [
    "ScopeState",
    "current_effective",
    "enter_scope",
    "get_global",
    "set_global",
]

_STATE_KEY = otel_context.create_key("payi_otel.scope_state")

TRACK = "track"
TRACK_CONTEXT = "track_context"


@dataclass(frozen=True)
class _Global:
    level: Level
    effective: Effective
    propagate_baggage: bool
    version: int


_lock = threading.Lock()
_global = _Global(Level({}), Effective({}), False, 0)


def set_global(params: Params, *, propagate_baggage: bool) -> None:
    """Replace the global level (``payi_instrument`` / the instrumentor)."""
    global _global
    level = new_level(params)
    with _lock:
        _global = _Global(
            level, Effective(merge({}, level)), propagate_baggage, _global.version + 1
        )


def get_global() -> Tuple[Level, bool]:
    """The global level and whether baggage propagation is on."""
    current = _global
    return current.level, current.propagate_baggage


def propagate_baggage() -> bool:
    return _global.propagate_baggage


@dataclass(frozen=True)
class ScopeState:
    """The scopes in force in one context, by method, and their effective parameters."""

    version: int
    baggage: Optional[Level]
    tracks: Tuple[Level, ...]
    contexts: Tuple[Level, ...]
    track_result: Effective
    effective: Effective


def _base(glob: _Global, baggage: Optional[Level]) -> Params:
    return glob.effective.params if baggage is None else merge(glob.effective.params, baggage)


def _incoming_baggage(glob: _Global, ctx: Optional[Context]) -> Optional[Level]:
    return payi_baggage.read_incoming(ctx) if glob.propagate_baggage else None


def _build(
    glob: _Global,
    baggage: Optional[Level],
    tracks: Tuple[Level, ...],
    contexts: Tuple[Level, ...],
) -> ScopeState:
    track_result = Effective(fold(_base(glob, baggage), tracks))
    effective = Effective(fold(track_result.params, contexts)) if contexts else track_result
    return ScopeState(glob.version, baggage, tracks, contexts, track_result, effective)


def _state(ctx: Optional[Context]) -> Optional[ScopeState]:
    state = otel_context.get_value(_STATE_KEY, ctx)
    return state if isinstance(state, ScopeState) else None


def enter_scope(
    method: str, params: Params, parent: Context, key: Optional[Hashable] = None
) -> Tuple[ScopeState, Context]:
    """A new scope of ``method`` over ``parent``: its state and the context carrying it.

    Precedence is by method first, nesting second (contract section 2): a ``@track`` entered
    inside ``track_context`` scopes still ranks below them, so they are re-applied over it.
    ``key`` is ``params``' hashable form, for :meth:`Effective.child`'s cache.
    """
    glob = _global
    level = new_level(params)
    state = _state(parent)
    if state is None or state.version != glob.version:
        if state is None:
            baggage = _incoming_baggage(glob, parent)
            tracks: Tuple[Level, ...] = ()
            contexts: Tuple[Level, ...] = ()
        else:
            baggage, tracks, contexts = state.baggage, state.tracks, state.contexts
        if not tracks and not contexts and baggage is None:
            # The first scope over the global level: cached like any other child.
            effective = glob.effective.child(level, key)
            if method == TRACK:
                state = ScopeState(glob.version, None, (level,), (), effective, effective)
            else:
                state = ScopeState(
                    glob.version, None, (), (level,), glob.effective, effective
                )
        elif method == TRACK:
            state = _build(glob, baggage, (*tracks, level), contexts)
        else:
            state = _build(glob, baggage, tracks, (*contexts, level))
    elif method == TRACK:
        track_result = state.track_result.child(level, key)
        effective = (
            Effective(fold(track_result.params, state.contexts)) if state.contexts
            else track_result
        )
        state = ScopeState(
            glob.version, state.baggage, (*state.tracks, level), state.contexts,
            track_result, effective,
        )
    else:
        state = ScopeState(
            glob.version, state.baggage, state.tracks, (*state.contexts, level),
            state.track_result, state.effective.child(level, key),
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
    if baggage is None:
        return glob.effective
    return Effective(_base(glob, baggage))

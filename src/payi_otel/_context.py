"""Everything payi_otel keeps in the OpenTelemetry context.

* the scope state: an immutable value stored in the context (contextvars), so asyncio tasks,
  threads (with context propagation) and generators each see their own scopes; the effective
  parameters are computed when a scope is entered, reading them is O(1);
* one call's resolved parameters while its SDK sends it (:func:`with_call`);
* W3C baggage ``payi.<parameter>`` entries (opt-in): outgoing, a scope writes the effective
  parameters into the baggage of the context it attaches, so any configured propagator
  injects them; incoming, entries found in the context form the *baggage* level.

The global level under them all, and the switches (baggage on, accepted entries), are the
process settings (``_settings.current``), read once per operation.

Rules: docs/precedence.md.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from contextvars import ContextVar, Token
from typing import (
    Any,
    Callable,
    Dict,
    FrozenSet,
    Hashable,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Tuple,
)

from opentelemetry import baggage as otel_baggage
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context

from payi_otel import _settings
from payi_otel._log import log_once
from payi_otel._model.codec import parse_value
from payi_otel._model.effective import Effective
from payi_otel._model.merge import Level, new_level
from payi_otel._model.parameters import BAGGAGE_PREFIX, PARAMETERS, Params
from payi_otel._settings import Settings

__all__ = [
    "CallBasis",
    "ScopeState",
    "as_outside",
    "call_basis",
    "call_effective",
    "carried_in",
    "carried_out",
    "current_effective",
    "enter_scope",
    "exited_here",
    "forget_here",
    "read_incoming",
    "remember_here",
    "sending_a_call",
    "settled",
    "with_call",
    "with_current_scopes",
    "with_inner_scopes",
    "with_outgoing",
    "without_level",
    "without_payi_baggage",
]

_STATE_KEY = otel_context.create_key("payi_otel.scope_state")

TRACK = "track"
TRACK_CONTEXT = "track_context"


class ScopeState(NamedTuple):
    """The scopes in force in one context, by method, and their effective parameters.

    (A NamedTuple, not a frozen dataclass: one is made per scope entry.)
    """

    version: int
    baggage: Optional[Level]
    tracks: Tuple[Level, ...]
    contexts: Tuple[Level, ...]
    track_result: Effective
    effective: Effective


def _incoming_baggage(settings: Settings, ctx: Optional[Context]) -> Optional[Level]:
    return read_incoming(ctx) if settings.propagate_baggage else None


def _chain(base: Effective, levels: Tuple[Level, ...]) -> Effective:
    """``levels`` merged over ``base``, lowest first (each step cached, see ``child``)."""
    for level in levels:
        base = base.child(level)
    return base


def _build(
    settings: Settings,
    baggage: Optional[Level],
    tracks: Tuple[Level, ...],
    contexts: Tuple[Level, ...],
) -> ScopeState:
    base = settings.effective if baggage is None else settings.effective.child(baggage)
    track_result = _chain(base, tracks)
    return ScopeState(
        settings.version, baggage, tracks, contexts, track_result, _chain(track_result, contexts)
    )


# --- scopes that exited here, for contexts someone else restores later ----------------------
#
# A scope leaves by detaching the context it attached. When something attached on top of it
# and has not detached yet (a GenAI instrumentation keeps a stream's span attached until the
# stream ends, closes or is collected), the scope can only take itself out of the current
# context; when that something finally detaches, the context from before its attach - inside
# the scope - becomes current again. So an exit that finds another context current is noted
# here, per thread and per task (a ContextVar: a task or thread handed work before the exit
# keeps the scope it was given), and the one reader of the scope state drops the noted levels
# (README, "Where the context travels", "Scope lifecycle").

#: How many such exits a thread or task remembers (the oldest is forgotten first).
EXITED_MAX = 64


class _Exited(NamedTuple):
    levels: Tuple[Level, ...]
    #: ``id()`` of each level (held alive by ``levels``, so no id is reused meanwhile).
    ids: FrozenSet[int]


_EXITED: ContextVar[Optional[_Exited]] = ContextVar("payi_otel_exited_scopes", default=None)


def forget_here(level: Level) -> None:
    """``level``'s scope exited in this thread / task while another context was current: a
    context that still carries it is stale here."""
    exited = _EXITED.get()
    if exited is None:
        _EXITED.set(_Exited((level,), frozenset((id(level),))))
    elif id(level) not in exited.ids:
        levels = (*exited.levels[1 - EXITED_MAX :], level)
        _EXITED.set(_Exited(levels, frozenset(map(id, levels))))


def remember_here(level: Level) -> None:
    """``level``'s scope is entered again here (a ``@track`` generator resumed)."""
    exited = _EXITED.get()
    if exited is not None and id(level) in exited.ids:
        levels = tuple(lv for lv in exited.levels if lv is not level)
        _EXITED.set(_Exited(levels, frozenset(map(id, levels))) if levels else None)


#: Scopes left in another ``contextvars.Context`` than the one they were entered in (an
#: async generator's ``async with`` closed by the event loop's finalizer task, a generator
#: collected in another thread): the context they were entered in still carries them, and
#: nothing can reach it, so every context drops them (README "Scope lifecycle"). Past this
#: many, the list keeps only the scopes some context still holds (:func:`_held_elsewhere`):
#: it never forgets one that could be seen again (a long-lived task's context that carried
#: it - forgetting the oldest instead billed that task's next call to it again).
ORPHANED_MAX = 256
_orphaned: Optional[_Exited] = None
#: Reentrant: a finalizer run by a collection inside :func:`orphan` (it allocates) orphans too.
_orphaned_lock = threading.RLock()


def orphan(level: Level) -> None:
    """``level``'s scope was left in another context than its own: gone everywhere."""
    global _orphaned
    with _orphaned_lock:
        while True:
            found = _orphaned
            if found is None:
                levels: Tuple[Level, ...] = (level,)
            elif id(level) in found.ids:
                return
            else:
                kept = found.levels
                if len(kept) >= ORPHANED_MAX:
                    kept = _held_elsewhere(kept)
                levels = (*kept, level)
            orphaned = _Exited(levels, frozenset(map(id, levels)))
            # A finalizer run while this one was building may have orphaned another scope:
            # build again from what is there now (nothing allocates between test and store).
            if _orphaned is found:
                _orphaned = orphaned
                return


def _held_elsewhere(levels: Tuple[Level, ...]) -> Tuple[Level, ...]:
    """Those of ``levels`` that something besides the tuple holds: a context that carried
    the scope, which may be current again. One nothing else holds can never be seen again
    (and leaving the list, its id may be reused safely). Told by reference counts, against
    an object held by a tuple alone, counted the same way; an interpreter without them keeps
    the newest :data:`ORPHANED_MAX`."""
    counts = getattr(sys, "getrefcount", None)
    if counts is None:
        return levels[1 - ORPHANED_MAX :]
    alone = _refcounts((object(),), counts)[0]
    return tuple(lv for lv, n in zip(levels, _refcounts(levels, counts)) if n > alone)


def _refcounts(items: Tuple[Any, ...], counts: Callable[[Any], int]) -> List[int]:
    return [counts(item) for item in items]


def exited_here() -> bool:
    """Whether a scope exited here while another context was current (the rare case)."""
    return _EXITED.get() is not None


def _noted_state(ctx: Context) -> Optional[Tuple[_Exited, ScopeState]]:
    """This thread's note of exited scopes and ``ctx``'s scope state, when it has both."""
    exited = _EXITED.get()
    if exited is None:
        return None
    state = otel_context.get_value(_STATE_KEY, ctx)
    return (exited, state) if isinstance(state, ScopeState) else None


def carried_in(ctx: Context) -> Optional[Token[Optional[_Exited]]]:
    """Work handed off with ``ctx`` (a done-callback, a finalizer, an executor task) is about
    to run here: the scopes ``ctx`` carries are taken out of this thread's note of exited
    scopes while it runs. ``ctx`` was settled where the work was handed off, so it carries
    them by right (the hand-off table: the creator's scope, wherever and whenever it runs),
    even if they have exited on this thread since; every other noted scope stays noted. The
    token for :func:`carried_out`, or ``None`` when the note is left as it is."""
    noted = _noted_state(ctx)
    if noted is None:
        return None
    exited, state = noted
    carried = {id(level) for level in (*state.tracks, *state.contexts)}
    if carried.isdisjoint(exited.ids):
        return None
    levels = tuple(lv for lv in exited.levels if id(lv) not in carried)
    return _EXITED.set(_Exited(levels, frozenset(map(id, levels))) if levels else None)


def carried_out(token: Optional[Token[Optional[_Exited]]]) -> None:
    """The handed-off work is done: this thread's own note is in force again, with the
    scopes that exited during the work added (a context restored late, after the work
    returned, must not bring them back here either)."""
    if token is None:
        return
    during = _EXITED.get()
    _EXITED.reset(token)
    if during is not None:
        for level in during.levels:
            forget_here(level)


def _live(state: ScopeState, exited: _Exited) -> ScopeState:
    """``state`` without the levels of scopes that exited here."""
    ids = exited.ids
    tracks = tuple(lv for lv in state.tracks if id(lv) not in ids)
    contexts = tuple(lv for lv in state.contexts if id(lv) not in ids)
    if len(tracks) == len(state.tracks) and len(contexts) == len(state.contexts):
        return state
    return _build(_settings.current, state.baggage, tracks, contexts)


def settled(ctx: Context) -> Context:
    """``ctx`` as this thread or task sees it (without the scopes that exited here), for
    work handed to a thread, which does not share this one's note of exited scopes."""
    noted = _noted_state(ctx)
    if noted is None:
        return ctx
    exited, state = noted
    live = _live(state, exited)
    if live is state:
        return ctx
    return _carrying(ctx, live)


def _carrying(ctx: Context, state: ScopeState) -> Context:
    """``ctx`` with ``state`` as its scope state (and, with baggage on, its outgoing
    ``payi.*`` baggage)."""
    ctx = otel_context.set_value(_STATE_KEY, state, ctx)
    return with_outgoing(ctx, state.effective) if _settings.current.propagate_baggage else ctx


def _state(ctx: Optional[Context]) -> Optional[ScopeState]:
    """The scope state in ``ctx`` as this thread or task sees it; the common case is one
    empty ContextVar read more than the context lookup."""
    state = otel_context.get_value(_STATE_KEY, ctx)
    if not isinstance(state, ScopeState):
        return None
    orphaned = _orphaned
    if orphaned is not None:
        state = _live(state, orphaned)
    exited = _EXITED.get()
    return state if exited is None else _live(state, exited)


def enter_scope(
    method: str, params: Params, parent: Context, key: Optional[Hashable] = None
) -> Tuple[ScopeState, Context]:
    """A new scope of ``method`` over ``parent``: its state and the context carrying it.

    Precedence is by method first, nesting second (docs/precedence.md): a ``@track`` entered
    inside ``track_context`` scopes still ranks below them, so they are re-applied over it.
    ``key`` is ``params``' hashable form (see :class:`Level`).
    """
    settings = _settings.current
    state = _state(parent)
    if state is None:
        baggage = _incoming_baggage(settings, parent)
        if baggage is not None:
            state = _build(settings, baggage, (), ())
    elif state.version != settings.version:
        state = _build(settings, state.baggage, state.tracks, state.contexts)
    if state is None:
        # The outermost scope, no baggage level: what _build does, without its loops.
        base = settings.effective
        level = new_level(params, key, base.params)
        if method == TRACK:
            effective = base.child(level)
            state = ScopeState(settings.version, None, (level,), (), effective, effective)
        else:
            state = ScopeState(settings.version, None, (), (level,), base, base.child(level))
    elif method == TRACK:
        # Bound where it is entered: against what is in force here, track_context scopes
        # included (docs/precedence.md, "A use case is bound where it was given").
        level = new_level(params, key, state.effective.params)
        track_result = state.track_result.child(level)
        state = ScopeState(
            settings.version,
            state.baggage,
            (*state.tracks, level),
            state.contexts,
            track_result,
            _chain(track_result, state.contexts),
        )
    else:
        level = new_level(params, key, state.effective.params)
        state = ScopeState(
            settings.version,
            state.baggage,
            state.tracks,
            (*state.contexts, level),
            state.track_result,
            state.effective.child(level),
        )
    return state, otel_context.set_value(_STATE_KEY, state, parent)


def with_current_scopes(ctx: Context) -> Context:
    """``ctx`` (extracted from the carrier of the web request whose scope is current, with no
    scope state of its own) with the scopes in force in the current context, over its
    ``payi.*`` baggage (``_extracted``)."""
    if otel_context.get_value(_STATE_KEY, ctx) is not None:
        return ctx
    state = _state(None)
    if state is None:
        return ctx
    settings = _settings.current
    baggage = _incoming_baggage(settings, ctx)
    if baggage is not state.baggage:
        state = _build(settings, baggage, state.tracks, state.contexts)
    return _carrying(ctx, state)


def with_inner_scopes(given: Context) -> Context:
    """``given`` (a context stored earlier and handed to code that runs now: the parent run's,
    ``_invocations``) with the current scopes, when they are its own and more - scopes the
    current code opened inside it since - so the innermost scope wins; else ``given``."""
    current = _state(None)
    if current is None:
        return given
    stored = _state(given)
    if stored is current:
        return given
    ids = {id(level) for level in (*current.tracks, *current.contexts)}
    if stored is not None:
        levels = (*stored.tracks, *stored.contexts)
        if len(levels) >= len(ids) or not all(id(level) in ids for level in levels):
            return given
    return _carrying(given, current)


def without_level(ctx: Context, level: Level) -> Context:
    """``ctx`` with one scope's level taken out of its state (an out-of-order exit)."""
    state = otel_context.get_value(_STATE_KEY, ctx)
    if not isinstance(state, ScopeState):
        return ctx
    tracks = tuple(lv for lv in state.tracks if lv is not level)
    contexts = tuple(lv for lv in state.contexts if lv is not level)
    if len(tracks) == len(state.tracks) and len(contexts) == len(state.contexts):
        return ctx
    live = _build(_settings.current, state.baggage, tracks, contexts)
    return otel_context.set_value(_STATE_KEY, live, ctx)


def as_outside(ctx: Context, outer: Context) -> Context:
    """``ctx`` with the scope state, the call in flight and the baggage ``outer`` has: what a
    scope entered over ``outer`` set, and all that was entered inside it, taken out of ``ctx``
    (another web request's scope found in a new request's context, ``payi_otel.web``); the
    rest of ``ctx`` (its current span) kept."""
    ctx = otel_context.set_value(_STATE_KEY, otel_context.get_value(_STATE_KEY, outer), ctx)
    ctx = otel_context.set_value(_CALL_KEY, otel_context.get_value(_CALL_KEY, outer), ctx)
    ctx = otel_baggage.clear(ctx)
    for name, value in otel_baggage.get_all(outer).items():
        ctx = otel_baggage.set_baggage(name, value, ctx)
    return ctx


def current_effective(ctx: Optional[Context] = None) -> Effective:
    """The effective parameters in ``ctx`` (default: the current context)."""
    settings = _settings.current
    state = _state(ctx)
    if state is not None:
        if state.version == settings.version:
            return state.effective
        return _build(settings, state.baggage, state.tracks, state.contexts).effective
    baggage = _incoming_baggage(settings, ctx)
    return settings.effective if baggage is None else settings.effective.child(baggage)


# --- one call's resolved parameters ----------------------------------------------------------

_CALL_KEY = otel_context.create_key("payi_otel.call")


def with_call(ctx: Context, call: Effective) -> Context:
    """``ctx`` carrying one call's resolved parameters (while the SDK sends it)."""
    return otel_context.set_value(_CALL_KEY, call, ctx)


def sending_a_call(ctx: Context) -> bool:
    """Whether ``ctx`` carries a call's resolved parameters (:func:`with_call`)."""
    return otel_context.get_value(_CALL_KEY, ctx) is not None


def call_effective(ctx: Optional[Context]) -> Effective:
    """The parameters of the call being sent in ``ctx``, else the effective context's."""
    call = otel_context.get_value(_CALL_KEY, ctx)
    return call if isinstance(call, Effective) else current_effective(ctx)


class CallBasis(NamedTuple):
    """What a call sent from one context starts from (:func:`call_basis`)."""

    #: The effective parameters there.
    effective: Effective
    #: Whether that context can be the call's own as it is, when the call adds no parameter
    #: of its own: it holds no ``payi.*`` baggage (a model provider gets none) and no outer
    #: call's parameters (:func:`with_call`).
    as_is: bool


def _baggage_key() -> str:
    """The context key OpenTelemetry keeps baggage under (found through its public API: the
    one key ``set_baggage`` sets in an empty context)."""
    return next(iter(otel_baggage.set_baggage("payi_otel", "", Context())))


_BAGGAGE_KEY = _baggage_key()

#: What the last call's basis was made of (the values in its context that decide it, and
#: everything else it depends on), then the basis.
_last_basis: Tuple[object, ...] = ()


def call_basis(ctx: Context) -> CallBasis:
    """The basis of a call sent from ``ctx``.

    Issue 20: a request's calls are sent from contexts that differ only by their spans (a
    GenAI instrumentation's span is current in each), so the basis is remembered for the
    last values that decide it - the scope state, the baggage and the call in the context
    (immutable values, each replaced when it changes) -, with everything else it depends
    on: the settings (their global level and baggage switch) and the notes of the scopes
    that exited here and everywhere (immutable values too). Baggage outside any scope
    gives a level per trace (``read_incoming``): such a basis is not remembered.
    """
    global _last_basis
    state = ctx.get(_STATE_KEY)
    entries = ctx.get(_BAGGAGE_KEY)
    call = ctx.get(_CALL_KEY)
    settings = _settings.current
    orphaned = _orphaned
    exited = _EXITED.get()
    last = _last_basis
    if (
        last
        and last[0] is state
        and last[1] is entries
        and last[2] is call
        and last[3] is settings
        and last[4] is orphaned
        and last[5] is exited
    ):
        return last[6]  # type: ignore[return-value]
    basis = CallBasis(
        current_effective(ctx),
        without_payi_baggage(ctx) is ctx and not sending_a_call(ctx),
    )
    if state is not None or entries is None:
        # (Baggage outside any scope is read per trace: ``read_incoming``; not remembered.)
        _last_basis = (state, entries, call, settings, orphaned, exited, basis)
    return basis


# --- W3C baggage (opt-in) ----------------------------------------------------------------------
def read_incoming(ctx: Optional[Context]) -> Optional[Level]:
    """The baggage level found in ``ctx``, or ``None`` when it has no ``payi.*`` entry.

    An entry that does not parse comes from another process, not from this program's code:
    it is skipped and logged once rather than raised.
    """
    entries = otel_baggage.get_all(ctx)
    if not entries:
        return None
    ours = tuple(sorted((k, str(v)) for k, v in entries.items() if k.startswith(BAGGAGE_PREFIX)))
    if not ours:
        return None
    # One incoming request is one level: a use case named without an id gets one id for the
    # whole request (its trace), not a new one on every read (README "Across services").
    trace_id = trace.get_current_span(ctx).get_span_context().trace_id
    settings = _settings.current
    key = (trace_id, settings.version, ours) if trace_id else None
    if key is not None:
        found = _incoming_levels.get(key)
        if found is not None:
            return found
    level = _read_incoming(entries, settings.baggage_accept)
    if key is not None and level is not None:
        if len(_incoming_levels) >= INCOMING_MAX:
            # Another thread may evict it first.
            with contextlib.suppress(KeyError, RuntimeError, StopIteration):
                del _incoming_levels[next(iter(_incoming_levels))]
        _incoming_levels[key] = level
    return level


#: Incoming baggage levels by (trace id, settings version, payi.* entries), the oldest first.
INCOMING_MAX = 1024
_incoming_levels: Dict[Hashable, Level] = {}


def _read_incoming(entries: Mapping[str, object], accept: FrozenSet[str]) -> Optional[Level]:
    params: Params = {}
    for key, raw in entries.items():
        if not key.startswith(BAGGAGE_PREFIX):
            continue
        name = key[len(BAGGAGE_PREFIX) :]
        if name not in PARAMETERS:
            continue
        if name not in accept:
            log_once(
                f"baggage-refused:{name}",
                "payi_otel: incoming baggage entry %r is not "
                "taken (allow it with PAYI_BAGGAGE_ACCEPT)",
                key,
            )
            continue
        try:
            params[name] = parse_value(name, str(raw), what=f"baggage entry {key!r}")
        except (TypeError, ValueError) as exc:
            log_once(f"baggage:{key}", "ignoring incoming baggage entry: %s", exc)
    return new_level(params) if params else None


def without_payi_baggage(ctx: Context) -> Context:
    """``ctx`` without ``payi.*`` baggage entries: a call to a model provider never carries
    them (the provider has no use for user ids and properties)."""
    for key in otel_baggage.get_all(ctx):
        if key.startswith(BAGGAGE_PREFIX):
            ctx = otel_baggage.remove_baggage(key, ctx)
    return ctx


def with_outgoing(ctx: Context, effective: Effective) -> Context:
    """``ctx`` with its ``payi.*`` baggage entries replaced by ``effective``'s."""
    for key in otel_baggage.get_all(ctx):
        if key.startswith(BAGGAGE_PREFIX):
            ctx = otel_baggage.remove_baggage(key, ctx)
    for key, text in effective.baggage().items():
        ctx = otel_baggage.set_baggage(key, text, ctx)
    return ctx

"""cProfile reports for ``run.py``: where the time of a missed target goes.

cProfile adds a fixed cost to every Python call, so absolute figures here are inflated (more
so for code made of many small calls); they show *where* time goes, not how much there is.
The timing figures are the ones in the table.
"""

from __future__ import annotations

import cProfile
import pstats
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Dict, List, Tuple

from bench_timing import Comparison, Variant, loop, measure
from opentelemetry.trace import Tracer

from payi_otel import track_context

__all__ = ["profile_chat", "profile_scopes", "scope_breakdown"]

FuncKey = Tuple[str, int, str]
#: (own seconds, cumulative seconds, primitive calls) per function.
Totals = Dict[FuncKey, Tuple[float, float, int]]


def _short(key: FuncKey) -> str:
    filename, lineno, name = key
    if filename == "~":
        return name  # a built-in
    for marker in ("/src/payi_otel/", "/site-packages/", "/lib/python3"):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
            if marker == "/src/payi_otel/":
                filename = "payi_otel/" + filename
            break
    return f"{filename}:{lineno}({name})"


def _run(op: Callable[[], object], n: int) -> Totals:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(n):
        op()
    profiler.disable()
    stats: Dict[FuncKey, Tuple[Any, ...]] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    return {key: (value[2], value[3], value[0]) for key, value in stats.items()}


def _is_payi(key: FuncKey) -> bool:
    return "payi_otel" in key[0] and "benchmarks" not in key[0]


def _table(rows: List[Tuple[str, float, float, float]], header: str) -> str:
    lines = [f"| {header} | calls/op | own µs/op | cum µs/op |", "|---|---:|---:|---:|"]
    for name, calls, own, cum in rows:
        lines.append(f"| `{name}` | {calls:.2f} | {own:.2f} | {cum:.2f} |")
    return "\n".join(lines)


def _payi_rows(totals: Totals, n: int, limit: int) -> List[Tuple[str, float, float, float]]:
    items = [(k, v) for k, v in totals.items() if _is_payi(k)]
    items.sort(key=lambda kv: kv[1][1], reverse=True)
    return [
        (_short(k), calls / n, own / n * 1e6, cum / n * 1e6)
        for k, (own, cum, calls) in items[:limit]
    ]


def _own_total(totals: Totals) -> float:
    return sum(own for own, _, _ in totals.values())


def profile_scopes(
    tracer: Tracer, params: Mapping[str, Any], label: str, n: int = 5000
) -> str:
    """``with track_context(**params)`` vs a bare span: payi_otel functions by cumulative
    time, and the functions whose own time grows the most."""

    def bare() -> None:
        with tracer.start_as_current_span("x"):
            pass

    def scoped() -> None:
        with track_context(**params):
            pass

    _run(scoped, 1000)  # warm-up
    bare_totals = _run(bare, n)
    scoped_totals = _run(scoped, n)
    bare_us = _own_total(bare_totals) / n * 1e6
    scoped_us = _own_total(scoped_totals) / n * 1e6
    return (
        f"### `with track_context({label}): pass` under cProfile ({n} ops)\n\n"
        f"Total under the profiler: {scoped_us:.2f} µs/op vs {bare_us:.2f} µs/op for a bare "
        "span.\n\n"
        + _table(_payi_rows(scoped_totals, n, 18), "payi_otel function (by cumulative)")
        + "\n\n"
        + _diff_section(scoped_totals, bare_totals, n, "track_context - bare span")
    )


def _diff_section(upper: Totals, lower: Totals, n: int, title: str, limit: int = 20) -> str:
    keys = set(upper) | set(lower)
    rows: List[Tuple[str, float, float, float]] = []
    for key in keys:
        own_u, cum_u, calls_u = upper.get(key, (0.0, 0.0, 0))
        own_l, cum_l, calls_l = lower.get(key, (0.0, 0.0, 0))
        rows.append(
            (_short(key), (calls_u - calls_l) / n, (own_u - own_l) / n * 1e6,
             (cum_u - cum_l) / n * 1e6)
        )
    rows.sort(key=lambda row: row[2], reverse=True)
    return (
        f"Largest own-time increases, {title} (per op):\n\n"
        + _table(rows[:limit], "function (Δ own time)")
    )


def profile_chat(
    call: Callable[[], object], instrument: Callable[[bool], None], n: int = 400
) -> str:
    """A chat completion instrumented (payi_otel only) vs uninstrumented, under cProfile.

    With a machine shared with other work, the own-time differences of functions called as
    often in both modes (``calls/op`` 0) are mostly noise; those with extra calls are not."""
    instrument(False)
    for _ in range(20):
        call()
    plain = _run(call, n)
    instrument(True)
    with track_context(user_id="u", limit_ids=["chat"]):
        for _ in range(20):
            call()
        payi = _run(call, n)
    instrument(False)
    plain_us = _own_total(plain) / n * 1e6
    payi_us = _own_total(payi) / n * 1e6
    return (
        f"### Chat completion (mock transport), payi_otel (genai_spans=False) vs "
        f"uninstrumented, under cProfile ({n} calls each)\n\n"
        f"Profiled time in this thread: {payi_us:.0f} µs/call instrumented vs "
        f"{plain_us:.0f} µs/call uninstrumented.\n\n"
        + _table(_payi_rows(payi, n, 18), "payi_otel function (by cumulative)")
        + "\n\n"
        + _diff_section(payi, plain, n, "instrumented - uninstrumented")
    )


def _pieces(
    pieces: Sequence[Tuple[str, Callable[[], object]]], repetitions: int = 15
) -> Comparison:
    """Time ``pieces`` interleaved (``bench_timing.measure``), ~20 ms batches."""
    return measure(
        [Variant(name, loop(op)) for name, op in pieces],
        repetitions=repetitions,
        batch_seconds=0.02,
    )


def scope_breakdown(tracer: Tracer, params: Mapping[str, Any], label: str) -> str:
    """The pieces of one ``track_context`` entry+exit, each timed alone (no profiler),
    interleaved.

    Uses payi_otel internals (``validate_params``, ``state.enter_scope``, ``Effective``,
    ``tracing.get_payi_tracer``) the way ``scope._Scope`` does; the pieces add up to a bit
    less than the whole (call and attribute-lookup glue is not in any piece).
    """
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind

    from payi_otel import _context as payi_state
    from payi_otel import parameters
    from payi_otel._parameters import validate_params
    from payi_otel._resolved import Effective
    from payi_otel._spans import PayiSpanProcessor, get_payi_tracer

    raw = dict(params)
    validated = validate_params(raw, source="track_context")
    parent = otel_context.get_current()
    # Newer payi_otel passes the level's hashable key to enter_scope (a cache); older did not.
    make_key = getattr(parameters, "params_key", None)
    extra: Tuple[Any, ...] = (make_key(validated),) if make_key is not None else ()
    scope_state, scope_ctx = payi_state.enter_scope(
        payi_state.TRACK_CONTEXT, validated, parent, *extra
    )
    attributes = dict(scope_state.effective.attributes())
    attributes["payi.scope"] = payi_state.TRACK_CONTEXT
    payi_tracer = get_payi_tracer()
    processor = PayiSpanProcessor()
    # Left open while timing: an ended span's attributes are immutable and iterate faster.
    sample_span = payi_tracer.start_span("s", context=parent, attributes=attributes)

    def whole() -> None:
        with track_context(**raw):
            pass

    def bare() -> None:
        with tracer.start_as_current_span("x"):
            pass

    def span_with_attributes() -> None:
        payi_tracer.start_span(
            "s", context=parent, kind=SpanKind.INTERNAL, attributes=attributes
        ).end()

    def span_without_attributes() -> None:
        payi_tracer.start_span("s", context=parent, kind=SpanKind.INTERNAL).end()

    def context_ops() -> None:
        ctx = trace.set_span_in_context(sample_span, scope_ctx)
        otel_context.detach(otel_context.attach(ctx))

    pieces = [
        ("whole: `with track_context(...)` create+enter+exit", whole),
        ("reference: bare span `with tracer.start_as_current_span`", bare),
        ("`validate_params` (creating the track_context)",
         lambda: validate_params(raw, source="track_context")),
        ("`state.enter_scope` (as `_Scope` calls it)",
         lambda: payi_state.enter_scope(payi_state.TRACK_CONTEXT, validated, parent, *extra)),
        ("`Effective.attributes()` of a fresh (uncached) Effective (+ dict copy)",
         lambda: dict(Effective(scope_state.effective.params).attributes())),
        (f"SDK `start_span(attributes=<{len(attributes)} payi attrs>)` + `end()`",
         span_with_attributes),
        ("SDK `start_span()` + `end()` without attributes", span_without_attributes),
        ("`PayiSpanProcessor.on_start` on the scope span",
         lambda: processor.on_start(sample_span, parent)),  # type: ignore[arg-type]
        ("context: `set_span_in_context` + attach + detach", context_ops),
    ]
    comp = _pieces(pieces)
    sample_span.end()
    with_attrs, without = pieces[5][0], pieces[6][0]
    lines = [
        f"### `track_context({label})` piece by piece (each timed alone, interleaved, no "
        "profiler; median µs)",
        "",
        "| piece | µs |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {comp.median_us(name):.2f} |" for name, _ in pieces]
    lines.append(
        f"| ⇒ SDK cost of the {len(attributes)} payi attributes (paired Δ of the two "
        f"`start_span` rows) | {comp.delta_us(with_attrs, without):.2f} |"
    )
    return "\n".join(lines)


def hook_breakdown(
    client: Any,
    plain: Tuple[Tuple[Any, ...], Dict[str, Any]],
    with_header: Tuple[Tuple[Any, ...], Dict[str, Any]],
    scope: Mapping[str, Any],
    sdk_call: Callable[[], object],
    calls: int = 1000,
) -> str:
    """The pieces of the openai request hook's work for one call, each timed alone (no
    profiler), inside ``track_context(**scope)``. ``plain`` / ``with_header`` are the
    ``(args, kwargs)`` ``SyncAPIClient.request`` receives without / with a per-call
    ``x-payi-*`` header. Uses payi_otel internals the way ``hooks._prepare`` does.

    Also times ``hooks._prepare`` *in situ*, inside ``calls`` real calls of ``sdk_call`` (the
    module attribute is wrapped with a timer for the time, then restored): within a whole
    SDK call, caches are colder than in a tight loop of ``_prepare`` alone."""
    from opentelemetry import context as otel_context
    from opentelemetry import trace

    from payi_otel._codec import parse_headers, resolve_call
    from payi_otel._context import current_effective
    from payi_otel._providers import _core as hooks
    from payi_otel._spans import apply_call_attributes, with_call

    sdk = hooks._Sdk("openai")
    args, kwargs = plain
    options = args[1]
    header_options = with_header[0][1]
    defaults = getattr(client, "_custom_headers", None) or {}
    call_params = parse_headers((defaults, header_options.headers), skip=sdk.absent)
    rows: List[Tuple[str, float]] = []
    with track_context(**scope):
        effective = current_effective()
        call = resolve_call(effective, {})
        ctx = with_call(otel_context.get_current(), call)
        span = trace.get_current_span()

        def attach_detach() -> None:
            otel_context.detach(otel_context.attach(ctx))

        def fresh_call_headers() -> object:
            return resolve_call(effective, call_params).headers()

        copy = sdk.model_copy(options)
        stamped = {**call.headers()}

        def set_headers() -> None:
            copy.headers = stamped

        pieces: List[Tuple[str, Callable[[], object]]] = [
            ("whole `hooks._prepare`, no per-call header",
             lambda: hooks._prepare(sdk, client, args, kwargs)),
            ("whole `hooks._prepare`, per-call `x-payi-user-id`",
             lambda: hooks._prepare(sdk, client, *with_header)),
            ("`parse_headers` (client defaults + call headers, none x-payi)",
             lambda: parse_headers((defaults, {}), skip=sdk.absent)),
            ("`current_effective()`", current_effective),
            ("`resolve_call(effective, {})` + `.headers()` (cached)",
             lambda: resolve_call(effective, {}).headers()),
            ("`resolve_call` + `.headers()` with the per-call header (new Effective)",
             fresh_call_headers),
            ("`apply_call_attributes` on the scope span (not GenAI: `is_genai_span`)",
             lambda: apply_call_attributes(span, call)),
            ("`model_copy(options)` (openai `_compat`)", lambda: sdk.model_copy(options)),
            ("`options.headers = ...` on the copy (pydantic `__setattr__`)", set_headers),
            ("`otel_context.get_current()`", otel_context.get_current),
            ("`with_call(context, call)`", lambda: with_call(otel_context.get_current(), call)),
            ("wrapper: context attach + detach", attach_detach),
        ]
        comp = _pieces(pieces)
        rows += [(name, comp.median_us(name)) for name, _ in pieces]
        rows.insert(2, ("whole `hooks._prepare` in situ, within real calls (median)",
                        _in_situ_us(sdk_call, calls)))
    lines = [
        f"### The request hook piece by piece (inside `track_context({_kwargs(scope)})`, each "
        "timed alone, interleaved, no profiler; median µs)",
        "",
        "| piece | µs |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {us:.2f} |" for name, us in rows]
    return "\n".join(lines)


def _in_situ_us(call: Callable[[], object], calls: int) -> float:
    """Median µs of ``hooks._prepare`` inside ``calls`` calls of ``call``."""
    from payi_otel._providers import _core as hooks

    real = hooks._prepare
    durations: List[int] = []

    def timed(*args: Any) -> Any:
        start = time.perf_counter_ns()
        try:
            return real(*args)
        finally:
            durations.append(time.perf_counter_ns() - start)

    setattr(hooks, "_prepare", timed)  # noqa: B010 - looked up by the hook at each call
    try:
        for _ in range(calls):
            call()
    finally:
        setattr(hooks, "_prepare", real)  # noqa: B010
    return statistics.median(durations) / 1000.0 if durations else float("nan")


def _kwargs(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items())

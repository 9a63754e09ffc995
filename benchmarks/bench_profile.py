"""cProfile reports for ``run.py``: where the time of a missed target goes.

cProfile adds a fixed cost to every Python call, so absolute figures here are inflated (more
so for code made of many small calls); they show *where* time goes, not how much there is.
The timing figures are the ones in the table.
"""

from __future__ import annotations

import cProfile
import pstats
from collections.abc import Mapping
from typing import Any, Callable, Dict, List, Tuple

from opentelemetry.trace import Tracer

from payi_otel import track_context

__all__ = ["profile_chat", "profile_scopes"]

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
    tracer: Tracer, params: Mapping[str, Any], label: str, n: int = 20_000
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
    """A chat completion instrumented (payi_otel only) vs uninstrumented, under cProfile."""
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
        f"### Chat completion, payi_otel (genai_spans=False) vs uninstrumented, under "
        f"cProfile ({n} calls each)\n\n"
        f"Profiled time in this thread: {payi_us:.0f} µs/call instrumented vs "
        f"{plain_us:.0f} µs/call uninstrumented.\n\n"
        + _table(_payi_rows(payi, n, 18), "payi_otel function (by cumulative)")
        + "\n\n"
        + _diff_section(payi, plain, n, "instrumented - uninstrumented")
    )

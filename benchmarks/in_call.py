"""Where a call's time goes, piece by piece, inside the call: ``python benchmarks/in_call.py
[--mode spans|default] [--calls N]`` (docs/performance.md, "Where the time goes in the call
now").

A diagnostic, not a benchmark: each piece of payi_otel's per-call path (internal functions of
the request hook, the response side, the cost observer, the span processor) is wrapped in a
``perf_counter`` timer, and chat completions run as ``make bench`` runs them (in-process
transport, one user's scope, 8 nested scopes, the collector off). Each figure is the mean µs
of one piece per call, timer included (~0.3-0.5 µs); pieces nest, so they do not add up. The
same code costs 3-5x less warm, in a tight loop over one call: that difference is the point.
The calls' queued bookkeeping (``_deferred``, batches of 64) is done at the end and counted in
the whole call.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run
from fake_llm_server import FakeLLMServer

#: (owner, attribute) of each timed piece; the owner by import path.
PIECES = [
    ("payi_otel._providers._core", "_prepare"),
    ("payi_otel._providers._core", "_planned"),
    ("payi_otel._providers._core", "_observed"),
    ("payi_otel._providers._core", "call_basis"),
    ("payi_otel._providers._core", "without_payi_baggage"),
    ("payi_otel._providers._core", "sends_to"),
    ("payi_otel._providers._core", "apply_call_attributes"),
    ("payi_otel._providers._core", "CallRecord"),
    ("payi_otel._providers._core._Observation", "see"),
    ("payi_otel._providers._core._Observation", "finish"),
    ("payi_otel._cost.CostObserver", "__call__"),
    ("payi_otel._cost.CostObserver", "_price"),
    ("payi_otel._cost.UsageMetrics", "record"),
    ("payi_otel._cost", "_annotate"),
    ("payi_otel._spans.PayiSpanProcessor", "on_start"),
]
PROVIDER_HOOKS = ("plan_key", "read", "stamp", "service_of", "ask_usage", "usage", "response_model")


def _timed(owner: Any, name: str, totals: Dict[str, List[float]], label: str) -> None:
    original = getattr(owner, name)
    totals[label] = [0.0, 0]
    clock = time.perf_counter

    def timer(*args: Any, **kwargs: Any) -> Any:
        start = clock()
        try:
            return original(*args, **kwargs)
        finally:
            entry = totals[label]
            entry[0] += clock() - start
            entry[1] += 1

    setattr(owner, name, timer)


def measure(mode: str, calls: int) -> Dict[str, float]:
    """Mean µs per call of each piece, in ``mode`` (``spans`` or ``default``)."""
    import importlib

    from payi_otel._providers import providers

    with FakeLLMServer() as server:
        body, _ = run.recorded(server)
    run.set_mode(mode)
    totals: Dict[str, List[float]] = {}
    for path, name in PIECES:
        parts = path.split(".")
        for cut in range(len(parts), 0, -1):
            try:
                owner: Any = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            for attribute in parts[cut:]:
                owner = getattr(owner, attribute)
            break
        _timed(owner, name, totals, f"{parts[-1]}.{name}")
    for provider_class in {type(p) for p in providers()}:
        if provider_class.__module__.endswith(".openai"):
            for name in PROVIDER_HOOKS:
                _timed(provider_class, name, totals, f"openai provider.{name}")
    loop = run.chat_calls(run.in_process(body, {}), per_user=False)
    from payi_otel._deferred import flush

    gc.disable()
    try:
        loop(max(calls // 10, 1))  # warm up, then start counting
        flush()
        for entry in totals.values():
            entry[0], entry[1] = 0.0, 0
        elapsed = loop(calls)
        # The calls' queued bookkeeping (metric sums, in batches of 64: issue 20) is theirs.
        start = time.perf_counter()
        flush()
        elapsed += time.perf_counter() - start
    finally:
        gc.enable()
        run.set_mode("off")
    result = {label: total / count * 1e6 for label, (total, count) in totals.items() if count}
    result["the whole call"] = elapsed / calls * 1e6
    return result


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["spans", "default"], default="spans")
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args(argv)
    for label, us in measure(args.mode, args.calls).items():
        print(f"{us:8.2f} µs  {label}")


if __name__ == "__main__":
    main()

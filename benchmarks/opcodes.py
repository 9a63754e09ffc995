"""Python bytecodes per call, function by function: ``python benchmarks/opcodes.py [--mode
spans] [--baseline off] [--calls N] [--top K]`` (docs/performance.md, "Seventh round").

A diagnostic, not a benchmark, and deterministic: the chat completion of ``make bench``'s cost
rows (recorded response, in-process transport, one user's scope, 8 scopes deep) runs ``N``
times in each of two variants (``run.set_mode``: ``off``, ``floor``, ``hook``, ``spans``,
``genai``, ``default``), under ``sys.settrace`` with opcode events, and the bytecodes executed
in each function (file and name) are counted. It prints the difference per call, variant
minus baseline, largest first: which code runs more, whose ever it is - payi_otel's, or the
SDK's or HTTP client's doing more for it (how the seventh round found that the uninstrumented
rows sent fewer headers than payi_otel). Bytecodes are not time (C functions count nothing
here, and the tracer's own allocations move the garbage collector's runs), but the same code
counts the same every run.
"""

from __future__ import annotations

import argparse
import collections
import logging
import sys
from pathlib import Path
from typing import Any, Counter, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run
from fake_llm_server import FakeLLMServer

#: Modes whose client sends the recorded headers itself (payi_otel is off in them).
STATIC = ("off", "genai")


def count(mode: str, calls: int, body: bytes, headers: dict[str, str]) -> Counter[str]:
    """Bytecodes per function over ``calls`` chat completions in ``mode``."""
    run.set_mode(mode)
    client = run.in_process(body, headers if mode in STATIC else {})
    loop = (
        run.floor_calls(client, headers)
        if mode == "floor"
        else run.chat_calls(client, per_user=False)
    )
    loop(50)  # warm: caches filled, genai-prices loaded, the first batch done
    _flush()
    counts: Counter[str] = collections.Counter()

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        code = frame.f_code
        name = f"{code.co_filename.split('site-packages/')[-1]}:{code.co_name}"

        def local(frame: Any, event: str, arg: Any) -> Any:
            if event == "opcode":
                counts[name] += 1
            return local

        return local

    sys.settrace(tracer)
    try:
        loop(calls)
        _flush()  # the calls' queued bookkeeping is theirs
    finally:
        sys.settrace(None)
    return counts


def _flush() -> None:
    from payi_otel._deferred import flush

    flush()


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="spans", help="the variant (run.set_mode)")
    parser.add_argument("--baseline", default="off", help="what it is compared with")
    parser.add_argument("--calls", type=int, default=100, help="calls counted per variant")
    parser.add_argument("--top", type=int, default=30, help="functions listed")
    args = parser.parse_args(argv)
    logging.getLogger("payi_otel").addFilter(run._Expected())
    with FakeLLMServer() as server:
        body, headers = run.recorded(server)
    try:
        base = count(args.baseline, args.calls, body, headers)
        variant = count(args.mode, args.calls, body, headers)
    finally:
        run.set_mode("off")
    added = (sum(variant.values()) - sum(base.values())) / args.calls
    print(f"{args.mode} vs {args.baseline}: {added:+,.0f} bytecodes per call", end="")
    print(f" (of {sum(variant.values()) / args.calls:,.0f})")
    diff = {k: (variant[k] - base[k]) / args.calls for k in set(base) | set(variant)}
    for name, per_call in sorted(diff.items(), key=lambda kv: -abs(kv[1]))[: args.top]:
        print(f"{per_call:+9.1f}  {name}")


if __name__ == "__main__":
    main()

"""Instructions per call, counted: ``python benchmarks/instructions.py [--calls N]``
(docs/performance.md, "Fourth round").

A complement to ``make bench`` that no other process on the machine can disturb: each variant
of the in-process chat completion (as ``make bench`` runs them: recorded response, one user's
scope, 8 scopes deep) runs under valgrind's callgrind, which counts the machine instructions
the interpreter executes for ``N`` calls (instrumentation switched on around the calls only,
``PYTHONHASHSEED=0``, the garbage collector off meanwhile: its collections start at allocation
counts, wherever they fall). The same variant counts within ~0.1% run to run; variants
that differ in code differ in memory layout too, so differences under ~5,000 instructions
per call are noise.

Instructions are not time: code run once per call after the SDK's own ~5 million instructions
runs from cold caches, so payi_otel's instructions cost ~3x the time per instruction of the
SDK's (docs/performance.md). Needs ``valgrind`` (not installed: says so and exits 0).
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

HERE = Path(__file__).resolve().parent

#: (mode of ``run.set_mode``, what it is).
VARIANTS: Tuple[Tuple[str, str], ...] = (
    ("off", "uninstrumented, same x-payi-* headers sent statically"),
    ("floor", "reference: the floor of a request hook (not payi_otel)"),
    ("hook", "payi_otel request hook alone (no observer)"),
    ("spans", "payi_otel hook + cost observer (genai_spans=False)"),
    ("genai", "genai-openai instrumentation alone, same headers sent statically"),
    ("default", "payi_otel default (hook + GenAI spans + cost)"),
)
#: (variant, its baseline) pairs the table compares.
COMPARED = (
    ("floor", "off"),
    ("hook", "off"),
    ("spans", "off"),
    ("default", "genai"),
)


def child(mode: str, calls: int) -> None:
    """Run inside callgrind: ``calls`` chat completions in ``mode``, counted."""
    sys.path.insert(0, str(HERE))
    import logging

    import run
    from fake_llm_server import FakeLLMServer

    logging.getLogger("payi_otel").addFilter(run._Expected())
    with FakeLLMServer() as server:
        body, headers = run.recorded(server)
    run.set_mode(mode)
    if mode == "floor":
        loop = run.floor_calls(run.in_process(body, {}), headers)
    else:
        static = headers if mode in ("off", "genai") else {}
        loop = run.chat_calls(run.in_process(body, static), per_user=False)
    loop(max(calls // 4, 70))  # warm: caches filled, the interpreter's specializations made
    try:  # and the first batch of deferred bookkeeping done: genai-prices imported (issue 20)
        from payi_otel._deferred import flush
    except ImportError:  # a tree before it
        pass
    else:
        flush()
    gc.collect()
    gc.disable()
    control = ["callgrind_control", "--instr=on", str(os.getpid())]
    subprocess.run(control, check=True, stdout=subprocess.DEVNULL)
    loop(calls)
    control[1] = "--instr=off"
    subprocess.run(control, check=True, stdout=subprocess.DEVNULL)
    gc.enable()
    run.set_mode("off")


def count(mode: str, calls: int) -> float:
    """Instructions per call of ``mode`` (callgrind's count while instrumented, over calls)."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={tmp}/out",
            sys.executable,
            __file__,
            "--child",
            mode,
            "--calls",
            str(calls),
        ]
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    found = re.search(r"Collected\s*:\s*([\d,]+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"{mode}: callgrind failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", "")) / calls


def table(per_call: Dict[str, float]) -> str:
    rows = ["| variant | instructions per call |", "|---|---:|"]
    labels = dict(VARIANTS)
    for mode, _ in VARIANTS:
        rows.append(f"| {labels[mode]} | {per_call[mode]:,.0f} |")
    rows.append("")
    rows.append("| comparison | added per call | ratio |")
    rows.append("|---|---:|---:|")
    for mode, base in COMPARED:
        added = per_call[mode] - per_call[base]
        ratio = per_call[mode] / per_call[base]
        rows.append(f"| {labels[mode]} vs {mode_name(base)} | {added:+,.0f} | {ratio:.4f}x |")
    return "\n".join(rows)


def mode_name(mode: str) -> str:
    return {"off": "uninstrumented", "genai": "genai-openai alone"}.get(mode, mode)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="calls counted per variant")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.calls)
        return
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind is not installed: nothing counted (apt install valgrind)")
        return
    modes: List[str] = [mode for mode, _ in VARIANTS]
    per_call: Dict[str, float] = {}
    # Two at a time: the counts do not depend on the load.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2) as pool:
        for mode, value in zip(modes, pool.map(lambda m: count(m, args.calls), modes)):
            per_call[mode] = value
    print(table(per_call))


if __name__ == "__main__":
    main()

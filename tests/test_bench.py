"""The README's benchmark commands run (``make bench`` is ``benchmarks/run.py``; its cost rows
alone are ``python benchmarks/bench_cost.py``), here in their quick form: every comparison of
the cost path is measured, each goal gets a verdict, and nothing else is printed on stderr
than the progress lines. The figures themselves are ``make bench``'s (docs/performance.md):
no timing is asserted."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_cost_benchmark_runs_every_comparison() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_cost.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    variants = [row.split(" | ")[1] for row in rows[1:]]  # after the header
    for variant in (
        "CostObserver(record): new user, new GenAI span",
        "reference: the floor of a request hook",
        "payi_otel request hook alone (no observer)",
        "payi_otel hook + cost observer (genai_spans=False)",
        "genai-openai instrumentation alone, same x-payi-* headers sent statically",
        "payi_otel default (hook + GenAI spans + cost)",
    ):
        assert any(v.startswith(variant) for v in variants), (variant, variants)
    goals = [row for row in rows if re.search(r"\| ≤ [\d.]+( µs|x) \|", row)]
    verdicts = ("met", "not met", "CI spans goal")
    assert len(goals) == 3 and all(row.rstrip(" |").endswith(verdicts) for row in goals)
    progress = [line for line in done.stderr.splitlines() if not line.startswith("  ")]
    assert progress == [], done.stderr

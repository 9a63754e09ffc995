"""The per-call cost of the cost path: ``python benchmarks/bench_cost.py [--quick]``.

The cost comparisons of ``make bench`` alone (``benchmarks/run.py --only cost``; method and
figures: docs/performance.md): the cost observer on its own per call, the request hook and
the observer against the uninstrumented call, and payi_otel's default (GenAI spans on)
against the GenAI instrumentation alone - a new user per call, inside nested scopes, answered
in-process, every variant of a comparison interleaved in one run.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import main

if __name__ == "__main__":
    main(["--only", "cost", *sys.argv[1:]])

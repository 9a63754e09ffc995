"""The benchmark commands of the README and docs/performance.md run (``make bench`` is
``benchmarks/run.py``; its cost rows alone are ``python benchmarks/bench_cost.py``; the
in-call timings ``python benchmarks/in_call.py``; the instruction counts ``python
benchmarks/instructions.py``; bytecodes per function ``python benchmarks/opcodes.py``;
start-up ``python benchmarks/startup.py``), here in their
quick form: every comparison of the cost path is measured, each goal gets a verdict, and
nothing else is printed on stderr than the progress lines. The figures themselves are
``make bench``'s (docs/performance.md): no timing is asserted."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, List

ROOT = Path(__file__).resolve().parents[1]


def bench(script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    """``python benchmarks/<script> <args>`` from the repository root."""
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_the_cost_benchmark_runs_every_comparison() -> None:
    done = bench("bench_cost.py", "--quick")
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
    verdicts = ("met", "not met", "CI spans goal", "void: the baseline ran slower than the floor")
    assert len(goals) == 3 and all(row.rstrip(" |").endswith(verdicts) for row in goals)
    progress = [line for line in done.stderr.splitlines() if not line.startswith("  ")]
    assert progress == [], done.stderr


def test_the_in_call_timings_run_for_both_modes() -> None:
    for mode in ("spans", "default"):
        done = bench("in_call.py", "--mode", mode, "--calls", "40")
        assert done.returncode == 0 and done.stderr == "", done.stderr
        pieces = {line.split("µs", 1)[1].strip() for line in done.stdout.splitlines()}
        expected = {
            "_core._prepare",
            "CostObserver._price",
            "openai provider.plan_key",  # the common call's plan (``read`` at a plan's miss)
            "the whole call",
        }
        if mode == "default":
            expected |= {"PayiSpanProcessor.on_start"}
        assert expected <= pieces, done.stdout


def test_the_bytecode_counts_name_payi_otels_functions() -> None:
    """``python benchmarks/opcodes.py``: the default against the GenAI instrumentation
    alone, few calls; the request hook and the cost observer are among what runs more."""
    done = bench("opcodes.py", "--mode", "default", "--baseline", "genai", "--calls", "5")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    first, *rows = done.stdout.splitlines()
    assert re.fullmatch(r"default vs genai: \+[\d,]+ bytecodes per call \(of [\d,]+\)", first)
    names = {row.split()[1] for row in rows}
    assert {"payi_otel/_providers/_core.py:_prepare", "payi_otel/_cost.py:__call__"} <= {
        name.split("src/")[-1] for name in names
    }, done.stdout


def test_the_instruction_counts_run_for_every_comparison() -> None:
    """``python benchmarks/instructions.py`` under callgrind, few calls (or, where valgrind is
    not installed, the one line that says so)."""
    done = bench("instructions.py", "--calls", "10", timeout=600)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    if done.stdout.startswith("valgrind is not installed"):
        return
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    counts = {row.split(" | ")[0][2:]: row.split(" | ")[1] for row in rows}
    for compared in (
        "reference: the floor of a request hook (not payi_otel) vs uninstrumented",
        "payi_otel hook + cost observer (genai_spans=False) vs uninstrumented",
        "payi_otel default (hook + GenAI spans + cost) vs genai-openai alone",
    ):
        assert re.fullmatch(r"[+-][\d,]+", counts[compared].strip()), (compared, done.stdout)


def test_the_start_up_benchmark_runs_and_payi_instrument_imports_no_sdk() -> None:
    """``python benchmarks/startup.py``, one run: every step timed; ``payi_instrument()``
    imports neither genai-prices nor any SDK, framework or HTTP client (``_on_import``)."""
    done = bench("startup.py", "--runs", "1")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    rows = {
        line.split(" | ")[0][2:]: line.split(" | ")[1].rstrip(" |")
        for line in done.stdout.splitlines()[2:]
    }
    assert rows["genai_prices after instrument"] == "False", done.stdout
    assert rows["SDKs, frameworks, HTTP clients it imported"] == "0", done.stdout
    for step in ("payi_instrument()", "import openai (instrumented then)", "first call"):
        assert rows[step].endswith(" ms"), done.stdout


def test_the_uninstrumented_rows_send_the_headers_payi_otel_sends() -> None:
    """The baselines of the cost rows send statically what payi_otel sends where the rows
    call (inside the 8 scopes, one user's scope): the same ``x-payi-*`` names, values of the
    same length (the ids differ). The HTTP client's work per header is then the same on
    both sides of each ratio."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import run
    from fake_llm_server import FakeLLMServer

    with FakeLLMServer() as server:
        body, headers = run.recorded(server)
    seen: list[Any] = []

    def client(default_headers: dict[str, str]) -> Any:
        return run.in_process(body, default_headers, seen)

    run._ids = itertools.count(12_345_678)  # as far as a full run's ids go
    try:
        for mode, loop in (
            ("spans", lambda: run.chat_calls(client({}), per_user=False)),
            ("off", lambda: run.chat_calls(client(headers), per_user=False)),
            ("floor", lambda: run.floor_calls(client({}), headers)),
        ):
            run.set_mode(mode)
            loop()(1)
    finally:
        run.set_mode("off")
    payi, *baselines = [
        {k: v for k, v in request.headers.items() if k.startswith("x-payi-")} for request in seen
    ]
    assert len(payi) == 5 and "x-payi-request-properties" in payi
    for baseline in baselines:
        assert {k: len(v) for k, v in baseline.items()} == {k: len(v) for k, v in payi.items()}


def test_a_comparison_whose_floor_beats_its_baseline_is_void() -> None:
    """The floor of a request hook does the baseline's work and more: a run that finds it
    faster than the baseline measured a disturbed baseline, and its goals say so."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import time

    import run

    def work(seconds: float) -> Any:
        def loop(n: int) -> float:
            start = time.perf_counter()
            end = start + n * seconds
            while time.perf_counter() < end:
                pass
            return time.perf_counter() - start

        return loop

    try:
        rows = run.compare(
            "disturbed",
            [
                run.Variant("baseline", work(2e-5), "off"),
                run.Variant("floor", work(1e-5), "floor"),
                run.Variant("payi_otel", work(1e-5), "off", goal=1.02),
            ],
            5,
            0.002,
        )
    finally:
        run.set_mode("off")
    assert rows[1]["ratio"] < 1.0 and all(row.get("void") for row in rows)
    assert (
        run.table(rows)
        .splitlines()[-1]
        .endswith("| void: the baseline ran slower than the floor |")
    )


def test_the_knock_outs_run_and_each_variant_is_its_own() -> None:
    """``python benchmarks/knockout.py``, quick: a variant without knock-outs right after one
    with them is measured as it is (the mode switches back)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import knockout
    import run

    from payi_otel._providers import _core

    seen: List[Any] = []
    see = _core._Observation.see
    original = run.chat_calls

    def watching(client: Any, per_user: bool) -> Any:
        loop = original(client, per_user)

        def watched(n: int) -> float:
            seen.append((run._mode[0], _core._Observation.see is see))
            return loop(n)  # type: ignore[no-any-return]

        return watched

    run.chat_calls = watching
    try:
        knockout.main(["spans-nosee", "spans", "--quick"])
    finally:
        run.chat_calls = original
    assert ("spans", True) in seen and ("spans-nosee", False) in seen
    assert ("spans", False) not in seen and ("spans-nosee", True) not in seen
    done = bench("knockout.py", "hook", "hook-noapply", "--quick")
    assert done.returncode == 0, done.stderr
    assert "| | hook-noapply |" in done.stdout

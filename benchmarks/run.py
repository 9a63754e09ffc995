"""payi_otel benchmarks: ``make bench`` (``--quick`` for a smoke run, ``--write`` to update
``benchmarks/results.md``). Method and goals: docs/performance.md.

Each comparison runs its variants interleaved in one process - per repetition every variant
times one batch, in rotated order - and reports the median of the per-repetition (paired)
ratios to the first variant, with a 95% confidence interval of that median. pyperf supplies
the clock, the summary statistics and the machine description.

Spans go through a SimpleSpanProcessor to an exporter that drops them. Baselines that are
bare SDK spans use a TracerProvider payi_otel never touched; payi_otel gets its own provider.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import itertools
import math
import os
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import httpx2
import openai
import pyperf
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from payi_otel import PayiInstrumentor, payi_instrument, track_context

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "examples"))
from fake_llm_server import FakeLLMServer  # noqa: E402

GLOBAL = {"use_case_name": "bench", "limit_ids": ["monthly"]}
RICH = {
    "use_case_name": "support_bot",
    "limit_ids": ["per_feature", "per_team"],
    "request_properties": {"tier": "gold", "region": "eu"},
}


class DropExporter(SpanExporter):
    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def provider() -> TracerProvider:
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(DropExporter()))
    return tp


BARE = provider().get_tracer("bare")  # untouched by payi_otel: no payi span processor on it
PAYI_PROVIDER = provider()
SPANLESS_SUPPORTED = "scope_spans" in inspect.signature(payi_instrument).parameters
_mode: List[str] = ["off"]


def set_mode(mode: str) -> None:
    """payi_otel off, instrumented with scope spans, or spanless (``scope_spans=False``)."""
    if _mode[0] == mode:
        return
    instrumentor = PayiInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    if mode != "off":
        extra = {"scope_spans": False} if mode == "spanless" else {}
        instrumentor.instrument(
            tracer_provider=PAYI_PROVIDER, config=GLOBAL, genai_spans=False, **extra
        )
    _mode[0] = mode


# --- the harness ----------------------------------------------------------------------------


@dataclass
class Variant:
    label: str
    loop: Callable[[int], float]  # runs n operations, returns the seconds they took
    mode: str = "spans"
    goal: Optional[float] = None  # the maximum ratio to the comparison's first variant


def timed(op: Callable[[], Any]) -> Callable[[int], float]:
    def loop(n: int) -> float:
        start = pyperf.perf_counter()
        for _ in range(n):
            op()
        return pyperf.perf_counter() - start

    return loop


def median(values: List[float]) -> float:
    run = pyperf.Run(values, metadata={"name": "values"}, collect_metadata=False)
    return float(pyperf.Benchmark([run]).median())


def median_ci(values: List[float]) -> tuple[float, float]:
    """A distribution-free 95% confidence interval of the median (order statistics)."""
    xs, n = sorted(values), len(values)
    k = 0
    while k + 1 < n / 2 and sum(math.comb(n, i) for i in range(k + 2)) / 2**n <= 0.025:
        k += 1
    return xs[k], xs[n - 1 - k]


def compare(title: str, variants: List[Variant], reps: int, batch: float) -> List[Dict[str, Any]]:
    sizes = []
    for v in variants:  # calibrate: operations per batch of ~`batch` seconds (and warm up)
        set_mode(v.mode)
        n = 1
        while (t := v.loop(n)) < batch / 4:
            n *= 4
        sizes.append(max(1, int(n * batch / t)))
    per_op: List[List[float]] = [[] for _ in variants]
    for rep in range(reps):
        for i in [(rep + j) % len(variants) for j in range(len(variants))]:
            if _mode[0] != variants[i].mode:  # switched: a few untimed operations first
                set_mode(variants[i].mode)  # (re-wrapped methods, new global level)
                variants[i].loop(max(1, sizes[i] // 10))
            gc.collect()
            per_op[i].append(variants[i].loop(sizes[i]) / sizes[i])
    rows = []
    for i, v in enumerate(variants):
        row = {"title": title, "label": v.label, "us": median(per_op[i]) * 1e6}
        if i:
            ratios = [a / b for a, b in zip(per_op[i], per_op[0])]
            row["ratio"] = median(ratios)
            row["ci"] = median_ci(ratios)
            row["goal"] = v.goal
        rows.append(row)
        print(
            f"  {title}: {v.label}: {row['us']:.2f} µs" + (f"  {row['ratio']:.3f}x" if i else ""),
            file=sys.stderr,
            flush=True,
        )
    return rows


# --- the operations -------------------------------------------------------------------------

_ids = itertools.count()


def bare_span() -> None:
    _ = f"user-{next(_ids)}"  # the same id formatting as the scope rows
    with BARE.start_as_current_span("bare"):
        pass


def scope(**extra: Any) -> Callable[[], None]:
    def op() -> None:
        with track_context(user_id=f"user-{next(_ids)}", **extra):
            pass

    return op


def at_depth(depth: int) -> Callable[[int], float]:
    """track_context(user_id) inside ``depth - 1`` outer scopes, each adding a limit id and a
    property (so the effective set grows with depth)."""
    inner = timed(scope())

    def loop(n: int) -> float:
        with ExitStack() as stack:
            for i in range(depth - 1):
                stack.enter_context(
                    track_context(limit_ids=[f"limit-{i}"], request_properties={f"p{i}": "v"})
                )
            return inner(n)

    return loop


def payi_sdk_scope(**extra: Any) -> Callable[[], None]:
    """Pay-i's own SDK (``payi`` on PyPI): track_context, instrumented with no provider."""
    os.environ.setdefault("PAYI_API_KEY", "bench")  # its clients are built, never used
    from payi.lib import instrument as payi_sdk

    if payi_sdk._instrumentor is None:
        payi_sdk.payi_instrument(
            instruments={"none"}, config={"use_case_name": "bench", "limit_ids": ["monthly"]}
        )

    def op() -> None:
        with payi_sdk.track_context(user_id=f"user-{next(_ids)}", **extra):
            pass

    return op


def in_process(body: bytes, headers: Dict[str, str]) -> openai.OpenAI:
    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=body, headers={"content-type": "application/json"})

    return openai.OpenAI(
        base_url="http://mock.invalid/v1",
        api_key="k",
        max_retries=0,
        default_headers=headers,
        http_client=httpx2.Client(transport=httpx2.MockTransport(answer)),
    )


def chat(client: openai.OpenAI, scoped: bool) -> Callable[[int], float]:
    call = timed(
        lambda: client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}]
        )
    )

    def loop(n: int) -> float:
        if not scoped:
            return call(n)
        with track_context(user_id="chat-user"):
            return call(n)

    return loop


# --- the suite ------------------------------------------------------------------------------


def suite(quick: bool) -> List[Dict[str, Any]]:
    reps, batch = (5, 0.005) if quick else (25, 0.04)
    spanless = ["spanless"] if SPANLESS_SUPPORTED else []
    rows = compare(
        "scope enter+exit, created each time, distinct user ids",
        [
            Variant("bare SDK span (untouched provider)", timed(bare_span), "off"),
            Variant("track_context(user_id)", timed(scope()), goal=1.25),
            Variant("track_context(user_id, rich)", timed(scope(**RICH)), goal=1.4),
            *[Variant("track_context(user_id), spanless", timed(scope()), m) for m in spanless],
            *[
                Variant("track_context(user_id, rich), spanless", timed(scope(**RICH)), m)
                for m in spanless
            ],
        ],
        reps,
        batch,
    )
    rows += compare(
        "track_context(user_id) by nesting depth",
        [
            Variant("depth 1", at_depth(1)),
            Variant("depth 8", at_depth(8)),
            Variant("depth 32", at_depth(32), goal=1.1),
        ],
        reps,
        batch,
    )
    with FakeLLMServer() as server:
        chat_scope = {"user_id": "chat-user"}
        set_mode("spans")
        with track_context(**chat_scope):
            chat(openai.OpenAI(base_url=server.openai_base_url, api_key="k"), False)(1)
        headers = {k: v for k, v in server.requests[-1].headers.items() if k.startswith("x-payi-")}
        headers["x-payi-use-case-id"] = "static"  # the global id is new per instrumentation
        static = openai.OpenAI(
            base_url=server.openai_base_url, api_key="k", max_retries=0, default_headers=headers
        )
        plain = openai.OpenAI(base_url=server.openai_base_url, api_key="k", max_retries=0)
        rows += compare(
            "chat completion, loopback fake server",
            [
                Variant(
                    "uninstrumented, same x-payi-* headers sent statically",
                    chat(static, False),
                    "off",
                ),
                Variant(
                    "payi_otel (genai_spans=False) in track_context(user_id)",
                    chat(plain, True),
                    goal=1.02,
                ),
            ],
            reps * 4 + 1,
            batch,
        )  # many short pairs: the loopback server's timing drifts
        # The same without socket or server thread: the response, recorded once from the
        # fake server, is answered in-process (the client's whole code path, less noise).
        body = plain.chat.completions.with_raw_response.create(
            model="m", messages=[{"role": "user", "content": "Hi"}]
        ).http_response.content
        set_mode("spans")
        rows += compare(
            "chat completion, in-process transport (recorded response)",
            [
                Variant(
                    "uninstrumented, same x-payi-* headers sent statically",
                    chat(in_process(body, headers), False),
                    "off",
                ),
                Variant(
                    "payi_otel (genai_spans=False) in track_context(user_id)",
                    chat(in_process(body, {}), True),
                    goal=1.02,
                ),
            ],
            reps,
            batch,
        )
        server.requests.clear()
    if SPANLESS_SUPPORTED:  # last: Pay-i's SDK patches thread pools and asyncio for good
        rows += compare(
            "spanless payi_otel vs Pay-i's SDK (payi 0.1.0a183) track_context",
            [
                Variant("payi: track_context(user_id)", timed(payi_sdk_scope()), "off"),
                Variant(
                    "payi_otel spanless: track_context(user_id)",
                    timed(scope()),
                    "spanless",
                    goal=1.0,
                ),
            ],
            reps,
            batch,
        )
        rows += compare(
            "spanless payi_otel vs Pay-i's SDK, rich",
            [
                Variant("payi: track_context(user_id, rich)", timed(payi_sdk_scope(**RICH)), "off"),
                Variant(
                    "payi_otel spanless: track_context(user_id, rich)",
                    timed(scope(**RICH)),
                    "spanless",
                    goal=1.0,
                ),
            ],
            reps,
            batch,
        )
    set_mode("off")
    return rows


def table(rows: List[Dict[str, Any]]) -> str:
    out = [
        "| comparison | variant | µs/op | ratio [95% CI] | goal | |",
        "|---|---|---:|---:|---:|---|",
    ]
    for r in rows:
        if "ratio" not in r:
            out.append(f"| {r['title']} | {r['label']} | {r['us']:.2f} | 1 (baseline) | | |")
            continue
        lo, hi = r["ci"]
        goal = r["goal"]
        verdict = (
            ""
            if goal is None
            else ("met" if hi <= goal else "not met" if lo > goal else "CI spans goal")
        )
        out.append(
            f"| | {r['label']} | {r['us']:.2f} | {r['ratio']:.3f}x [{lo:.3f}-{hi:.3f}] "
            f"| {'' if goal is None else f'≤ {goal}x'} | {verdict} |"
        )
    return "\n".join(out)


def machine() -> str:
    meta = pyperf.Run([1.0], metadata={"name": "machine"}).get_metadata()
    from importlib.metadata import version

    pkgs = ", ".join(
        f"{p} {version(p)}" for p in ("payi-otel", "opentelemetry-sdk", "openai", "payi", "pyperf")
    )
    return (
        f"Machine: {meta.get('cpu_model_name')}, {meta.get('cpu_count')} CPUs, "
        f"load {meta.get('load_avg_1min')}; CPython {meta.get('python_version')}; "
        f"{meta.get('platform')}; {pkgs}; {meta.get('date', '')[:16]}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few short batches (smoke test)")
    parser.add_argument("--write", action="store_true", help="write benchmarks/results.md")
    args = parser.parse_args()
    text = f"{machine()}\n\n{table(suite(args.quick))}\n"
    print(text)
    if args.write:
        (HERE / "results.md").write_text(
            "# payi_otel benchmarks (`make bench`; method and goals: docs/performance.md)\n\n"
            + text
        )


if __name__ == "__main__":
    main()

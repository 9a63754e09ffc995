"""payi_otel micro- and macro-benchmarks: ``make bench`` (or ``python benchmarks/run.py``).

Everything runs in one process, so every figure is a ratio of variants measured side by side
in the same run: each comparison interleaves its variants over several repetitions and reports
medians (see ``bench_timing``). The rows:

1. ``track_context`` enter+exit vs a bare OpenTelemetry span of the same tracer provider.
2. An ``@track`` call vs the undecorated function, and vs a function opening a bare span.
3. The request hook's header resolution, and ``get_context()``, at scope nesting depth 1, 8
   and 64 (must not grow with depth).
4. A chat completion against the local fake server: uninstrumented, instrumented by
   payi_otel alone (``genai_spans=False``), and with openai-v2 GenAI spans too.
5. ``get_context()`` alone.

All spans go to one SDK ``TracerProvider`` whose only exporter discards them (through a
``SimpleSpanProcessor``, so span export is paid for, identically, by every variant). Rows 1-3
and 5 run with payi_otel instrumented on that provider (``genai_spans=False``) and a global
config, as an application would. The table is printed and written to
``benchmarks/results.md`` with a description of the machine. When a target is missed, the
failing path is profiled with cProfile and the findings are appended (``--no-profile`` skips).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import openai
from bench_machine import describe
from bench_profile import profile_chat, profile_scopes
from bench_timing import Comparison, Variant, loop, measure
from openai import _base_client as openai_base_client
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Tracer

from payi_otel import PayiInstrumentor, get_context, hooks, track, track_context

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results.md"

#: The global level of every instrumented variant (as ``payi_instrument(config=...)``).
GLOBAL_CONFIG: Mapping[str, object] = {"use_case_name": "bench", "limit_ids": ["monthly"]}

#: ``track_context`` parameters of the "rich" variant of row 1.
RICH: Mapping[str, Any] = {
    "use_case_name": "support_bot",
    "limit_ids": ["per_feature", "per_team"],
    "request_properties": {"tier": "gold", "region": "eu"},
}

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
MODEL = "gpt-4o-mini"

#: Targets (maximum ratio) of the brief; the depth one is this file's tolerance for "flat".
TARGET_SCOPE = 1.5
TARGET_CHAT = 1.05
TARGET_DEPTH = 1.15


# ------------------------------------------------------------------------------------------
# Set-up: provider, server, instrumentation
# ------------------------------------------------------------------------------------------


class NullExporter(SpanExporter):
    """Accepts and drops every span."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def make_provider() -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(NullExporter()))
    return provider


def start_fake_server() -> Any:
    """``examples/fake_llm_server.FakeLLMServer``, started (examples/ is not a package)."""
    sys.path.insert(0, str(ROOT / "examples"))
    module = importlib.import_module("fake_llm_server")
    return module.FakeLLMServer().start()


OFF = "uninstrumented"
PAYI = "payi_otel (genai_spans=False)"
PAYI_GENAI = "payi_otel + openai-v2 (genai_spans=True)"


class Instrumentation:
    """Switches ``PayiInstrumentor`` (a singleton) between the three modes of the bench."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.mode = OFF

    def set(self, mode: str) -> None:
        if mode == self.mode:
            return
        instrumentor = PayiInstrumentor()
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
        if mode != OFF:
            instrumentor.instrument(
                tracer_provider=self.provider,
                config=GLOBAL_CONFIG,
                genai_spans=mode == PAYI_GENAI,
                caller_file=__file__,
            )
        self.mode = mode


class _Captured(Exception):
    pass


def capture_request(
    client: openai.OpenAI, extra_headers: Optional[Dict[str, str]] = None
) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
    """The ``(args, kwargs)`` a chat completion passes to ``SyncAPIClient.request`` (after
    ``self``): exactly what the request hook receives. Call it uninstrumented."""
    cls = openai_base_client.SyncAPIClient
    original = cls.__dict__["request"]
    captured: Dict[str, Any] = {}

    def fake(self: Any, *args: Any, **kwargs: Any) -> Any:
        captured["args"], captured["kwargs"] = args, kwargs
        raise _Captured

    setattr(cls, "request", fake)  # noqa: B010 - a method on a class, restored below
    try:
        client.chat.completions.create(
            model=MODEL, messages=MESSAGES, extra_headers=extra_headers  # type: ignore[arg-type]
        )
    except _Captured:
        pass
    finally:
        setattr(cls, "request", original)  # noqa: B010
    return captured["args"], captured["kwargs"]


# ------------------------------------------------------------------------------------------
# The table
# ------------------------------------------------------------------------------------------


@dataclass
class Line:
    """One line of the results table."""

    row: str
    measurement: str
    variant: str
    us: float
    versus: str = ""
    ratio: Optional[float] = None
    ratio_range: Optional[Tuple[float, float]] = None
    delta_us: Optional[float] = None
    target: Optional[float] = None

    @property
    def verdict(self) -> str:
        if self.target is None or self.ratio is None:
            return ""
        return "PASS" if self.ratio <= self.target else "FAIL"


def line(
    comp: Comparison,
    row: str,
    measurement: str,
    name: str,
    baseline: Optional[str] = None,
    *,
    label: Optional[str] = None,
    target: Optional[float] = None,
) -> Line:
    result = Line(row, measurement, label or name, comp.median_us(name), target=target)
    if baseline is not None:
        ratios = comp.ratios(name, baseline)
        result.versus = baseline
        result.ratio = comp.ratio(name, baseline)
        result.ratio_range = (min(ratios), max(ratios))
        result.delta_us = comp.delta_us(name, baseline)
    return result


def _us(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}" if value < 1000 else f"{value:.0f}"


def render(lines: Sequence[Line]) -> str:
    header = (
        "| # | measurement | variant | median µs/op | vs | ratio (min-max) | Δ µs/op "
        "| target | result |\n|---|---|---|---:|---|---:|---:|---:|---|\n"
    )
    rows = []
    for item in lines:
        ratio = ""
        if item.ratio is not None and item.ratio_range is not None:
            low, high = item.ratio_range
            ratio = f"{item.ratio:.3f}x ({low:.2f}-{high:.2f})"
        delta = "" if item.delta_us is None else f"{item.delta_us:+.2f}"
        target = "" if item.target is None else f"≤ {item.target:g}x"
        rows.append(
            f"| {item.row} | {item.measurement} | {item.variant} | {_us(item.us)} | "
            f"{item.versus} | {ratio} | {delta} | {target} | {item.verdict} |"
        )
    return header + "\n".join(rows) + "\n"


# ------------------------------------------------------------------------------------------
# Rows
# ------------------------------------------------------------------------------------------


@dataclass
class Settings:
    repetitions: int
    batch_seconds: float
    chat_repetitions: int
    chat_batch_seconds: float


def row_scopes(tracer: Tracer, settings: Settings) -> List[Line]:
    """Row 1: ``track_context`` enter+exit vs a bare span of the same provider."""
    simple = track_context(user_id="u")
    rich = track_context(**RICH)

    def bare() -> None:
        with tracer.start_as_current_span("x"):
            pass

    def tc_simple_new() -> None:
        with track_context(user_id="u"):
            pass

    def tc_rich_new() -> None:
        with track_context(**RICH):
            pass

    def tc_simple() -> None:
        with simple:
            pass

    def tc_rich() -> None:
        with rich:
            pass

    base = "bare span"
    variants = {
        base: bare,
        "track_context(user_id) enter+exit": tc_simple,
        "track_context(rich) enter+exit": tc_rich,
        "track_context(user_id) create+enter+exit": tc_simple_new,
        "track_context(rich) create+enter+exit": tc_rich_new,
    }
    comp = measure(
        [Variant(k, loop(v)) for k, v in variants.items()],
        repetitions=settings.repetitions,
        batch_seconds=settings.batch_seconds,
    )
    what = "track_context vs bare span"
    lines = [line(comp, "1", what, base, label="bare span: `tracer.start_as_current_span`")]
    for name in list(variants)[1:]:
        lines.append(line(comp, "1", what, name, base, target=TARGET_SCOPE))
    return lines


def row_track(tracer: Tracer, settings: Settings) -> List[Line]:
    """Row 2: an ``@track`` call vs the plain function and vs one that opens a bare span."""

    def plain(x: int) -> int:
        return x

    def spanned(x: int) -> int:
        with tracer.start_as_current_span("answer"):
            return x

    @track(use_case_step="answer", limit_ids=["per_feature"])
    def tracked(x: int) -> int:
        return x

    names = ("plain function", "function opening a bare span", "@track function")
    funcs: Tuple[Callable[[int], int], ...] = (plain, spanned, tracked)
    comp = measure(
        [Variant(n, loop(lambda f=f: f(1))) for n, f in zip(names, funcs)],  # type: ignore[misc]
        repetitions=settings.repetitions,
        batch_seconds=settings.batch_seconds,
    )
    what = "@track call"
    return [
        line(comp, "2", what, names[0]),
        line(comp, "2", what, names[1], names[0]),
        line(comp, "2", what, names[2], names[0],
             label="`@track(use_case_step, limit_ids)` function"),
        line(comp, "2", what, names[2], names[1],
             label="`@track(use_case_step, limit_ids)` function"),
    ]


def _nesting(depth: int) -> List[Callable[[Callable[[], int]], int]]:
    """``depth`` scopes, alternating ``track_context`` and ``@track`` (outermost first), each
    with its own parameters of constant size, as ``enter(next)`` callables."""
    scopes: List[Callable[[Callable[[], int]], int]] = []
    for i in range(depth):
        if i % 2 == 0:
            context = track_context(user_id=f"user{i}", request_properties={"depth": str(i)})

            def enter_context(nxt: Callable[[], int], cm: track_context = context) -> int:
                with cm:
                    return nxt()

            scopes.append(enter_context)
        else:

            @track(use_case_step=f"step{i}", limit_ids=["per_feature"])
            def enter_track(nxt: Callable[[], int]) -> int:
                return nxt()

            scopes.append(enter_track)
    return scopes


def nested(depth: int, run: Callable[[int], int]) -> Callable[[int], int]:
    """A batch runner that enters ``depth`` scopes (untimed), then runs ``run`` inside."""
    scopes = _nesting(depth)

    def run_nested(n: int) -> int:
        def enter(i: int) -> int:
            if i == depth:
                return run(n)
            return scopes[i](lambda: enter(i + 1))

        return enter(0)

    return run_nested


def _check_nesting(depth: int) -> None:
    """The nesting does what it says: the innermost ``track_context`` wins ``user_id``."""
    seen: Dict[str, object] = {}

    def probe(n: int) -> int:
        seen.update(get_context())
        return 0

    nested(depth, probe)(1)
    expected = f"user{(depth - 1) // 2 * 2}"
    if seen.get("user_id") != expected:
        raise RuntimeError(f"nesting {depth}: user_id {seen.get('user_id')!r} != {expected!r}")


DEPTHS = (1, 8, 64)


def row_depth(client: openai.OpenAI, settings: Settings) -> List[Line]:
    """Row 3: header resolution and ``get_context()`` at nesting depth 1, 8 and 64."""
    sdk = hooks._Sdk("openai")
    plain_args, plain_kwargs = capture_request(client)
    call_args, call_kwargs = capture_request(client, {"x-payi-user-id": "per-call-user"})
    for depth in DEPTHS:
        _check_nesting(depth)

    def prepare() -> object:
        return hooks._prepare(sdk, client, plain_args, plain_kwargs)

    def prepare_with_header() -> object:
        return hooks._prepare(sdk, client, call_args, call_kwargs)

    operations = {
        "hook `_prepare` (no per-call x-payi header)": prepare,
        "hook `_prepare` (per-call `x-payi-user-id`)": prepare_with_header,
        "`get_context()`": get_context,
    }
    lines: List[Line] = []
    for op_name, op in operations.items():
        variants = [Variant(f"depth {d}", nested(d, loop(op))) for d in DEPTHS]
        comp = measure(
            variants, repetitions=settings.repetitions, batch_seconds=settings.batch_seconds
        )
        what = f"{op_name} by depth"
        lines.append(line(comp, "3", what, "depth 1"))
        for depth in DEPTHS[1:]:
            lines.append(
                line(comp, "3", what, f"depth {depth}", "depth 1",
                     target=TARGET_DEPTH if depth == DEPTHS[-1] else None)
            )
    return lines


def chat_runner(
    client: openai.OpenAI, server: Any, instrumentation: Instrumentation, mode: str
) -> Callable[[int], int]:
    """A batch of ``n`` chat completions in ``mode``, inside a ``track_context``."""

    def call() -> object:
        return client.chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]

    timed = loop(call)

    def run(n: int) -> int:
        instrumentation.set(mode)
        server.reset()
        with track_context(user_id="u", limit_ids=["chat"]):
            for _ in range(3):  # untimed: first calls after (un)instrumenting
                call()
            return timed(n)

    return run


def row_chat(
    client: openai.OpenAI, server: Any, instrumentation: Instrumentation, settings: Settings
) -> List[Line]:
    """Row 4: a chat completion, instrumented vs uninstrumented, with and without openai-v2."""
    modes = (OFF, PAYI, PAYI_GENAI)
    comp = measure(
        [Variant(m, chat_runner(client, server, instrumentation, m)) for m in modes],
        repetitions=settings.chat_repetitions,
        batch_seconds=settings.chat_batch_seconds,
    )
    what = "chat completion, loopback fake server"
    return [
        line(comp, "4", what, OFF),
        line(comp, "4", what, PAYI, OFF, target=TARGET_CHAT),
        line(comp, "4", what, PAYI_GENAI, OFF),
        line(comp, "4", what, PAYI_GENAI, PAYI, label="openai-v2's own share"),
    ]


def row_get_context(settings: Settings) -> List[Line]:
    """Row 5: ``get_context()`` alone, at the global level and inside one scope."""
    global_only = "no scope (global level)"
    in_scope = "inside `track_context(user_id)`"
    comp = measure(
        [
            Variant(global_only, loop(get_context)),
            Variant(in_scope, nested(1, loop(get_context))),
        ],
        repetitions=settings.repetitions,
        batch_seconds=settings.batch_seconds,
    )
    what = "`get_context()`"
    return [line(comp, "5", what, global_only), line(comp, "5", what, in_scope)]


# ------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------


@contextmanager
def fake_server() -> Iterator[Any]:
    server = start_fake_server()
    try:
        yield server
    finally:
        server.stop()


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer, shorter batches (smoke)")
    parser.add_argument("--no-profile", action="store_true", help="no profile on a FAIL")
    parser.add_argument("--profile", action="store_true", help="profile even if all pass")
    parser.add_argument("--output", type=Path, default=RESULTS, help="Markdown results file")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    return parser.parse_args(argv)


METHOD = """\
Method: one process; every comparison interleaves its variants over {reps} repetitions
(chat: {chat_reps}), rotating their order, batches of ~{batch:g} s (chat: ~{chat_batch:g} s) per
variant; µs/op is the median over repetitions, the ratio is the median of the per-repetition
(paired) ratios, with its min-max over repetitions; Δ is the median paired difference. Spans
go to one SDK TracerProvider with a SimpleSpanProcessor and an exporter that drops them.
Rows 1-3 and 5 run with payi_otel instrumented (`genai_spans=False`, global config
`{config}`); row 3 nests alternating `track_context` / `@track` scopes; row 4 calls
`OpenAI(max_retries=0).chat.completions.create` against examples/fake_llm_server.py on
127.0.0.1 inside a `track_context`, uninstrumented via `PayiInstrumentor().uninstrument()`.
The depth target (flat: ≤ {depth}x) is this script's tolerance for noise, not the brief's.
"""


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    settings = (
        Settings(repetitions=3, batch_seconds=0.02, chat_repetitions=3, chat_batch_seconds=0.2)
        if args.quick
        else Settings(repetitions=7, batch_seconds=0.1, chat_repetitions=15,
                      chat_batch_seconds=1.0)
    )
    machine = describe()
    print(f"machine: {machine}", flush=True)
    provider = make_provider()
    tracer = provider.get_tracer("bench")
    instrumentation = Instrumentation(provider)
    lines: List[Line] = []
    with fake_server() as server:
        client = openai.OpenAI(base_url=server.openai_base_url, api_key="x", max_retries=0)
        try:
            instrumentation.set(PAYI)
            for label, job in (
                ("1 track_context", lambda: row_scopes(tracer, settings)),
                ("2 @track", lambda: row_track(tracer, settings)),
                ("3 depth", lambda: row_depth(client, settings)),
                ("5 get_context", lambda: row_get_context(settings)),
                ("4 chat", lambda: row_chat(client, server, instrumentation, settings)),
            ):
                print(f"running row {label} ...", flush=True)
                instrumentation.set(PAYI)
                lines.extend(job())
            lines.sort(key=lambda item: item.row)
            table = render(lines)
            print()
            print(table)
            failed = [item for item in lines if item.verdict == "FAIL"]
            profiles: List[str] = []
            if (failed or args.profile) and not args.no_profile:
                rows = {item.row for item in failed} if not args.profile else {"1", "2", "4"}
                print("profiling ...", flush=True)
                if rows & {"1", "2"}:
                    instrumentation.set(PAYI)
                    profiles.append(profile_scopes(tracer, {"user_id": "u"}, "user_id='u'"))
                    profiles.append(profile_scopes(tracer, RICH, "**RICH"))
                if "4" in rows:
                    profiles.append(
                        profile_chat(
                            lambda: client.chat.completions.create(
                                model=MODEL, messages=MESSAGES  # type: ignore[arg-type]
                            ),
                            lambda mode: instrumentation.set(PAYI if mode else OFF),
                        )
                    )
                for text in profiles:
                    print(text)
        finally:
            instrumentation.set(OFF)
    method = METHOD.format(
        reps=settings.repetitions,
        chat_reps=settings.chat_repetitions,
        batch=settings.batch_seconds,
        chat_batch=settings.chat_batch_seconds,
        config=dict(GLOBAL_CONFIG),
        depth=TARGET_DEPTH,
    )
    document = (
        "# payi_otel benchmarks\n\n"
        f"Machine: {machine}\n\n"
        f"{method}\n"
        f"{table}\n"
        + ("\n## Profile of the missed targets\n\n" + "\n\n".join(profiles) if profiles else "")
    )
    args.output.write_text(document, encoding="utf-8")
    print(f"written to {args.output}")
    return 1 if failed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())

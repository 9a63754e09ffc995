"""payi_otel micro- and macro-benchmarks: ``make bench`` (or ``python benchmarks/run.py``).

Everything runs in one process, so every figure is a ratio of variants measured side by side
in the same run: each comparison interleaves its variants over several repetitions and reports
medians (see ``bench_timing``). The rows:

1. ``track_context`` enter+exit vs a bare OpenTelemetry span of the same tracer provider.
2. An ``@track`` call vs the undecorated function, and vs a function opening a bare span.
3. The request hook's header resolution, and ``get_context()``, at scope nesting depth 1, 8
   and 64 (must not grow with depth).
4. A chat completion against the local fake server: uninstrumented, instrumented by
   payi_otel alone (``genai_spans=False``), and with openai-v2 GenAI spans too; and an
   uninstrumented client sending the same ``x-payi-*`` headers statically (the cost of the
   header bytes). 4b: the same with an in-process mock transport (client CPU only).
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
import statistics
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import httpx2
import openai
from bench_machine import describe
from bench_profile import hook_breakdown, profile_chat, profile_scopes, scope_breakdown
from bench_timing import Comparison, Variant, loop, measure
from openai import _base_client as openai_base_client
from opentelemetry import context as otel_context
from opentelemetry.instrumentation.genai.openai import OpenAIInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Tracer

from payi_otel import PayiInstrumentor, get_context, hooks, track, track_context
from payi_otel import state as payi_state
from payi_otel.parameters import validate_params

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
OFF_HEADERS = "uninstrumented, same x-payi-* headers as static default_headers"
V2_ONLY = "openai-v2 alone (no payi_otel)"

#: The scope every chat completion of row 4 runs in.
CHAT_SCOPE: Mapping[str, Any] = {"user_id": "u", "limit_ids": ["chat"]}


class Instrumentation:
    """Switches between the modes of the bench: nothing, ``PayiInstrumentor`` (a singleton)
    with or without openai-v2, and openai-v2's ``OpenAIInstrumentor`` alone."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.mode = OFF

    def set(self, mode: str) -> None:
        if mode == self.mode:
            return
        payi = PayiInstrumentor()
        openai_v2 = OpenAIInstrumentor()  # type: ignore[no-untyped-call]
        if payi.is_instrumented_by_opentelemetry:
            payi.uninstrument()
        if openai_v2.is_instrumented_by_opentelemetry:
            openai_v2.uninstrument()
        if mode == V2_ONLY:
            openai_v2.instrument(tracer_provider=self.provider)
        elif mode != OFF:
            payi.instrument(
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
    ``self``): exactly what the request hook receives. ``request`` (instrumented or not) is
    replaced by a recorder for one call and then restored, so nothing is sent."""
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
    ratio_ci: Optional[Tuple[float, float]] = None
    delta_us: Optional[float] = None
    target: Optional[float] = None

    @property
    def passed(self) -> Optional[bool]:
        if self.target is None or self.ratio is None:
            return None
        return self.ratio <= self.target

    @property
    def uncertain(self) -> bool:
        """Whether the target lies inside the ratio's confidence interval."""
        if self.ratio_ci is None or self.target is None:
            return False
        low, high = self.ratio_ci
        return low <= self.target <= high

    @property
    def verdict(self) -> str:
        if self.passed is None:
            return ""
        verdict = "PASS" if self.passed else "FAIL"
        return verdict + (" (CI spans target)" if self.uncertain else "")


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
        result.versus = baseline
        result.ratio = comp.ratio(name, baseline)
        result.ratio_ci = comp.ratio_ci(name, baseline)
        result.delta_us = comp.delta_us(name, baseline)
    return result


def _us(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}" if value < 1000 else f"{value:.0f}"


def render(lines: Sequence[Line]) -> str:
    header = (
        "| # | measurement | variant | median µs/op | vs | ratio [95% CI] | Δ µs/op "
        "| target | result |\n|---|---|---|---:|---|---:|---:|---:|---|\n"
    )
    rows = []
    for item in lines:
        ratio = ""
        if item.ratio is not None and item.ratio_ci is not None:
            low, high = item.ratio_ci
            ratio = f"{item.ratio:.3f}x [{low:.3f}-{high:.3f}]"
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

    attributes = scope_attributes({"user_id": "u"})

    def bare_with_attributes() -> None:
        with tracer.start_as_current_span("x", attributes=attributes):
            pass

    base = "bare span"
    same_attributes = "bare span with the same payi.* attributes as track_context(user_id)"
    variants = {
        base: bare,
        same_attributes: bare_with_attributes,
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
    lines = [
        line(comp, "1", what, base, label="bare span: `tracer.start_as_current_span`"),
        line(comp, "1", what, same_attributes, base),
    ]
    for name in list(variants)[2:]:
        lines.append(line(comp, "1", what, name, base, target=TARGET_SCOPE))
    lines.append(
        line(comp, "1", what, "track_context(user_id) enter+exit", same_attributes,
             label="(track_context(user_id) enter+exit: payi_otel's work beyond the attributes)")
    )
    return lines


def scope_attributes(params: Mapping[str, Any]) -> Dict[str, Any]:
    """The attributes ``track_context(**params)`` gives its span here (payi_otel internals)."""
    validated = validate_params(dict(params), source="track_context")
    scope_state, _ = payi_state.enter_scope(
        payi_state.TRACK_CONTEXT, validated, otel_context.get_current()
    )
    attributes: Dict[str, Any] = dict(scope_state.effective.attributes())
    attributes["payi.scope"] = payi_state.TRACK_CONTEXT
    return attributes


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
    """``depth`` scopes, alternating ``track_context`` and ``@track`` (outermost first), as
    ``enter(next)`` callables. Every scope sets the same four parameters (its own values), so
    the effective parameters have the same shape and size at every depth: only depth varies."""
    scopes: List[Callable[[Callable[[], int]], int]] = []
    for i in range(depth):
        params: Dict[str, Any] = {
            "use_case_step": f"step{i}",
            "user_id": f"user{i}",
            "limit_ids": ["per_feature"],
            "request_properties": {"depth": str(i)},
        }
        if i % 2 == 0:
            context = track_context(**params)

            def enter_context(nxt: Callable[[], int], cm: track_context = context) -> int:
                with cm:
                    return nxt()

            scopes.append(enter_context)
        else:

            @track(**params)
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
    """The nesting does what it says: the innermost ``track_context`` wins ``user_id`` (by
    method first: every ``track_context`` ranks above every ``@track``)."""
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
    client: openai.OpenAI,
    reset: Callable[[], None],
    instrumentation: Instrumentation,
    mode: str,
    call_medians: List[float],
) -> Callable[[int], int]:
    """A batch of ``n`` chat completions with ``client`` in ``mode``, in a ``track_context``.

    Returns the batch's total time; also appends the median time of one call in the batch to
    ``call_medians`` (a figure that a burst of other load on the machine barely moves).
    """

    def run(n: int) -> int:
        instrumentation.set(mode)
        reset()
        create = client.chat.completions.create
        durations = [0] * n
        clock = time.perf_counter_ns
        with track_context(**CHAT_SCOPE):
            for _ in range(3):  # untimed: first calls after (un)instrumenting
                create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
            for i in range(n):
                start = clock()
                create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
                durations[i] = clock() - start
        call_medians.append(statistics.median(durations))
        return sum(durations)

    return run


def sent_payi_headers(
    client: openai.OpenAI, server: Any, instrumentation: Instrumentation
) -> Dict[str, str]:
    """The ``x-payi-*`` headers an instrumented chat completion sends in ``CHAT_SCOPE``."""
    instrumentation.set(PAYI)
    server.reset()
    with track_context(**CHAT_SCOPE):
        client.chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    sent = server.requests[-1].headers
    return {k: v for k, v in sent.items() if k.startswith("x-payi-")}


def mock_client(server: Any, **options: Any) -> openai.OpenAI:
    """An ``OpenAI`` client whose transport answers in-process (``httpx2.MockTransport``) with
    a chat completion recorded once from the fake server: the client's whole code path runs,
    but no socket and no server thread."""
    recorder = openai.OpenAI(base_url=server.openai_base_url, api_key="x", max_retries=0)
    raw = recorder.chat.completions.with_raw_response.create(
        model=MODEL, messages=MESSAGES  # type: ignore[arg-type]
    )
    body = raw.http_response.content
    recorder.close()

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=body, headers={"content-type": "application/json"})

    return openai.OpenAI(
        base_url="http://mock.invalid/v1", api_key="x", max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(answer)), **options,
    )


def chat_comparison(
    row: str,
    where: str,
    client: openai.OpenAI,
    static: openai.OpenAI,
    reset: Callable[[], None],
    instrumentation: Instrumentation,
    settings: Settings,
    target: Optional[float],
) -> List[Line]:
    """Chat completions with ``client`` uninstrumented, with payi_otel, with openai-v2 alone,
    with payi_otel and openai-v2, and with ``static`` (a client sending the same ``x-payi-*``
    headers as static default headers) uninstrumented, to separate the cost of the header
    bytes from payi_otel's own work, and payi_otel's from openai-v2's."""
    modes = {
        OFF: client, OFF_HEADERS: static, PAYI: client, V2_ONLY: client, PAYI_GENAI: client,
    }
    medians: Dict[str, List[float]] = {name: [] for name in modes}
    variants = [
        Variant(name, chat_runner(c, reset, instrumentation, OFF if c is static else name,
                                  medians[name]))
        for name, c in modes.items()
    ]
    comp = measure(
        variants,
        repetitions=settings.chat_repetitions,
        batch_seconds=settings.chat_batch_seconds,
    )
    # The last ``repetitions`` batches of each variant are the timed ones (calibration and
    # warm-up batches come first), in the same order as ``comp``'s samples.
    by_call = Comparison(
        comp.n, {name: values[-settings.chat_repetitions:] for name, values in medians.items()}
    )
    what = f"chat completion, {where}: mean per call"
    lines = [
        line(comp, row, what, OFF),
        line(comp, row, what, PAYI, OFF, target=target),
        line(comp, row, what, OFF_HEADERS, OFF, label=f"({OFF_HEADERS}: header bytes)"),
        line(comp, row, what, PAYI, OFF_HEADERS, label=f"({PAYI}: payi_otel's own work)"),
        line(comp, row, what, V2_ONLY, OFF),
        line(comp, row, what, PAYI_GENAI, OFF),
        line(comp, row, what, PAYI_GENAI, V2_ONLY,
             label=f"({PAYI_GENAI}: payi_otel's cost with openai-v2 present)"),
    ]
    what = f"chat completion, {where}: median call"
    lines += [
        line(by_call, row, what, PAYI, OFF, target=target),
        line(by_call, row, what, PAYI, OFF_HEADERS, label=f"({PAYI}: payi_otel's own work)"),
        line(by_call, row, what, PAYI_GENAI, V2_ONLY,
             label=f"({PAYI_GENAI}: payi_otel's cost with openai-v2 present)"),
    ]
    return lines


def row_chat(
    client: openai.OpenAI, server: Any, instrumentation: Instrumentation, settings: Settings
) -> Tuple[List[Line], Dict[str, str]]:
    """Row 4: a chat completion against the loopback fake server, instrumented vs
    uninstrumented, with and without openai-v2. Row 4b: the same with an in-process mock
    transport (the client's CPU time only: no socket, no server thread, less noise)."""
    payi_headers = sent_payi_headers(client, server, instrumentation)
    instrumentation.set(OFF)
    static = openai.OpenAI(
        base_url=server.openai_base_url, api_key="x", max_retries=0,
        default_headers=payi_headers,
    )
    lines = chat_comparison(
        "4", "loopback fake server", client, static, server.reset, instrumentation, settings,
        TARGET_CHAT,
    )
    static.close()
    mocked, mocked_static = mock_client(server), mock_client(server, default_headers=payi_headers)
    lines += chat_comparison(
        "4b", "in-process mock transport", mocked, mocked_static, lambda: None,
        instrumentation, settings, None,
    )
    mocked.close()
    mocked_static.close()
    return lines, payi_headers


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
Method:

- One process. Every comparison interleaves its variants over {reps} repetitions (chat:
  {chat_reps}), rotating their order and the Python stack depth; batches of ~{batch:g} s
  (chat: ~{chat_batch:g} s) per variant.
- µs/op is the median over repetitions. The ratio is the median of the per-repetition (paired)
  ratios, with a distribution-free 95% confidence interval of that median (order statistics);
  Δ is the median paired difference. When the machine's speed drifts, the unpaired µs/op
  medians of two variants can disagree with their paired ratio: trust the ratio.
- Spans go to one SDK TracerProvider with a SimpleSpanProcessor and an exporter that drops
  them. Rows 1-3 and 5 run with payi_otel instrumented (`genai_spans=False`, global config
  `{config}`).
- Row 3 nests alternating `track_context` / `@track` scopes (each setting the same four
  parameters) and times `payi_otel.hooks._prepare` on the arguments a real
  `chat.completions.create` passes to `SyncAPIClient.request`.
- Row 4 calls `OpenAI(max_retries=0).chat.completions.create` against
  examples/fake_llm_server.py on 127.0.0.1 inside `track_context({chat_scope})`, which sends
  {headers}. Uninstrumented is `PayiInstrumentor().uninstrument()` in the same process
  (switching costs < 2 ms, untimed, so the modes alternate every few dozen calls). Row 4b does
  the same through an in-process `httpx2.MockTransport` (no socket, no server thread).
- Rows 4 and 4b give the mean per call of each batch, and for the key ratios also the median
  single call of each batch (which a burst of other load on the machine barely moves); both
  are then medians over the batches. "openai-v2 alone" is `OpenAIInstrumentor().instrument()`
  on the same provider without payi_otel.
- The depth target (flat: ≤ {depth}x) is this script's tolerance for noise, not the brief's.
  The machine is shared (other processes ran during the run); a verdict whose confidence
  interval contains the target is marked.
"""


def run_rows(
    settings: Settings, server: Any, provider: TracerProvider, instrumentation: Instrumentation
) -> Tuple[List[Line], Dict[str, str]]:
    tracer = provider.get_tracer("bench")
    client = openai.OpenAI(base_url=server.openai_base_url, api_key="x", max_retries=0)
    lines: List[Line] = []
    started = time.perf_counter()
    jobs: Tuple[Tuple[str, Callable[[], List[Line]]], ...] = (
        ("1 track_context", lambda: row_scopes(tracer, settings)),
        ("2 @track", lambda: row_track(tracer, settings)),
        ("3 depth", lambda: row_depth(client, settings)),
        ("5 get_context", lambda: row_get_context(settings)),
    )
    for label, job in jobs:
        print(f"[{time.perf_counter() - started:5.1f} s] row {label} ...", flush=True)
        instrumentation.set(PAYI)
        lines.extend(job())
    print(f"[{time.perf_counter() - started:5.1f} s] rows 4, 4b chat ...", flush=True)
    chat_lines, payi_headers = row_chat(client, server, instrumentation, settings)
    lines.extend(chat_lines)
    lines.sort(key=lambda item: item.row)
    print(f"[{time.perf_counter() - started:5.1f} s] done", flush=True)
    return lines, payi_headers


def run_profiles(
    rows: Sequence[str], server: Any, provider: TracerProvider, instrumentation: Instrumentation
) -> List[str]:
    """Profiles (and piece-by-piece timings) of the paths behind ``rows``."""
    tracer = provider.get_tracer("bench")
    client = openai.OpenAI(base_url=server.openai_base_url, api_key="x", max_retries=0)
    profiles: List[str] = []
    if {"1", "2"} & set(rows):
        instrumentation.set(PAYI)
        for params, label in (({"user_id": "u"}, "user_id='u'"), (RICH, "**RICH")):
            profiles.append(scope_breakdown(tracer, params, label))
            profiles.append(profile_scopes(tracer, params, label))
    if {"4", "4b"} & set(rows):
        instrumentation.set(PAYI)
        plain = capture_request(client)
        with_header = capture_request(client, {"x-payi-user-id": "per-call-user"})
        mocked = mock_client(server)
        profiles.append(
            hook_breakdown(
                client, plain, with_header, CHAT_SCOPE,
                lambda: mocked.chat.completions.create(
                    model=MODEL, messages=MESSAGES  # type: ignore[arg-type]
                ),
            )
        )
        profiles.append(
            profile_chat(
                lambda: mocked.chat.completions.create(
                    model=MODEL, messages=MESSAGES  # type: ignore[arg-type]
                ),
                lambda on: instrumentation.set(PAYI if on else OFF),
            )
        )
    return profiles


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    settings = (
        Settings(repetitions=3, batch_seconds=0.02, chat_repetitions=3, chat_batch_seconds=0.1)
        if args.quick
        else Settings(repetitions=31, batch_seconds=0.03, chat_repetitions=61,
                      chat_batch_seconds=0.05)
    )
    machine = describe(ROOT)
    print(f"machine: {machine}", flush=True)
    provider = make_provider()
    instrumentation = Instrumentation(provider)
    profiles: List[str] = []
    with fake_server() as server:
        try:
            lines, payi_headers = run_rows(settings, server, provider, instrumentation)
            table = render(lines)
            print()
            print(table)
            failed = sorted({item.row for item in lines if item.passed is False})
            uncertain = sorted({item.row for item in lines if item.uncertain})
            if args.profile or ((failed or uncertain) and not args.no_profile):
                print("profiling ...", flush=True)
                rows = ["1", "2", "4"] if args.profile else sorted({*failed, *uncertain})
                profiles = run_profiles(rows, server, provider, instrumentation)
                for text in profiles:
                    print(text)
                    print()
        finally:
            instrumentation.set(OFF)
    method = METHOD.format(
        reps=settings.repetitions,
        chat_reps=settings.chat_repetitions,
        batch=settings.batch_seconds,
        chat_batch=settings.chat_batch_seconds,
        config=dict(GLOBAL_CONFIG),
        chat_scope=", ".join(f"{k}={v!r}" for k, v in CHAT_SCOPE.items()),
        headers=", ".join(f"`{k}`" for k in payi_headers) or "no x-payi-* header",
        depth=TARGET_DEPTH,
    )
    document = f"# payi_otel benchmarks\n\nMachine: {machine}\n\n{method}\n{table}"
    if profiles:
        document += "\n## Where the time goes (missed targets)\n\n" + "\n\n".join(profiles)
        document += "\n"
    args.output.write_text(document, encoding="utf-8")
    print(f"written to {args.output}")
    return 1 if failed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())

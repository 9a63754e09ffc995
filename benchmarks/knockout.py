"""Pieces of the per-call path knocked out, timed paired in one process: ``python
benchmarks/knockout.py [VARIANT ...] [--reps N] [--quick]`` (docs/performance.md, "Seventh
round").

A diagnostic, not a benchmark of anything shipped: each variant is a mode of
``run.set_mode`` (``hook``, ``spans``, ``default``) with pieces of payi_otel's per-call path
replaced by no-ops or constants (``KNOCKOUTS``), joined by ``+`` after a ``-``: ``spans-nosee``,
``hook-noapply+minstamp``. They run interleaved with the uninstrumented call (the cost rows'
chat completion: in-process transport, one user's scope, 8 scopes deep), the median of the
paired ratios with its 95% interval, as ``make bench`` reports. A variant named twice
(``spans spans-x``: an unknown knock-out changes nothing) shows the noise between identical
variants in one process. What a knocked-out variant sends or records is wrong on purpose:
only its time means something.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run
from fake_llm_server import FakeLLMServer


def _knockouts() -> Dict[str, Callable[[], Callable[[], None]]]:
    """Name -> a function that knocks the piece out and returns its undo."""
    from payi_otel import _cost
    from payi_otel._providers import _core, _stainless
    from payi_otel._providers._base import Usage

    def replace(owner: Any, name: str, value: Any) -> Callable[[], None]:
        saved = owner.__dict__[name]
        setattr(owner, name, value)
        return lambda: setattr(owner, name, saved)

    def minimal_stamp(self: Any, instance: Any, args: Any, kwargs: Any, headers: Any) -> Any:
        options = args[1].model_copy()  # the floor's stamp: copy the options, set the headers
        options.headers = dict(headers)
        return (args[0], options, *args[2:]), kwargs

    usage = Usage(1, 3, 0, None, 0)
    return {
        "noapply": lambda: replace(_core, "apply_call_attributes", lambda span, call: None),
        "minstamp": lambda: replace(_stainless.StainlessProvider, "stamp", minimal_stamp),
        "nocost": lambda: replace(_cost.CostObserver, "__call__", lambda self, record: None),
        "nofinish": lambda: replace(_core._Observation, "finish", lambda self, e=None: None),
        "nosee": lambda: replace(_core._Observation, "see", lambda self, item: None),
        "nousage": lambda: replace(_stainless.StainlessProvider, "usage", lambda self, item: usage),
        "nomodel": lambda: replace(
            _stainless.StainlessProvider, "response_model", lambda self, item: "gpt-4o-mini"
        ),
    }


#: What each knock-out replaces.
KNOCKOUTS = {
    "noapply": "apply_call_attributes a no-op (no payi.* attributes on the current span)",
    "minstamp": "the stamp of the floor of a request hook (copy the options, set the headers)",
    "nocost": "the cost observer a no-op",
    "nofinish": "no record, no observers (_Observation.finish a no-op)",
    "nosee": "nothing read from the response (no usage: the observer returns early)",
    "nousage": "the usage read as a constant",
    "nomodel": "the response model read as a constant",
}

_undo: List[Callable[[], None]] = []


def set_mode(mode: str) -> None:
    """``run.set_mode`` for ``<mode>[-<knock-out>[+<knock-out>...]]``."""
    while _undo:
        _undo.pop()()
    base, _, pieces = mode.partition("-")
    _set_mode(base)
    knock = _knockouts()
    for piece in filter(None, pieces.split("+")):
        if piece in knock:
            _undo.append(knock[piece]())
    # The mode in force is this one, knock-outs and all: ``compare`` switches (and this undoes
    # them) before a variant of any other name - "spans" right after "spans-nosee" too.
    run._mode[0] = mode


_set_mode = run.set_mode


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "variants",
        nargs="*",
        default=["hook", "hook-noapply", "hook-minstamp", "spans", "spans-nosee"],
        help="modes with knock-outs: " + ", ".join(KNOCKOUTS),
    )
    parser.add_argument("--reps", type=int, default=31, help="paired repetitions")
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    args = parser.parse_args(argv)
    reps, batch = (3, 0.002) if args.quick else (args.reps, 0.04)
    run.set_mode = set_mode  # compare() switches modes through it
    try:
        with FakeLLMServer() as server:
            body, headers = run.recorded(server)
        rows = run.compare(
            "knock-outs (one user's scope, 8 scopes deep, in-process)",
            [
                run.Variant(
                    "uninstrumented", run.chat_calls(run.in_process(body, headers), False), "off"
                )
            ]
            + [
                run.Variant(v, run.chat_calls(run.in_process(body, {}), False), v)
                for v in args.variants
            ],
            reps,
            batch,
        )
    finally:
        set_mode("off")
        run.set_mode = _set_mode
    print(run.table(rows))


if __name__ == "__main__":
    main()

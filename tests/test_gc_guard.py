"""A collection inside ``ContextVar.set`` whose finalizers set variables (python/cpython#148891).

CPython up to 3.11 collects inside allocations: a finalizer that sets a ContextVar while the
program's own set is building the next mapping frees what that set reads. The scripts below
run in a subprocess (a crash is a segfault) with the collector at threshold 1, so that it runs
inside nearly every set. See ``payi_otel._gc_guard``.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from opentelemetry import context as otel_context

from payi_otel import _gc_guard, get_context, track_context

pytestmark = pytest.mark.skipif(
    not _gc_guard.NEEDED, reason="from 3.12 the collector never runs inside ContextVar.set"
)

# A finalizer that sets a variable in the current Context, run by collections that nearly
# always interrupt the loop's own set of a deep (multi-level) mapping.
_REENTRANT_SET = """
import contextvars, gc, sys
from opentelemetry.sdk.trace import TracerProvider
from payi_otel import _gc_guard, payi_instrument
payi_instrument(tracer_provider=TracerProvider())
gc.freeze()  # what the imports made: each collection walks only the loop's objects
if sys.argv[1] == "unguarded":
    _gc_guard._remove()
victim = contextvars.ContextVar("victim")
pads = [contextvars.ContextVar(f"pad{i}") for i in range(40)]
for pad in pads:
    pad.set(object())
class Cycle:
    def __init__(self):
        self.me = self
    def __del__(self):
        victim.set(object())
gc.set_threshold(1)
for i in range(100_000):
    Cycle()
    pads[i % 40].set(i)
    victim.get(None)
print("survived")
"""

# The same with payi_otel's own finalizers: generators abandoned inside their scope, each in
# a reference cycle, so the collector leaves the scope (and detaches its context).
_ABANDONED_SCOPES = """
import contextvars, gc, sys
from opentelemetry.sdk.trace import TracerProvider
from payi_otel import get_context, payi_instrument, track_context
payi_instrument(tracer_provider=TracerProvider())
gc.freeze()  # what the imports made: each collection walks only the loop's objects
pads = [contextvars.ContextVar(f"pad{i}") for i in range(40)]
for pad in pads:
    pad.set(object())
def step(user):
    with track_context(user_id=user):
        yield
class Abandoned:
    def __init__(self, user):
        self.me = self
        self.steps = step(user)
        next(self.steps)
gc.set_threshold(1)
for i in range(200):
    Abandoned(f"u{i}")
    pads[i % 40].set(i)
gc.set_threshold(700)
gc.collect()
print(get_context().get("user_id"))
"""


def _start(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return _finish(_start(script, *args))


def _finish(process: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_a_finalizer_setting_a_variable_inside_a_set_does_not_crash_the_program() -> None:
    # With the guard, and the same script without it, at once.
    guarded, unguarded = _start(_REENTRANT_SET, "guarded"), _start(_REENTRANT_SET, "unguarded")
    done = _finish(guarded)
    assert (done.returncode, done.stdout.strip(), done.stderr) == (0, "survived", "")
    # Without the guard: the interpreter's own crash, which the guard averts.
    assert _finish(unguarded).returncode != 0


def test_scopes_left_by_the_collector_inside_sets_leave_no_user_behind() -> None:
    result = _run(_ABANDONED_SCOPES)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.strip() == "None"


def test_a_scope_left_by_the_collector_is_gone_even_where_its_detach_is_undone(
    no_global: object,
) -> None:
    """What a finalizer sets inside an interrupted ``ContextVar.set`` is undone when that set
    completes: the context from before the collection - which still carries the scope the
    finalizer left - is current again. Stood in for here by attaching it again."""

    def step() -> Iterator[None]:
        with track_context(user_id="abandoned"):
            yield

    class Abandoned:
        def __init__(self) -> None:
            self.me = self
            self.steps = step()
            next(self.steps)

    Abandoned()
    carried = otel_context.get_current()  # the generator's scope, left attached here
    assert get_context()["user_id"] == "abandoned"
    gc.collect()  # the collector closes the generator: the scope leaves
    assert "user_id" not in get_context()
    token = otel_context.attach(carried)  # as if the scope's detach had been undone
    try:
        assert "user_id" not in get_context()
    finally:
        otel_context.detach(token)


def test_in_collection_is_true_only_in_a_collection_on_this_thread(no_global: object) -> None:
    seen: list[bool] = []

    class Cycle:
        def __init__(self) -> None:
            self.me = self

        def __del__(self) -> None:
            seen.append(_gc_guard.in_collection())

    Cycle()
    gc.collect()
    assert seen == [True]
    assert not _gc_guard.in_collection()

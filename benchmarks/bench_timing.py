"""Interleaved, paired timing for the benchmarks in ``run.py``.

Every comparison is a set of *variants* measured in the same process, in the same run. One
*repetition* runs a batch of ``n`` operations of every variant, one after the other, in an
order that rotates from repetition to repetition (so no variant always runs first, or always
right after another). A batch is timed as a whole with ``time.perf_counter_ns``; its time per
operation is one sample. The figure reported for a variant is the median of its samples, and
the ratio of two variants is the median of their per-repetition ratios (paired, so drift of the
shared machine between repetitions cancels out).

Each repetition also runs at a different Python stack depth (``STACK_OFFSETS`` extra frames,
the same for every variant of that repetition). CPython keeps frames in 16 KiB chunks and,
until python/cpython#142183 is fixed in the version at hand (it is not in 3.11), allocates and
frees a chunk on *every* call that straddles a chunk boundary, which adds several microseconds
to each call of a loop that happens to run at exactly such a depth (row 3's deep nesting hit
it). Rotating the depth confines that artefact to one or two repetitions, which medians ignore.

The garbage collector stays enabled while timing (allocation-heavy code pays for its own
collections, as it would in production); a collection runs before every batch so that no batch
inherits another's garbage. Each comparison first moves every object alive at its start
(modules, the SDKs) to the permanent generation (``gc.freeze``): those collections then cost
microseconds instead of ~50 ms, and no batch pays for scanning the libraries' objects.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

__all__ = ["STACK_OFFSETS", "Comparison", "Variant", "loop", "measure"]

#: Extra stack frames under the batch, by repetition (cycled). 19 small frames are about
#: 2.3 KiB, so seven offsets span most of a 16 KiB chunk and at most one or two of them put a
#: given call chain across a chunk boundary.
STACK_OFFSETS = (0, 19, 38, 57, 76, 95, 114)

#: ``run(n)`` performs ``n`` operations and returns the nanoseconds they took. Anything it
#: does outside its own timed region (set-up, tear-down) is not counted.
BatchRunner = Callable[[int], int]


def loop(op: Callable[[], object]) -> BatchRunner:
    """A batch runner that calls ``op()`` ``n`` times inside one timed region."""

    def run(n: int) -> int:
        iterations = range(n)
        start = time.perf_counter_ns()
        for _ in iterations:
            op()
        return time.perf_counter_ns() - start

    return run


@dataclass(frozen=True)
class Variant:
    """One thing to time: a name and its batch runner."""

    name: str
    run: BatchRunner


@dataclass
class Comparison:
    """The samples (ns per operation, one per repetition) of every variant of one comparison."""

    n: int
    samples: Dict[str, List[float]] = field(default_factory=dict)

    def median_ns(self, name: str) -> float:
        return statistics.median(self.samples[name])

    def median_us(self, name: str) -> float:
        return self.median_ns(name) / 1000.0

    def ratios(self, name: str, baseline: str) -> List[float]:
        """Per-repetition ratios ``name / baseline`` (paired samples)."""
        return [a / b for a, b in zip(self.samples[name], self.samples[baseline])]

    def ratio(self, name: str, baseline: str) -> float:
        """The median of the paired per-repetition ratios."""
        return statistics.median(self.ratios(name, baseline))

    def ratio_ci(self, name: str, baseline: str) -> Tuple[float, float]:
        """A distribution-free ~95% confidence interval of the median paired ratio."""
        return median_ci(self.ratios(name, baseline))

    def delta_us(self, name: str, baseline: str) -> float:
        """The median of the paired per-repetition differences, in microseconds."""
        diffs = [a - b for a, b in zip(self.samples[name], self.samples[baseline])]
        return statistics.median(diffs) / 1000.0


def median_ci(values: Sequence[float]) -> Tuple[float, float]:
    """~95% confidence interval of the median of ``values``, from order statistics (the
    binomial ranks ``n/2 -/+ 0.98 sqrt(n)``); with few values it is simply wide."""
    ordered = sorted(values)
    n = len(ordered)
    half_width = 0.98 * math.sqrt(n)
    low = max(1, round(n / 2 - half_width))
    high = min(n, round(1 + n / 2 + half_width))
    return ordered[low - 1], ordered[high - 1]


def _at_stack_offset(frames: int, fn: Callable[[], int]) -> int:
    """``fn()`` called ``frames`` Python frames deeper than here."""
    if frames <= 0:
        return fn()
    return _at_stack_offset(frames - 1, fn)


def _batch(variant: Variant, n: int, offset: int = 0) -> float:
    gc.collect()
    return _at_stack_offset(offset, lambda: variant.run(n)) / n


def calibrate(variants: Sequence[Variant], batch_seconds: float, *, minimum: int = 1) -> int:
    """The ``n`` that makes the slowest variant's batch last about ``batch_seconds``."""
    n = minimum
    while True:
        slowest_ns = max(_batch(v, n) * n for v in variants)
        if slowest_ns >= 0.05e9 or n >= 10_000_000:
            per_op = slowest_ns / n
            return max(minimum, int(batch_seconds * 1e9 / per_op))
        n *= 4


def measure(
    variants: Sequence[Variant],
    *,
    repetitions: int,
    n: Optional[int] = None,
    batch_seconds: float = 0.1,
    warmup: bool = True,
) -> Comparison:
    """Time every variant ``repetitions`` times, interleaved, ``n`` operations per batch.

    Without ``n``, it is calibrated so that the slowest variant's batch lasts about
    ``batch_seconds``. ``warmup`` runs one untimed batch of every variant first.
    """
    gc.collect()
    gc.freeze()
    if n is None:
        n = calibrate(variants, batch_seconds)
    if warmup:
        for variant in variants:
            _batch(variant, max(1, n // 4))
    result = Comparison(n, {v.name: [] for v in variants})
    count = len(variants)
    for rep in range(repetitions):
        shift = rep % count
        order = list(variants[shift:]) + list(variants[:shift])
        if rep % 2:
            order.reverse()
        offset = STACK_OFFSETS[rep % len(STACK_OFFSETS)]
        for variant in order:
            result.samples[variant.name].append(_batch(variant, n, offset))
    return result

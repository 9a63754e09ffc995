"""The usage metrics' two observable counters, made once per ``MeterProvider``.

An OpenTelemetry SDK meter asked again for an instrument it has (same name, same meter) gives
back the one it has, without the new callbacks, and says nothing (opentelemetry-sdk 1.45). A
program that uninstruments and instruments again on the same ``MeterProvider`` (a
configuration reload, a test suite) would register its new sums on nothing: every collection
would read the first instrumentation's sums, frozen, and no later call would reach the
metrics. So each provider's counters are made here once, with callbacks that read every
source of points published on that provider: the sums of earlier instrumentations (kept:
cumulative counters never go down) and the live one's, summed where their attribute sets are
equal. ``_cost.UsageMetrics`` is the source.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Callable, Dict, Iterable, Iterator, List, Protocol, Tuple

from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
from opentelemetry.util.types import AttributeValue

from payi_otel._deferred import flush
from payi_otel.version import __version__

__all__ = ["COST", "TOKENS", "Source", "publish"]

#: Which counter a source is asked for.
TOKENS = "tokens"
COST = "cost"

Points = Iterable[Tuple[float, Dict[str, AttributeValue]]]


class Source(Protocol):
    def points(self, metric: str) -> Points:
        """The cumulative value of each attribute set of ``metric`` (:data:`TOKENS` or
        :data:`COST`), zero values left out."""


class _Counters:
    """One provider's two counters and the sources they report."""

    def __init__(self, provider: MeterProvider, describe: Callable[[str], Dict[str, str]]):
        self.sources: Tuple[Source, ...] = ()
        meter = provider.get_meter("payi_otel", __version__)
        for metric in (TOKENS, COST):
            meter.create_observable_counter(callbacks=[self._callback(metric)], **describe(metric))

    def _callback(self, metric: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterator[Observation]:
            flush()  # the calls whose sums wait (``_deferred``)
            sources = self.sources  # a published tuple: replaced, never changed
            if len(sources) == 1:
                for value, attributes in sources[0].points(metric):
                    yield Observation(value, attributes)
                return
            merged: Dict[Tuple[Any, ...], List[Any]] = {}
            for source in sources:
                for value, attributes in source.points(metric):
                    key = tuple(sorted(attributes.items()))
                    known = merged.get(key)
                    if known is None:
                        merged[key] = [value, attributes]
                    else:
                        known[0] += value
            for value, attributes in merged.values():
                yield Observation(value, attributes)

        return observe


_lock = threading.Lock()
#: Per provider (weakly where it can be), its counters.
_by_provider: weakref.WeakKeyDictionary[Any, _Counters] = weakref.WeakKeyDictionary()
_strong: Dict[int, Tuple[Any, _Counters]] = {}


def publish(
    provider: MeterProvider, source: Source, describe: Callable[[str], Dict[str, str]]
) -> None:
    """Report ``source``'s points on ``provider``'s two counters (made at the first source,
    with ``describe(metric)``: their name, unit and description), beside the earlier ones."""
    with _lock:
        try:
            counters = _by_provider.get(provider)
        except TypeError:  # a provider that cannot be referred to weakly: kept
            found = _strong.get(id(provider))
            counters = found[1] if found is not None and found[0] is provider else None
        if counters is None:
            counters = _Counters(provider, describe)
            try:
                _by_provider[provider] = counters
            except TypeError:
                _strong[id(provider)] = (provider, counters)
        counters.sources = (*counters.sources, source)

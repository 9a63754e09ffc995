"""``_span_attributes.write``: the same result as the SDK's ``span.set_attributes`` for every
value, limit and span state, faster only where the SDK would store the values unchanged
(docs/performance.md, "Third round")."""

from __future__ import annotations

import logging
import threading
from typing import Any, Dict, List

import pytest
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext

from payi_otel import _span_attributes
from payi_otel._span_attributes import get, names, remove, write

VALUES: Dict[str, Any] = {
    "str": "alice",
    "non-ascii": "Zoë ✓",
    "empty str": "",
    "int": 7,
    "float": 0.000177,
    "bool": True,
    "tuple of str": ("monthly", "team"),
    "empty tuple": (),
    "list of str": ["monthly", "team"],
    "tuple of int": (1, 2),
    "mixed tuple": ("a", 1),
    "bytes": b"raw",
    "none": None,
    "dict": {"tier": "gold"},
    "object": object(),
}


def _pair(limits: SpanLimits | None = None) -> tuple[Any, Any]:
    tracer = TracerProvider(span_limits=limits).get_tracer("test")
    start = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}
    return tracer.start_span("a", attributes=start), tracer.start_span("b", attributes=start)


def _state(span: Any) -> tuple[List[tuple[str, Any]], int]:
    """The attributes in their order (a key set again moves last) and the dropped count."""
    return list(span.attributes.items()), span.dropped_attributes


@pytest.mark.parametrize("name", list(VALUES))
def test_each_value_is_stored_as_set_attributes_stores_it(name: str) -> None:
    value = VALUES[name]
    ours, sdks = _pair()
    attributes = {"payi.user_id": "u", "payi.value": value}
    write(ours, attributes)
    sdks.set_attributes(attributes)
    assert _state(ours) == _state(sdks)
    assert ours.attributes["payi.user_id"] == "u"


@pytest.mark.parametrize(
    "limits",
    [
        SpanLimits(max_span_attribute_length=3),
        SpanLimits(max_span_attributes=4),
        SpanLimits(max_span_attributes=5),  # exactly full: 2 at start and these 3
        SpanLimits(max_span_attributes=2, max_span_attribute_length=2),
    ],
    ids=["value length", "attribute count", "exactly full", "both"],
)
def test_limits_apply_as_set_attributes_applies_them(limits: SpanLimits) -> None:
    ours, sdks = _pair(limits)
    attributes = {"payi.user_id": "alice", "payi.limit_ids": ("monthly", "team"), "payi.n": 3}
    write(ours, attributes)
    sdks.set_attributes(attributes)
    assert _state(ours) == _state(sdks)


def test_a_value_already_there_is_replaced() -> None:
    ours, sdks = _pair()
    for span in (ours, sdks):
        span.set_attributes({"payi.user_id": "old", "payi.account_name": "acme"})
    write(ours, {"payi.user_id": "new"})
    sdks.set_attributes({"payi.user_id": "new"})
    assert _state(ours) == _state(sdks)
    assert ours.attributes["payi.user_id"] == "new"


def test_an_ended_span_is_left_as_it_is_with_the_sdks_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ours, sdks = _pair()
    ours.end()
    sdks.end()
    with caplog.at_level(logging.WARNING, logger="opentelemetry.sdk.trace"):
        write(ours, {"payi.user_id": "late"})
    warned = [r.getMessage() for r in caplog.records]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="opentelemetry.sdk.trace"):
        sdks.set_attributes({"payi.user_id": "late"})
    expected = ["Setting attribute on ended span."]
    assert warned == [r.getMessage() for r in caplog.records] == expected
    assert "payi.user_id" not in ours.attributes


class _Recorder:
    """A span of another make: only the API."""

    def __init__(self) -> None:
        self.calls: List[Dict[str, Any]] = []

    def set_attributes(self, attributes: Dict[str, Any]) -> None:
        self.calls.append(dict(attributes))


def test_other_spans_get_set_attributes() -> None:
    span = _Recorder()
    write(span, {"payi.user_id": "alice"})
    assert span.calls == [{"payi.user_id": "alice"}]
    write(NonRecordingSpan(SpanContext(1, 2, False)), {"payi.user_id": "alice"})  # no error


def test_an_sdk_span_that_looks_otherwise_gets_set_attributes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A mapping of another class (an SDK that changed it) goes through ``set_attributes``."""

    class Other(BoundedAttributes):
        pass

    ours, _ = _pair()
    ours._attributes = Other(attributes=dict(ours._attributes), immutable=False)
    calls: List[Any] = []
    real = type(ours).set_attributes

    def spy(self: Any, attributes: Any) -> None:
        calls.append(self)
        real(self, attributes)

    monkeypatch.setattr(type(ours), "set_attributes", spy)
    write(ours, {"payi.user_id": "alice"})
    assert calls == [ours] and ours.attributes["payi.user_id"] == "alice"


def test_the_fast_path_is_taken_for_stored_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    """The point of the module: no SDK cleaning for values it would store unchanged."""
    ours, _ = _pair()
    calls: List[Any] = []
    monkeypatch.setattr(_span_attributes.BoundedAttributes, "_set_items", calls.append)
    write(ours, {"payi.user_id": "alice", "payi.limit_ids": ("a",), "payi_otel.cost.total": 0.1})
    assert calls == []
    assert ours.attributes["payi.limit_ids"] == ("a",)


def test_concurrent_writes_and_sdk_writes_all_land() -> None:
    span, _ = _pair()
    start = threading.Barrier(4)

    def run(n: int) -> None:
        start.wait()
        for i in range(25):
            if n % 2:
                write(span, {f"t{n}.{i}": i})
            else:
                span.set_attributes({f"t{n}.{i}": i})

    # 4 x 25 and the 2 at start: within the SDK's default of 128 attributes.
    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    keys = set(span.attributes)
    assert {f"t{n}.{i}" for n in range(4) for i in range(25)} - keys == set()


def test_remove_takes_attributes_off_a_live_span_and_skips_other_spans() -> None:
    span, _ = _pair()
    write(span, {"payi.user_id": "alice", "payi.account_name": "acme"})
    remove(span, ["payi.user_id", "payi.missing"])
    assert "payi.user_id" not in span.attributes
    assert span.attributes["payi.account_name"] == "acme"
    remove(_Recorder(), ["payi.user_id"])  # no mapping: nothing to do


def test_get_and_names_read_what_span_attributes_shows() -> None:
    span, _ = _pair()
    write(span, {"payi.user_id": "alice", "payi.limit_ids": ("a", "b")})
    shown = span.attributes
    assert names(span) == set(shown)
    for key in [*shown, "payi.missing"]:
        assert get(span, key) == shown.get(key)
    span.end()  # and once ended
    assert names(span) == set(span.attributes) and get(span, "payi.user_id") == "alice"
    recorder = _Recorder()
    assert names(recorder) == set() and get(recorder, "payi.user_id") is None
    other = NonRecordingSpan(SpanContext(1, 2, False))
    assert names(other) == set() and get(other, "gen_ai.operation.name") is None


def test_a_span_class_with_its_own_set_attributes_is_asked() -> None:
    """A vendor's span that overrides ``set_attributes`` (to redact, scrub or mirror) sees
    every write."""
    from opentelemetry.sdk.trace import Span as SdkSpan

    class Redacting(SdkSpan):
        def set_attributes(self, attributes: Any) -> None:
            super().set_attributes({k: "[redacted]" for k in attributes})

    ours, _ = _pair()
    ours.__class__ = Redacting
    write(ours, {"payi.user_id": "alice@example.com"})
    assert ours.attributes["payi.user_id"] == "[redacted]"


def test_keys_set_again_and_new_keep_the_sdks_order() -> None:
    ours, sdks = _pair()
    first = {"payi.a": "1", "payi.b": "2", "payi.c": "3"}
    again = {"payi.b": "x", "payi.d": "4", "payi.a": "y"}
    for span in (ours, sdks):
        span.set_attributes(first)
    write(ours, again)
    sdks.set_attributes(again)
    assert _state(ours) == _state(sdks)

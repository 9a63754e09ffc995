"""Writing attributes on a live span: the one module that touches the OpenTelemetry SDK's
private span state (docs/performance.md, "Third round").

:func:`write` sets attributes as ``span.set_attributes`` does. The SDK cleans every value it
is given (``opentelemetry.attributes._clean_attribute_value``: a chain of ``isinstance``
checks, a sequence copied to a tuple) and stores it under two locks, ~0.5 µs per attribute
warm and twice that inside a call: on a GenAI span, the ~12 ``payi.*`` and 7
``payi_otel.cost.*`` attributes were ~30 µs of each call. The values payi_otel writes are
already in the form the SDK stores - a ``str``, ``bool``, ``int`` or ``float``, or a
``tuple`` of ``str`` - which its cleaning returns unchanged; for those, on an SDK span
whose attribute mapping has room and no value length limit, they go into that mapping under
its locks in one update. Anything else (another span type, a limit, an SDK whose span no
longer looks as expected, a value of another type) goes through ``span.set_attributes``.

:func:`remove` takes attributes off a live span, which the OpenTelemetry API cannot do (a
per-call header that clears a scope's value must take its ``payi.*`` attribute off the
span).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.util.types import AttributeValue

__all__ = ["remove", "write"]


#: The classes the SDK's cleaning returns unchanged (with no value length limit).
_PLAIN = frozenset({str, int, float, bool})


def _stored_forms(attributes: Mapping[str, AttributeValue]) -> bool:
    """Whether the SDK's cleaning returns every value of ``attributes`` unchanged: a
    ``str``, ``bool``, ``int`` or ``float``, or a ``tuple`` of ``str``."""
    plain = _PLAIN
    for value in attributes.values():
        cls = value.__class__
        if cls in plain:
            continue
        if cls is not tuple:
            return False
        for item in value:  # type: ignore[union-attr]
            if item.__class__ is not str:
                return False
    return True


def write(span: Any, attributes: Mapping[str, AttributeValue]) -> None:
    """``span.set_attributes(attributes)``, with the same result (see the module)."""
    if not attributes:
        return
    bounded = getattr(span, "_attributes", None)
    if bounded.__class__ is BoundedAttributes:
        try:
            stored = bounded._dict  # private: see the module
            maxlen = bounded.maxlen
            if (
                (maxlen is None or len(stored) + len(attributes) <= maxlen)
                and bounded.max_value_len is None
                and not bounded._immutable
                and _stored_forms(attributes)
            ):
                with span._lock:  # as Span.set_attributes: not once ended
                    if span._end_time is None:
                        with bounded._lock:
                            if not stored.keys().isdisjoint(attributes):
                                for key in attributes:  # set again: last, as the SDK puts it
                                    stored.pop(key, None)
                            stored.update(attributes)
                        return
        except AttributeError:  # an SDK whose span or mapping looks otherwise
            pass
    span.set_attributes(attributes)


def remove(span: Any, keys: Iterable[str]) -> None:
    """Take ``keys`` off a live SDK span (a span without an attribute mapping is skipped)."""
    attributes = getattr(span, "_attributes", None)
    if attributes is not None:
        for key in keys:
            attributes.pop(key, None)

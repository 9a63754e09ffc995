"""Writing and reading attributes on a live span: the one module that touches the
OpenTelemetry SDK's private span state (docs/performance.md, "Third round").

:func:`write` sets attributes as ``span.set_attributes`` does. The SDK cleans every value it
is given (``opentelemetry.attributes._clean_attribute_value``: a chain of ``isinstance``
checks, a sequence copied to a tuple) and stores it under two locks, ~0.5 µs per attribute
warm and twice that inside a call: on a GenAI span, the ~12 ``payi.*`` and 7
``payi_otel.cost.*`` attributes were ~30 µs of each call. The values payi_otel writes are
already in the form the SDK stores - a ``str``, ``bool``, ``int`` or ``float``, or a
``tuple`` of ``str`` - which its cleaning returns unchanged; for those, on an SDK span
whose attribute mapping has room and no value length limit, they go into that mapping under
its locks in one update. Anything else (a span of another make, or whose class overrides
``set_attributes``; a limit; an SDK whose span no longer looks as expected; a value of another
type) goes through ``span.set_attributes``.

:func:`get` and :func:`names` read a live span's attributes without the read-only view the
SDK wraps them in (each lookup through it runs the mapping's Python ``__getitem__``).
:func:`remove` takes attributes off a live span, which the OpenTelemetry API cannot do (a
per-call header that clears a scope's value must take its ``payi.*`` attribute off the
span).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Dict, Set

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import Span
from opentelemetry.util.types import AttributeValue

__all__ = ["get", "names", "remove", "write"]


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


#: Span classes -> whether their ``set_attributes`` is the SDK ``Span``'s own (a subclass that
#: overrides it - to redact, scrub or mirror values - is always asked).
_own_setter: Dict[type, bool] = {}


def _sdk_setter(cls: type) -> bool:
    known = _own_setter.get(cls)
    if known is None:
        known = _own_setter[cls] = getattr(cls, "set_attributes", None) is Span.set_attributes
    return known


def write(span: Any, attributes: Mapping[str, AttributeValue]) -> None:
    """``span.set_attributes(attributes)``, with the same result (see the module)."""
    if not attributes:
        return
    bounded = getattr(span, "_attributes", None)
    if (
        bounded.__class__ is BoundedAttributes
        and attributes.__class__ is dict  # its update runs no Python code
        and _sdk_setter(span.__class__)
        and _stored_forms(attributes)
    ):
        # Made before the locks: nothing below allocates an object the garbage collector
        # tracks, so no collection - whose finalizers may write to this very span - can
        # start while the SDK's (non-reentrant) locks are held.
        keys = iter(tuple(attributes))
        try:
            with span._lock:  # as Span.set_attributes: the span's lock, then the mapping's
                if span._end_time is None:
                    with bounded._lock:
                        stored = bounded._dict  # read under the lock: an SDK may replace it
                        maxlen = bounded.maxlen
                        if (
                            (maxlen is None or len(stored) + len(attributes) <= maxlen)
                            and bounded.max_value_len is None
                            and not bounded._immutable
                        ):
                            for key in keys:  # set again: last, as the SDK puts it
                                stored.pop(key, None)
                            stored.update(attributes)
                            return
        except AttributeError:  # an SDK whose span or mapping looks otherwise
            pass
    span.set_attributes(attributes)


def get(span: Any, key: str) -> object:
    """The value of attribute ``key`` of ``span`` (None: it has none), as ``span.attributes``
    gives it: read from the SDK span's mapping directly (``span.attributes`` wraps it in a
    read-only view whose every lookup runs the mapping's Python ``__getitem__``, raising
    inside for a missing key)."""
    bounded = getattr(span, "_attributes", None)
    if bounded.__class__ is BoundedAttributes:
        stored = getattr(bounded, "_dict", None)
        if stored is not None:
            return stored.get(key)
    found = getattr(span, "attributes", None)
    return found.get(key) if found else None


def names(span: Any) -> Set[str]:
    """The attribute names ``span`` carries now (see :func:`get`)."""
    bounded = getattr(span, "_attributes", None)
    if bounded.__class__ is BoundedAttributes:
        stored = getattr(bounded, "_dict", None)
        if stored is not None:
            # One C-level copy under the GIL (no Python code runs in it, and it allocates
            # nothing the collector tracks once the set exists): what another thread writes
            # lands before or after it.
            return set(stored)
    found = getattr(span, "attributes", None)
    return set(found) if found else set()


def remove(span: Any, keys: Iterable[str]) -> None:
    """Take ``keys`` off a live SDK span (a span without an attribute mapping is skipped)."""
    attributes = getattr(span, "_attributes", None)
    if attributes is not None:
        for key in keys:
            attributes.pop(key, None)

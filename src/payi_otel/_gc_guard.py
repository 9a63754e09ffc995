"""Keep a ``ContextVar.set`` interrupted by a collection from reading freed memory.

CPython up to 3.11 runs the garbage collector inside an allocation, and ``ContextVar.set``
allocates while it builds the current Context's next mapping (a HAMT) from the one it read.
A finalizer run by that collection - a generator closed with a scope open in it, a
``__del__`` that ends a span under a ``SimpleSpanProcessor``, any library's ``attach`` /
``detach`` - that sets a variable in the same Context breaks it twice
(python/cpython#148891; ``tests/test_gc_guard.py`` crashes without this module):

* it replaces the mapping the interrupted set is still walking, and frees it;
* the interrupted set then stores the mapping it built from the old one: the finalizer's
  sets are undone, yet the variables they set still cache (borrowed) the values they set,
  which are freed with the finalizer's mapping - the next ``get()`` reads freed memory.

payi_otel's scopes, hand-offs and stream observers attach and finalize far more often than a
program without them, so the instrumentation guards against both, with one ``gc.callbacks``
entry. At the start of a collection it keeps a copy of the current Context (which shares, and
so holds, its mapping) in a ring of the last :data:`RING` collections: an interrupted set
finishes within a few allocations, so within a few collections, and the mapping it walks
outlives it. At the end it enters and leaves an empty Context, which invalidates every
variable's cached value: the next ``get()`` reads the mapping that is really there. That the
finalizer's sets can be undone stays true; a scope left there does not rely on them
(:func:`in_collection`). Cost: two Python calls, a ``copy_context()`` and an empty
``Context.run`` per collection, nothing per LLM call. From 3.12 the collector runs between
bytecodes, never inside ``ContextVar.set``: no guard is installed there.
"""

from __future__ import annotations

import contextvars
import gc
import sys
import threading
from typing import Callable, Dict, List, Optional

#: Collections one interrupted ``ContextVar.set`` can span: it allocates at most one HAMT node
#: per level (7 for a 32-bit hash) and a token; each collection needs one of those allocations.
RING = 16

NEEDED = sys.version_info < (3, 12)

_ring: List[Optional[contextvars.Context]] = [None] * RING
_next = 0

#: The thread whose collection is running (its finalizers), or ``None``.
collecting: Optional[int] = None


def _on_collection(phase: str, info: Dict[str, int]) -> None:
    global _next, collecting
    if phase == "start":
        # No lock: the collector holds the GIL and never runs two collections at once.
        _ring[_next] = contextvars.copy_context()
        _next = (_next + 1) % RING
        collecting = threading.get_ident()
    else:
        collecting = None
        # Entering and leaving a Context invalidates every ContextVar's cached value.
        contextvars.Context().run(_nothing)


def in_collection() -> bool:
    """Whether this code runs in a finalizer of a collection on this thread (where the
    guard is installed). What it sets in the current Context may be undone when the
    collection returns: a ``ContextVar.set`` it interrupted completes from the mapping it
    had read before (python/cpython#148891) - a scope leaving there must not rely on it."""
    return collecting is not None and collecting == threading.get_ident()


def install() -> Callable[[], None]:
    """Put the guard in place (once, where the interpreter needs it); returns the undo."""
    if not NEEDED or _on_collection in gc.callbacks:
        return _nothing
    gc.callbacks.append(_on_collection)
    return _remove


def _remove() -> None:
    if _on_collection in gc.callbacks:
        gc.callbacks.remove(_on_collection)
    global collecting
    # Not inside a collection: no set is interrupted, the held contexts may go.
    _ring[:] = [None] * RING
    collecting = None


def _nothing() -> None:
    return None

"""Per-call bookkeeping done in batches (issue 20; docs/performance.md, "Sixth round").

What a completed call adds to the metric sums and to the scope totals is read only when
metrics are collected and when a scope ends. Done call by call, that bookkeeping runs cold:
between two calls the SDK's own work has evicted its code and data from the CPU caches, so
it costs 3-4x what it costs warm. :func:`defer` queues it instead, and it is done
:data:`BATCH` calls at a time, warm - in the thread of the call that fills the batch, so no
work leaves the program's threads and none is dropped. Whoever reads the results flushes
first: a metric collection (the observable counters' callbacks), a scope's end (its totals),
``uninstrument()``. A call's span gets its cost at once, as before: only the sums wait.

Thread-safe: the queue is a ``deque`` (its ``append`` and ``popleft`` are atomic). A flush
holds :data:`_lock` until every item it took is done, so a reader that flushes sees every
call completed before it, including one another thread was in the middle of (waiting for
that thread at most :data:`WAIT`: see :func:`flush`). A call that
fills a batch while another thread flushes leaves it to that flush (which runs until the
queue is empty) instead of waiting. Reentrant: a finalizer run by a collection during a
flush (an abandoned stream, reported) may queue and flush on the same thread. A child process
forked while another thread was flushing gets a lock of its own (the flushing thread is not
in the child to release it); the calls queued then are the child's too, as the sums are.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from typing import Any, Callable, Deque, Tuple

from payi_otel._log import internal_error

__all__ = ["BATCH", "defer", "flush"]

#: Calls queued before their bookkeeping is done (the bench's ratios flatten out past ~32).
BATCH = 64

_queue: Deque[Tuple[Callable[[Any], None], Any]] = deque()
_lock = threading.RLock()


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.RLock()


if hasattr(os, "register_at_fork"):  # once, at import
    os.register_at_fork(after_in_child=_after_fork_in_child)


def defer(work: Callable[[Any], None], item: Any) -> None:
    """Do ``work(item)`` with the next batch (at once, when this item fills it)."""
    _queue.append((work, item))
    if len(_queue) >= BATCH and _lock.acquire(blocking=False):
        try:
            _drain()
        finally:
            _lock.release()


#: The longest a reader waits for another thread's flush (seconds). A flush of one batch
#: takes about a millisecond; past this, the reader goes on without the calls still being
#: done (see :func:`flush`).
WAIT = 1.0


def flush() -> None:
    """Do every queued item's work now; returns when it is done, in any thread - or, when
    another thread's flush holds the queue for longer than :data:`WAIT`, without the items
    that flush is doing. That happens only when that thread waits on this one: a finalizer run
    by a collection here (a scope left in an abandoned generator, ending) while this thread
    holds what that flush needs next. A reader never deadlocks the program; a metric reader
    gets those calls at its next collection (the sums are cumulative), a scope's totals lack
    them."""
    if not _lock.acquire(timeout=WAIT):
        return
    try:
        _drain()
    finally:
        _lock.release()


def _drain() -> None:
    popleft = _queue.popleft
    while True:
        try:
            work, item = popleft()
        except IndexError:
            return
        try:
            work(item)
        except Exception:
            internal_error("deferred", "per-call bookkeeping (metrics, scope totals) failed")

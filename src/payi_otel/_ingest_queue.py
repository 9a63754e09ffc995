"""The ingest queue: records on their way to Pay-i, off the app's threads, each settled once.

The app's threads only :meth:`IngestQueue.submit` (a lock, an append; with a spool, one line
written): never a network wait. One daemon worker sends the records in order, one attempt at a
time, each bounded by the Pay-i client's ``timeout``. A record ends as exactly one of:

* ``exported``: Pay-i answered 2xx (a body that is not JSON too: Pay-i took it; its answer is
  unknown, one WARNING);
* ``failed``: Pay-i refused it (a 4xx other than 408 / 429), or it could not be delivered for
  ``retry_for`` seconds (or ``max_retries`` retries), or Pay-i cannot take records from this
  process at all (no API key, the key refused: 401 / 403) and no spool keeps it;
* ``dropped``: the queue was full (``max_queue``), the exporter was shut down, or
  shutdown's deadline passed with it unsent and no spool to keep it;
* ``spooled``: shutdown's deadline passed with it unsent and in the spool, or Pay-i cannot
  take records from this process and the spool keeps it: the next start sends it (counted
  there as ``replayed``, then as one of the above).

A connection error, a timeout (a slow or hung Pay-i), a reset in the middle of the reply, a
408, 429 or 5xx are retried: the record stays at the head of the queue, tried again after a
backoff (``backoff`` seconds, doubling to ``max_backoff``), while the records behind it wait -
so a Pay-i outage of minutes costs memory (bounded) and no record. Each attempt sends the same
``provider_response_id`` as the request's ``id``, which Pay-i uses to recognise a record
sent again. Counts: :meth:`IngestQueue.stats`, and the ``payi.ingest.records`` counter by
``payi_otel.outcome``.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, Optional

from opentelemetry import metrics
from opentelemetry.metrics import MeterProvider

from payi_otel._log import internal_error, log_once, logger
from payi_otel._spool import Spool
from payi_otel.version import __version__

__all__ = [
    "OUTCOMES",
    "RECORDS_METRIC",
    "IngestQueue",
    "Item",
    "QueueOptions",
    "Refused",
    "Retry",
    "Unavailable",
]

RECORDS_METRIC = "payi.ingest.records"
OUTCOMES = ("exported", "failed", "dropped", "spooled")


class Retry(Exception):
    """An attempt that may succeed later (Pay-i unreachable, slow, 408 / 429 / 5xx)."""


class Refused(Exception):
    """Pay-i refused the record (a 4xx): sending it again would not help."""


class Unavailable(Refused):
    """Pay-i cannot take records from this process (no client: no API key; the key refused:
    401 / 403), whatever the record: one kept in the spool stays there for a start that can
    send it (``spooled``), any other ``failed``."""


class Item:
    """One record on its way."""

    __slots__ = ("attempts", "context", "done", "id", "record", "since", "spooled")

    def __init__(self, record_id: str, record: Dict[str, Any], context: Any = None) -> None:
        self.id = record_id
        self.record = record
        #: What the answer is put on (the call's span context), handed to ``on_answer``.
        self.context = context
        self.attempts = 0
        self.since = time.monotonic()
        self.done = False
        self.spooled = False


#: ``send(item)`` -> Pay-i's reply (anything; None: no answer to read). Raises
#: :class:`Retry` or :class:`Refused`; anything else counts as refused, logged once.
Send = Callable[[Item], Any]


@dataclass(frozen=True)
class QueueOptions:
    """How records are sent (``PayiIngestExporter``'s keyword arguments of the same names)."""

    #: At most this many records wait in memory; more are dropped.
    max_queue: int = 10_000
    #: A record Pay-i does not take is retried for this many seconds ...
    retry_for: float = 600.0
    #: ... or this many retries (None: no limit but ``retry_for``).
    max_retries: Optional[int] = None
    #: The first wait before a retry, doubling up to ``max_backoff``.
    backoff: float = 0.5
    max_backoff: float = 30.0
    #: :meth:`IngestQueue.shutdown` sends for at most this many seconds.
    shutdown_timeout: float = 5.0


class IngestQueue:
    """A bounded queue and its worker (started with the first record)."""

    def __init__(
        self,
        send: Send,
        options: Optional[QueueOptions] = None,
        *,
        spool: Optional[Spool] = None,
        on_answer: Optional[Callable[[Item, Any], None]] = None,
        meter_provider: Optional[MeterProvider] = None,
    ) -> None:
        self._send = send
        self.options = options = options or QueueOptions()
        self.max_queue = options.max_queue  # read on every submit
        self._spool = spool
        self._on_answer = on_answer
        self._queue: Deque[Item] = deque()
        self._in_flight: Optional[Item] = None
        self._cond = threading.Condition()
        self._worker: Optional[threading.Thread] = None
        self._closed = False
        #: At interpreter exit: shut down (per call: no record comes after), or only flush
        #: (a span exporter: the tracer provider's own exit, which may come later, flushes
        #: its span processor into it, then shuts it down).
        self.closes_at_exit = True
        #: When the interpreter's exit began to send (a span exporter's queue): its shutdown
        #: then waits only what is left of ``shutdown_timeout`` (monotonic seconds).
        self._exit_deadline: Optional[float] = None
        self._stats: Dict[str, int] = {name: 0 for name in (*OUTCOMES, "replayed")}
        meter = (meter_provider or metrics.get_meter_provider()).get_meter("payi_otel", __version__)
        self._counter = meter.create_counter(
            RECORDS_METRIC,
            unit="{record}",
            description="Pay-i ingest records by payi_otel.outcome (exported, failed, "
            "dropped, spooled)",
        )
        if spool is not None:
            self._replay(spool)
        _queues.add(self)

    # -- the app's side ------------------------------------------------------------------------

    def submit(self, record_id: str, record: Dict[str, Any], context: Any = None) -> None:
        """Hand a record over; never waits for Pay-i."""
        item = Item(record_id, record, context)
        with self._cond:
            if self._closed or len(self._queue) >= self.max_queue:
                self._settle(item, "dropped")
                if self._closed:
                    log_once(
                        "ingest-closed",
                        "payi_otel: an ingest record came after its PayiIngestExporter was "
                        "shut down: dropped and counted (shut the tracer provider down before "
                        "the exporter)",
                    )
                else:
                    log_once(
                        "ingest-queue-full",
                        "payi_otel: the Pay-i ingest queue is full (max_queue=%d): records "
                        "are dropped and counted while Pay-i does not keep up",
                        self.max_queue,
                    )
                return
            if self._spool is not None:
                item.spooled = self._spool.add(record_id, record)
            self._queue.append(item)
            self._start()
            self._cond.notify_all()

    @property
    def spooling(self) -> bool:
        """Whether records are kept in a spool (a start that can send them will)."""
        return self._spool is not None

    def drop(self) -> None:
        """Count a record that cannot be sent at all (no Pay-i client) as dropped."""
        with self._cond:
            self._settle(Item("", {}), "dropped")

    def _replay(self, spool: Spool) -> None:
        pending = spool.open()
        if pending is None:
            self._spool = None
            return
        with self._cond:
            for record_id, record in pending[: self.max_queue]:
                item = Item(record_id, record)
                item.spooled = True
                self._queue.append(item)
                self._stats["replayed"] += 1
            if self._queue:
                logger.info(
                    "payi_otel: %d ingest records left unsent by an earlier run are sent "
                    "again (spool %s)",
                    len(self._queue),
                    spool.path,
                )
                self._start()

    def _start(self) -> None:
        if self._worker is None or not self._worker.is_alive():  # none yet, or forked
            self._worker = threading.Thread(target=self._run, name="payi_otel-ingest", daemon=True)
            self._worker.start()
            atexit.register(_shutdown_at_exit, weakref.ref(self))

    # -- counts ---------------------------------------------------------------------------------

    def stats(self) -> Mapping[str, int]:
        """``exported``, ``failed``, ``dropped``, ``spooled``, ``replayed`` (of this start's
        records, those from an earlier run's spool) and ``pending`` (not settled yet)."""
        with self._cond:
            pending = len(self._queue)  # the record in flight is still at its head
            return {**self._stats, "pending": pending}

    def _settle(self, item: Item, outcome: str) -> None:
        """``item`` ends as ``outcome`` (once: a second outcome is ignored). Under the lock."""
        if item.done:
            return
        item.done = True
        self._stats[outcome] += 1
        try:
            self._counter.add(1, {"payi_otel.outcome": outcome})
        except Exception:
            internal_error("ingest-metric", "counting an ingest record failed")
        if item.spooled and self._spool is not None and outcome in ("exported", "failed"):
            self._spool.done(item.id)

    # -- the worker -----------------------------------------------------------------------------

    def _run(self) -> None:
        delay = 0.0
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    if self._spool is not None:
                        # Shut down while a record was in flight: the spool, kept open for
                        # it, is let go now (its lock too: a new exporter may own it).
                        self._spool.close()
                    return
                if delay:
                    # Pay-i failed the head record: wait before trying it again (shutdown's
                    # deadline cuts the wait short by settling what is left).
                    until = time.monotonic() + delay
                    while self._queue and time.monotonic() < until:
                        self._cond.wait(until - time.monotonic())
                    if not self._queue:
                        continue
                item = self._queue[0]
                if item.done:  # settled by shutdown meanwhile
                    self._queue.popleft()
                    continue
                self._in_flight = item
            delay = self._attempt(item, delay)
            with self._cond:
                self._in_flight = None
                if item.done and self._queue and self._queue[0] is item:
                    self._queue.popleft()
                self._cond.notify_all()

    def _attempt(self, item: Item, delay: float) -> float:
        """Send ``item`` once; the delay before the next attempt (0: go on)."""
        item.attempts += 1
        try:
            answer = self._send(item)
        except Retry as error:
            with self._cond:
                given_up = (time.monotonic() - item.since > self.options.retry_for) or (
                    self.options.max_retries is not None
                    and item.attempts > self.options.max_retries
                )
                if given_up:
                    self._settle(item, "failed")
                    logger.warning(
                        "payi_otel: Pay-i ingest record given up after %d attempts: %s",
                        item.attempts,
                        error,
                    )
                    return 0.0
            logger.debug("payi_otel: Pay-i ingest failed, retried: %s", error)
            return min(max(delay * 2, self.options.backoff), self.options.max_backoff)
        except Unavailable as error:
            with self._cond:
                self._settle(item, "spooled" if item.spooled else "failed")
            log_once(
                "ingest-unavailable",
                "payi_otel: Pay-i cannot take ingest records from this process (%s): %s",
                error,
                "they stay in the spool for the next start"
                if item.spooled
                else "they are counted as failed (a spool keeps them: spool=...)",
            )
            return 0.0
        except Refused as error:
            with self._cond:
                self._settle(item, "failed")
            log_once("ingest-refused", "payi_otel: Pay-i refused an ingest record: %s", error)
            return 0.0
        except Exception:
            with self._cond:
                self._settle(item, "failed")
            internal_error("ingest-send", "sending an ingest record failed")
            return 0.0
        with self._cond:
            first = not item.done
            self._settle(item, "exported")
            if not first and item.spooled and self._spool is not None:
                self._spool.done(item.id)  # settled by shutdown meanwhile: not sent again
        if first and self._on_answer is not None:
            try:
                self._on_answer(item, answer)
            except Exception:
                internal_error("ingest-answer", "reading Pay-i's answer failed")
        return 0.0

    # -- flush and shutdown ---------------------------------------------------------------------

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every record to be settled; whether they are."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._in_flight is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def shutdown(self, timeout: Optional[float] = None) -> None:
        """Stop taking records; send what is queued for up to ``timeout`` seconds
        (default ``shutdown_timeout``), then settle the rest: ``spooled`` when the spool
        keeps it, else ``dropped``. Never waits longer."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        if timeout is None:
            timeout = self.options.shutdown_timeout
        if self._exit_deadline is not None:  # the exit has waited already: no more in all
            timeout = min(timeout, max(0.0, self._exit_deadline - time.monotonic()))
        self.flush(timeout)
        with self._cond:
            left = list(self._queue)
            if self._in_flight is not None and self._in_flight not in left:
                left.append(self._in_flight)
            for item in left:
                self._settle(item, "spooled" if item.spooled else "dropped")
            self._queue.clear()
            self._cond.notify_all()
        if left:
            logger.warning(
                "payi_otel: %d Pay-i ingest records unsent at shutdown (%s)",
                len(left),
                "kept in the spool for the next start" if self._spool else "dropped",
            )
        if self._spool is not None:
            if self._in_flight is None:
                self._spool.close()
            else:  # the worker closes it when the send ends; another may own it now
                self._spool.release()


def _shutdown_at_exit(ref: weakref.ReferenceType[IngestQueue]) -> None:
    queue = ref()
    if queue is None:
        return
    if queue.closes_at_exit:
        queue.shutdown()
    else:
        # A span exporter: a tracer provider made before it exits after this (atexit runs
        # the newest first) and exports its last spans then; its shutdown shuts this down,
        # within the same ``shutdown_timeout`` as this flush.
        queue._exit_deadline = time.monotonic() + queue.options.shutdown_timeout
        queue.flush(queue.options.shutdown_timeout)


#: Every live queue, for a forked child (:func:`_after_fork_in_child`).
_queues: weakref.WeakSet[IngestQueue] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """In a child forked from this process: the records queued in the parent are the
    parent's to send (sent from here too, Pay-i got each twice, counted as the child's); its
    spool is the parent's (one process owns it); its lock may have been held by a thread
    that is not in the child. Each queue starts empty, with a lock and a worker of its own;
    the child's records are kept in memory only, and sent at its exit (a multiprocessing
    worker's too)."""
    workers = sys.modules.get("multiprocessing.util")
    for queue in list(_queues):
        queue._cond = threading.Condition()
        queue._queue = deque()
        queue._in_flight = None
        queue._worker = None
        queue._spool = None
        if workers is not None:
            # A multiprocessing worker ends with os._exit: no atexit. Its exit runs the
            # finalizers registered after its fork, so the queue is flushed by one of those.
            workers.register_after_fork(queue, _shutdown_at_worker_exit)


def _shutdown_at_worker_exit(queue: IngestQueue) -> None:
    import multiprocessing.util

    multiprocessing.util.Finalize(queue, queue.shutdown, exitpriority=10)


if hasattr(os, "register_at_fork"):  # once, at import
    os.register_at_fork(after_in_child=_after_fork_in_child)

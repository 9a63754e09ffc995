"""Per-call bookkeeping in batches (``_deferred``, issue 20): every queued item is done exactly
once, by the batch that fills or by whoever reads the sums; a flush returns only when the work
it waits for is done, in any thread; the work may queue and flush again (a finalizer's call);
a failure is logged once and the rest is still done. And, with the real SDKs: the sums a
reader sees and a scope's totals include every call completed before them, fewer than a
batch, in any thread; the queue keeps no response alive."""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import time
import warnings
import weakref
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, List

import pytest
from fixtures_genai import CHAT, GenAI
from fixtures_otel import Metrics

from payi_otel import PayiInstrumentor, _deferred, _log, _settings, track_context
from payi_otel._cost import _LATER, CostObserver

MINI: dict[str, Any] = {**CHAT, "model": "gpt-4o-mini"}


@pytest.fixture(autouse=True)
def _empty_queue() -> Iterator[None]:
    _deferred.flush()
    yield
    _deferred.flush()


def test_a_batch_is_done_by_the_item_that_fills_it_and_the_rest_by_a_flush() -> None:
    done: List[int] = []
    for i in range(_deferred.BATCH - 1):
        _deferred.defer(done.append, i)
    assert done == []  # waiting
    _deferred.defer(done.append, _deferred.BATCH - 1)
    assert done == list(range(_deferred.BATCH))  # in order, in this thread
    _deferred.defer(done.append, "late")
    assert done[-1] != "late"
    _deferred.flush()
    assert done[-1] == "late" and len(done) == _deferred.BATCH + 1


def test_every_item_is_done_once_across_threads_and_concurrent_flushes() -> None:
    done: List[object] = []
    lock = threading.Lock()

    def record(item: object) -> None:
        with lock:
            done.append(item)

    stop = threading.Event()

    def flusher() -> None:
        while not stop.is_set():
            _deferred.flush()

    def producer(n: int) -> None:
        for i in range(500):
            _deferred.defer(record, (n, i))

    reader = threading.Thread(target=flusher)
    reader.start()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(producer, range(8)))
    stop.set()
    reader.join()
    _deferred.flush()
    assert sorted(done) == sorted((n, i) for n in range(8) for i in range(500))  # type: ignore[type-var]


def test_a_flush_waits_for_the_item_another_thread_is_doing() -> None:
    started, release = threading.Event(), threading.Event()
    done: List[str] = []

    def slow(item: str) -> None:
        started.set()
        assert release.wait(5)
        done.append(item)

    _deferred.defer(slow, "slow")
    worker = threading.Thread(target=_deferred.flush)
    worker.start()
    assert started.wait(5)
    flushed = threading.Event()
    reader = threading.Thread(target=lambda: (_deferred.flush(), flushed.set()))
    reader.start()
    assert not flushed.wait(0.2)  # the queue is empty, but "slow" is not done yet
    release.set()
    assert flushed.wait(5) and done == ["slow"]
    worker.join()
    reader.join()


def test_a_call_filling_a_batch_while_another_thread_flushes_does_not_wait() -> None:
    started, release = threading.Event(), threading.Event()

    def slow(item: object) -> None:
        started.set()
        release.wait(5)

    _deferred.defer(slow, None)
    worker = threading.Thread(target=_deferred.flush)
    worker.start()
    assert started.wait(5)
    done: List[int] = []
    for i in range(_deferred.BATCH):  # fills a batch: left to the running flush
        _deferred.defer(done.append, i)
    assert done == []
    release.set()
    worker.join()
    assert done == list(range(_deferred.BATCH))  # the running flush took them too


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork")
def test_a_child_forked_while_another_thread_flushes_can_flush() -> None:
    started, release = threading.Event(), threading.Event()
    _deferred.defer(lambda item: (started.set(), release.wait(5)), None)
    worker = threading.Thread(target=_deferred.flush)
    worker.start()
    assert started.wait(5)  # the worker holds the flush lock
    _deferred.defer(lambda item: None, "queued before the fork")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # (3.12: fork with threads)
        pid = os.fork()
    if pid == 0:  # the child: the worker thread is not here to release the lock
        code = 1
        try:
            signal.alarm(5)
            done: List[str] = []
            _deferred.defer(done.append, "child")
            _deferred.flush()
            code = 0 if done == ["child"] else 2
        finally:
            os._exit(code)
    release.set()
    worker.join()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_work_may_queue_and_flush_again_on_the_same_thread() -> None:
    done: List[str] = []

    def reentrant(item: str) -> None:
        done.append(item)
        if item == "outer":  # as a finalizer run inside a flush reports a call
            _deferred.defer(done.append, "inner")
            _deferred.flush()

    _deferred.defer(reentrant, "outer")
    _deferred.flush()
    assert done == ["outer", "inner"]


def test_a_failing_item_is_logged_once_and_the_others_are_done(
    caplog: pytest.LogCaptureFixture, internal_errors_contained: None
) -> None:
    _log.reset_log_once()
    done: List[int] = []

    def fail(item: int) -> None:
        raise RuntimeError("boom")

    with caplog.at_level(logging.DEBUG, logger="payi_otel"):
        for i in range(3):
            _deferred.defer(fail, i)
            _deferred.defer(done.append, i)
        _deferred.flush()  # no exception
    assert done == [0, 1, 2]
    errors = [r for r in caplog.records if "bookkeeping" in r.getMessage()]
    assert len(errors) == 1 and errors[0].levelno == logging.WARNING


# --- with the real SDKs -----------------------------------------------------------------------


def test_a_reader_sees_every_call_completed_before_it(genai: GenAI) -> None:
    metrics = Metrics()
    genai.reinstrument({"use_case_name": "support"}, meter_provider=metrics.provider)
    calls = 3  # fewer than a batch: all still queued when the reader collects
    assert calls < _deferred.BATCH
    with track_context(user_id="alice"):
        for _ in range(calls):
            genai.openai.chat.completions.create(**MINI)
    spans = genai.otel.genai_spans()
    assert len(spans) == calls
    output = sum(int((s.attributes or {})["gen_ai.usage.output_tokens"]) for s in spans)  # type: ignore[arg-type]
    assert metrics.total("payi.genai.tokens", **{"payi_otel.token.type": "output"}) == output
    cost = sum(float((s.attributes or {})["payi_otel.cost.total"]) for s in spans)  # type: ignore[arg-type]
    assert metrics.total("payi.genai.cost") == pytest.approx(cost, rel=1e-12)
    genai.openai.chat.completions.create(**MINI)  # one more, seen by the next collection
    assert metrics.total("payi.genai.tokens", **{"payi_otel.token.type": "output"}) == (
        output * (calls + 1) // calls
    )


def test_a_scope_ends_with_the_calls_its_threads_completed(genai: GenAI) -> None:
    genai.reinstrument({"use_case_name": "support"}, scope_totals=True)
    with track_context(use_case_step="fan-out"):
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda _: genai.openai.chat.completions.create(**MINI), range(5)))
    (scope,) = [s for s in genai.otel.exporter.get_finished_spans() if s.name == "fan-out"]
    assert (scope.attributes or {})["payi_otel.scope.calls"] == 5


def test_uninstrument_does_the_queued_work(genai: GenAI) -> None:
    metrics = Metrics()
    genai.reinstrument({"use_case_name": "support"}, meter_provider=metrics.provider)
    genai.openai.chat.completions.create(**MINI)
    assert len(_deferred._queue) == 1
    PayiInstrumentor().uninstrument()
    assert len(_deferred._queue) == 0
    assert metrics.total("payi.genai.tokens") > 0


def test_the_queue_keeps_no_response_alive(genai: GenAI) -> None:
    genai.reinstrument({"use_case_name": "support"}, genai_spans=False)
    records: List[Any] = []
    undo = _settings.add_observer(records.append)
    try:
        genai.openai.chat.completions.create(**MINI)
    finally:
        undo()
    _deferred.flush()

    class Response:  # stands for a large one (embeddings); weakly referenceable
        pass

    response = Response()
    record = replace(records[-1], response=response)
    observer = CostObserver(Metrics().provider)
    observer(record)
    assert len(_deferred._queue) == 1  # queued
    gone = weakref.ref(response)
    del response, record, records
    gc.collect()
    assert gone() is None  # while its call waits in the queue


def test_the_first_call_is_priced_at_once_and_the_next_ones_wait(genai: GenAI) -> None:
    """The first call an observer sees imports genai-prices (or says it is missing) in the
    call, as before the batches: a short program with no metric reader still gets the
    WARNING when genai-prices cannot be installed. Later calls wait for their batch."""
    genai.reinstrument({"use_case_name": "support"}, genai_spans=False)
    records: List[Any] = []
    undo = _settings.add_observer(records.append)
    try:
        genai.openai.chat.completions.create(**MINI)
        genai.openai.chat.completions.create(**MINI)
    finally:
        undo()
    _deferred.flush()
    observer = CostObserver(Metrics().provider)
    genai_prices = observer._prices.genai
    assert genai_prices._module is None  # nothing priced by this observer yet
    observer(records[0])
    assert genai_prices._module is not None  # the first call: priced, genai-prices loaded
    queued = list(_deferred._queue)
    assert len(queued) == 1 and queued[0][1].price is not None
    observer(records[1])
    assert _deferred._queue[-1][1].price is _LATER  # the next one waits for its batch


def test_a_reader_does_not_wait_forever_for_a_flush_stuck_on_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A flush that cannot finish (its thread waits on the reader's: a finalizer run here
    while this thread holds what that flush needs) holds the reader at most ``WAIT``."""
    monkeypatch.setattr(_deferred, "WAIT", 0.2)
    started, release = threading.Event(), threading.Event()
    _deferred.defer(lambda item: (started.set(), release.wait(5)), None)
    worker = threading.Thread(target=_deferred.flush)
    worker.start()
    try:
        assert started.wait(5)
        done: List[str] = []
        _deferred.defer(done.append, "waits")
        clock = time.monotonic()
        _deferred.flush()  # gives up after WAIT: the worker still holds the queue
        assert 0.15 < time.monotonic() - clock < 2 and done == []
    finally:
        release.set()
        worker.join()
    assert done == ["waits"]  # the worker's flush did it


def test_metric_readers_take_no_lock(genai: GenAI) -> None:
    """Collecting reads the published series without ``UsageMetrics``' lock: a collection
    that allocated under it could run a finalizer waiting for a flush whose thread waits for
    that lock (review). Here another thread holds the lock for good while metrics are read."""
    metrics = Metrics()
    genai.reinstrument({"use_case_name": "support"}, meter_provider=metrics.provider)
    genai.openai.chat.completions.create(**MINI)
    _deferred.flush()
    (observer,) = [o for o in _settings.current.observers if isinstance(o, CostObserver)]
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with observer._metrics._lock:
            held.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(5)
        read: List[float] = []
        reader = threading.Thread(target=lambda: read.append(metrics.total("payi.genai.cost")))
        reader.start()
        reader.join(3)
        assert read and read[0] > 0  # read while the lock is held elsewhere
    finally:
        release.set()
        holder.join()

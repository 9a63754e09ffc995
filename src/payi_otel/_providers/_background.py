"""Generations whose usage a later call reports: OpenAI's background responses
(``responses.create(background=True)`` answers ``queued``; ``responses.retrieve``, ``cancel``
or a resumed stream later shows the response finished, with its usage). README "Cost and
usage".

Such a call is held when it completes (:meth:`Provider.pending`), not reported, and reported
once - with its own attribution, context and start, and the usage of the reply that shows it
finished - when a later call's reply settles it (:meth:`Provider.settled`), just before that
call's own record (not a generation, so not counted again). One never settled here (polled by
another process, or never) is never counted: a WARNING says so when the store is full (at
most :data:`MAX_PENDING`, each at most :data:`MAX_AGE_S`).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import replace
from typing import Tuple

from payi_otel._log import log_once
from payi_otel._providers._base import CallRecord, Provider
from payi_otel._providers._registry import is_generation

__all__ = ["MAX_AGE_S", "MAX_PENDING", "held", "records_of"]

#: Background generations held at once; past it the oldest is dropped, uncounted.
MAX_PENDING = 10_000
#: Seconds a background generation is held at most (one not settled in a day is dropped).
MAX_AGE_S = 86_400.0

_lock = threading.Lock()
#: (provider name, response id) -> the call's record when it was sent, oldest first.
_held: OrderedDict[Tuple[str, str], CallRecord] = OrderedDict()
#: (provider name, response id) -> the reply that showed it ended, for one not held when it
#: came (its stream still open, to be closed later): the last :data:`MAX_SETTLED`.
_settled: OrderedDict[Tuple[str, str], CallRecord] = OrderedDict()
MAX_SETTLED = 1024


def held() -> int:
    """How many generations are held, waiting for the call that settles them."""
    return len(_held)


def records_of(
    provider: Provider, record: CallRecord, first: object = None
) -> Tuple[CallRecord, ...]:
    """The records to report for ``record``, a call just completed (``first``: its stream's
    first item, if a stream): none when it is a generation still running (held: its reply,
    or a stream left early or broken after its first item said so); else the held
    generation its reply settles, if any, then itself."""
    settled = provider.settled(record.response)
    if record.usage is None and settled is None:
        running = provider.pending(record.response, record.error)
        if running is None and first is not None:
            running = provider.pending(first, record.error)
        if running is not None and is_generation(record):
            key = (provider.name, running)
            with _lock:
                early = _settled.pop(key, None)
            if early is not None:  # polled to its end while its stream was still open
                return (_finished(record, early),)
            _hold(key, record)
            return ()
    if settled is None:  # (every call's path)
        return (record,)
    key = (provider.name, settled)
    with _lock:
        origin = _held.pop(key, None)
        if origin is None:
            # Not held (yet): remembered a while, for a stream of it still open.
            _settled[key] = replace(record, arguments=None)
            if len(_settled) > MAX_SETTLED:
                _settled.popitem(last=False)
    if origin is None:
        return (record,)
    return (_finished(origin, record), record)


def _finished(origin: CallRecord, record: CallRecord) -> CallRecord:
    """The held call ``origin``, completed by ``record``'s reply (its usage, model, end)."""
    started = origin.started_at
    return replace(
        origin,
        usage=record.usage,
        response_model=record.response_model or origin.response_model,
        response=record.response,
        duration_s=origin.duration_s if started is None else max(time.time() - started, 0.0),
        error=record.error,
    )


def _hold(key: Tuple[str, str], record: CallRecord) -> None:
    # Held without what the settling reply replaces (its response) and, unless the call
    # logs its prompt, its arguments (the whole input): a held call costs a few KB.
    logged = record.call.params.get("log_prompt_and_response") is True
    record = replace(record, response=None, arguments=record.arguments if logged else None)
    now = time.time()
    with _lock:
        _held[key] = record
        _held.move_to_end(key)
        dropped = len(_held) > MAX_PENDING
        if dropped:
            _held.popitem(last=False)
        while _held:  # (oldest first: those held longer than a day)
            oldest = next(iter(_held.values()))
            if oldest.started_at is None or now - oldest.started_at <= MAX_AGE_S:
                break
            _held.popitem(last=False)
    if dropped:
        log_once(
            "background:full",
            "payi_otel: more than %d background generations are waiting for the call that "
            "shows them finished (responses.retrieve / cancel, or a resumed stream, in this "
            "process); the oldest are dropped and never counted: retrieve each background "
            "response once it is done",
            MAX_PENDING,
        )

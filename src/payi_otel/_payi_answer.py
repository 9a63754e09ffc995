"""Pay-i's answer to a call: its request id, its cost and its limits' states.

Pay-i answers each call it sees: a call through Pay-i's proxy in the response itself (the
``xproxy_result`` field its proxy adds to the provider's JSON), an ingested call in the reply
to ``POST /api/v1/ingest`` (``IngestResponse.xproxy_result``), or with an error
(``xproxy_error``: ``{"code", "message"}``). Here it is:

* kept as the last answer of the process (:func:`last_result`, what Pay-i's SDK puts in
  ``get_context()["last_result"]``: the ``xproxy_result`` fields, or the ``xproxy_error``
  ones);
* put on a span as ``payi.response.*`` attributes (:func:`answer_attributes`; not header
  names: these are what Pay-i answered, not what the call sent);
* one WARNING line each time a limit enters the ``blocked`` or ``exceeded`` state (again only
  after Pay-i reported it in another state), as Pay-i's SDK tracks blocked limits.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, Dict, List, Optional

from opentelemetry.util.types import AttributeValue

from payi_otel._log import internal_error, logger
from payi_otel._model.dialects import PAYI_PROXY
from payi_otel._model.wire_policy import WirePolicy
from payi_otel._providers import CallRecord

__all__ = [
    "ANSWER_PREFIX",
    "answer_attributes",
    "answer_of",
    "answers_in_responses",
    "last_result",
    "limit_states",
    "note_answer",
    "observe_answer",
    "reset_answers",
]

ANSWER_PREFIX = "payi.response."

_lock = threading.Lock()
_last: Optional[Dict[str, Any]] = None
_limit_states: Dict[str, str] = {}
#: Limit states that get a log line when a limit enters them.
_ALARMING = ("blocked", "blocked_external", "exceeded", "overrun")


def _plain(value: object) -> Any:
    """A pydantic model (Pay-i's or a provider SDK's) or a mapping as plain JSON-like data."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            return dump(exclude_none=True)
        except TypeError:
            return dump()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _field(container: object, name: str) -> object:
    if isinstance(container, Mapping):
        return container.get(name)
    value = getattr(container, name, None)
    if value is None:
        extra = getattr(container, "model_extra", None)  # a provider model's extra field
        if isinstance(extra, Mapping):
            value = extra.get(name)
    return value


def answer_of(container: object) -> Optional[Dict[str, Any]]:
    """Pay-i's answer in a response or an ingest reply (its ``xproxy_result``, else its
    ``xproxy_error`` as ``{"code", "message"}``), as a plain dict; None when there is none."""
    if container is None or isinstance(container, (str, bytes)):
        return None
    for name in ("xproxy_result", "xproxy_error"):
        value = _plain(_field(container, name))
        if isinstance(value, dict) and value:
            return value
    return None


def note_answer(answer: Mapping[str, Any]) -> None:
    """Keep ``answer`` as the last one; log each limit that entered a blocked or exceeded
    state."""
    global _last
    limits = answer.get("limits")
    entered: List[tuple[str, str]] = []
    with _lock:
        _last = dict(answer)
        if isinstance(limits, Mapping):
            for limit_id, state in limits.items():
                name = state.get("state") if isinstance(state, Mapping) else None
                if not isinstance(name, str):
                    continue
                if _limit_states.get(str(limit_id)) != name and name in _ALARMING:
                    entered.append((str(limit_id), name))
                _limit_states[str(limit_id)] = name
    for limit_id, state in entered:
        logger.warning(
            "payi_otel: Pay-i reports limit %r as %s (request %s)",
            limit_id,
            state,
            answer.get("request_id"),
        )


def last_result() -> Optional[Mapping[str, Any]]:
    """Pay-i's last answer in this process (what Pay-i's SDK gives as
    ``get_context()["last_result"]``): the fields of its ``xproxy_result`` (``request_id``,
    ``cost``, ``limits``, ``blocked_limit_ids``, ...) or of its ``xproxy_error`` (``code``,
    ``message``); None before any."""
    with _lock:
        return None if _last is None else dict(_last)


def limit_states() -> Mapping[str, str]:
    """The last state Pay-i reported for each limit (``ok``, ``blocked``, ``exceeded``...)."""
    with _lock:
        return dict(_limit_states)


def reset_answers() -> None:
    """Forget every answer (tests)."""
    global _last
    with _lock:
        _last = None
        _limit_states.clear()


def answer_attributes(answer: Mapping[str, Any]) -> Dict[str, AttributeValue]:
    """``payi.response.*`` span attributes of an answer: ``request_id``, ``cost.total`` /
    ``cost.input`` / ``cost.output`` / ``cost.currency``, ``limits.<state>`` (the limit ids
    in each state), ``blocked_limit_ids``, ``duplicate_request``, ``use_case.id``,
    ``error.code`` / ``error.message``."""
    out: Dict[str, AttributeValue] = {}
    for name, attribute in (
        ("request_id", "request_id"),
        ("use_case_id", "use_case.id"),
        ("duplicate_request", "duplicate_request"),
        ("code", "error.code"),
        ("message", "error.message"),
    ):
        value = answer.get(name)
        if isinstance(value, (str, bool, int, float)):
            out[ANSWER_PREFIX + attribute] = value
    cost = answer.get("cost")
    if isinstance(cost, Mapping):
        if isinstance(cost.get("currency"), str):
            out[ANSWER_PREFIX + "cost.currency"] = cost["currency"]
        for part in ("total", "input", "output"):
            amount = _amount(cost.get(part))
            if amount is not None:
                out[f"{ANSWER_PREFIX}cost.{part}"] = amount
    limits = answer.get("limits")
    if isinstance(limits, Mapping):
        by_state: Dict[str, List[str]] = {}
        for limit_id, state in limits.items():
            state_name = state.get("state") if isinstance(state, Mapping) else None
            if isinstance(state_name, str):
                by_state.setdefault(state_name, []).append(str(limit_id))
        for state_name, ids in by_state.items():
            out[f"{ANSWER_PREFIX}limits.{state_name}"] = ids
    blocked = answer.get("blocked_limit_ids")
    if isinstance(blocked, list) and blocked:
        out[ANSWER_PREFIX + "blocked_limit_ids"] = [str(b) for b in blocked]
    return out


def _amount(value: object) -> Optional[float]:
    """A cost part: a number, or Pay-i's ``{"base": n, ...}`` details."""
    if isinstance(value, Mapping):
        value = value.get("base")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def answers_in_responses(wire: WirePolicy) -> bool:
    """Whether calls may go through Pay-i's proxy, which answers in the response: the
    ``payi-proxy`` dialect is in force (Pay-i's proxy reads its headers)."""
    return wire.dialect is PAYI_PROXY


def observe_answer(record: CallRecord) -> None:
    """The response observer for calls through Pay-i's proxy: Pay-i's answer in the response
    (a stream: in its last item) kept as the last one and put on the call's span while it is
    open. A response without one costs a lookup."""
    try:
        answer = answer_of(record.response)
        if answer is None:
            return
        note_answer(answer)
        span = record.span
        if span.is_recording():
            span.set_attributes(answer_attributes(answer))
    except Exception:
        internal_error("answer", "reading Pay-i's answer in a response failed")

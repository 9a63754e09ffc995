"""Work handed to other threads and processes carries the submitter's scope per task, or
none - never a stale one; per-call header names are exact: a typo is an error, bytes names
count, and no request carries an x-payi-* header twice."""

from __future__ import annotations

import multiprocessing
import multiprocessing.pool
from typing import Any

import pytest
from fixtures_genai import CHAT, GenAI

from payi_otel import ParameterValueError, get_context, track_context


def _user() -> object:
    return get_context().get("user_id")


def test_thread_pool_workers_never_run_a_task_in_the_creators_scope(no_global: Any) -> None:
    with track_context(user_id="alice"):
        pool = multiprocessing.pool.ThreadPool(2)
    try:
        with track_context(user_id="bob"):
            assert pool.apply(_user) is None  # carry none: not alice's stale scope
        assert pool.map(lambda _: _user(), range(4)) == [None] * 4
    finally:
        pool.close()
        pool.join()


def _child(queue: Any) -> None:
    queue.put(get_context().get("user_id"))


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="no fork on this platform"
)
def test_a_forked_child_starts_without_the_parents_scope(no_global: Any) -> None:
    fork = multiprocessing.get_context("fork")
    queue = fork.Queue()
    with track_context(user_id="parent"):
        child = fork.Process(target=_child, args=(queue,))
        child.start()
        seen = queue.get(timeout=30)
        child.join(timeout=30)
        assert get_context()["user_id"] == "parent"  # the parent's own scope is untouched
    assert seen is None


def test_a_misspelt_payi_header_is_an_error_and_nothing_is_sent(genai: GenAI) -> None:
    genai.check_invariant = False  # the GenAI span records the error; no request to match
    with track_context(user_id="u"):
        with pytest.raises(ParameterValueError) as raised:
            genai.openai.chat.completions.create(
                **CHAT, extra_headers={"X-Payi-Use-Case-Nme": "support"}
            )
    assert "X-Payi-Use-Case-Nme" in str(raised.value)
    assert "did you mean 'x-payi-use-case-name'" in str(raised.value)
    assert genai.server.requests == []


def test_bytes_header_names_count_and_no_header_goes_out_twice(genai: GenAI) -> None:
    with track_context(user_id="scope_user", limit_ids=["a"]):
        genai.openai.chat.completions.create(
            **CHAT, extra_headers={b"x-payi-user-id": "bytes_user", "X-PAYI-LIMIT-IDS": "b"}
        )
    [request] = genai.server.requests
    names = [name.lower() for name, _ in request.raw_headers if name.lower().startswith("x-payi-")]
    assert sorted(names) == sorted(set(names))
    assert genai.last() == {"x-payi-user-id": "bytes_user", "x-payi-limit-ids": "a,b"}

"""An adversarial review of the context machinery: ways a call could be billed to the wrong
user, or to nobody, around scopes that exit while another context is current (README, "Where
the context travels", the hand-off table and "Scope lifecycle"). The header on the wire is
the proof (real SDKs, the local fake server)."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from fixtures_genai import CHAT, MESSAGE, GenAI, async_genai_call
from fixtures_genai import genai_call as _call
from test_callbacks import SDKS
from test_callbacks import users_on_the_wire as _users
from test_streams import (
    SURFACES,
    Surface,
    _afull_usage,
    _collect,
    _full_usage,
    _Lingering,
    records,  # noqa: F401 (the fixture)
)

from payi_otel import get_context, track_context
from payi_otel._providers import CallRecord


def _leave_alice_under_a_late_restore(genai: GenAI, then: Any) -> None:
    """Enter alice's scope, run ``then()`` in it (it schedules work that carries alice),
    and leave the scope while another library's context is attached on top; that library
    then restores its context from inside alice's scope, here. Alice is noted as exited on
    this thread."""
    with track_context(user_id="alice"):
        then()
        held = [_Lingering(genai)]
    held.clear()
    assert "user_id" not in get_context()


class _Resource:
    pass


# --- work carried by a hand-off, run on the thread that noted its scope as exited ------------


@pytest.mark.parametrize("sdk", SDKS)
def test_a_finalizer_collected_where_its_creators_scope_exited_late_still_bills_the_creator(
    surface: GenAI, sdk: str
) -> None:
    """The hand-off table: ``weakref.finalize`` carries the creator's scope wherever the
    object is collected - the thread that noted the scope as exited included."""
    resource = [_Resource()]
    seen: list[object] = []

    def cleanup() -> None:
        seen.append(get_context().get("user_id"))
        _call(surface, sdk)

    _leave_alice_under_a_late_restore(surface, lambda: weakref.finalize(resource[0], cleanup))
    resource.clear()
    gc.collect()
    assert seen == ["alice"]
    assert _users(surface) == ["alice"]


@pytest.mark.parametrize("sdk", SDKS)
def test_a_done_callback_run_where_its_adders_scope_exited_late_still_bills_the_adder(
    surface: GenAI, sdk: str
) -> None:
    """``Future.add_done_callback`` carries the adder's scope whichever thread completes
    the future - the one that noted the scope as exited included."""
    future: Future[int] = Future()
    seen: list[object] = []

    def done(_: object) -> None:
        seen.append(get_context().get("user_id"))
        _call(surface, sdk)

    _leave_alice_under_a_late_restore(surface, lambda: future.add_done_callback(done))
    future.set_result(1)
    assert seen == ["alice"]
    assert _users(surface) == ["alice"]


@pytest.mark.parametrize("sdk", SDKS)
def test_a_task_submitted_in_a_scope_that_exited_late_on_the_same_worker_bills_its_submitter(
    surface: GenAI, sdk: str
) -> None:
    """A pool worker runs its tasks one after another in one thread: a scope a task left
    late there is noted on the worker, and a later task submitted inside that scope must
    still run in it (the submitter's, per task)."""
    seen: list[object] = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        later: list[Future[None]] = []

        def second() -> None:
            seen.append(get_context().get("user_id"))
            _call(surface, sdk)

        def first() -> None:
            _leave_alice_under_a_late_restore(surface, lambda: later.append(pool.submit(second)))

        pool.submit(first).result(30)
        later[0].result(30)
    assert seen == ["alice"]
    assert _users(surface) == ["alice"]


@pytest.mark.parametrize("sdk", SDKS)
def test_a_carried_callback_leaves_the_threads_own_note_of_exited_scopes_in_force(
    surface: GenAI, sdk: str
) -> None:
    """Guard: running carried work does not make the thread forget the scopes that exited
    there - after the callback, the late-restored context still has no alice."""
    future: Future[int] = Future()
    _leave_alice_under_a_late_restore(surface, lambda: future.add_done_callback(lambda _: None))
    future.set_result(1)
    assert "user_id" not in get_context()
    _call(surface, sdk)
    thread_saw: list[object] = []
    worker = threading.Thread(target=lambda: thread_saw.append(get_context().get("user_id")))
    worker.start()
    worker.join(10)
    assert thread_saw == [None]
    assert _users(surface) == [None]


# --- usage: a stream peeked at, then read on -------------------------------------------------


@pytest.mark.parametrize("surface_", SURFACES, ids=lambda s: s.name)
def test_a_stream_peeked_at_then_read_to_the_end_reports_its_whole_usage_once(
    surface: GenAI,
    records: list[CallRecord],  # noqa: F811 (the fixture)
    surface_: Surface,
) -> None:
    """``first = next(iter(stream))`` and then ``for chunk in stream``: the first loop's
    iterator is dropped after one item, but the stream is not left - it is read on to the
    end, and the call is reported once with all its usage, not with what the peek saw."""
    full = _full_usage(surface, surface_, records)
    stream, manager = surface_.open(surface)
    first = next(iter(stream))
    rest = list(stream)
    if manager is not None:
        manager.__exit__(None, None, None)
    del stream, manager
    gc.collect()
    assert first is not None and rest
    assert [r.usage for r in records if r.streamed] == [full]
    if not surface_.genai_span:
        surface.check_invariant = False


@pytest.mark.parametrize("surface_", SURFACES, ids=lambda s: s.name)
async def test_an_async_stream_peeked_at_then_read_to_the_end_reports_its_whole_usage_once(
    surface: GenAI,
    records: list[CallRecord],  # noqa: F811 (the fixture)
    surface_: Surface,
) -> None:
    full = await _afull_usage(surface, surface_, records)
    stream, manager = await surface_.aopen(surface)
    peek = stream.__aiter__()
    first = await peek.__anext__()
    del peek
    await _collect()  # the loop closes the dropped iterator (its asyncgen hook)
    rest = [item async for item in stream]
    if manager is not None:
        await manager.__aexit__(None, None, None)
    del stream, manager
    await _collect()
    assert first is not None and rest
    assert [r.usage for r in records if r.streamed] == [full]
    if not surface_.genai_span:
        surface.check_invariant = False


@pytest.mark.parametrize("sdk", SDKS)
def test_a_scope_left_late_inside_a_callback_stays_gone_after_the_callback_returns(
    surface: GenAI, sdk: str
) -> None:
    """A scope entered in carried work and left there under another library's context,
    which that library restores only after the work returned: the thread's note keeps it."""
    future: Future[int] = Future()
    held: list[_Lingering] = []

    def done(_: object) -> None:
        with track_context(user_id="bob"):
            held.append(_Lingering(surface))

    future.add_done_callback(done)
    future.set_result(1)
    held.clear()  # the context from inside bob's scope is current again, here
    assert "user_id" not in get_context()
    _call(surface, sdk)
    assert _users(surface) == [None]


# --- guards: surfaces checked and found correct -----------------------------------------------


@pytest.mark.parametrize("genai_spans", [True, False], ids=["spans", "nospans"])
@pytest.mark.parametrize("sdk", SDKS)
def test_spanless_scopes_left_under_a_stream_or_a_late_restore_never_come_back(
    genai: GenAI, sdk: str, genai_spans: bool
) -> None:
    """Spanless mode (``scope_spans=False``): a scope has no span to take out of the
    context, and still leaves for good - with a real stream left open in it, and with a
    context another library restores late."""
    genai.reinstrument(scope_spans=False, genai_spans=genai_spans)
    with track_context(account_name="outer"):
        with track_context(user_id="alice"):
            if sdk == "openai":
                stream: Any = genai.openai.chat.completions.create(**CHAT, stream=True)
            else:
                stream = genai.anthropic.messages.create(**MESSAGE, stream=True)
            next(iter(stream))
            held = [_Lingering(genai)]
        del stream
        held.clear()
        gc.collect()
        assert get_context().get("account_name") == "outer"
        _call(genai, sdk)
    _call(genai, sdk)
    assert not genai.otel.named("payi.track_context")
    first, second, third = genai.attribution()
    assert (first.get("x-payi-user-id"), first.get("x-payi-account-name")) == ("alice", "outer")
    assert (second.get("x-payi-user-id"), second.get("x-payi-account-name")) == (None, "outer")
    assert not {"x-payi-user-id", "x-payi-account-name"} & set(third)


@pytest.mark.parametrize("sdk", SDKS)
def test_a_callback_that_frees_a_stream_left_in_an_exited_scope_never_bills_that_scope(
    surface: GenAI, sdk: str
) -> None:
    """Carried work runs past the thread's note only for the scopes it carries: a context
    restored late while it runs, from inside a scope that exited here and that the work
    does not carry, still never brings that scope back."""
    future: Future[int] = Future()
    held: list[_Lingering] = []
    with track_context(user_id="alice"):
        held.append(_Lingering(surface))
    with track_context(account_name="bob"):

        def done(_: object) -> None:
            held.clear()  # restores the context from inside alice's scope, here
            _call(surface, sdk)

        future.add_done_callback(done)
    future.set_result(1)
    assert "user_id" not in get_context()
    (inside,) = surface.attribution()
    assert inside.get("x-payi-user-id") is None


@pytest.mark.parametrize("sdk", SDKS)
async def test_an_async_generator_left_by_its_consumer_never_leaves_its_scope_behind(
    surface: GenAI, sdk: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An async generator holding ``async with track_context(...)`` that its consumer leaves
    (``break``) is closed by the event loop's finalizer in another task: the scope's exit
    runs there, and the consumer's context, which still carries the scope, must not bill the
    consumer's next call to it (README "Scope lifecycle")."""

    async def chunks() -> Any:
        async with track_context(user_id="alice"):
            for i in range(3):
                yield i

    async for _ in chunks():
        break
    for _ in range(5):
        gc.collect()
        await asyncio.sleep(0)
    assert get_context().get("user_id") is None
    await async_genai_call(surface, sdk)
    with track_context(user_id="bob"):
        await async_genai_call(surface, sdk)
    assert _users(surface) == [None, "bob"]
    assert "Failed to detach context" not in caplog.text

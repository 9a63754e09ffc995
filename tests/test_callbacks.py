"""Code that runs on behalf of a submitter - done-callbacks, loop callbacks, executor hand-offs
and initializers, pool callbacks, exit and signal handlers, finalizers - runs in the scope of
whoever scheduled it, or in none; never in an earlier, unrelated submitter's (README, "Where
the context travels"). Where billing is at stake the header on the wire is the proof."""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import multiprocessing.pool
import signal
import subprocess
import sys
import textwrap
import threading
import weakref
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, Callable, Optional

import pytest
from fake_llm_server import FakeLLMServer
from fixtures_genai import (
    GenAI,
    async_genai_call,
    first_attempts,
    genai_call,
    payi_headers,
)

from payi_otel import PayiInstrumentor, get_context, track_context

SDKS = ["openai", "anthropic"]


def users_on_the_wire(genai: GenAI) -> list[Any]:
    return [headers.get("x-payi-user-id") for headers in genai.attribution()]


def user() -> Optional[Any]:
    return get_context().get("user_id")


class Seen:
    """What callbacks saw: ``record(name)`` is a callback (any arguments) that notes the
    user id (or ``what()``) in force where it runs; ``wait(n)`` until ``n`` callbacks ran."""

    def __init__(self, what: Callable[[], Any] = user) -> None:
        self.what = what
        self.users: dict[str, Any] = {}
        self._ran = threading.Condition()

    def record(self, name: str, then: Optional[Callable[[], None]] = None) -> Callable[..., None]:
        def callback(*_: Any) -> None:
            try:
                if then is not None:
                    then()
            finally:
                with self._ran:
                    self.users[name] = self.what()
                    self._ran.notify_all()

        return callback

    def wait(self, count: int) -> dict[str, Any]:
        with self._ran:
            assert self._ran.wait_for(lambda: len(self.users) >= count, timeout=30), self.users
        return self.users


# --- concurrent.futures ---------------------------------------------------------------------


@pytest.mark.parametrize("sdk", SDKS)
def test_a_pool_workers_done_callback_never_bills_bob_to_alice(surface: GenAI, sdk: str) -> None:
    """The worker thread is started during alice's submit; bob's done-callback runs in it."""
    release, seen = threading.Event(), Seen()
    with ThreadPoolExecutor(max_workers=1) as pool:
        with track_context(user_id="alice"):
            pool.submit(lambda: None).result()  # starts the worker in alice's scope
        with track_context(user_id="bob"):
            future = pool.submit(release.wait)
            future.add_done_callback(seen.record("bob", lambda: genai_call(surface, sdk)))
        release.set()
        assert seen.wait(1) == {"bob": "bob"}
    assert users_on_the_wire(surface) == ["bob"]


@pytest.mark.parametrize("sdk", SDKS)
async def test_an_async_call_started_from_a_workers_done_callback_bills_the_adder(
    surface: GenAI, sdk: str
) -> None:
    """As above, the callback hands an async call to the loop (run_coroutine_threadsafe
    copies the worker's context)."""
    loop = asyncio.get_running_loop()
    release = threading.Event()
    started: list[Future[None]] = []

    def start(_: Any) -> None:
        started.append(asyncio.run_coroutine_threadsafe(async_genai_call(surface, sdk), loop))

    with ThreadPoolExecutor(max_workers=1) as pool:
        with track_context(user_id="alice"):
            pool.submit(lambda: None).result()  # starts the worker in alice's scope
        with track_context(user_id="bob"):
            pool.submit(release.wait).add_done_callback(start)
        release.set()
        while not started:
            await asyncio.sleep(0.005)
        await asyncio.wrap_future(started[0])
    assert users_on_the_wire(surface) == ["bob"]


@pytest.mark.parametrize("sdk", SDKS)
def test_a_done_callback_runs_in_the_scope_of_whoever_added_it(surface: GenAI, sdk: str) -> None:
    """Added in carol's scope to a future alice submitted, completed by a thread in dave's
    scope or cancelled in erin's: carol's, every time."""
    release, seen = threading.Event(), Seen()
    with ThreadPoolExecutor(max_workers=1) as pool:
        with track_context(user_id="alice"):
            submitted = pool.submit(release.wait)
            queued = pool.submit(lambda: None)  # waits behind the first: can be cancelled
        bare: Future[None] = Future()
        with track_context(user_id="carol"):
            call = lambda: genai_call(surface, sdk)  # noqa: E731
            submitted.add_done_callback(seen.record("submitted", call))
            bare.add_done_callback(seen.record("bare", call))
            queued.add_done_callback(seen.record("cancelled"))
        with track_context(user_id="dave"):
            threading.Thread(target=bare.set_result, args=(None,)).start()
        with track_context(user_id="erin"):
            assert queued.cancel()
        release.set()
        assert seen.wait(3) == {"submitted": "carol", "bare": "carol", "cancelled": "carol"}
    assert users_on_the_wire(surface) == ["carol", "carol"]


def test_a_done_callback_added_to_a_finished_future_runs_at_once_in_the_adders_scope(
    no_global: Any,
) -> None:
    future: Future[int] = Future()
    with track_context(user_id="alice"):
        future.set_result(1)
    seen = Seen()
    with track_context(user_id="bob"):
        future.add_done_callback(seen.record("late"))
    assert seen.users == {"late": "bob"}


def test_a_done_callback_keeps_the_stdlibs_behaviour(
    no_global: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """It gets the future; an exception in it is logged by concurrent.futures, not raised."""
    future: Future[int] = Future()
    got: list[Any] = []
    future.add_done_callback(got.append)

    def fails(_: Any) -> None:
        raise RuntimeError("in the callback")

    future.add_done_callback(fails)
    future.set_result(7)
    assert got == [future] and future.result() == 7
    assert "exception calling callback" in caplog.text and "in the callback" in caplog.text


@pytest.mark.parametrize("sdk", SDKS)
def test_an_executor_initializer_runs_in_no_scope(surface: GenAI, sdk: str) -> None:
    """Neither the creator's scope nor that of the submit that happens to start a worker."""
    seen = Seen()
    with track_context(user_id="creator"):
        pool = ThreadPoolExecutor(
            max_workers=1, initializer=seen.record("initializer", lambda: genai_call(surface, sdk))
        )
    with pool:
        with track_context(user_id="alice"):
            assert pool.submit(user).result() == "alice"
    assert seen.users == {"initializer": None}
    assert users_on_the_wire(surface) == [None]


# --- multiprocessing.pool callbacks ---------------------------------------------------------


@pytest.mark.parametrize("sdk", SDKS)
def test_a_multiprocessing_pool_callback_runs_in_its_submitters_scope(
    surface: GenAI, sdk: str
) -> None:
    """The pool's result thread was started in the creator's scope; bob's callback and
    error_callback are bob's."""
    seen = Seen()
    with track_context(user_id="creator"):
        pool = multiprocessing.pool.ThreadPool(1)
    try:
        with track_context(user_id="bob"):
            pool.apply_async(
                user, callback=seen.record("callback", lambda: genai_call(surface, sdk))
            )
            pool.map_async(int, ["x"], error_callback=seen.record("error_callback"))
        assert seen.wait(2) == {"callback": "bob", "error_callback": "bob"}
    finally:
        pool.close()
        pool.join()
    assert users_on_the_wire(surface) == ["bob"]


# --- asyncio: already carried by asyncio itself ---------------------------------------------


async def test_asyncio_done_callbacks_and_loop_callbacks_run_in_the_schedulers_scope(
    no_global: Any,
) -> None:
    loop = asyncio.get_running_loop()
    seen = Seen()
    future = loop.create_future()

    async def sleeper() -> None:
        await asyncio.sleep(0)

    with track_context(user_id="scheduler"):
        future.add_done_callback(seen.record("future"))
        asyncio.ensure_future(sleeper()).add_done_callback(seen.record("task"))
        loop.call_soon(seen.record("call_soon"))
        loop.call_later(0.001, seen.record("call_later"))
        loop.call_at(loop.time() + 0.001, seen.record("call_at"))
    with track_context(user_id="other"):
        future.set_result(None)
        await asyncio.sleep(0.05)
    assert seen.users == dict.fromkeys(
        ["future", "task", "call_soon", "call_later", "call_at"], "scheduler"
    )


@pytest.mark.parametrize("sdk", SDKS)
async def test_async_calls_started_from_loop_callbacks_bill_their_scheduler(
    surface: GenAI, sdk: str
) -> None:
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Future[None]] = []

    def start(*_: Any) -> None:
        tasks.append(asyncio.ensure_future(async_genai_call(surface, sdk)))

    def from_another_thread() -> None:
        with track_context(user_id="thread"):
            loop.call_soon_threadsafe(start)

    future = loop.create_future()
    with track_context(user_id="sched"):
        future.add_done_callback(start)
        loop.call_soon(start)
        loop.call_later(0.001, start)
    with track_context(user_id="other"):
        thread = threading.Thread(target=from_another_thread)
        thread.start()
        thread.join()
        future.set_result(None)
        while len(tasks) < 4:
            await asyncio.sleep(0.005)
        await asyncio.gather(*tasks)
    assert sorted(users_on_the_wire(surface)) == ["sched", "sched", "sched", "thread"]


async def test_call_soon_threadsafe_runs_in_the_calling_threads_scope(no_global: Any) -> None:
    loop = asyncio.get_running_loop()
    seen = Seen()

    def from_another_thread() -> None:
        with track_context(user_id="thread"):
            loop.call_soon_threadsafe(seen.record("threadsafe"))

    async with track_context(user_id="loop"):
        thread = threading.Thread(target=from_another_thread)
        thread.start()
        await loop.run_in_executor(None, thread.join)
        await asyncio.sleep(0.01)
    assert seen.users == {"threadsafe": "thread"}


@pytest.mark.parametrize("sdk", SDKS)
@pytest.mark.parametrize("executor", ["default", "given"])
async def test_run_in_executor_runs_in_the_callers_scope(
    surface: GenAI, sdk: str, executor: str
) -> None:
    """The worker was started in alice's scope; bob's call is bob's."""
    loop = asyncio.get_running_loop()
    pool = None if executor == "default" else ThreadPoolExecutor(max_workers=1)
    try:
        async with track_context(user_id="alice"):
            await loop.run_in_executor(pool, user)
        async with track_context(user_id="bob"):
            await loop.run_in_executor(pool, genai_call, surface, sdk)
            assert await loop.run_in_executor(pool, user) == "bob"
    finally:
        if pool is not None:
            pool.shutdown()
    assert users_on_the_wire(surface) == ["bob"]


# --- signal handlers, finalizers ------------------------------------------------------------


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="no SIGUSR1 on this platform")
@pytest.mark.parametrize("sdk", SDKS)
def test_a_signal_handler_runs_in_no_scope_not_the_interrupted_one(
    surface: GenAI, sdk: str
) -> None:
    seen = Seen()
    handler = seen.record("handler", lambda: genai_call(surface, sdk))
    previous = signal.getsignal(signal.SIGUSR1)
    try:
        with track_context(user_id="registrar"):
            assert signal.signal(signal.SIGUSR1, handler) == previous
        assert signal.getsignal(signal.SIGUSR1) is handler  # the user's, not a wrapper
        with track_context(user_id="interrupted"):
            signal.raise_signal(signal.SIGUSR1)
            assert user() == "interrupted"  # and the interrupted code's scope is intact
        assert signal.signal(signal.SIGUSR1, previous) is handler
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert seen.users == {"handler": None}
    assert users_on_the_wire(surface) == [None]


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="no SIGUSR1 on this platform")
def test_uninstrument_gives_signal_getsignal_the_users_handler_back(no_global: Any) -> None:
    def handler(*_: Any) -> None:
        pass

    previous = signal.getsignal(signal.SIGUSR1)
    try:
        signal.signal(signal.SIGUSR1, handler)
        PayiInstrumentor().uninstrument()
        assert signal.getsignal(signal.SIGUSR1) is handler
    finally:
        signal.signal(signal.SIGUSR1, previous)


class _Resource:
    pass


@pytest.mark.parametrize("sdk", SDKS)
def test_a_finalizer_runs_in_its_creators_scope_wherever_the_object_is_collected(
    surface: GenAI, sdk: str
) -> None:
    seen = Seen()
    resource = _Resource()
    call = seen.record("finalizer", lambda: genai_call(surface, sdk))
    with track_context(user_id="creator"):
        finalizer = weakref.finalize(resource, call, "argument")
    assert finalizer.peek() == (resource, call, ("argument",), {})
    assert finalizer.peek()[1] is call  # type: ignore[index]
    with track_context(user_id="collector"):
        del resource
        gc.collect()
    assert seen.users == {"finalizer": "creator"}
    assert users_on_the_wire(surface) == ["creator"]


def test_a_detached_finalizer_gives_back_the_users_function(no_global: Any) -> None:
    resource = _Resource()

    def cleanup() -> None:
        pass

    finalizer = weakref.finalize(resource, cleanup)
    obj, fn, args, kwargs = finalizer.detach()  # type: ignore[misc]
    assert (obj, fn, args, kwargs) == (resource, cleanup, (), {}) and fn is cleanup
    assert finalizer.detach() is None and not finalizer.alive


def test_a_weakref_callback_is_not_carried_but_copy_context_carries_it(no_global: Any) -> None:
    """The limit the README states, and its workaround."""
    import contextvars
    import functools

    seen = Seen()
    first, second = _Resource(), _Resource()
    with track_context(user_id="creator"):
        plain = weakref.ref(first, seen.record("plain"))
        carried = weakref.ref(
            second, functools.partial(contextvars.copy_context().run, seen.record("carried"))
        )
    with track_context(user_id="collector"):
        del first, second
        gc.collect()
    assert seen.users == {"plain": "collector", "carried": "creator"}
    assert plain() is None and carried() is None


# --- atexit: a real process exit ------------------------------------------------------------


_AT_EXIT = textwrap.dedent("""
    import atexit, sys, weakref
    import anthropic, openai
    from payi_otel import get_context, payi_instrument, track_context

    payi_instrument(genai_spans=False)
    sdk, openai_url, anthropic_url = sys.argv[1:]

    def at_exit():
        print("at exit:", get_context().get("user_id"), flush=True)
        if sdk == "openai":
            openai.OpenAI(base_url=openai_url, api_key="t", max_retries=0).chat.completions.create(
                model="gpt-4", messages=[{"role": "user", "content": "Hello"}])
        else:
            anthropic.Anthropic(base_url=anthropic_url, api_key="t", max_retries=0).messages.create(
                model="claude-haiku-4-5", max_tokens=8,
                messages=[{"role": "user", "content": "Hello"}])

    def dropped():
        print("unregistered handler ran", flush=True)

    with track_context(user_id="registrar"):
        assert atexit.register(at_exit) is at_exit  # usable as a decorator
        atexit.register(dropped)
    atexit.unregister(dropped)

    class Resource:
        pass

    kept = Resource()  # alive at exit: its finalizer runs then
    with track_context(user_id="creator"):
        weakref.finalize(kept, lambda: print("finalizer:", get_context().get("user_id")))
    track_context(user_id="leaked").__enter__()  # a scope never left, current at exit
""")


@pytest.mark.parametrize("sdk", SDKS)
def test_at_exit_handlers_run_in_no_scope_and_finalizers_in_their_creators_not_a_leaked_one(
    llm_server: FakeLLMServer, sdk: str
) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _AT_EXIT,
            sdk,
            llm_server.openai_base_url,
            llm_server.anthropic_base_url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["finalizer: creator", "at exit: None"], done.stderr
    [request] = first_attempts(llm_server)
    assert "x-payi-user-id" not in payi_headers(request)


def test_the_patched_stdlib_functions_keep_their_results_and_errors(no_global: Any) -> None:
    import atexit

    with pytest.raises(TypeError):
        atexit.register("not callable")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        signal.signal(signal.SIGINT, "not callable")  # type: ignore[arg-type]
    finalizer = weakref.finalize(resource := _Resource(), lambda value: value * 2, 21)
    assert finalizer() == 42 and not finalizer.alive and resource is not None
    if hasattr(signal, "SIGUSR1"):

        def fails(*_: Any) -> None:
            raise ArithmeticError("in the handler")

        previous = signal.signal(signal.SIGUSR1, fails)
        try:
            with track_context(user_id="interrupted"):
                with pytest.raises(ArithmeticError, match="in the handler"):
                    signal.raise_signal(signal.SIGUSR1)
                assert user() == "interrupted"
        finally:
            signal.signal(signal.SIGUSR1, previous)


def test_uninstrument_undoes_every_hand_off_patch(no_global: Any) -> None:
    from payi_otel import _threads

    patched = [(owner, name) for owner, name, _ in _threads._PATCHES]
    assert all(hasattr(owner.__dict__[name], "__wrapped__") for owner, name in patched)
    PayiInstrumentor().uninstrument()
    assert not any(hasattr(owner.__dict__[name], "__wrapped__") for owner, name in patched)


# --- random submitters, random scopes, random callbacks -------------------------------------


async def _add_asyncio_done_callback(callback: Callable[..., None]) -> asyncio.Future[None]:
    future = asyncio.get_running_loop().create_future()
    future.add_done_callback(callback)
    return future


def test_random_submitters_in_random_scopes_schedule_callbacks_that_run_in_theirs(
    no_global: Any,
) -> None:
    """Scopes opened and closed in random order (the interleaving model of
    test_scope_lifecycle, which checks get_context() against it); at each step a submitter -
    this thread or a thread started there - schedules a random callback on a shared pool and
    a shared loop; pool workers are started by whichever step first needs one, futures and
    asyncio futures complete at later random steps. Every callback sees exactly the scope in
    force where it was scheduled."""
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from test_scope_lifecycle import _holder

    kinds = [
        "done_callback",
        "done_callback_on_earlier",
        "call_soon_threadsafe",
        "call_later",
        "run_in_executor",
        "asyncio_done_callback",
        "release",
    ]
    steps = st.lists(
        st.tuples(
            st.sampled_from(["open", "close", "stay"]),
            st.integers(0, 3),
            st.sampled_from(kinds),
            st.booleans(),
        ),
        max_size=20,
    )

    @settings(max_examples=40, deadline=None, database=None)
    @given(steps)
    def run(plan: list[tuple[str, int, str, bool]]) -> None:
        seen = Seen(lambda: dict(get_context()))
        expected: dict[str, Any] = {}
        gate = [threading.Event()]
        futures: list[Future[Any]] = []
        pending: list[asyncio.Future[None]] = []
        holders: dict[int, Any] = {}
        loop = asyncio.new_event_loop()
        loop_thread = threading.Thread(target=loop.run_forever)
        loop_thread.start()
        pool = ThreadPoolExecutor(max_workers=2)

        def release() -> None:
            gate[0].set()
            gate[0] = threading.Event()
            for future in pending:
                loop.call_soon_threadsafe(future.set_result, None)
            pending.clear()

        def schedule(kind: str, name: str) -> None:
            expected[name] = dict(get_context())
            callback = seen.record(name)
            if kind == "done_callback_on_earlier" and futures:
                futures[0].add_done_callback(callback)  # submitted at an earlier step
            elif kind in ("done_callback", "done_callback_on_earlier"):
                futures.append(pool.submit(gate[0].wait))
                futures[-1].add_done_callback(callback)
            elif kind == "call_soon_threadsafe":
                loop.call_soon_threadsafe(callback)
            elif kind == "call_later":
                loop.call_soon_threadsafe(loop.call_later, 0.001, callback)
            elif kind == "run_in_executor":
                asyncio.run_coroutine_threadsafe(_in_executor(loop, pool, callback), loop)
            else:
                pending.append(
                    asyncio.run_coroutine_threadsafe(
                        _add_asyncio_done_callback(callback), loop
                    ).result(30)
                )

        try:
            for step, (action, index, kind, from_thread) in enumerate(plan):
                if action == "open" and index not in holders:
                    holders[index] = _holder(index)
                    next(holders[index])
                elif action == "close" and index in holders:
                    holders.pop(index).close()
                if kind == "release":
                    release()
                elif from_thread:
                    submitter = threading.Thread(target=schedule, args=(kind, f"{step}"))
                    submitter.start()
                    submitter.join()
                else:
                    schedule(kind, f"{step}")
            release()
            assert seen.wait(len(expected)) == expected
        finally:
            release()
            for holder in reversed(list(holders.values())):
                holder.close()
            pool.shutdown()
            loop.call_soon_threadsafe(loop.stop)
            loop_thread.join()
            loop.close()

    run()


async def _in_executor(
    loop: asyncio.AbstractEventLoop, pool: ThreadPoolExecutor, callback: Callable[[], None]
) -> None:
    await loop.run_in_executor(pool, callback)


# --- the README's hand-off table, row by row ------------------------------------------------
# Each check hands work on from a scheduler in scope "sched" while an unrelated scope,
# "other", is in force wherever else it can be (the thread that started a worker, the code a
# handler interrupts, the code that collects an object) and returns what each piece of work
# saw; the row's "carries" cell says what that must be: none, or the scheduler's.


def _check_threads() -> list[Any]:
    seen = Seen()
    with track_context(user_id="sched"):
        thread = threading.Thread(target=seen.record("thread"))
        timer = threading.Timer(0, seen.record("timer"))
        thread.start()
        timer.start()
    with track_context(user_id="other"):
        thread.join()
        timer.join()
    return list(seen.wait(2).values())


def _check_executor_tasks() -> list[Any]:
    async def in_executor(pool: ThreadPoolExecutor) -> list[Any]:
        loop = asyncio.get_running_loop()
        return [await loop.run_in_executor(None, user), await loop.run_in_executor(pool, user)]

    with ThreadPoolExecutor(max_workers=1) as pool:
        with track_context(user_id="other"):
            pool.submit(user).result()  # the worker starts in another scope
        with track_context(user_id="sched"):
            return [
                pool.submit(user).result(),
                *pool.map(lambda _: user(), [0]),
                *asyncio.run(in_executor(pool)),
            ]


def _check_asyncio_tasks() -> list[Any]:
    async def read() -> Any:
        return user()

    async def body() -> list[Any]:
        with track_context(user_id="sched"):
            task = asyncio.create_task(read())
            gathered = asyncio.gather(read())
            threaded = asyncio.ensure_future(asyncio.to_thread(user))
        with track_context(user_id="other"):
            return [await task, *(await gathered), await threaded]

    return asyncio.run(body())


def _check_future_done_callbacks() -> list[Any]:
    seen, release = Seen(), threading.Event()
    with ThreadPoolExecutor(max_workers=1) as pool:
        with track_context(user_id="other"):
            submitted = pool.submit(release.wait)  # the worker starts in another scope
            queued = pool.submit(user)
        bare: Future[None] = Future()
        with track_context(user_id="sched"):
            submitted.add_done_callback(seen.record("by a worker"))
            bare.add_done_callback(seen.record("by another thread"))
            queued.add_done_callback(seen.record("cancelled"))
        with track_context(user_id="other"):
            threading.Thread(target=bare.set_result, args=(None,)).start()
            queued.cancel()
        release.set()
        found = list(seen.wait(3).values())
    if "fork" in multiprocessing.get_all_start_methods():
        # A process pool's futures complete in its manager thread, started by the first submit.
        seen = Seen()
        fork = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=1, mp_context=fork) as processes:
            with track_context(user_id="other"):
                processes.submit(int).result(timeout=30)
            with track_context(user_id="sched"):
                processes.submit(int).add_done_callback(seen.record("process pool"))
            found.extend(seen.wait(1).values())
    return found


def _check_asyncio_callbacks() -> list[Any]:
    seen = Seen()

    async def body() -> None:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        usr2 = getattr(signal, "SIGUSR2", None)

        def from_another_thread() -> None:
            with track_context(user_id="sched"):
                loop.call_soon_threadsafe(seen.record("call_soon_threadsafe"))

        with track_context(user_id="sched"):
            future.add_done_callback(seen.record("future"))
            asyncio.ensure_future(asyncio.sleep(0)).add_done_callback(seen.record("task"))
            loop.call_soon(seen.record("call_soon"))
            loop.call_later(0.001, seen.record("call_later"))
            loop.call_at(loop.time() + 0.001, seen.record("call_at"))
            if usr2 is not None:
                loop.add_signal_handler(usr2, seen.record("add_signal_handler"))
        with track_context(user_id="other"):
            thread = threading.Thread(target=from_another_thread)
            thread.start()
            thread.join()
            future.set_result(None)
            if usr2 is not None:
                signal.raise_signal(usr2)
            await asyncio.sleep(0.05)
            if usr2 is not None:
                loop.remove_signal_handler(usr2)

    asyncio.run(body())
    return list(seen.wait(6 + hasattr(signal, "SIGUSR2")).values())


def _check_pool_callbacks() -> list[Any]:
    seen = Seen()
    with track_context(user_id="other"):
        pool = multiprocessing.pool.ThreadPool(1)
    try:
        with track_context(user_id="sched"):
            pool.apply_async(user, callback=seen.record("apply_async"))
            pool.map_async(int, ["1"], callback=seen.record("map_async"))
            pool.starmap_async(int, [("x",)], error_callback=seen.record("error_callback"))
        return list(seen.wait(3).values())
    finally:
        pool.close()
        pool.join()


def _check_finalize() -> list[Any]:
    seen, resource = Seen(), _Resource()
    with track_context(user_id="sched"):
        weakref.finalize(resource, seen.record("finalize"))
    with track_context(user_id="other"):
        del resource
        gc.collect()
    return list(seen.wait(1).values())


def _check_pool_workers() -> list[Any]:
    seen = Seen()
    with track_context(user_id="other"):
        executor = ThreadPoolExecutor(max_workers=1, initializer=seen.record("executor init"))
        pool = multiprocessing.pool.ThreadPool(1, initializer=seen.record("ThreadPool init"))
    try:
        with track_context(user_id="sched"):
            executor.submit(lambda: None).result()  # starts the worker: runs the initializer
            task = pool.apply(user)
    finally:
        executor.shutdown()
        pool.close()
        pool.join()
    return [task, *seen.wait(2).values()]


_PRINT_USER_AT_EXIT = textwrap.dedent("""
    import atexit
    from payi_otel import get_context, payi_instrument, track_context

    payi_instrument(genai_spans=False)
    with track_context(user_id="sched"):
        atexit.register(lambda: print(get_context().get("user_id")))
    track_context(user_id="other").__enter__()
""")


def _check_exit_and_signal_handlers() -> list[Any]:
    done = subprocess.run(
        [sys.executable, "-c", _PRINT_USER_AT_EXIT],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found: list[Any] = [None if done.stdout.strip() == "None" else done.stdout.strip()]
    if hasattr(signal, "SIGUSR1"):
        seen = Seen()
        previous = signal.getsignal(signal.SIGUSR1)
        try:
            with track_context(user_id="sched"):
                signal.signal(signal.SIGUSR1, seen.record("signal"))
            with track_context(user_id="other"):
                signal.raise_signal(signal.SIGUSR1)
        finally:
            signal.signal(signal.SIGUSR1, previous)
        found.extend(seen.wait(1).values())
    return found


def _check_weakref_callbacks() -> list[Any]:
    """Not carried (the plain callback sees the collector's scope); the workaround carries."""
    import contextvars
    import functools

    seen = Seen()
    first, second = _Resource(), _Resource()
    with track_context(user_id="sched"):
        refs = [
            weakref.ref(first, seen.record("plain")),
            weakref.ref(
                second, functools.partial(contextvars.copy_context().run, seen.record("workaround"))
            ),
        ]
    with track_context(user_id="other"):
        del first, second
        gc.collect()
    assert seen.wait(2)["plain"] == "other" and all(r() is None for r in refs)
    return [seen.users["workaround"]]


def _check_processes() -> list[Any]:
    if "fork" not in multiprocessing.get_all_start_methods():
        return [None]
    fork = multiprocessing.get_context("fork")
    queue = fork.Queue()
    with track_context(user_id="sched"):
        child = fork.Process(target=lambda: queue.put(user()))
        child.start()
        found = [queue.get(timeout=30)]
        child.join(timeout=30)
        with ProcessPoolExecutor(max_workers=1, mp_context=fork) as pool:
            found.append(pool.submit(user).result(timeout=30))
    return found


ROW_CHECKS: dict[str, Callable[[], list[Any]]] = {
    "`threading.Thread` (any subclass), `threading.Timer`": _check_threads,
    "`ThreadPoolExecutor.submit` / `map`, `loop.run_in_executor` (the default executor or a "
    "given one)": _check_executor_tasks,
    "`asyncio.create_task`, `gather`, `asyncio.to_thread`": _check_asyncio_tasks,
    "`concurrent.futures.Future.add_done_callback` (so on `run_in_executor`, "
    "`run_coroutine_threadsafe` futures)": _check_future_done_callbacks,
    "asyncio `Future` / `Task.add_done_callback`, `loop.call_soon`, `call_soon_threadsafe`, "
    "`call_later`, `call_at`, `loop.add_signal_handler`": _check_asyncio_callbacks,
    "`multiprocessing.pool` `apply_async` / `map_async` / `starmap_async` `callback=` and "
    "`error_callback=`": _check_pool_callbacks,
    "`weakref.finalize(obj, fn)`": _check_finalize,
    "`ThreadPoolExecutor(initializer=)`, `multiprocessing.pool.ThreadPool` "
    "(`multiprocessing.dummy`) tasks and `initializer=`": _check_pool_workers,
    "`atexit.register`, `signal.signal` handlers": _check_exit_and_signal_handlers,
    "`weakref.ref(obj, callback)`": _check_weakref_callbacks,
    "a forked child (`os.fork`, multiprocessing `fork`), `ProcessPoolExecutor`, `spawn` / "
    "`forkserver`": _check_processes,
}


def _hand_off_table() -> list[tuple[str, str]]:
    """The README's "Concurrency hand-offs" table: (hand-off, carries) per row."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    lines = readme[readme.index("**Concurrency hand-offs**") :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2 :]:  # past the header and its separator
        if not line.startswith("|"):
            break
        hand_off, carries = (cell.strip() for cell in line.strip().strip("|").split(" | "))
        rows.append((hand_off, carries))
    return rows


@pytest.mark.parametrize(
    ("hand_off", "carries"),
    [
        pytest.param(hand_off, carries, id=hand_off.split(",")[0].strip("` "))
        for hand_off, carries in _hand_off_table()
    ],
)
def test_every_row_of_the_readme_hand_off_table_holds(
    no_global: Any, hand_off: str, carries: str
) -> None:
    assert hand_off in ROW_CHECKS, f"no check for the README hand-off row {hand_off!r}"
    expected = None if carries.startswith("none") else "sched"
    seen = ROW_CHECKS[hand_off]()
    assert seen and seen == [expected] * len(seen), (hand_off, carries)


def test_every_hand_off_check_has_its_row_in_the_readme_table() -> None:
    assert set(ROW_CHECKS) == {hand_off for hand_off, _ in _hand_off_table()}

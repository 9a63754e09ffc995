"""What a user's install relies on: context into every thread and pool task (per task, never
a stale one), exactly payi's own wrappers undone, GenAI spans recognised however an
instrumentation starts them, and a WARNING whenever something would silently do nothing."""

from __future__ import annotations

import logging
import sys
import threading
import types
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import openai
import pytest
from fixtures_genai import CHAT, GenAI
from fixtures_otel import Otel, payi_attrs
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from wrapt import wrap_function_wrapper

from payi_otel import PayiInstrumentor, _genai, get_context, track_context
from payi_otel._log import reset_log_once
from payi_otel._wrapping import unwrap_own

# --- threads -----------------------------------------------------------------------------------


class _Worker(threading.Thread):
    """A Thread subclass that overrides run(), as many apps write them."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[str, object] = {}

    def run(self) -> None:
        self.seen = dict(get_context())


def test_thread_subclass_overriding_run_carries_the_scope(no_global: Any) -> None:
    with track_context(user_id="subclass"):
        worker = _Worker()
        worker.start()
    worker.join()
    assert worker.seen.get("user_id") == "subclass"


def test_timer_carries_the_scope(no_global: Any) -> None:
    seen: list[object] = []
    with track_context(user_id="timer"):
        timer = threading.Timer(0, lambda: seen.append(get_context().get("user_id")))
        timer.start()
    timer.join()
    assert seen == ["timer"]


def test_pool_workers_never_carry_a_stale_scope(no_global: Any) -> None:
    """The pool is created and first used inside alice's scope; later tasks run in the
    submitter's scope, or in none."""

    def user() -> object:
        return get_context().get("user_id")

    with ThreadPoolExecutor(max_workers=1) as pool:
        with track_context(user_id="alice"):
            assert pool.submit(user).result() == "alice"
        with track_context(user_id="bob"):
            assert pool.submit(user).result() == "bob"
        assert pool.submit(user).result() is None


def test_uninstrument_restores_thread_start_and_submit(no_global: Any) -> None:
    assert hasattr(threading.Thread.start, "__wrapped__")
    assert hasattr(ThreadPoolExecutor.submit, "__wrapped__")
    PayiInstrumentor().uninstrument()
    assert not hasattr(threading.Thread.start, "__wrapped__")
    assert not hasattr(ThreadPoolExecutor.submit, "__wrapped__")


# --- wrappers: exactly payi's own are undone ---------------------------------------------------


def test_uninstrument_keeps_another_librarys_wrapper_on_top(genai: GenAI) -> None:
    genai.check_invariant = False
    calls: list[str] = []

    def other(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        calls.append("other")
        return wrapped(*args, **kwargs)

    wrap_function_wrapper("openai._base_client", "SyncAPIClient.request", other)
    cls = openai._base_client.SyncAPIClient
    try:
        payi = PayiInstrumentor()
        payi.uninstrument()
        assert cls.__dict__["request"]._self_wrapper is other
        with track_context(user_id="gone"):
            genai.openai.chat.completions.create(**CHAT)
        assert calls == ["other"] and genai.last() == {}
        payi.instrument(tracer_provider=genai.otel.provider, caller_file="<test>")
        with track_context(user_id="back"):
            genai.openai.chat.completions.create(**CHAT)
        # One payi wrapper again (not two): the header is stamped once.
        assert genai.last() == {"x-payi-user-id": "back"}
        payi_layers = 0
        layer = cls.__dict__["request"]
        while hasattr(layer, "__wrapped__"):
            payi_layers += getattr(layer, "_self_wrapper", None) is not other
            layer = layer.__wrapped__
        assert payi_layers == 1
    finally:
        # ``other`` is beneath payi_otel's wrapper now: out wherever it sits, or it stays on
        # the class for the tests after this one.
        unwrap_own(cls, "request", other)


# --- GenAI spans ---------------------------------------------------------------------------------


def test_a_genai_span_that_starts_without_gen_ai_attributes_is_attributed(
    otel: Otel, no_global: Any
) -> None:
    """Some instrumentation paths start the span empty and set gen_ai.* at its end: the
    instrumentation scope tells it is a GenAI span."""
    tracer = otel.provider.get_tracer("opentelemetry.instrumentation.genai.openai")
    with track_context(user_id="late"):
        with tracer.start_as_current_span("chat") as span:
            span.set_attribute("gen_ai.operation.name", "chat")
    [genai_span] = otel.all_genai_spans()
    assert payi_attrs(genai_span) == {"payi.user_id": "late"}
    other = otel.provider.get_tracer("my.app")
    with track_context(user_id="late"), other.start_as_current_span("not genai"):
        pass
    assert "payi.user_id" not in (otel.one("not genai").attributes or {})


class _SecondOpenAIInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Stands in for a second instrumentation of the openai SDK (e.g. openai-v2)."""

    def instrumentation_dependencies(self) -> tuple[str, ...]:
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        return None

    def _uninstrument(self, **kwargs: Any) -> None:
        return None


@pytest.fixture
def families(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    reset_log_once()

    def use(*instrumentations: _genai.Instrumentation, native: str | None = None) -> None:
        monkeypatch.setattr(
            _genai, "FAMILIES", (_genai.Family("openai", instrumentations, native),)
        )

    yield use
    reset_log_once()


def test_two_instrumentations_of_one_sdk_keep_the_preferred_one(
    genai: GenAI,
    families: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    module = types.ModuleType("payi_test_second_openai")
    module.Instr = _SecondOpenAIInstrumentor  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    second = _SecondOpenAIInstrumentor()
    second.instrument()
    families(
        _genai.FAMILIES[0].instrumentations[0],
        _genai.Instrumentation("payi-test-second", module.__name__, "Instr"),
    )
    with caplog.at_level(logging.WARNING, logger="payi_otel"):
        _genai.enable_genai_spans(genai.otel.provider)
    assert not second.is_instrumented_by_opentelemetry
    [record] = caplog.records
    assert "two GenAI spans" in record.getMessage()
    assert "pip uninstall payi-test-second" in record.getMessage()


def test_no_loadable_genai_instrumentation_is_one_warning_with_the_fix(
    families: Callable[..., None],
    caplog: pytest.LogCaptureFixture,
    otel: Otel,
) -> None:
    families(
        _genai.Instrumentation(
            "opentelemetry-instrumentation-not-there", "payi_test_missing.mod", "Instr"
        )
    )
    with caplog.at_level(logging.WARNING, logger="payi_otel"):
        assert _genai.enable_genai_spans(otel.provider) == []
        _genai.enable_genai_spans(otel.provider)
    [record] = caplog.records
    message = record.getMessage()
    assert "no GenAI spans for openai calls" in message
    assert "pip install -U opentelemetry-instrumentation-not-there" in message


def test_an_sdk_with_its_own_genai_spans_needs_no_instrumentation(
    families: Callable[..., None],
    caplog: pytest.LogCaptureFixture,
    otel: Otel,
) -> None:
    families(
        _genai.Instrumentation(
            "opentelemetry-instrumentation-not-there", "payi_test_missing.mod", "Instr"
        ),
        native="openai",
    )
    with caplog.at_level(logging.WARNING, logger="payi_otel"):
        _genai.enable_genai_spans(otel.provider)
    assert caplog.records == []


def test_disabled_instrumentations_are_respected(
    families: Callable[..., None],
    caplog: pytest.LogCaptureFixture,
    otel: Otel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    families(
        _genai.Instrumentation(
            "opentelemetry-instrumentation-not-there", "payi_test_missing.mod", "Instr"
        )
    )
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "requests, openai")
    with caplog.at_level(logging.WARNING, logger="payi_otel"):
        _genai.enable_genai_spans(otel.provider)
    assert caplog.records == []


# --- scopes without payi_instrument() ------------------------------------------------------------


def test_scopes_without_payi_instrument_warn_once(caplog: pytest.LogCaptureFixture) -> None:
    assert not PayiInstrumentor().is_instrumented_by_opentelemetry
    reset_log_once()
    with caplog.at_level(logging.WARNING, logger="payi_otel"):
        with track_context(user_id="a"):
            pass
        with track_context(user_id="b"):
            pass
    [record] = [r for r in caplog.records if r.name == "payi_otel"]
    assert "payi_instrument() was not called" in record.getMessage()
    reset_log_once()

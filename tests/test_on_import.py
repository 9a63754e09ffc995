"""Instrumenting each SDK, framework and HTTP client when the program imports it
(``payi_otel._on_import``, issue 20: start-up).

``payi_instrument()`` imports none of them now; whatever the program imports afterwards is
instrumented before its ``import`` returns, in whichever thread imports it. The module
mechanics are tested on throwaway modules; each provider family end to end in a fresh
interpreter (``on_import_child.py``) against the fake server.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, List

import pytest
from fake_llm_server import FakeLLMServer
from fixtures_genai import payi_headers

from payi_otel import _log, _on_import

CHILD = Path(__file__).with_name("on_import_child.py")


# --- the mechanics, on throwaway modules -----------------------------------------------------


@pytest.fixture
def new_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], str]]:
    """Makes importable modules no test has imported (each a new name)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    made: List[str] = []

    def make() -> str:
        name = f"payi_on_import_{uuid.uuid4().hex}"
        (tmp_path / f"{name}.py").write_text("VALUE = 1\n")
        made.append(name)
        return name

    yield make
    for name in made:
        sys.modules.pop(name, None)


class Step:
    """A step that records where it ran and what of it was undone."""

    def __init__(self, fail: bool = False) -> None:
        self.threads: List[str] = []
        self.undone = 0
        self.fail = fail

    def __call__(self) -> List[Callable[[], None]]:
        self.threads.append(threading.current_thread().name)
        if self.fail:
            raise RuntimeError("step failed")
        return [self.undo]

    def undo(self) -> None:
        self.undone += 1


def test_a_module_already_imported_runs_the_step_now_and_returns_its_undo(
    new_module: Callable[[], str],
) -> None:
    name = new_module()
    __import__(name)
    step = Step()
    undo = _on_import.when_imported(name, step, "test")
    assert step.threads == [threading.current_thread().name]
    assert undo == [step.undo]  # exactly the step's own, as instrumenting did before


def test_a_step_waits_for_the_import_and_runs_before_it_returns(
    new_module: Callable[[], str],
) -> None:
    name = new_module()
    step = Step()
    [undo] = _on_import.when_imported(name, step, "test")
    assert step.threads == []
    module = __import__(name)
    assert step.threads == [threading.current_thread().name] and module.VALUE == 1
    __import__(name)  # imported again: nothing more
    assert step.threads == [threading.current_thread().name]
    undo()
    assert step.undone == 1
    undo()  # twice: once undone
    assert step.undone == 1


def test_a_step_dropped_before_the_import_never_runs(new_module: Callable[[], str]) -> None:
    name = new_module()
    step, kept = Step(), Step()
    [drop] = _on_import.when_imported(name, step, "test")
    [undo_kept] = _on_import.when_imported(name, kept, "test")
    drop()
    __import__(name)
    assert (step.threads, step.undone) == ([], 0)
    assert kept.threads == [threading.current_thread().name]
    undo_kept()
    assert kept.undone == 1


def test_instrumenting_again_after_an_undo_waits_on_the_same_hook(
    new_module: Callable[[], str],
) -> None:
    # wrapt cannot take a hook back: the second registration must still be run by it.
    name = new_module()
    first, second = Step(), Step()
    [drop] = _on_import.when_imported(name, first, "test")
    drop()
    _on_import.when_imported(name, second, "test")
    __import__(name)
    assert first.threads == [] and len(second.threads) == 1


def test_the_step_runs_in_the_thread_that_imports(new_module: Callable[[], str]) -> None:
    name = new_module()
    step = Step()
    _on_import.when_imported(name, step, "test")
    worker = threading.Thread(target=__import__, args=(name,), name="importer")
    worker.start()
    worker.join()
    assert step.threads == ["importer"]


def test_a_failing_step_never_fails_the_programs_import(
    new_module: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(_log, "RAISE_INTERNAL_ERRORS", False)
    _log.reset_log_once()
    name = new_module()
    step = Step(fail=True)
    [undo] = _on_import.when_imported(name, step, "a test step")
    with caplog.at_level(logging.WARNING, logger="payi_otel"):
        module = __import__(name)
    assert module.VALUE == 1 and len(step.threads) == 1
    [record] = caplog.records
    assert "instrumenting a test step failed" in record.getMessage()
    undo()  # nothing to undo
    assert step.undone == 0


# --- every provider family, in a fresh program -----------------------------------------------


def _python(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python <args>`` in a fresh interpreter that can import on_import_child and this
    checkout, with no PAYI_* / OTEL_* variables but ``env``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PAYI_"))}
    environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(CHILD.parent), environ.get("PYTHONPATH"), *sys.path) if p
    )
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env={**environ, **env},
        timeout=120,
    )


def _run(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter (:func:`_python`)."""
    return _python("-c", code, *args)


SDKS = ("openai", "anthropic", "bedrock", "google")


def _child(server: FakeLLMServer, sdk: str, how: str, stderr: str = "") -> dict[str, Any]:
    urls = {
        "openai": server.openai_base_url,
        "anthropic": server.anthropic_base_url,
        "bedrock": server.bedrock_endpoint_url,
        "google": server.google_genai_base_url,
    }
    result = _python(str(CHILD), sdk, json.dumps(urls), how)
    assert result.returncode == 0, result.stderr
    assert result.stderr == stderr  # nothing else: no warning, no traceback
    out: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return out


@pytest.mark.parametrize("how", ["main", "thread"])
@pytest.mark.parametrize("sdk", SDKS)
def test_an_sdk_imported_after_payi_instrument_is_stamped_and_spanned(
    llm_server: FakeLLMServer, sdk: str, how: str
) -> None:
    out = _child(llm_server, sdk, how)
    assert out["imported_by_instrument"] == []
    [request] = llm_server.requests
    assert payi_headers(request)["x-payi-user-id"] == "lazy-user"
    genai = [span for span in out["spans"] if span["genai"]]
    assert len(genai) == 1, out["spans"]  # one GenAI span: its instrumentation turned on once
    assert genai[0]["user"] == "lazy-user"
    assert {"payi.genai.tokens", "payi.genai.cost"} <= set(out["metrics"])


@pytest.mark.parametrize("sdk", SDKS)
def test_the_programs_own_genai_instrumentation_imported_after_payi_instrument_is_the_one_on(
    llm_server: FakeLLMServer, sdk: str
) -> None:
    # Importing it imports the SDK: payi_otel turns it on when that import ends (not half
    # imported, and no second one), as payi_instrument() did when it imported everything; the
    # program's instrument() then finds it on, and OpenTelemetry says so.
    out = _child(
        llm_server, sdk, "own-genai", stderr="Attempting to instrument while already instrumented\n"
    )
    [request] = llm_server.requests
    assert payi_headers(request)["x-payi-user-id"] == "lazy-user"
    genai = [span for span in out["spans"] if span["genai"]]
    assert len(genai) == 1, out["spans"]
    assert genai[0]["user"] == "lazy-user"


@pytest.mark.parametrize("sdk", SDKS)
def test_an_sdk_imported_after_uninstrument_is_left_alone(
    llm_server: FakeLLMServer, sdk: str
) -> None:
    # The scope says why nothing is stamped, as it does in any program not instrumented.
    warning = (
        "payi_otel: @track / track_context run but payi_instrument() was not called, so no "
        "x-payi-* header is stamped on LLM calls (scopes and spans still work). Call "
        "payi_instrument() once at start-up, or run under opentelemetry-instrument.\n"
    )
    out = _child(llm_server, sdk, "uninstrumented", stderr=warning)
    [request] = llm_server.requests
    assert payi_headers(request) == {}
    assert [span for span in out["spans"] if span["genai"]] == []


_CONCURRENT = """
import json, os, sys, threading
import wrapt
from opentelemetry.sdk.trace import TracerProvider
from payi_otel import payi_instrument, _genai

payi_instrument(tracer_provider=TracerProvider())
names = ["openai", "anthropic", "botocore", "google.genai"]
barrier = threading.Barrier(len(names))

def load(name):
    barrier.wait()
    __import__(name)

threads = [threading.Thread(target=load, args=(name,)) for name in names]
for t in threads:
    t.start()
for t in threads:
    t.join()
import openai._base_client, anthropic._base_client, botocore.client, google.genai.models

def wrapped(owner, name):
    return isinstance(owner.__dict__[name], wrapt.FunctionWrapper)

genai_on = {}
for family in _genai.FAMILIES:
    if family.sdk in names:
        genai_on[family.sdk] = [
            inst.distribution for inst in family.instrumentations
            if _genai._loaded_instrumented(inst) is not None
        ]
print(json.dumps({
    "emit_event": os.environ.get("OTEL_INSTRUMENTATION_GENAI_EMIT_EVENT"),
    "hooks": [
        wrapped(openai._base_client.SyncAPIClient, "request"),
        wrapped(anthropic._base_client.SyncAPIClient, "request"),
        wrapped(botocore.client.BaseClient, "_make_api_call"),
        wrapped(google.genai.models.Models, "generate_content"),
    ],
    "genai": genai_on,
}))
"""


def test_sdks_imported_at_once_in_threads_are_each_instrumented_once() -> None:
    result = _run(_CONCURRENT)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    out = json.loads(result.stdout)
    # google-genai's instrumentation sets this when instrumented: put back, whatever the order.
    assert out["emit_event"] is None
    assert out["hooks"] == [True, True, True, True]
    for sdk, on in out["genai"].items():
        # anthropic 2.x starts its own GenAI spans: no instrumentation is needed there.
        assert len(on) <= 1 if sdk == "anthropic" else len(on) == 1, (sdk, on)


# --- found in review (branch review-lazy) ----------------------------------------------------


_SUBMODULE_IN_A_THREAD = """
import json, sys, threading, time
import on_import_child as child
from payi_otel import _on_import, payi_instrument, track_context

workers = []

def another_thread_imports_a_submodule():
    # While this thread runs botocore's post-import hooks, another one imports
    # botocore.client (its `from botocore import ...` waits for botocore's import to end).
    worker = threading.Thread(target=__import__, args=("botocore.client",))
    worker.start()
    workers.append(worker)
    # (With payi_otel's hooks on botocore.client, wrapt's finder makes the worker wait for
    # botocore before botocore.client is in sys.modules: so a bounded wait.)
    deadline = time.monotonic() + 1
    while "botocore.client" not in sys.modules and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(0.3)
    return []

_on_import.when_imported("botocore", another_thread_imports_a_submodule, "test")  # runs first
payi_instrument({"use_case_name": "lazy"}, tracer_provider=child.TRACER)
import boto3
workers[0].join()
with track_context(user_id="lazy-user"):
    child.call("bedrock", json.loads(sys.argv[1]))
"""


def test_a_submodule_imported_in_another_thread_while_the_hooks_run_still_gets_headers(
    llm_server: FakeLLMServer,
) -> None:
    result = _run(_SUBMODULE_IN_A_THREAD, json.dumps({"bedrock": llm_server.bedrock_endpoint_url}))
    assert result.returncode == 0, result.stderr
    [request] = llm_server.requests
    assert payi_headers(request).get("x-payi-user-id") == "lazy-user"
    assert result.stderr == ""


_PAST_ITS_RANGE = """
import importlib.metadata, json, sys
from opentelemetry.instrumentation.dependencies import DependencyConflict
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
import on_import_child as child
from payi_otel import payi_instrument, track_context
from payi_otel._providers import PROVIDERS, Instrumentation
from payi_otel._providers.google_genai import GoogleGenAIProvider

# The installed google-genai made the instrumentation's next major, one payi_otel was tested
# with (as google-genai 3.x is today: genai-google-genai declares < 3).
inst = GoogleGenAIProvider.instrumentations[0]
version = importlib.metadata.version("google-genai")
major = int(version.split(".")[0])

class Tested(GoogleGenAIProvider):
    instrumentations = (
        Instrumentation(inst.distribution, inst.module, inst.instrumentor, (3, 10), (major,)),
    )

PROVIDERS["google.genai"] = lambda: Tested
check = BaseInstrumentor._check_dependency_conflicts

def past_its_range(self):
    if type(self).__name__ == inst.instrumentor:
        return DependencyConflict(f"google-genai>=1.32.0,<{major}", f"google-genai {version}")
    return check(self)

BaseInstrumentor._check_dependency_conflicts = past_its_range
payi_instrument({"use_case_name": "lazy"}, tracer_provider=child.TRACER)
if sys.argv[2] == "own":  # the program turns it on too, as it did before payi_otel
    from opentelemetry.instrumentation.google_genai import GoogleGenAiSdkInstrumentor
    GoogleGenAiSdkInstrumentor().instrument(tracer_provider=child.TRACER)
with track_context(user_id="lazy-user"):
    child.call("google", json.loads(sys.argv[1]))
spans = child.EXPORTER.get_finished_spans()
print(len([s for s in spans if any(k.startswith("gen_ai.") for k in (s.attributes or {}))]))
"""


@pytest.mark.parametrize(
    "how",
    [
        "payi-only",
        "own",
    ],
)
def test_an_sdk_past_its_instrumentations_range_gets_its_span_when_the_program_turns_it_on(
    llm_server: FakeLLMServer, how: str
) -> None:
    urls = json.dumps({"google": llm_server.google_genai_base_url})
    result = _run(_PAST_ITS_RANGE, urls, how)
    assert result.returncode == 0, result.stderr
    assert payi_headers(llm_server.requests[0])["x-payi-user-id"] == "lazy-user"
    assert result.stdout.strip().splitlines()[-1] == "1", result.stderr


_WEB = """
import json, sys
import wrapt
from opentelemetry.sdk.trace import TracerProvider
from payi_otel import get_context, payi_instrument

payi_instrument(tracer_provider=TracerProvider())
imported = [name for name in ("flask", "starlette") if name in sys.modules]
import flask
import starlette.routing

app = flask.Flask("lazy")

@app.route("/who")
def who():
    return get_context().get("user_id") or "nobody"

answer = app.test_client().get("/who", headers={"X-User-Id": "web-user"}).get_data(as_text=True)
print(json.dumps({
    "imported_by_instrument": imported,
    "flask": isinstance(flask.app.Flask.__dict__["wsgi_app"], wrapt.FunctionWrapper),
    "starlette": isinstance(starlette.routing.Route.__dict__["handle"], wrapt.FunctionWrapper),
    "answer": answer,
}))
"""


def test_the_web_hooks_wait_for_flask_and_starlette() -> None:
    result = _python("-c", _WEB, PAYI_WEB_HEADERS="X-User-Id=user_id")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert json.loads(result.stdout) == {
        "imported_by_instrument": [],
        "flask": True,
        "starlette": True,
        "answer": "web-user",
    }


# --- found in review 2 (branch review2) ------------------------------------------------------

_INSTRUMENTATION_IN_A_THREAD = """
import json, sys, threading, time
import on_import_child as child
from payi_otel import _on_import, payi_instrument, track_context

INSTRUMENTATION = "opentelemetry.instrumentation.genai.openai"
workers = []

def another_thread_imports_the_instrumentation():
    # While this thread runs openai's post-import hooks, another one imports openai's GenAI
    # instrumentation (as a plugin loaded in a worker does): its import of openai waits for
    # this thread's import of openai to end, holding the instrumentation's import lock.
    worker = threading.Thread(target=__import__, args=(INSTRUMENTATION,))
    worker.start()
    workers.append(worker)
    deadline = time.monotonic() + 5
    while INSTRUMENTATION not in sys.modules and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(0.3)
    return []

_on_import.when_imported("openai", another_thread_imports_the_instrumentation, "test")  # first
payi_instrument({"use_case_name": "lazy"}, tracer_provider=child.TRACER)
import openai
workers[0].join()
with track_context(user_id="lazy-user"):
    child.call("openai", json.loads(sys.argv[1]))
spans = child.EXPORTER.get_finished_spans()
print(len([s for s in spans if any(k.startswith("gen_ai.") for k in (s.attributes or {}))]))
"""


def test_an_instrumentation_imported_in_another_thread_while_the_sdks_hooks_run(
    llm_server: FakeLLMServer,
) -> None:
    # openai's step imported the instrumentation under openai's import lock, while the other
    # thread held the instrumentation's and waited for openai's: _DeadlockError in the step, and
    # a WARNING that openai calls get no GenAI spans (they do: the other thread's import turns
    # the instrumentation on when it ends).
    result = _run(_INSTRUMENTATION_IN_A_THREAD, json.dumps({"openai": llm_server.openai_base_url}))
    assert result.returncode == 0, result.stderr
    assert payi_headers(llm_server.requests[0])["x-payi-user-id"] == "lazy-user"
    assert result.stdout.strip().splitlines()[-1] == "1", result.stderr
    assert result.stderr == ""

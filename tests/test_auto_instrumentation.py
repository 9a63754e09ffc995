"""Zero-code: ``opentelemetry-instrument python app.py`` with PAYI_* variables stamps headers
and attributes GenAI spans, with no payi_otel import in app.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fake_llm_server import FakeLLMServer
from fixtures_genai import payi_headers
from fixtures_otel import is_genai

APP = """
import os
from openai import OpenAI

client = OpenAI(base_url=os.environ["APP_BASE_URL"], api_key="test", max_retries=0)
reply = client.chat.completions.create(
    model="gpt-4", messages=[{"role": "user", "content": "zero code"}],
    extra_headers={"x-payi-request-tags": "from_app"},
)
print("REPLY:", reply.choices[0].message.content)
"""

INSTRUMENT = Path(sys.executable).parent / "opentelemetry-instrument"


def console_spans(stdout: str) -> list[dict[str, Any]]:
    """The span JSON objects the console exporter printed."""
    decoder = json.JSONDecoder()
    spans, index = [], 0
    while True:
        start = stdout.find("{", index)
        if start < 0:
            return spans
        try:
            obj, index = decoder.raw_decode(stdout, start)
        except ValueError:
            index = start + 1
            continue
        if isinstance(obj, dict) and "context" in obj and "attributes" in obj:
            spans.append(obj)


def run_app(tmp_path: Path, server: FakeLLMServer, **env: str) -> subprocess.CompletedProcess[str]:
    app = tmp_path / "billing_bot.py"
    app.write_text(APP)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("PAYI_", "OTEL_"))}
    full_env.update(
        {
            "APP_BASE_URL": server.openai_base_url,
            "OTEL_TRACES_EXPORTER": "console",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_SERVICE_NAME": "zero-code",
            **env,
        }
    )
    return run_instrumented(tmp_path, app.name, full_env)


def run_instrumented(
    cwd: Path, script: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """``opentelemetry-instrument python <script>`` in ``cwd`` with exactly ``env``."""
    return subprocess.run(
        [str(INSTRUMENT), sys.executable, script],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.skipif(not INSTRUMENT.exists(), reason="opentelemetry-instrument not installed")
def test_opentelemetry_instrument_with_payi_env(tmp_path: Path, llm_server: FakeLLMServer) -> None:
    result = run_app(
        tmp_path,
        llm_server,
        PAYI_USER_ID="env_user",
        PAYI_LIMIT_IDS="a, b",
        PAYI_ACCOUNT_NAME="acme",
        PAYI_USE_CASE_VERSION="2",
    )
    assert result.returncode == 0, result.stderr
    assert "REPLY: echo: zero code" in result.stdout
    [request] = llm_server.requests
    sent = payi_headers(request)
    assert sent["x-payi-user-id"] == "env_user"
    assert sent["x-payi-limit-ids"] == "a,b"
    assert sent["x-payi-account-name"] == "acme"
    assert sent["x-payi-request-tags"] == "from_app"
    # The default use case is the main script's stem, with a fresh id.
    assert sent["x-payi-use-case-name"] == "billing_bot"
    assert sent["x-payi-use-case-version"] == "2"
    genai = [s for s in console_spans(result.stdout) if is_genai(s["attributes"])]
    assert len(genai) == 1, result.stdout
    attrs = genai[0]["attributes"]
    assert attrs["payi.user_id"] == "env_user"
    assert attrs["payi.limit_ids"] == ["a", "b"]
    assert attrs["payi.request_tags"] == ["from_app"]
    assert attrs["payi.use_case.name"] == "billing_bot"
    assert attrs["payi.use_case.id"] == sent["x-payi-use-case-id"]
    assert attrs["payi.use_case.version"] == 2
    assert genai[0]["resource"]["attributes"]["service.name"] == "zero-code"


@pytest.mark.skipif(not INSTRUMENT.exists(), reason="opentelemetry-instrument not installed")
def test_opentelemetry_instrument_bad_env_fails_loudly(
    tmp_path: Path, llm_server: FakeLLMServer
) -> None:
    result = run_app(tmp_path, llm_server, PAYI_USE_CASE_VERSION="two", PAYI_USER_ID="u")
    # One line naming the variable, no traceback; that variable is ignored, the rest apply
    # and the app runs.
    assert result.returncode == 0, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "PAYI_USE_CASE_VERSION" in line and "ignored" in line
    sent = payi_headers(llm_server.requests[0])
    assert sent["x-payi-user-id"] == "u"
    assert sent["x-payi-use-case-name"] == "billing_bot"
    assert "x-payi-use-case-version" not in sent


@pytest.mark.skipif(not INSTRUMENT.exists(), reason="opentelemetry-instrument not installed")
def test_opentelemetry_instrument_stderr_is_empty_and_one_genai_span_per_call(
    tmp_path: Path, llm_server: FakeLLMServer
) -> None:
    result = run_app(tmp_path, llm_server, PAYI_USER_ID="quiet")
    assert result.returncode == 0
    assert result.stderr == ""
    genai = [
        s for s in console_spans(result.stdout) if s["attributes"].get("gen_ai.operation.name")
    ]
    assert [s["attributes"]["payi.user_id"] for s in genai] == ["quiet"]


def test_zero_code_hooks_are_registered() -> None:
    from importlib.metadata import entry_points

    for group in ("opentelemetry_pre_instrument", "opentelemetry_post_instrument"):
        [found] = [ep for ep in entry_points(group=group) if ep.name == "payi"]
        assert callable(found.load())


def test_entry_point_is_registered() -> None:
    from importlib.metadata import entry_points

    found = [ep for ep in entry_points(group="opentelemetry_instrumentor") if ep.name == "payi"]
    assert len(found) == 1
    from payi_otel import PayiInstrumentor

    assert found[0].load() is PayiInstrumentor


README_APP = """
from openai import OpenAI

client = OpenAI(api_key="test", max_retries=0)  # OPENAI_BASE_URL from the environment
reply = client.chat.completions.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": "zero code"}]
)
print("REPLY:", reply.choices[0].message.content)
"""


@pytest.mark.skipif(not INSTRUMENT.exists(), reason="opentelemetry-instrument not installed")
def test_the_readme_zero_code_command_runs_quietly(
    tmp_path: Path, llm_server: FakeLLMServer
) -> None:
    """README "Zero-code": its command as written (the fake server in place of the gateway
    it names on port 8000): the call carries the variables' attribution, its GenAI span goes
    to stdout, and stderr is empty - no exporter errors, nothing waiting on a collector."""
    import shlex

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Zero-code: `opentelemetry-instrument`") :]
    block = section[
        section.index("```bash\n") + 8 : section.index("\n```", section.index("```bash"))
    ]
    lines = [line for line in block.splitlines() if not line.startswith("pip install")]
    words = shlex.split(" ".join(lines).replace("\\", " "))
    assignments = [w for w in words if "=" in w and not w.startswith("-")]
    command = words[len(assignments) :]
    assert command == ["opentelemetry-instrument", "python", "app.py"], words
    env = dict(w.split("=", 1) for w in assignments)
    assert env["OPENAI_BASE_URL"] == "http://127.0.0.1:8000/v1"
    env["OPENAI_BASE_URL"] = llm_server.openai_base_url
    (tmp_path / "app.py").write_text(README_APP)
    full_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PAYI_", "OTEL_", "OPENAI_"))
    }
    result = run_instrumented(tmp_path, "app.py", {**full_env, **env})
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "REPLY: echo: zero code" in result.stdout
    [request] = llm_server.requests
    sent = payi_headers(request)
    assert sent["x-payi-use-case-name"] == "support_bot"
    assert sent["x-payi-limit-ids"] == "monthly"
    [span] = [s for s in console_spans(result.stdout) if is_genai(s["attributes"])]
    assert span["attributes"]["payi.use_case.name"] == "support_bot"
    assert span["resource"]["attributes"]["service.name"] == "support-bot"

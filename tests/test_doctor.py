"""``python -m payi_otel doctor``: what it says must be what payi_otel then does - the span
source it names is the instrumentation that turns on, the wire verdicts are the wire policy's,
a bad variable is the one the settings reject, the OTLP check is a real connection."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from payi_otel._doctor import BASE_URL_VARIABLES, doctor

CLEAN = {k: v for k, v in os.environ.items() if not k.startswith(("PAYI_", "OTEL_", "AWS_"))}
CLEAN = {
    k: v for k, v in CLEAN.items() if k not in {v for _, vs, _ in BASE_URL_VARIABLES for v in vs}
}


def report(environ: dict[str, str]) -> tuple[int, str]:
    out = io.StringIO()
    code = doctor(out, environ)
    return code, out.getvalue()


def run_doctor(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m payi_otel <args>`` in a clean environment plus ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "payi_otel", *args],
        env={**CLEAN, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def line_of(text: str, start: str) -> str:
    [line] = [x for x in text.splitlines() if x.strip().startswith(start)]
    return line


def sdk_line(text: str, sdk: str) -> str:
    """The "SDKs and their GenAI spans" line of ``sdk``."""
    [line] = [x for x in text.splitlines() if x.strip().startswith(sdk) and "GenAI spans" in x]
    return line


@pytest.fixture
def listening() -> Iterator[str]:
    """A TCP port on 127.0.0.1 that accepts connections."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()


def test_a_clean_environment_has_nothing_to_fix_and_names_each_sdks_span_source() -> None:
    code, text = report(CLEAN)
    assert code == 0, text
    assert text.rstrip().endswith("nothing to fix")
    assert "GenAI spans from opentelemetry-instrumentation-genai-openai" in sdk_line(
        text, "openai "
    )
    for bedrock in ("AWS Bedrock (botocore", "AWS Bedrock (aiobotocore"):
        assert "opentelemetry-instrumentation-genai-bedrock" in sdk_line(text, bedrock)
    assert "opentelemetry-instrumentation-google-genai" in sdk_line(text, "google.genai")
    assert "agent spans from opentelemetry-instrumentation-genai-openai-agents" in text
    # The public APIs get no headers by default: the answer to "why no headers?".
    for sdk, _, _ in BASE_URL_VARIABLES:
        assert line_of(text, sdk + ":").endswith("-> no headers"), sdk


def test_the_wire_verdicts_follow_the_base_urls_and_the_header_hosts() -> None:
    environ = {
        **CLEAN,
        "OPENAI_BASE_URL": "http://gateway.internal/v1",
        "AWS_ENDPOINT_URL": "https://llm-gateway.example.com",
        "ANTHROPIC_BASE_URL": "https://api.anthropic.com",
    }
    _, text = report(environ)
    assert line_of(text, "openai:").endswith(
        "OPENAI_BASE_URL=http://gateway.internal/v1 -> headers sent"
    )
    assert line_of(text, "boto3 bedrock-runtime:").endswith("-> headers sent")
    assert line_of(text, "anthropic:").endswith("-> no headers")
    # An allow-list: only its hosts get headers.
    _, text = report({**environ, "PAYI_HEADER_HOSTS": "llm-gateway.example.com"})
    assert line_of(text, "openai:").endswith("-> no headers")
    assert line_of(text, "boto3 bedrock-runtime:").endswith("-> headers sent")
    assert "header hosts: only llm-gateway.example.com" in text


def test_a_bad_variable_is_named_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    code, text = report({**CLEAN, "PAYI_HEADER_DIALECT": "nope", "PAYI_USER_ID": "bob"})
    assert code == 1
    assert "ERROR payi_otel: PAYI_HEADER_DIALECT must be one of" in text
    assert "global level: user_id='bob'" in text
    assert text.rstrip().endswith("1 thing(s) to fix above")


def test_a_disabled_instrumentation_is_reported_as_no_spans(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "bedrock")
    _, text = report(CLEAN)
    for bedrock in ("AWS Bedrock (botocore", "AWS Bedrock (aiobotocore"):
        assert "disabled by OTEL_PYTHON_DISABLED_INSTRUMENTATIONS" in sdk_line(text, bedrock)
    assert "disabled" not in sdk_line(text, "openai ")


def test_the_otlp_endpoint_is_tried_for_real(listening: str) -> None:
    code, text = report({**CLEAN, "OTEL_EXPORTER_OTLP_ENDPOINT": listening})
    assert code == 0 and f"{listening[len('http://') :]} answers" in text
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    code, text = report({**CLEAN, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"})
    assert code == 1 and "does NOT answer" in text


def test_python_dash_m_payi_otel_doctor_runs_quietly() -> None:
    """The README's command: a report on stdout, nothing on stderr; a wrong command is a
    usage line and exit status 2."""
    done = run_doctor("doctor")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""
    assert "SDKs and their GenAI spans:" in done.stdout
    wrong = run_doctor("doctr")
    assert wrong.returncode == 2 and "usage: python -m payi_otel doctor" in wrong.stderr


def test_the_readme_command_prints_the_readme_lines() -> None:
    """README "Check your setup": its command, run as shown, prints the lines shown."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Check your setup") :]
    start = section.index("```bash\n") + 8
    command = section[start : section.index("\n```", start)]
    sample = section[section.index("```\n", section.index("It exits 0")) + 4 :]
    sample = sample[: sample.index("```")]
    variable, _, rest = command.partition(" ")
    assert rest == "python -m payi_otel doctor"
    name, _, value = variable.partition("=")
    done = run_doctor("doctor", **{name: value})
    assert done.returncode == 0 and done.stderr == "", done.stdout + done.stderr
    for line in sample.strip().splitlines():
        assert line in done.stdout.splitlines(), line

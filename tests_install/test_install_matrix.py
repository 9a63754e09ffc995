"""Each case: a fresh venv, ``pip install`` the wheel the way a user does, run a small app
against the local fake provider server, and check the headers on the wire, ``payi.*`` on
every GenAI span, and an empty stderr."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest
from conftest import ROOT, Venv
from fake_llm_server import FakeLLMServer
from packaging.version import Version

USER = "matrix-user"

# A case is a fresh venv and a pip install from the registry: minutes on a busy machine, not
# the 120 s that bound a unit test (pyproject.toml); each step has its own timeout too.
pytestmark = pytest.mark.timeout(900)

CALLS = """
import os
sdks = os.environ["APP_SDKS"].split(",")
if "openai" in sdks:
    from openai import OpenAI
    client = OpenAI(base_url=os.environ["APP_OPENAI_URL"], api_key="test", max_retries=0)
    client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
if "anthropic" in sdks:
    from anthropic import Anthropic
    client = Anthropic(base_url=os.environ["APP_ANTHROPIC_URL"], api_key="test", max_retries=0)
    client.messages.create(
        model="claude-haiku-4-5", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
"""

# By code: the README's quick start (a TracerProvider, payi_instrument(), a scope).
APP_CODE = """
import json, os
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)

from payi_otel import payi_instrument, track_context

payi_instrument(config={"use_case_name": "matrix"})
with track_context(user_id="USER"):
    exec(compile(open(os.environ["APP_CALLS"]).read(), "calls", "exec"))
print("SPANS:" + json.dumps([{"name": s.name, "attributes": dict(s.attributes)}
                             for s in exporter.get_finished_spans()], default=list))
""".replace("USER", USER)

# Zero-code: no payi_otel import at all.
APP_ZERO = """
import os
exec(compile(open(os.environ["APP_CALLS"]).read(), "calls", "exec"))
"""


def run_app(
    venv: Venv, tmp: Path, server: FakeLLMServer, sdks: str, *, zero_code: bool, calls: str = CALLS
) -> subprocess.CompletedProcess[str]:
    (tmp / "calls.py").write_text(calls)
    app = tmp / "matrix_app.py"
    app.write_text(APP_ZERO if zero_code else APP_CODE)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PAYI_", "OTEL_", "PYTHON", "VIRTUAL_ENV"))
    }
    env.update(
        {
            "APP_SDKS": sdks,
            "APP_CALLS": str(tmp / "calls.py"),
            "APP_OPENAI_URL": server.openai_base_url,
            "APP_ANTHROPIC_URL": server.anthropic_base_url,
            "APP_GOOGLE_URL": server.google_genai_base_url,
            "PATH": f"{venv.bin}{os.pathsep}{env.get('PATH', '')}",
        }
    )
    command = [str(venv.bin / "python"), str(app)]
    if zero_code:
        env.update(
            {
                "PAYI_USER_ID": USER,
                "PAYI_USE_CASE_NAME": "matrix",
                "OTEL_TRACES_EXPORTER": "console",
                "OTEL_METRICS_EXPORTER": "none",
                "OTEL_LOGS_EXPORTER": "none",
                "OTEL_SERVICE_NAME": "matrix",
            }
        )
        command = [str(venv.bin / "opentelemetry-instrument"), *command]
    return subprocess.run(
        command, env=env, cwd=tmp, capture_output=True, text=True, timeout=300, check=False
    )


def spans_of(result: subprocess.CompletedProcess[str], zero_code: bool) -> list[dict[str, Any]]:
    if not zero_code:
        [line] = [x for x in result.stdout.splitlines() if x.startswith("SPANS:")]
        return list(json.loads(line[len("SPANS:") :]))
    decoder, spans, index = json.JSONDecoder(), [], 0
    while (start := result.stdout.find("{", index)) >= 0:
        try:
            obj, index = decoder.raw_decode(result.stdout, start)
        except ValueError:
            index = start + 1
            continue
        if isinstance(obj, dict) and "attributes" in obj and "context" in obj:
            spans.append(obj)
    return spans


def check(
    result: subprocess.CompletedProcess[str],
    server: FakeLLMServer,
    sdks: str,
    *,
    zero_code: bool,
    stderr: str = "",
) -> None:
    """The wire, the GenAI spans and stderr, for a run that called ``sdks``."""
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stderr == stderr, result.stderr[-4000:]
    called = sdks.split(",")
    paths = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}
    assert sorted(r.path for r in server.requests) == sorted(paths[s] for s in called)
    for request in server.requests:
        assert request.headers.get("x-payi-user-id") == USER, request.headers
        assert request.headers.get("x-payi-use-case-name") == "matrix", request.headers
    genai = [
        s
        for s in spans_of(result, zero_code)
        if any(k.startswith("gen_ai.") for k in s["attributes"])
    ]
    for span in genai:
        assert span["attributes"].get("payi.user_id") == USER, span
        assert span["attributes"].get("payi.use_case.name") == "matrix", span
    providers = {
        s["attributes"].get("gen_ai.provider.name") or s["attributes"].get("gen_ai.system")
        for s in genai
    }
    expected = set(called) if not stderr else set(called) - {"anthropic"}
    assert expected <= providers, [s["name"] for s in genai]


Make = Callable[[str], Venv]


@pytest.mark.parametrize(
    ("python", "sdks", "extra", "zero_code"),
    [
        pytest.param("3.11", "openai", [], False, id="py3.11-openai-by-code"),
        pytest.param("3.11", "anthropic", [], False, id="py3.11-anthropic-by-code"),
        pytest.param(
            "3.11",
            "openai,anthropic",
            ["opentelemetry-distro"],
            True,
            id="py3.11-both-opentelemetry-instrument",
        ),
        pytest.param(
            "3.11",
            "openai",
            ["opentelemetry-distro"],
            True,
            id="py3.11-openai-opentelemetry-instrument",
        ),
        pytest.param(
            "3.11",
            "anthropic",
            ["opentelemetry-distro"],
            True,
            id="py3.11-anthropic-opentelemetry-instrument",
        ),
        pytest.param("3.9", "openai", [], False, id="py3.9-openai-by-code"),
        pytest.param(
            "3.13",
            "openai,anthropic",
            ["opentelemetry-distro"],
            True,
            id="py3.13-both-opentelemetry-instrument",
        ),
        pytest.param("3.13", "openai,anthropic", [], False, id="py3.13-both-by-code"),
    ],
)
def test_plain_install(
    make_venv: Make,
    wheel: Path,
    llm_server: FakeLLMServer,
    tmp_path: Path,
    python: str,
    sdks: str,
    extra: list[str],
    zero_code: bool,
) -> None:
    venv = make_venv(python)
    venv.pip_install(str(wheel), *sdks.split(","), *extra)
    result = run_app(venv, tmp_path, llm_server, sdks, zero_code=zero_code)
    stderr = ""
    if python == "3.9":
        # genai-prices needs Python >= 3.11: calls get usage but no cost, and one WARNING.
        [line] = result.stderr.strip().splitlines()
        assert "genai-prices is not installed" in line and "Python >= 3.11" in line
        assert "genai-prices" not in venv.versions()
        stderr = result.stderr
    check(result, llm_server, sdks, zero_code=zero_code, stderr=stderr)


def test_otlp_extra_installs_and_runs_zero_code(
    make_venv: Make, wheel: Path, llm_server: FakeLLMServer, tmp_path: Path
) -> None:
    """``payi-otel[otlp]``: the distro and the OTLP exporter resolve with the package."""
    venv = make_venv("3.11")
    venv.pip_install(f"payi-otel[otlp] @ {wheel.as_uri()}", "openai")
    assert "opentelemetry-exporter-otlp" in venv.versions()
    check(
        run_app(venv, tmp_path, llm_server, "openai", zero_code=True),
        llm_server,
        "openai",
        zero_code=True,
    )


def test_oldest_supported_sdks(
    make_venv: Make, wheel: Path, llm_server: FakeLLMServer, tmp_path: Path
) -> None:
    """The oldest SDK releases payi_otel supports: the floors of pyproject.toml's [openai] /
    [anthropic] extras, found by the resolver as ``make test-compat`` finds them (uv,
    ``--resolution lowest-direct`` over pyproject.toml's requirements, for those two SDKs;
    constraints-oldest.txt says what they need of httpx). The rest is what pip installs with
    the wheel. (A wheel's own requirements are not direct ones for uv: hence pyproject.toml.)"""
    venv = make_venv("3.11")
    venv.pip_install(str(wheel))
    venv.uv_install(
        "--resolution=lowest-direct",
        "--upgrade-package=openai",
        "--upgrade-package=anthropic",
        f"--constraint={ROOT / 'constraints-oldest.txt'}",
        f"--requirements={ROOT / 'pyproject.toml'}",
        "--extra=openai",
        "--extra=anthropic",
    )
    versions = venv.versions()
    for sdk in ("openai", "anthropic"):
        floor = re.search(
            rf'^{sdk} = \["{sdk}>=([^"]+)"\]', (ROOT / "pyproject.toml").read_text(), re.M
        )
        assert floor and Version(versions[sdk]) == Version(floor.group(1)), versions
    sdks = "openai,anthropic"
    check(
        run_app(venv, tmp_path, llm_server, sdks, zero_code=False),
        llm_server,
        sdks,
        zero_code=False,
    )


def test_anthropic_on_python_3_9_warns_once_how_to_fix(
    make_venv: Make, wheel: Path, llm_server: FakeLLMServer, tmp_path: Path
) -> None:
    """No GenAI instrumentation of anthropic supports Python 3.9: headers still go out, and
    one WARNING says so and what fixes it."""
    venv = make_venv("3.9")
    venv.pip_install(str(wheel), "anthropic")
    result = run_app(venv, tmp_path, llm_server, "anthropic", zero_code=False)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, lines
    [line] = [text for text in lines if "genai-prices" not in text]
    assert "no GenAI spans for anthropic calls" in line and "Python >= 3.10" in line
    check(result, llm_server, "anthropic", zero_code=False, stderr=result.stderr)


def test_installing_does_not_downgrade_the_users_opentelemetry(
    make_venv: Make, wheel: Path
) -> None:
    venv = make_venv("3.11")
    venv.pip_install(
        "opentelemetry-sdk",
        "opentelemetry-instrumentation",
        "opentelemetry-instrumentation-genai-openai",
        "openai",
    )
    before = {k: v for k, v in venv.versions().items() if k.startswith("opentelemetry-")}
    venv.pip_install(str(wheel))
    after = venv.versions()
    assert {k: after.get(k) for k in before} == before


def _dockerfile_install() -> tuple[list[tuple[list[str], str]], list[str]]:
    """The Dockerfile's COPY lines (sources, destination) and its ``pip install`` arguments."""
    copies, install = [], None
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["COPY"]:
            copies.append((words[1:-1], words[-1]))
        elif words[:3] == ["RUN", "pip", "install"]:
            install = words[3:]
    assert install is not None, "the Dockerfile has no 'RUN pip install' line"
    return copies, install


def _dockerfile_venv(make_venv: Make, tmp_path: Path) -> tuple[Venv, Path]:
    """A fresh venv of the image's Python with the image's exact install (its COPY'd files,
    its pip line), and the directory it ran in (the image's WORKDIR)."""
    copies, install = _dockerfile_install()
    context = tmp_path / "app"
    context.mkdir()
    for sources, destination in copies:
        for source in sources:
            target = (
                context
                / destination
                / (
                    Path(source).name
                    if destination.endswith("/") and not source.endswith("/")
                    else ""
                )
            )
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, context / destination, dirs_exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(
                    ROOT / source, target if destination.endswith("/") else context / destination
                )
    image_python = re.search(r"FROM python:(\d+\.\d+)", (ROOT / "Dockerfile").read_text())
    assert image_python is not None
    venv = make_venv(image_python.group(1))
    venv.pip_install(*install, cwd=context)
    return venv, context


def test_dockerfile_install_line_runs_the_demo(make_venv: Make, tmp_path: Path) -> None:
    """The image's exact install, then its CMD: the demo reaches all-spans-match and exits 0."""
    venv, context = _dockerfile_venv(make_venv, tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAYI_", "OTEL_"))}
    result = subprocess.run(
        [str(venv.bin / "python"), "examples/support_assistant/main.py"],
        cwd=context,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stderr == ""
    verdict = re.search(
        r"headers of their request: (\d+)/(\d+); requests without such a "
        r"span: (\d+)",
        result.stdout,
    )
    assert verdict is not None, result.stdout[-3000:]
    matched, total, unmatched = map(int, verdict.groups())
    assert matched == total > 0 and unmatched == 0


# === issue 22: the image installs from a constraints file ====================================
def test_dockerfile_constraints_pin_everything_it_installs(make_venv: Make, tmp_path: Path) -> None:
    """The Dockerfile installs with ``-c constraints-docker.txt``, and that file pins exactly
    what the install brings beside payi-otel (nothing resolved freely, no stale pin), each at
    the version installed: a rebuild of the image installs the same set."""
    _, install = _dockerfile_install()
    assert install[:2] == ["-c", "constraints-docker.txt"], install
    pins = {}
    for line in (ROOT / "constraints-docker.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    venv, _ = _dockerfile_venv(make_venv, tmp_path)
    installed = {
        re.sub(r"[-_.]+", "-", k): v
        for k, v in venv.versions().items()
        if k not in ("payi-otel", "pip", "setuptools", "wheel")
    }
    assert installed == pins


# === google-genai (issue 18) =================================================================

GOOGLE_CALLS = """
import os
from google import genai
from google.genai import types
client = genai.Client(
    api_key="test", http_options=types.HttpOptions(base_url=os.environ["APP_GOOGLE_URL"]))
client.models.generate_content(model="gemini-2.5-flash", contents="hi")
for chunk in client.models.generate_content_stream(model="gemini-2.5-flash", contents="hi"):
    pass
"""


@pytest.mark.parametrize("zero_code", [False, True], ids=["by-code", "opentelemetry-instrument"])
def test_google_genai_only_user(
    make_venv: Make, wheel: Path, llm_server: FakeLLMServer, tmp_path: Path, zero_code: bool
) -> None:
    """``pip install payi-otel google-genai`` (pip's own resolution: google-genai 3.x today,
    which opentelemetry-instrumentation-google-genai 1.3b0 leaves out of its declared range):
    the headers go out, the instrumentation is turned on anyway - one WARNING naming both
    versions and how to silence it (under ``opentelemetry-instrument`` after the loader's own
    ERROR line about the conflict) - and its GenAI spans carry ``payi.*``."""
    venv = make_venv("3.11")
    venv.pip_install(str(wheel), "google-genai", *(["opentelemetry-distro"] if zero_code else []))
    versions = venv.versions()
    assert "opentelemetry-instrumentation-google-genai" in versions
    sdk = versions["google-genai"]
    result = run_app(venv, tmp_path, llm_server, "", zero_code=zero_code, calls=GOOGLE_CALLS)
    assert result.returncode == 0, result.stderr[-4000:]
    lines = result.stderr.strip().splitlines()
    if int(sdk.split(".")[0]) >= 3:
        forced = [line for line in lines if "payi_otel turns it on anyway" in line]
        assert len(forced) == 1, lines
        assert f"but google-genai {sdk} is installed" in forced[0]
        assert "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=google-genai" in forced[0]
        others = [line for line in lines if line not in forced]
        if zero_code:  # the loader's own line about the same conflict
            assert len(others) == 1 and "falls outside of that range" in others[0], lines
        else:
            assert others == [], lines
    else:
        assert lines == [], lines
    assert [r.path.rsplit(":", 1)[1] for r in llm_server.requests] == [
        "generateContent",
        "streamGenerateContent",
    ]
    check_one_provider(result, llm_server, zero_code, "gemini")


def check_one_provider(
    result: subprocess.CompletedProcess[str],
    server: FakeLLMServer,
    zero_code: bool,
    provider: str,
    *,
    priced: bool = False,
) -> list[dict[str, Any]]:
    """Every request carried the app's attribution; one GenAI span per request, of
    ``provider``, with ``payi.*`` (and a cost when ``priced``)."""
    for request in server.requests:
        assert request.headers.get("x-payi-user-id") == USER, request.headers
        assert request.headers.get("x-payi-use-case-name") == "matrix", request.headers
    genai = [
        s
        for s in spans_of(result, zero_code)
        if any(k.startswith("gen_ai.") for k in s["attributes"])
    ]
    assert len(genai) == len(server.requests), [s.get("name") for s in spans_of(result, zero_code)]
    for span in genai:
        assert span["attributes"]["gen_ai.provider.name"] == provider
        assert span["attributes"].get("payi.user_id") == USER, span
        assert span["attributes"].get("payi.use_case.name") == "matrix", span
        if priced:
            assert span["attributes"]["payi_otel.cost.total"] > 0, span
    return genai


# === boto3 / AWS Bedrock (issue 18) ===========================================================

BEDROCK_CALLS = """
import os
import boto3
client = boto3.client(
    "bedrock-runtime", endpoint_url=os.environ["APP_BEDROCK_URL"], region_name="us-east-1",
    aws_access_key_id="test", aws_secret_access_key="test")
messages = [{"role": "user", "content": [{"text": "hi"}]}]
model = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
client.converse(modelId=model, messages=messages)
for event in client.converse_stream(modelId=model, messages=messages)["stream"]:
    pass
"""


@pytest.mark.parametrize("zero_code", [False, True], ids=["by-code", "opentelemetry-instrument"])
def test_boto3_only_user(
    make_venv: Make, wheel: Path, llm_server: FakeLLMServer, tmp_path: Path, zero_code: bool
) -> None:
    """``pip install payi-otel boto3`` (pip's own resolution): opentelemetry-instrumentation-
    genai-bedrock comes with payi-otel, its GenAI spans carry ``payi.*`` and a cost, the
    headers reach the (gateway) endpoint, and stderr is empty."""
    versions = bedrock_user(make_venv, wheel, llm_server, tmp_path, zero_code, "boto3")
    assert "opentelemetry-instrumentation-genai-bedrock" in versions


def bedrock_user(
    make_venv: Make,
    wheel: Path,
    llm_server: FakeLLMServer,
    tmp_path: Path,
    zero_code: bool,
    sdk: str,
) -> dict[str, str]:
    """``pip install payi-otel <sdk>``, its Converse and ConverseStream calls run (by code or
    under ``opentelemetry-instrument``) and checked; the versions pip resolved."""
    venv = make_venv("3.11")
    venv.pip_install(str(wheel), sdk, *(["opentelemetry-distro"] if zero_code else []))
    calls = BEDROCK_CALLS if sdk == "boto3" else AIOBOTOCORE_CALLS
    result = run_app(
        venv,
        tmp_path,
        llm_server,
        "",
        zero_code=zero_code,
        calls=calls.replace('os.environ["APP_BEDROCK_URL"]', repr(llm_server.bedrock_endpoint_url)),
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stderr == "", result.stderr[-4000:]
    assert [r.path.rsplit("/", 1)[1] for r in llm_server.requests] == [
        "converse",
        "converse-stream",
    ]
    check_one_provider(result, llm_server, zero_code, "aws.bedrock", priced=True)
    return venv.versions()


AIOBOTOCORE_CALLS = """
import asyncio, os
from aiobotocore.session import get_session

async def main():
    async with get_session().create_client(
        "bedrock-runtime", endpoint_url=os.environ["APP_BEDROCK_URL"], region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test") as client:
        messages = [{"role": "user", "content": [{"text": "hi"}]}]
        model = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
        await client.converse(modelId=model, messages=messages)
        stream = (await client.converse_stream(modelId=model, messages=messages))["stream"]
        async for event in stream:
            pass

asyncio.run(main())
"""


@pytest.mark.parametrize("zero_code", [False, True], ids=["by-code", "opentelemetry-instrument"])
def test_aiobotocore_user(
    make_venv: Make, wheel: Path, llm_server: FakeLLMServer, tmp_path: Path, zero_code: bool
) -> None:
    """``pip install payi-otel aiobotocore`` (pip's own resolution: aiobotocore pins its
    botocore): aiobotocore imported after ``payi_instrument()``, its async calls attributed on
    the wire and on genai-bedrock's spans, priced, and stderr empty."""
    versions = bedrock_user(make_venv, wheel, llm_server, tmp_path, zero_code, "aiobotocore")
    assert "aiobotocore" in versions

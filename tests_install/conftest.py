"""The install matrix: the package as a user installs it (wheel, fresh venv, pip's own
resolution, none of requirements-dev.txt's pins), against the local fake provider server.

Run with ``make test-install`` (CI runs it from ``.ci/run``). Needs the package registry for
pip; everything else is on 127.0.0.1. Writes ``build/install-matrix.md``: case, result, time,
and the versions pip resolved.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = ROOT / "examples"
if str(EXAMPLES_DIR) not in sys.path:
    sys.path.insert(0, str(EXAMPLES_DIR))

# The fake provider server's fixtures, shared with the test suite.
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))
from fixtures_server import fake_llm, llm_server  # noqa: E402, F401

REPORT = ROOT / "build" / "install-matrix.md"
# Versions reported per case: what decides whether a user's install works.
REPORTED = (
    "payi-otel",
    "openai",
    "anthropic",
    "opentelemetry-api",
    "opentelemetry-sdk",
    "opentelemetry-instrumentation",
    "opentelemetry-instrumentation-genai-openai",
    "opentelemetry-instrumentation-genai-anthropic",
    "opentelemetry-util-genai",
    "opentelemetry-instrumentation-openai-v2",
    "google-genai",
    "opentelemetry-instrumentation-google-genai",
    "boto3",
    "opentelemetry-instrumentation-genai-bedrock",
    "opentelemetry-distro",
    "wrapt",
    "httpx",
)


def python_for(version: str) -> Optional[str]:
    """An interpreter for ``version`` ("3.9"): this one, one on PATH, or one pyenv has or
    installs (``pyenv install --skip-existing``)."""
    if f"{sys.version_info[0]}.{sys.version_info[1]}" == version:
        return sys.executable
    pyenv = shutil.which("pyenv")
    if pyenv:
        root = subprocess.run([pyenv, "root"], capture_output=True, text=True).stdout.strip()
        for candidate in sorted(Path(root, "versions").glob(f"{version}.*"), reverse=True):
            python = candidate / "bin" / "python"
            if python.exists():
                return str(python)
        installed = subprocess.run(
            [pyenv, "install", "--skip-existing", version],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if installed.returncode == 0:
            latest = subprocess.run(
                [pyenv, "latest", version], capture_output=True, text=True
            ).stdout.strip()
            python = Path(root, "versions", latest, "bin", "python")
            if python.exists():
                return str(python)
    found = shutil.which(f"python{version}")
    return found


@dataclass
class Venv:
    """A fresh virtual environment of one interpreter."""

    path: Path
    log: list[str] = field(default_factory=list)

    @property
    def bin(self) -> Path:
        return self.path / "bin"

    def run(self, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args, capture_output=True, text=True, timeout=900, check=False, **kwargs
        )  # type: ignore[call-overload, no-any-return]

    def pip_install(self, *requirements: str, cwd: Optional[Path] = None) -> None:
        """``pip install`` as a user types it; fails the test with pip's output on error."""
        command = [
            str(self.bin / "python"),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            *requirements,
        ]
        self.log.append(" ".join(command[3:]))
        result = self.run(*command, cwd=cwd)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    def uv_install(self, *args: str) -> None:
        """``uv pip install`` into this venv, with the dev venv's uv: for what pip's resolver
        cannot do (``--resolution lowest-direct``); fails the test with uv's output on error."""
        command = [sys.executable, "-m", "uv", "pip", "install"]
        command += ["--python", str(self.bin / "python"), *args]
        self.log.append("uv pip install " + " ".join(args))
        result = self.run(*command)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    def versions(self) -> dict[str, str]:
        result = self.run(
            str(self.bin / "python"),
            "-m",
            "pip",
            "list",
            "--format=json",
            "--disable-pip-version-check",
        )
        return {p["name"].lower(): p["version"] for p in json.loads(result.stdout)}


@dataclass
class MatrixRow:
    case: str
    python: str
    install: str
    result: str
    seconds: float
    versions: dict[str, str]


_ROWS: list[MatrixRow] = []


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package's wheel, built once from the checkout (as ``pip wheel .`` does)."""
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--disable-pip-version-check",
            "-w",
            str(out),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    [built] = out.glob("payi_otel-*.whl")
    return built


@pytest.fixture
def make_venv(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[object]:
    """``make_venv("3.11")``: a fresh venv; its case, install lines, result, time and
    resolved versions go into the report."""
    made: list[tuple[Venv, str]] = []
    start = time.monotonic()

    def make(version: str) -> Venv:
        python = python_for(version)
        if python is None:
            pytest.skip(f"no Python {version} on this machine (and pyenv could not install it)")
        venv = Venv(tmp_path / f"venv{version}")
        subprocess.run([python, "-m", "venv", str(venv.path)], check=True, timeout=300)
        made.append((venv, version))
        return venv

    yield make
    outcome = getattr(request.node, "rep_call", None)
    result = "skipped" if outcome is None else ("passed" if outcome.passed else "FAILED")
    for venv, version in made:
        versions = venv.versions()
        _ROWS.append(
            MatrixRow(
                request.node.callspec.id
                if hasattr(request.node, "callspec")
                else request.node.name,
                version,
                " ; ".join(venv.log),
                result,
                time.monotonic() - start,
                {k: versions[k] for k in REPORTED if k in versions},
            )
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _ROWS:
        return
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "| case | python | result | time (s) | pip install | resolved |",
        "|---|---|---|---|---|---|",
    ]
    for row in _ROWS:
        resolved = ", ".join(f"{k} {v}" for k, v in row.versions.items())
        lines.append(
            f"| {row.case} | {row.python} | {row.result} | {row.seconds:.0f} | "
            f"`{row.install}` | {resolved} |"
        )
    REPORT.write_text("\n".join(lines) + "\n")
    if os.environ.get("PAYI_INSTALL_MATRIX_PRINT", "1") != "0":
        print("\n" + "\n".join(lines))

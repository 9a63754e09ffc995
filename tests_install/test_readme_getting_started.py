"""README's getting-started sections, run as written (issue 22): every shell command of "Try it",
"Install" and "Quick start", and the quick start's Python file, in the order shown, in a fresh
venv beside a copy of the clone (``./payi-otel``, as the README assumes), each with exit status 0
and an empty stderr. "See it in Jaeger" (``make stack``) needs the built collector and Jaeger:
`make e2e`'s ``stack`` variant runs it as written.

The only changes to what a reader types: the fake server's port when 8000 is taken on this
machine (the server's ``--port`` and the quick start's base URL, together), and pip's "new
release available" notice turned off (``PIP_DISABLE_PIP_VERSION_CHECK``): it is pip's, not the
README's.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, Venv

sys.path.insert(0, str(ROOT / "e2e"))
import readme

pytestmark = pytest.mark.timeout(1200)

#: The README sections a newcomer follows first, in order.
SECTIONS = ("## Try it: `make demo`", "## Install", "## Quick start")
#: What the README's quick start asks for, and its file name.
FAKE_SERVER_PORT = 8000
QUICKSTART = "quickstart.py"
#: Left out of the copy of the clone: what a fresh clone does not have.
NOT_IN_A_CLONE = shutil.ignore_patterns(
    ".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
)


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def getting_started() -> list[tuple[str, str]]:
    """(kind, text) in README order: ``("bash", command)`` or ``("python", file content)``."""
    steps: list[tuple[str, str]] = []
    for heading in SECTIONS:
        text = readme.section(heading)
        for block in readme._FENCE.finditer(text):
            language, body = block.group(1), block.group(2)
            if language == "bash":
                steps += [("bash", c.split(" #", 1)[0].strip()) for c in readme.commands(body)]
            elif language == "python":
                steps.append(("python", body))
    return steps


def test_the_steps_are_what_a_newcomer_reads() -> None:
    steps = getting_started()
    kinds = [kind for kind, _ in steps]
    assert kinds.count("python") == 1, "one Python file: the quick start"
    commands = [text for kind, text in steps if kind == "bash"]
    assert commands[0] == "make -C payi-otel demo"
    assert any(c.startswith('pip install "./payi-otel') for c in commands)
    assert any(c.startswith("pip wheel") for c in commands)
    assert commands[-1] == f"python {QUICKSTART}"


def test_every_getting_started_command_runs_as_written(make_venv: object, tmp_path: Path) -> None:
    venv: Venv = make_venv("3.11")  # type: ignore[operator]
    work = tmp_path / "work"
    shutil.copytree(ROOT, work / "payi-otel", ignore=NOT_IN_A_CLONE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAYI_", "OTEL_", "PIP_"))}
    env.update(
        PATH=f"{venv.bin}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(venv.path),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    env.pop("PYTHONPATH", None)
    port = FAKE_SERVER_PORT
    if not _port_free(port):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]

    def as_here(text: str) -> str:
        return text.replace(f"127.0.0.1:{FAKE_SERVER_PORT}", f"127.0.0.1:{port}")

    background: list[subprocess.Popen[str]] = []
    ran: list[str] = []
    try:
        for kind, text in getting_started():
            if kind == "python":
                (work / QUICKSTART).write_text(as_here(text))
                continue
            command = text
            if command.endswith("&"):
                command = command[:-1].strip()
                if port != FAKE_SERVER_PORT:
                    command += f" --port {port}"
                server = subprocess.Popen(
                    ["bash", "-c", f"exec {command}"],
                    cwd=work,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                background.append(server)
                assert server.stdout is not None
                first = server.stdout.readline()  # it says so once it listens
                assert first.startswith("fake LLM server listening"), first
                ran.append(text)
                continue
            result = subprocess.run(
                ["bash", "-c", command],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            ran.append(text)
            assert result.returncode == 0, (text, result.stdout[-3000:], result.stderr[-3000:])
            assert result.stderr == "", (text, result.stderr[-3000:])
            if command == f"python {QUICKSTART}":
                assert result.stdout.startswith("echo: Where is my order?\n"), result.stdout
                assert '"payi.user_id": "alice"' in result.stdout  # the console's spans
            if command.endswith("demo"):
                verdict = re.search(r"headers of their request: (\d+)/(\d+)", result.stdout)
                assert verdict and verdict.group(1) == verdict.group(2), result.stdout[-2000:]
    finally:
        for process in background:
            process.terminate()
            _, err = process.communicate(timeout=10)
            assert err == "", err
    assert ran[-1] == f"python {QUICKSTART}", ran
    installed = venv.versions()
    assert "payi-otel" in installed and "openai" in installed
    assert "opentelemetry-exporter-otlp-proto-http" in installed  # the [otlp] extra

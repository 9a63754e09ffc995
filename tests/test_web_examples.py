"""The runnable examples of README "Web services" and "Agent frameworks", each run as the
README shows it; every snippet of those sections is a part of one of them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# README "Web services" and "Agent frameworks" are in docs/web-and-agents.md (issue 22).
README = (ROOT / "docs" / "web-and-agents.md").read_text(encoding="utf-8")
INSTRUMENT = Path(sys.executable).parent / "opentelemetry-instrument"
USERS = ("alice", "bob", "carol", "dave")


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end > 0 else None]


def run(command: str) -> list[str]:
    """A README command (``VAR=value ... [opentelemetry-instrument] python path``), run with
    this venv's Python; its output lines."""
    words = command.replace("\\\n", " ").split()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAYI_", "OTEL_"))}
    while "=" in words[0]:
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    argv = [sys.executable if w == "python" else w for w in words]
    if argv[0] == "opentelemetry-instrument":
        argv[0] = str(INSTRUMENT)
    done = subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def commands(title: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", section(title), re.S)


def test_snippets_are_from_the_examples() -> None:
    for title, folder in (("Web services", "web_"), ("Agent frameworks", "agents_")):
        code = "".join(
            path.read_text(encoding="utf-8") for path in (ROOT / "examples").glob(f"{folder}*/*.py")
        )
        snippets = re.findall(r"```python\n(.*?)```", section(title), re.S)
        assert snippets
        for snippet in snippets:
            for line in snippet.splitlines():
                assert line.strip() in code, line


@pytest.mark.parametrize("example", ["web_fastapi/app.py", "web_flask/app.py"])
def test_web_examples(example: str) -> None:
    [command] = [c for c in commands("Web services") if example in c]
    template = "/chat/{topic}" if "fastapi" in example else "/stream/<topic>"
    assert sorted(run(command)) == [f"hello-{u}: user={u} step={template}" for u in USERS]


def test_web_zero_code_example() -> None:
    [command] = [c for c in commands("Web services") if "opentelemetry-instrument" in c]
    assert run(command) == [f"hello-{u}: user={u} step=/chat/{{topic}}" for u in USERS[:2]]


@pytest.mark.parametrize("example", ["agents_openai/agent.py", "agents_langgraph/graph.py"])
def test_agent_examples(example: str) -> None:
    [command] = [c for c in commands("Agent frameworks") if example in c]
    lines = run(command)
    assert sorted(line for line in lines if line.startswith("answer:")) == [
        "answer: echo: order A-17: shipped",
        "answer: echo: order B-42: shipped",
    ]
    spans = [line for line in lines if not line.startswith("answer:")]
    for user in ("alice", "bob"):
        mine = [line for line in spans if f"user={user} " in line]
        assert f"invoke_agent support_agent: user={user} step=support_agent tokens=0" in mine
        assert f"execute_tool lookup_order: user={user} step=lookup_order tokens=0" in mine
        chats = [line for line in mine if line.startswith("chat ")]
        assert len(chats) == 2 and all("step=support_agent" in line for line in chats)
        assert all(not line.endswith("tokens=0") for line in chats)
    assert all("user=None" not in line for line in spans)

"""The "add a parameter" recipe (docs/architecture.md), done once: a copy of the package with
one more ``Parameter`` record in the registry (and its key in ``ScopeParameters``, the typed
keywords) attributes the new parameter everywhere: scopes, ``PAYI_*`` variable, per-call
header in both dialects, the GenAI span, baggage and ``get_context()``. Nothing else is edited.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from fake_llm_server import FakeLLMServer

import payi_otel

PACKAGE = Path(payi_otel.__file__).resolve().parent

RECORD = (
    '    Parameter("team_name", Kind.STRING, "payi.team_name", payi_header="xProxy-Team-Name"),\n'
)
TYPED_KEY = "    team_name: str\n"

APP = """
import json, os, sys
from openai import OpenAI
from opentelemetry import baggage, context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from payi_otel import get_context, payi_instrument, track_context

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
payi_instrument(tracer_provider=provider, header_dialect=sys.argv[1], propagate_baggage=True)
client = OpenAI(base_url=os.environ["APP_BASE_URL"], api_key="test", max_retries=0)
chat = dict(model="gpt-4", messages=[{"role": "user", "content": "hi"}])
seen = {"global": get_context().get("team_name")}
client.chat.completions.create(**chat)
with track_context(team_name="blue", user_id="u1"):
    seen["scope"] = get_context()["team_name"]
    seen["baggage"] = baggage.get_baggage("payi.team_name", context.get_current())
    client.chat.completions.create(**chat)
    client.chat.completions.create(**chat, extra_headers={"x-payi-team-name": "red"})
spans = [s for s in exporter.get_finished_spans() if s.attributes.get("gen_ai.operation.name")]
seen["spans"] = [s.attributes.get("payi.team_name") for s in spans]
print(json.dumps(seen))
"""


def _package_with_one_more_parameter(root: Path) -> Path:
    copy = root / "payi_otel"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    registry = copy / "_model" / "parameters.py"
    text = registry.read_text()
    end = text.index("\n)\n", text.index("REGISTRY: Tuple[Parameter, ...] = ("))
    text = text[: end + 1] + RECORD + text[end + 1 :]
    typed = text.index("class ScopeParameters(")
    body = text.index("\n\n", text.index('"""', text.index('"""', typed) + 3))
    text = text[: body + 1] + TYPED_KEY + text[body + 1 :]
    registry.write_text(text)
    return root


def test_a_parameter_is_one_registry_record(tmp_path: Path, llm_server: FakeLLMServer) -> None:
    root = _package_with_one_more_parameter(tmp_path / "src")
    (tmp_path / "app.py").write_text(APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAYI_", "OTEL_"))}
    env.update(PYTHONPATH=str(root), PAYI_TEAM_NAME="green", OTEL_SDK_DISABLED="false")
    dialects = {"x-payi": "x-payi-team-name", "payi-proxy": "xproxy-team-name"}
    with FakeLLMServer() as proxy_server:  # the two dialects at once, each its own server
        servers = {"x-payi": llm_server, "payi-proxy": proxy_server}
        apps = {
            dialect: subprocess.Popen(
                [sys.executable, str(tmp_path / "app.py"), dialect],
                env={**env, "APP_BASE_URL": server.openai_base_url},
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for dialect, server in servers.items()
        }
        for dialect, app in apps.items():
            stdout, stderr = app.communicate(timeout=60)
            assert app.returncode == 0, stderr
            assert stderr == ""
            seen = json.loads(stdout.strip().splitlines()[-1])
            wire = [r.headers.get(dialects[dialect]) for r in servers[dialect].requests]
            # global (PAYI_TEAM_NAME), scope, per-call header over the scope
            assert wire == ["green", "blue", "red"], dialect
            assert seen == {
                "global": "green",
                "scope": "blue",
                "baggage": "blue",
                "spans": ["green", "blue", "red"],
            }

"""`make stack` / `make stack-down` (e2e/stack.py, README "See it in Jaeger"), without Go: what
it would start (commands, configs, ports), that a taken port stops it before anything starts,
and that `down` stops exactly the processes its pid file names. The real run, with the built
binaries, is `make e2e`'s ``stack`` variant (CI), which runs the README's commands as written.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
STACK_PY = ROOT / "e2e" / "stack.py"


def _load_stack() -> Any:
    spec = importlib.util.spec_from_file_location("e2e_stack", STACK_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["e2e_stack"] = module
    spec.loader.exec_module(module)
    return module


stack = _load_stack()
COLLECTOR = Path("/cache/otelcol-payi")
JAEGER = Path("/cache/jaeger")


def sets(args: list[str]) -> dict[str, str]:
    return dict(a[len("--set=") :].split("=", 1) for a in args if a.startswith("--set="))


def test_the_plan_puts_the_collector_on_the_standard_otlp_ports_and_jaeger_beside_it() -> None:
    ports = stack.DEFAULT_PORTS
    plan = stack.plan(COLLECTOR, JAEGER, ports)
    collector = plan["collector"]["args"]
    assert collector[0] == str(COLLECTOR)
    assert [a for a in collector if a.startswith("--config=")] == [
        f"--config={ROOT / 'collector-config' / 'otel-collector.yaml'}"
    ]
    overrides = sets(collector)
    assert overrides["receivers::otlp::protocols::grpc::endpoint"] == "127.0.0.1:4317"
    assert overrides["receivers::otlp::protocols::http::endpoint"] == "127.0.0.1:4318"
    assert overrides["exporters::otlp_grpc/jaeger::endpoint"] == "127.0.0.1:14317"
    assert overrides["extensions::health_check::endpoint"] == f"127.0.0.1:{ports['health']}"
    # Jaeger's own OTLP receiver (default 4317/4318) is moved off the collector's ports.
    jaeger = plan["jaeger"]
    assert jaeger["args"] == [str(JAEGER), f"--config={ROOT / 'e2e' / 'jaeger.yaml'}"]
    assert jaeger["env"] == {
        "E2E_JAEGER_OTLP_GRPC_PORT": "14317",
        "E2E_JAEGER_QUERY_HTTP_PORT": "16686",
        "E2E_JAEGER_QUERY_GRPC_PORT": str(ports["jaeger_query_grpc"]),
    }
    assert len(set(ports.values())) == len(ports), "two processes on one port"


def test_every_overridden_key_and_every_jaeger_port_exists_in_the_configs() -> None:
    """``--set`` on a key the shipped config lacks would add a component, not move it; and
    Jaeger's config takes every listening port from the environment, on 127.0.0.1 only."""
    config = yaml.safe_load((ROOT / "collector-config" / "otel-collector.yaml").read_text())
    keys = sets(stack.plan(COLLECTOR, JAEGER, stack.DEFAULT_PORTS)["collector"]["args"])
    components = [k for k in keys if k.split("::")[0] != "service"]  # service: the collector's own
    assert len(components) == 4
    for key in components:
        node: Any = config
        for part in key.split("::")[:-1]:
            assert isinstance(node, dict) and part in node, f"{key}: no {part!r}"
            node = node[part]
    text = (ROOT / "e2e" / "jaeger.yaml").read_text()
    endpoints = re.findall(r'endpoint: "([^"]+)"', text)
    assert sorted(endpoints) == sorted(
        f"127.0.0.1:${{env:{v}}}"
        for v in stack.plan(COLLECTOR, JAEGER, stack.DEFAULT_PORTS)["jaeger"]["env"]
    )


def test_the_makefile_targets_run_up_and_down() -> None:
    for target, command in (("stack", "up"), ("stack-down", "down")):
        dry = subprocess.run(
            ["make", "--no-print-directory", "-n", target, "PYTHON=python3"],
            cwd=ROOT,
            env={k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL")},
            capture_output=True,
            text=True,
            check=True,
        )
        assert dry.stdout.strip().splitlines() == [f"python3 e2e/stack.py {command}"]
        assert dry.stdout.split() == [
            "python3",
            "e2e/stack.py",
            command,
        ]


def test_the_readme_shows_what_up_prints_and_the_ports_it_uses() -> None:
    sys.path.insert(0, str(ROOT / "e2e"))
    import readme

    text = readme.section(stack.README_STACK)
    printed = stack.describe(stack.DEFAULT_PORTS, Path("/state")).splitlines()
    [sample] = readme.blocks(text, "")
    for line in sample.splitlines():
        assert line in printed, line
    for port in ("4317", "4318", "14317", "16686"):
        assert port in text
    [block] = readme.blocks(text, "bash")
    commands = readme.commands(block)
    assert (commands[0], commands[-1]) == stack.STACK_COMMANDS


def run_stack(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(STACK_PY), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_down_and_status_when_nothing_runs(tmp_path: Path) -> None:
    for command in ("down", "status"):
        result = run_stack(command, f"--state-dir={tmp_path}")
        assert (result.returncode, result.stdout, result.stderr) == (0, "stack: not running\n", "")


def test_a_taken_port_is_named_and_nothing_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_stack("up", f"--otlp-http-port={port}", f"--state-dir={tmp_path}")
    assert result.returncode == 2
    assert f"otlp_http {port}" in result.stderr and "STACK_ARGS=" in result.stderr
    assert not list(tmp_path.iterdir())


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes() != b""
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")
def test_down_stops_exactly_the_processes_of_its_pid_file(tmp_path: Path) -> None:
    """A stand-in for each binary (a sleeping process in its own session, as ``up`` starts
    them); a pid whose executable is not the recorded one (a reused pid) is left alone."""
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    started = [subprocess.Popen(sleeper, start_new_session=True) for _ in range(2)]
    state = {
        "ports": stack.DEFAULT_PORTS,
        "processes": {
            "jaeger": {"pid": started[0].pid, "executable": sys.executable},
            "collector": {"pid": started[1].pid, "executable": sys.executable},
        },
    }
    (tmp_path / stack.STATE_FILE).write_text(json.dumps(state))
    status = run_stack("status", f"--state-dir={tmp_path}")
    assert status.stdout.startswith("stack: running (jaeger pid"), status.stdout
    result = run_stack("down", f"--state-dir={tmp_path}")
    assert (result.returncode, result.stdout) == (0, "stack: stopped\n")
    for process in started:
        assert process.wait(timeout=10) != 0  # ended by SIGTERM
    assert not (tmp_path / stack.STATE_FILE).exists()

    # A recorded pid now running something else: not ours, not signalled.
    state["processes"] = {"collector": {"pid": os.getpid(), "executable": "/cache/otelcol"}}
    (tmp_path / stack.STATE_FILE).write_text(json.dumps(state))
    assert run_stack("down", f"--state-dir={tmp_path}").stdout == "stack: stopped\n"
    time.sleep(0.1)
    assert _alive(os.getpid())

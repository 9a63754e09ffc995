"""`make stack` / `make stack-down`: the collector and Jaeger `make e2e` builds, for your own app.

    your app --OTLP gRPC 127.0.0.1:4317 / HTTP 127.0.0.1:4318--> otelcol (the shipped
    collector-config/otel-collector.yaml) --OTLP/gRPC 127.0.0.1:14317--> Jaeger v2 (in-memory;
    HTTP API and UI on 127.0.0.1:16686)

The collector takes the OTLP ports an SDK exports to by default (4317 / 4318); Jaeger's own
OTLP receiver, which defaults to the same two ports, listens on 14317 instead, for the
collector only. Both run in the background, on 127.0.0.1 only, until ``down``; their pids,
ports and logs are in ``<e2e cache>/stack/`` (``--state-dir``).

    python e2e/stack.py up [--otlp-grpc-port N] [--otlp-http-port N] [--jaeger-port N]
    python e2e/stack.py down
    python e2e/stack.py status

``up`` builds the two binaries first if the cache lacks them (e2e/binaries.py: Go, about
20 minutes once), then waits until Jaeger's API and the collector's health check answer and
prints the endpoints. A port already in use is named, and nothing starts. ``down`` stops
exactly the processes ``up`` started (checked by pid and executable), SIGTERM then SIGKILL.
Exit status: 0 done (``down``/``status``: also when nothing runs), 1 failed, 2 a port taken.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import binaries  # noqa: E402
import run  # noqa: E402

#: The ports ``up`` uses unless told otherwise (all on 127.0.0.1).
DEFAULT_PORTS = {
    "otlp_grpc": 4317,
    "otlp_http": 4318,
    "health": 13133,
    "metrics": 18888,
    "jaeger_otlp_grpc": 14317,
    "jaeger_query_http": 16686,
    "jaeger_query_grpc": 16685,
}
#: The command-line option of each port.
PORT_FLAGS = {
    "otlp_grpc": "--otlp-grpc-port",
    "otlp_http": "--otlp-http-port",
    "health": "--health-port",
    "metrics": "--metrics-port",
    "jaeger_otlp_grpc": "--jaeger-otlp-port",
    "jaeger_query_http": "--jaeger-port",
    "jaeger_query_grpc": "--jaeger-grpc-port",
}
STATE_FILE = "stack.json"
#: How long ``up`` waits for each process to answer, and ``down`` for each to exit.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


def default_state_dir() -> Path:
    return binaries.cache_root() / "stack"


def plan(collector: Path, jaeger_bin: Path, ports: Mapping[str, int]) -> dict[str, Any]:
    """What ``up`` starts: each process's command line and environment additions."""
    jaeger_args, jaeger_env = run.jaeger_command(jaeger_bin, ports)
    return {
        "jaeger": {
            "args": jaeger_args,
            "env": {k: v for k, v in jaeger_env.items() if os.environ.get(k) != v},
        },
        "collector": {
            "args": run.collector_command(collector, [run.SHIPPED_CONFIG], ports),
            "env": {},
        },
    }


def endpoints(ports: Mapping[str, int]) -> dict[str, str]:
    host = run.HOST
    jaeger = f"http://{host}:{ports['jaeger_query_http']}"
    return {
        "otlp_http": f"http://{host}:{ports['otlp_http']}",
        "otlp_grpc": f"http://{host}:{ports['otlp_grpc']}",
        "jaeger_api": f"{jaeger}/api/services",
        "jaeger_search": f"{jaeger}/api/traces?service=<OTEL_SERVICE_NAME>",
        "jaeger_ui": f"{jaeger}/search",
    }


def describe(ports: Mapping[str, int], state_dir: Path) -> str:
    urls = endpoints(ports)
    return "\n".join(
        [
            f"  OTLP endpoint:  OTEL_EXPORTER_OTLP_ENDPOINT={urls['otlp_http']} "
            f"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
            f"                  (OTLP/gRPC: {urls['otlp_grpc']})",
            f"  Jaeger API:     {urls['jaeger_api']}",
            f"                  {urls['jaeger_search']}",
            f"  Jaeger UI:      {urls['jaeger_ui']}  (a go-built Jaeger serves a placeholder "
            "page: its UI assets are not in the Go module; `docker compose up` has the UI)",
            f"  logs:           {state_dir}",
            "  stop:           make stack-down",
        ]
    )


def port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((run.HOST, port))
        except OSError:
            return True
    return False


def _cmdline(pid: int) -> Optional[str]:
    """The executable a live pid runs (None: no such process, or a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return ""
        return ""  # no /proc (macOS): alive, executable unknown
    return raw.split(b"\0", 1)[0].decode(errors="replace") if raw else None


def ours(pid: int, executable: str) -> bool:
    """``pid`` is alive and still runs ``executable`` (not a reused pid)."""
    found = _cmdline(pid)
    return found is not None and (found == "" or found == executable)


def read_state(state_dir: Path) -> Optional[dict[str, Any]]:
    try:
        return dict(json.loads((state_dir / STATE_FILE).read_text()))
    except (OSError, ValueError):
        return None


def running(state: Mapping[str, Any]) -> dict[str, int]:
    """The processes of ``state`` still alive: name -> pid."""
    return {
        name: int(proc["pid"])
        for name, proc in state["processes"].items()
        if ours(int(proc["pid"]), proc["executable"])
    }


def stop(state: Mapping[str, Any]) -> list[str]:
    """SIGTERM each live process of ``state`` (its own process group), SIGKILL what is left
    after :data:`STOP_TIMEOUT`; the names of those that had to be killed."""
    alive = running(state)
    executables = {n: p["executable"] for n, p in state["processes"].items()}
    for name in ("collector", "jaeger"):  # the collector first: it flushes to Jaeger
        if name in alive:
            _signal(alive[name], signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT
            while time.monotonic() < deadline and ours(alive[name], executables[name]):
                time.sleep(0.1)
    killed = [n for n, pid in alive.items() if ours(pid, executables[n])]
    for name in killed:
        _signal(alive[name], signal.SIGKILL)
    return killed


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signum)  # started with start_new_session: its group is its pid


def up(ports: Mapping[str, int], state_dir: Path) -> int:
    state = read_state(state_dir)
    if state is not None:
        alive = running(state)
        if len(alive) == len(state["processes"]):
            print("stack: already running (make stack-down stops it)")
            print(describe(state["ports"], state_dir))
            return 0
        stop(state)  # half of an earlier stack: stop what is left of it
        (state_dir / STATE_FILE).unlink(missing_ok=True)
    taken = [f"{name} {port}" for name, port in ports.items() if port_taken(port)]
    if taken:
        print(
            f"stack: port(s) already in use on {run.HOST}: {', '.join(taken)}. Stop what "
            "holds them (docker compose down?), or choose others: make stack "
            'STACK_ARGS="--otlp-grpc-port 4327 --otlp-http-port 4328 --jaeger-port 16696"',
            file=sys.stderr,
        )
        return 2
    collector = binaries.ensure_collector()
    jaeger_bin = binaries.ensure_jaeger()
    state_dir.mkdir(parents=True, exist_ok=True)
    commands = plan(collector, jaeger_bin, ports)
    processes: dict[str, run.Process] = {}
    state = {"ports": dict(ports), "processes": {}}
    jaeger = run.Jaeger(ports["jaeger_query_http"])
    health = f"http://{run.HOST}:{ports['health']}/"
    probes = {
        "jaeger": ("Jaeger's query API", lambda: jaeger.services() is not None),
        "collector": ("the collector's health check", lambda: run.http_get(health)[0] == 200),
    }
    try:
        for name in ("jaeger", "collector"):
            process = run.Process(
                name,
                commands[name]["args"],
                state_dir / f"{name}.log",
                dict(os.environ, **commands[name]["env"]),
            ).start()
            processes[name] = process
            assert process.popen is not None
            state["processes"][name] = {
                "pid": process.popen.pid,
                "executable": commands[name]["args"][0],
            }
            (state_dir / STATE_FILE).write_text(json.dumps(state, indent=2))
            what, probe = probes[name]
            run.wait_until(what, probe, START_TIMEOUT, process)
    except (run.E2EFailure, OSError) as failure:
        for process in processes.values():
            if process.log.is_file():
                print(f"----- {process.name} log ({process.log}) -----", file=sys.stderr)
                print(process.log.read_text(errors="replace")[-4000:], file=sys.stderr)
            process.stop()
        (state_dir / STATE_FILE).unlink(missing_ok=True)
        print(f"stack: failed to start: {failure}", file=sys.stderr)
        return 1
    print(
        f"stack: OpenTelemetry Collector {binaries.OTELCOL_VERSION} "
        f"(collector-config/otel-collector.yaml) -> Jaeger {binaries.JAEGER_RELEASE} "
        f"(in-memory), running on {run.HOST}:"
    )
    print(describe(ports, state_dir))
    return 0


def down(state_dir: Path) -> int:
    state = read_state(state_dir)
    if state is None:
        print("stack: not running")
        return 0
    killed = stop(state)
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    print("stack: stopped" + (f" ({', '.join(killed)} killed after SIGTERM)" if killed else ""))
    return 0


def status(state_dir: Path) -> int:
    state = read_state(state_dir)
    alive = running(state) if state is not None else {}
    if state is None or not alive:
        print("stack: not running")
        return 0
    print(f"stack: running ({', '.join(f'{n} pid {p}' for n, p in alive.items())})")
    print(describe(state["ports"], state_dir))
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--otlp-grpc-port", type=int, default=DEFAULT_PORTS["otlp_grpc"])
    parser.add_argument("--otlp-http-port", type=int, default=DEFAULT_PORTS["otlp_http"])
    parser.add_argument(
        "--jaeger-port",
        type=int,
        default=DEFAULT_PORTS["jaeger_query_http"],
        help="Jaeger's HTTP API and UI",
    )
    for name, flag in PORT_FLAGS.items():
        if flag not in ("--otlp-grpc-port", "--otlp-http-port", "--jaeger-port"):
            parser.add_argument(flag, type=int, default=DEFAULT_PORTS[name], help=argparse.SUPPRESS)
    parser.add_argument("--state-dir", type=Path, default=None, help="pid file and logs")
    args = parser.parse_args(argv)
    state_dir = args.state_dir or default_state_dir()
    if args.command == "down":
        return down(state_dir)
    if args.command == "status":
        return status(state_dir)
    ports = {name: getattr(args, flag[2:].replace("-", "_")) for name, flag in PORT_FLAGS.items()}
    return up(ports, state_dir)


if __name__ == "__main__":
    sys.exit(main())


# ----------------------------------------------------------------------------- `make e2e`
#: The README sections whose commands :func:`walk_readme` runs.
README_QUICK_START = "## Quick start"
README_STACK = "### For your own app, without Docker: `make stack`"
#: What the README's commands must be (the walk maps each to this checkout, on free ports).
STACK_COMMANDS = ("make -C payi-otel stack", "make -C payi-otel stack-down")


def walk_readme(logs: Path, python: str) -> None:
    """`make e2e`'s ``stack`` variant: README "See it in Jaeger" for your own app, as written -
    ``make stack`` (on free ports, its state in ``logs``), the quick start's ``quickstart.py``
    exporting to it while the fake server answers, the ``curl`` search, ``make stack-down`` -
    and check that the search finds the call with its ``payi.*`` attributes, and that
    ``down`` leaves no process and no pid file behind. Raises :class:`run.E2EFailure`."""
    import shlex
    import subprocess

    import readme

    sys.path.insert(0, str(run.REPO / "examples"))
    from fake_llm_server import FakeLLMServer

    [script] = readme.blocks(readme.section(README_QUICK_START), "python")
    [block] = readme.blocks(readme.section(README_STACK), "bash")
    up_cmd, app_cmd, curl_cmd, down_cmd = readme.commands(block)
    if (up_cmd, down_cmd) != STACK_COMMANDS:
        raise run.E2EFailure(f"README {README_STACK!r}: {up_cmd!r} / {down_cmd!r}")
    ports = {name: run.free_port() for name in DEFAULT_PORTS}
    state_dir = logs / "stack"
    flags = [f"{PORT_FLAGS[n]}={p}" for n, p in ports.items()]
    stack_py = [python, str(Path(__file__).resolve())]

    def moved(command: str) -> str:
        """A README command with the default ports replaced by this run's."""
        for name in ("otlp_http", "jaeger_query_http"):
            command = command.replace(
                f"{run.HOST}:{DEFAULT_PORTS[name]}", f"{run.HOST}:{ports[name]}"
            )
        return command

    with FakeLLMServer() as server:
        (logs / "quickstart.py").write_text(
            script.replace("http://127.0.0.1:8000/v1", server.openai_base_url)
        )
        started = subprocess.run(
            [*stack_py, "up", *flags, f"--state-dir={state_dir}"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        print(started.stdout, end="", flush=True)
        if started.returncode != 0:
            raise run.E2EFailure(f"stack up: exit {started.returncode}: {started.stderr}")
        state = read_state(state_dir)
        try:
            words = shlex.split(moved(app_cmd))
            env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PAYI_"))}
            env.update(w.split("=", 1) for w in words if "=" in w and not w.startswith("-"))
            argv = [w for w in words if "=" not in w]
            if argv != ["python", "quickstart.py"]:
                raise run.E2EFailure(f"README {README_STACK!r}: {app_cmd!r}")
            app = subprocess.run(
                [python, "quickstart.py"],
                cwd=logs,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            print(f"$ {app_cmd}\n{app.stdout}", end="", flush=True)
            if app.returncode != 0 or app.stderr:
                raise run.E2EFailure(f"quickstart.py: exit {app.returncode}: {app.stderr}")
            sent = [r.headers for r in server.requests]
            if [h.get("x-payi-user-id") for h in sent] != ["alice"]:
                raise run.E2EFailure(f"the fake server got {sent}")

            def found() -> Any:
                answer = subprocess.run(
                    shlex.split(moved(curl_cmd)), capture_output=True, timeout=10, check=False
                )
                data = json.loads(answer.stdout or b"{}").get("data") or []
                return data if answer.returncode == 0 else None

            [trace] = run.wait_until("the README's curl search to find the trace", found, 30)
            spans = {span["operationName"]: span for span in trace["spans"]}
            tags = {t["key"]: t["value"] for t in spans["chat gpt-4o-mini"]["tags"]}
            want = {
                "payi.user_id": "alice",
                "payi.account_name": "acme",
                "payi.use_case.name": "support_bot",
                "payi.use_case.step": "answer",
            }
            if not {"answer", "payi.track_context"} <= set(spans) or any(
                tags.get(k) != v for k, v in want.items()
            ):
                raise run.E2EFailure(f"Jaeger's trace: spans {sorted(spans)}, GenAI tags {tags}")
            print(f"$ {curl_cmd}\n  1 trace, spans {sorted(spans)}; {want} on the GenAI span")
        finally:
            stopped = subprocess.run(
                [*stack_py, "down", f"--state-dir={state_dir}"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            print(f"$ {down_cmd}\n{stopped.stdout}", end="", flush=True)
        if state is None or running(state) or (state_dir / STATE_FILE).exists():
            raise run.E2EFailure(f"stack down left {state} running or its pid file behind")

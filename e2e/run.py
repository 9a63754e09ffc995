"""`make e2e`: the demo's traces through the real collector into the real Jaeger, checked.

    demo (examples/support_assistant) --OTLP/HTTP--> otelcol (collector-config/
    otel-collector.yaml, the shipped file) --OTLP/gRPC--> Jaeger v2 (in-memory)

Everything runs on 127.0.0.1 on free ports. The collector gets the shipped config unchanged;
only its endpoints are overridden, with the collector's own ``--set``. Variants:

* ``plain``: the shipped config alone;
* ``redact``: plus ``collector-config/redact-user-id.yaml`` (``--config`` twice; the collector
  merges the files), which hashes ``payi.user_id``;
* ``stack``: README "See it in Jaeger" for your own app, as written: ``make stack``, the quick
  start exporting to it, the ``curl`` search, ``make stack-down`` (e2e/stack.py);
* ``fleet``: the collector fleet of README "At scale" (an agent, two gateways deriving cost
  metrics and sampling, Jaeger and Prometheus): see e2e/fleet.py.

Per variant: start Jaeger, start the collector, run the demo with ``OTEL_EXPORTER_OTLP_ENDPOINT``
and ``PAYI_DEMO_TRACES_JSON`` (the demo's own record of its traces, and of the ``x-payi-*``
headers each GenAI call sent), then ask Jaeger's HTTP API and check that

* the service's traces are exactly the demo's, each whole: same span ids, parents, names;
* every span carries the demo's ``payi.*`` attributes, and every GenAI span's ``payi.*``
  attributes stand for exactly the headers its request sent (the demo's own rule,
  ``report.headers_match``; with ``redact``: ``x-payi-user-id`` hashed);
* a tag search (``payi.user_id=...``, ``payi.use_case.name=...``) finds exactly the traces
  with such a span; with ``redact``, the clear user ids are found nowhere.

    python e2e/run.py [--variant plain|redact|fleet|stack|all] [--keep]

``--keep`` leaves Jaeger and the collector(s) running after the checks (Ctrl-C ends them).
Builds the binaries first if the cache lacks them (e2e/binaries.py). Exit status 0: all passed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEMO = REPO / "examples" / "support_assistant"
SHIPPED_CONFIG = REPO / "collector-config" / "otel-collector.yaml"
REDACT_CONFIG = REPO / "collector-config" / "redact-user-id.yaml"
JAEGER_CONFIG = HERE / "jaeger.yaml"
HOST = "127.0.0.1"

sys.path.insert(0, str(HERE))
sys.path.insert(0, str(DEMO))
import binaries  # noqa: E402

# The checks import the OpenTelemetry SDK, the demo's report module and (fleet) PyYAML where
# they run, so that e2e/stack.py (`make stack`), which shares this module's process helpers,
# runs on a bare python3 with no venv.

#: Span attributes a search by tag is checked for (every value the demo produced).
SEARCH_KEYS = ("payi.user_id", "payi.use_case.name")
USER_ID_KEY = "payi.user_id"
USER_ID_HEADER = "x-payi-user-id"


class E2EFailure(Exception):
    pass


def sha256_hex(text: str) -> str:
    """What the attributes processor's ``hash`` action makes of a string (SHA-256, hex)."""
    return hashlib.sha256(text.encode()).hexdigest()


#: Ports handed out by :func:`free_port` in this process (none is handed out twice).
_handed_out: set[int] = set()


def _ephemeral_start() -> int:
    """The first port of the kernel's ephemeral range (outgoing connections' source ports)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port free now, below the kernel's ephemeral range. A port the kernel hands out for
    a bind to port 0 comes from that range, where any outgoing connection (Jaeger's own
    clients, a collector's exporters, started before the component that was given the port
    listens) may take it as its source port: the component then fails with "address already
    in use". Below the range, only a listener can take it."""
    low = min(_ephemeral_start(), 32768)
    for _ in range(500):
        port = random.randrange(10000, low)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# ----------------------------------------------------------------------------- processes
@dataclass
class Process:
    name: str
    args: list[str]
    log: Path
    env: Optional[dict[str, str]] = None
    popen: Optional[subprocess.Popen[bytes]] = None

    def start(self) -> Process:
        with self.log.open("wb") as out:
            self.popen = subprocess.Popen(
                self.args,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=REPO,
                start_new_session=True,
            )
        return self

    def check_alive(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            raise E2EFailure(f"{self.name} exited with {self.popen.returncode}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; only this process (and its own group)."""
        if self.popen is None or self.popen.poll() is not None:
            return
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)
        except ProcessLookupError:
            pass


def wait_until(what: str, probe: Any, timeout: float, alive: Optional[Process] = None) -> Any:
    """Call ``probe()`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        if alive is not None:
            alive.check_alive()
        try:
            result = probe()
            if result:
                return result
        except (OSError, ValueError, E2EFailure) as error:
            last_error = f" (last: {error})"
        time.sleep(0.25)
    raise E2EFailure(f"timed out after {timeout:.0f} s waiting for {what}{last_error}")


def http_get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read()


def http_json(url: str) -> Any:
    status, body = http_get(url)
    if status != 200:
        raise E2EFailure(f"GET {url}: HTTP {status}: {body[:300]!r}")
    return json.loads(body)


# ----------------------------------------------------------------------------- Jaeger API
@dataclass
class JaegerSpan:
    span_id: str
    parent_span_id: Optional[str]
    name: str
    attributes: dict[str, Any]


@dataclass
class JaegerTrace:
    trace_id: str
    service_names: set[str]
    spans: dict[str, JaegerSpan] = field(default_factory=dict)
    raw: str = ""
    span_count: int = 0
    """Spans in the answer, duplicates included (``spans`` keeps one per id)."""


def any_value(value: Mapping[str, Any]) -> Any:
    """An OTLP/JSON ``AnyValue`` as a Python value."""
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "arrayValue" in value:
        return [any_value(v) for v in value["arrayValue"].get("values", [])]
    if "kvlistValue" in value:
        return {
            kv["key"]: any_value(kv.get("value", {}))
            for kv in value["kvlistValue"].get("values", [])
        }
    if "bytesValue" in value:
        return value["bytesValue"]
    return None


def attributes_of(items: Any) -> dict[str, Any]:
    return {kv["key"]: any_value(kv.get("value", {})) for kv in items or []}


def parse_v3_trace(trace_id: str, body: bytes) -> JaegerTrace:
    """A ``GET /api/v3/traces/{id}`` answer: ``{"result": {"resourceSpans": [...]}}``."""
    result = json.loads(body).get("result", {})
    found = JaegerTrace(trace_id, set(), raw=body.decode())
    for resource_spans in result.get("resourceSpans", []):
        resource = attributes_of(resource_spans.get("resource", {}).get("attributes"))
        found.service_names.add(str(resource.get("service.name")))
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                span_id = span["spanId"].lower()
                found.span_count += 1
                found.spans[span_id] = JaegerSpan(
                    span_id=span_id,
                    parent_span_id=(span.get("parentSpanId") or "").lower() or None,
                    name=span.get("name", ""),
                    attributes=attributes_of(span.get("attributes")),
                )
    return found


class Jaeger:
    def __init__(self, query_port: int) -> None:
        self.base = f"http://{HOST}:{query_port}"

    def services(self) -> list[str]:
        return list(http_json(f"{self.base}/api/services").get("data") or [])

    def trace(self, trace_id: str) -> Optional[JaegerTrace]:
        """``GET /api/v3/traces/{id}`` (OTLP/JSON, typed attribute values); None: not found."""
        status, body = http_get(f"{self.base}/api/v3/traces/{trace_id}")
        if status == 404:
            return None
        if status != 200:
            raise E2EFailure(f"GET /api/v3/traces/{trace_id}: HTTP {status}: {body[:300]!r}")
        return parse_v3_trace(trace_id, body)

    def search_url(
        self, service: str, tags: Optional[Mapping[str, str]] = None, api: bool = True
    ) -> str:
        """The v1 search the Jaeger UI makes (``api=False``: the UI page itself)."""
        params = {"service": service, "limit": "1000", "lookback": "1h"}
        if tags:
            params["tags"] = json.dumps(dict(tags), separators=(",", ":"))
        return f"{self.base}/{'api/traces' if api else 'search'}?{urllib.parse.urlencode(params)}"

    def search(
        self, service: str, tags: Optional[Mapping[str, str]] = None
    ) -> tuple[set[str], str]:
        """Trace ids (hex, 32 digits) the search finds, and its raw JSON."""
        status, body = http_get(self.search_url(service, tags))
        if status != 200:
            raise E2EFailure(f"search {tags}: HTTP {status}: {body[:300]!r}")
        data = json.loads(body).get("data") or []
        return {str(t["traceID"]).rjust(32, "0").lower() for t in data}, body.decode()


# ----------------------------------------------------------------------------- the checks
def expected_attributes(payi: Mapping[str, Any], redact: bool) -> dict[str, Any]:
    attributes = dict(payi)
    if redact and USER_ID_KEY in attributes:
        attributes[USER_ID_KEY] = sha256_hex(str(attributes[USER_ID_KEY]))
    return attributes


def expected_headers(headers: Mapping[str, str], redact: bool) -> dict[str, str]:
    sent = dict(headers)
    if redact and USER_ID_HEADER in sent:
        sent[USER_ID_HEADER] = sha256_hex(sent[USER_ID_HEADER])
    return sent


def check_trace(
    expected: Mapping[str, Any], found: JaegerTrace, service: str, redact: bool
) -> list[str]:
    """Differences between the demo's trace and Jaeger's; empty: the trace arrived whole."""
    problems: list[str] = []
    trace_id = expected["trace_id"]
    if found.service_names != {service}:
        problems.append(f"{trace_id}: service.name {sorted(found.service_names)} != {service}")
    spans = {s["span_id"]: s for s in expected["spans"]}
    if found.span_count != len(found.spans):
        problems.append(f"{trace_id}: {found.span_count - len(found.spans)} duplicate spans")
    if set(found.spans) != set(spans):
        problems.append(
            f"{trace_id}: {len(found.spans)} spans in Jaeger, {len(spans)} produced;"
            f" missing {sorted(set(spans) - set(found.spans))},"
            f" extra {sorted(set(found.spans) - set(spans))}"
        )
    for span_id, want in spans.items():
        got = found.spans.get(span_id)
        if got is None:
            continue
        where = f"{trace_id}/{span_id} {want['name']!r}"
        if got.parent_span_id != want["parent_span_id"]:
            problems.append(f"{where}: parent {got.parent_span_id} != {want['parent_span_id']}")
        if got.name != want["name"]:
            problems.append(f"{where}: name {got.name!r}")
        payi = {k: v for k, v in got.attributes.items() if k.startswith("payi.")}
        want_payi = expected_attributes(want["payi"], redact)
        if payi != want_payi:
            problems.append(f"{where}: payi.* {payi} != {want_payi}")
        if want["genai"]:
            if want["headers"] is None:
                problems.append(f"{where}: the demo matched no request to this GenAI span")
            else:
                from opentelemetry.sdk.trace import ReadableSpan
                from report import headers_match  # the demo's header <-> attribute rule

                as_span = ReadableSpan(name=got.name, attributes=got.attributes)
                headers = expected_headers(want["headers"], redact)
                if not headers_match(as_span, headers):
                    problems.append(
                        f"{where}: Jaeger's payi.* {payi} do not stand for the "
                        f"headers the call sent {headers}"
                    )
    return problems


def traces_with(record: Mapping[str, Any], key: str, value: Any) -> set[str]:
    return {
        t["trace_id"]
        for t in record["traces"]
        if any(s["payi"].get(key) == value for s in t["spans"])
    }


#: The README section whose tag searches `make e2e` runs, each one, against Jaeger.
README_SEARCHES = "### What to look for in the Jaeger UI"
_SEARCH = re.compile(r"`((?:payi\.[\w.]+=[^\s`]+ ?)+)`")


def readme_searches(readme: Path = REPO / "README.md") -> list[dict[str, str]]:
    """Every tag search the README's Jaeger section shows (`payi.user_id=alice`, several
    tags separated by spaces), as the tags the Jaeger UI's Tags field sends."""
    text = readme.read_text(encoding="utf-8")
    start = text.index(README_SEARCHES)
    end = text.find("\n#", start + len(README_SEARCHES))
    section = text[start : end if end > 0 else None]
    return [
        dict(tag.split("=", 1) for tag in found.group(1).split())
        for found in _SEARCH.finditer(section)
    ]


def traces_with_all(record: Mapping[str, Any], tags: Mapping[str, str]) -> set[str]:
    """The traces one of whose spans has every tag: Jaeger matches tags span by span."""
    return {
        t["trace_id"]
        for t in record["traces"]
        if any(
            all(k in s["payi"] and str(s["payi"][k]) == v for k, v in tags.items())
            for s in t["spans"]
        )
    }


@dataclass
class Variant:
    name: str
    configs: list[Path]

    @property
    def redact(self) -> bool:
        return REDACT_CONFIG in self.configs


VARIANTS = {
    "plain": Variant("plain", [SHIPPED_CONFIG]),
    "redact": Variant("redact", [SHIPPED_CONFIG, REDACT_CONFIG]),
}
#: The fleet variant (e2e/fleet.py): its own processes and checks.
FLEET = "fleet"
#: README "See it in Jaeger" for your own app: `make stack`, the quick start, the search,
#: `make stack-down`, as written (e2e/stack.py).
STACK = "stack"


#: The ports a collector + Jaeger pair listens on (every one on 127.0.0.1).
PORT_NAMES = (
    "otlp_grpc",
    "otlp_http",
    "health",
    "metrics",
    "jaeger_otlp_grpc",
    "jaeger_query_http",
    "jaeger_query_grpc",
)


def jaeger_command(jaeger_bin: Path, ports: Mapping[str, int]) -> tuple[list[str], dict[str, str]]:
    """Jaeger v2 with ``e2e/jaeger.yaml`` (in-memory), its ports from the environment: its OTLP
    receiver on ``jaeger_otlp_grpc`` (never Jaeger's default 4317, the collector's)."""
    env = dict(
        os.environ,
        E2E_JAEGER_OTLP_GRPC_PORT=str(ports["jaeger_otlp_grpc"]),
        E2E_JAEGER_QUERY_HTTP_PORT=str(ports["jaeger_query_http"]),
        E2E_JAEGER_QUERY_GRPC_PORT=str(ports["jaeger_query_grpc"]),
    )
    return [str(jaeger_bin), f"--config={JAEGER_CONFIG}"], env


def collector_command(collector: Path, configs: list[Path], ports: Mapping[str, int]) -> list[str]:
    """The collector with the shipped ``configs`` unchanged but for their endpoints (the
    collector's own ``--set``): OTLP in on ``otlp_grpc`` / ``otlp_http``, out to Jaeger's
    ``jaeger_otlp_grpc``."""
    overrides = {
        "receivers::otlp::protocols::grpc::endpoint": f"{HOST}:{ports['otlp_grpc']}",
        "receivers::otlp::protocols::http::endpoint": f"{HOST}:{ports['otlp_http']}",
        "extensions::health_check::endpoint": f"{HOST}:{ports['health']}",
        "exporters::otlp_grpc/jaeger::endpoint": f"{HOST}:{ports['jaeger_otlp_grpc']}",
        # The collector's own metrics (default: a Prometheus endpoint on port 8888).
        "service::telemetry::metrics::readers": json.dumps(
            [{"pull": {"exporter": {"prometheus": {"host": HOST, "port": ports["metrics"]}}}}]
        ),
    }
    return [
        str(collector),
        *(f"--config={c}" for c in configs),
        *(f"--set={k}={v}" for k, v in overrides.items()),
    ]


def run_variant(
    variant: Variant, collector: Path, jaeger_bin: Path, logs: Path, python: str, keep: bool
) -> None:
    print(
        f"\n=== e2e variant {variant.name!r}: collector --config "
        f"{' --config '.join(str(c.relative_to(REPO)) for c in variant.configs)}",
        flush=True,
    )
    ports = {name: free_port() for name in PORT_NAMES}
    service = f"payi-otel-e2e-{variant.name}"
    with ExitStack() as stack:
        jaeger_args, jaeger_env = jaeger_command(jaeger_bin, ports)
        jaeger_proc = Process(
            "jaeger", jaeger_args, logs / f"{variant.name}-jaeger.log", jaeger_env
        )
        processes = [jaeger_proc]

        def stop_all() -> None:
            for process in reversed(processes):
                process.stop()

        stack.callback(stop_all)
        stack.enter_context(print_logs_on_failure(processes))
        jaeger_proc.start()
        jaeger = Jaeger(ports["jaeger_query_http"])
        wait_until("Jaeger's query API", lambda: jaeger.services() is not None, 60, jaeger_proc)

        collector_args = collector_command(collector, variant.configs, ports)
        collector_proc = Process(
            "collector", collector_args, logs / f"{variant.name}-collector.log"
        )
        processes.append(collector_proc)
        collector_proc.start()
        health = f"http://{HOST}:{ports['health']}/"
        wait_until(
            "the collector's health_check", lambda: http_get(health)[0] == 200, 60, collector_proc
        )

        record_path = logs / f"{variant.name}-demo-traces.json"
        demo_env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        demo_env.update(
            OTEL_SERVICE_NAME=service,
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://{HOST}:{ports['otlp_http']}",
            OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
            PAYI_DEMO_TRACES_JSON=str(record_path),
            PYTHONUNBUFFERED="1",
        )
        demo_log = logs / f"{variant.name}-demo.log"
        started = time.monotonic()
        with demo_log.open("wb") as out:
            demo = subprocess.run(
                [python, str(DEMO / "main.py")],
                env=demo_env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=300,
                check=False,
            )
        if demo.returncode != 0 or not record_path.is_file():
            print(demo_log.read_text(errors="replace"))
            raise E2EFailure(f"the demo exited with {demo.returncode} (log: {demo_log})")
        record = json.loads(record_path.read_text())
        produced = sum(len(t["spans"]) for t in record["traces"])
        print(
            f"demo: {len(record['traces'])} traces, {produced} spans, exported "
            f"{record['otlp_delivered']} (failed {record['otlp_failed']}) in "
            f"{time.monotonic() - started:.1f} s; in-process header check "
            f"{'ok' if record['check_ok'] else 'FAILED'}",
            flush=True,
        )
        if not record["check_ok"] or not record["headers_recorded"]:
            raise E2EFailure("the demo's own span <-> header check failed")
        if record["otlp_failed"] or record["otlp_delivered"] != produced:
            raise E2EFailure(
                f"the demo delivered {record['otlp_delivered']} of {produced} spans over OTLP"
            )
        verify(jaeger, record, service, variant, collector_proc, jaeger_proc)
        if keep:
            keep_running(
                f"Jaeger API at {jaeger.base}, collector OTLP/HTTP at "
                f"http://{HOST}:{ports['otlp_http']}"
            )


def keep_running(where: str) -> None:
    """``--keep``: say where the stack answers, and hold it up until Ctrl-C."""
    print(f"\n--keep: {where}; Ctrl-C to stop.", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def verify(
    jaeger: Jaeger,
    record: Mapping[str, Any],
    service: str,
    variant: Variant,
    collector_proc: Process,
    jaeger_proc: Process,
) -> None:
    expected = {t["trace_id"]: t for t in record["traces"]}
    total = sum(len(t["spans"]) for t in record["traces"])

    def all_arrived() -> Optional[dict[str, JaegerTrace]]:
        collector_proc.check_alive()
        found, _ = jaeger.search(service)
        if found != set(expected):
            return None
        traces = {tid: jaeger.trace(tid) for tid in expected}
        if any(
            t is None or len(t.spans) < len(expected[tid]["spans"]) for tid, t in traces.items()
        ):
            return None
        return {tid: t for tid, t in traces.items() if t is not None}

    started = time.monotonic()
    traces: dict[str, JaegerTrace] = wait_until(
        f"Jaeger to hold the {len(expected)} traces ({total} spans) of {service}",
        all_arrived,
        60,
        jaeger_proc,
    )
    time.sleep(2)  # anything late or duplicated would show up now
    traces = {tid: t for tid in expected if (t := jaeger.trace(tid)) is not None}
    found_ids, _ = jaeger.search(service)
    print(
        f"Jaeger: all {len(expected)} traces there {time.monotonic() - started:.1f} s after "
        f"the demo ended",
        flush=True,
    )

    problems: list[str] = []
    if service not in jaeger.services():
        problems.append(f"/api/services lacks {service}")
    if found_ids != set(expected):
        problems.append(f"search service={service}: {sorted(found_ids)} != {sorted(expected)}")
    print(f"\n{'trace id':32}  {'spans':>5}  {'GenAI':>5}  root span")
    for tid, want in expected.items():
        got = traces.get(tid)
        if got is None:
            problems.append(f"{tid}: not found by /api/v3/traces/{tid}")
            continue
        problems += check_trace(want, got, service, variant.redact)
        genai = sum(1 for s in want["spans"] if s["genai"])
        print(f"{tid}  {len(got.spans):>5}  {genai:>5}  {want['spans'][0]['name']}")
    print(
        f"(per trace: span ids, parent links, names and payi.* attributes as the demo "
        f"produced them{'; payi.user_id SHA-256 hashed' if variant.redact else ''}; every "
        f"GenAI span's payi.* equal to the x-payi-* headers its call sent)"
    )

    print("\nSearch by tag (what the Jaeger UI's Tags field sends):")
    for key in SEARCH_KEYS:
        values = sorted(
            {s["payi"][key] for t in record["traces"] for s in t["spans"] if key in s["payi"]},
            key=str,
        )
        if not values:
            problems.append(f"the demo produced no {key}")
        for value in values:
            want_ids = traces_with(record, key, value)
            shown = sha256_hex(value) if variant.redact and key == USER_ID_KEY else value
            got_ids, _ = jaeger.search(service, {key: shown})
            verdict = "ok" if got_ids == want_ids else f"FAIL, expected {sorted(want_ids)}"
            print(f"  {key}={shown}: {len(got_ids)} traces {sorted(got_ids)} {verdict}")
            if got_ids != want_ids:
                problems.append(f"search {key}={shown}: {sorted(got_ids)} != {sorted(want_ids)}")
            if variant.redact and key == USER_ID_KEY:
                clear_ids, _ = jaeger.search(service, {key: value})
                print(
                    f"  {key}={value} (clear): {len(clear_ids)} traces "
                    f"{'ok' if not clear_ids else 'FAIL'}"
                )
                if clear_ids:
                    problems.append(f"search by the clear {key}={value} found {clear_ids}")
    if not variant.redact:
        print('\nThe README\'s searches (section "What to look for in the Jaeger UI"):')
        for tags in readme_searches():
            want_ids = traces_with_all(record, tags)
            got_ids, _ = jaeger.search(service, tags)
            shown = " ".join(f"{k}={v}" for k, v in tags.items())
            ok = bool(want_ids) and got_ids == want_ids
            print(f"  {shown}: {len(got_ids)} traces {'ok' if ok else 'FAIL'}")
            if not want_ids:
                problems.append(f"the README's search {shown!r} matches no span of the demo")
            elif got_ids != want_ids:
                problems.append(
                    f"the README's search {shown!r}: {sorted(got_ids)} != {sorted(want_ids)}"
                )
    if variant.redact:
        clear = {
            str(s["payi"][USER_ID_KEY])
            for t in record["traces"]
            for s in t["spans"]
            if USER_ID_KEY in s["payi"]
        }
        _, all_raw = jaeger.search(service)
        for user_id in sorted(clear):
            quoted = json.dumps(user_id)
            places = [
                tid
                for tid, t in traces.items()
                if quoted in t.raw
                or any(v == user_id for s in t.spans.values() for v in s.attributes.values())
            ]
            if places or quoted in all_raw:
                problems.append(f"the clear user id {user_id!r} is in Jaeger: {places}")
        print(
            f"  clear user ids {sorted(clear)} in any Jaeger response: "
            f"{'no (ok)' if not any('clear user id' in p for p in problems) else 'YES'}"
        )

    first_user = next(
        (
            s["payi"][USER_ID_KEY]
            for t in record["traces"]
            for s in t["spans"]
            if USER_ID_KEY in s["payi"]
        ),
        None,
    )
    if first_user is not None:
        shown = sha256_hex(first_user) if variant.redact else first_user
        print("\nFind them yourself (while the stack runs, e.g. with --keep):")
        print(f"  API: {jaeger.search_url(service, {USER_ID_KEY: shown})}")
        print(
            f"  UI:  {jaeger.search_url(service, {USER_ID_KEY: shown}, api=False)}  (a "
            "placeholder page in a go-built Jaeger: its UI assets are not in the module; "
            "the Docker image has them)"
        )
        print(f"  one trace: {jaeger.base}/api/v3/traces/{next(iter(expected))}")
    if problems:
        shown = problems[:25] + (
            [f"... and {len(problems) - 25} more"] if len(problems) > 25 else []
        )
        raise E2EFailure(
            f"Jaeger does not hold what the demo produced ({len(problems)} "
            "differences):\n  " + "\n  ".join(shown)
        )
    print(f"\nvariant {variant.name!r}: PASSED", flush=True)


@contextmanager
def print_logs_on_failure(processes: list[Process]) -> Iterator[None]:
    try:
        yield
    except BaseException:
        for process in processes:
            if process.log.is_file():
                text = process.log.read_text(errors="replace")
                print(f"\n----- {process.name} log ({process.log}), last 8000 characters -----")
                print(text[-8000:])
        raise


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", choices=[*VARIANTS, FLEET, STACK, "all"], default="all")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="leave Jaeger and the collector running after the checks",
    )
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="the interpreter that runs the demo (default: this one)",
    )
    args = parser.parse_args(argv)
    # A SIGTERM (CI's time limit, `kill`) unwinds like Ctrl-C: every process started is stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    started = time.monotonic()
    names = [*VARIANTS, FLEET, STACK] if args.variant == "all" else [args.variant]
    needed = [binaries.collector_path(), binaries.jaeger_path()]
    if FLEET in names:
        needed.append(binaries.prometheus_path())
    if shutil.which("go") is None and not all(path.is_file() for path in needed):
        print("e2e: needs `go` to build the collector, Jaeger and Prometheus", file=sys.stderr)
        return 2
    collector = binaries.ensure_collector()
    jaeger_bin = binaries.ensure_jaeger()
    prometheus_bin = binaries.ensure_prometheus() if FLEET in names else None
    built = time.monotonic()
    logs = _logs_dir()
    print(
        f"e2e: collector {binaries.OTELCOL_VERSION} ({collector}), "
        f"Jaeger {binaries.JAEGER_RELEASE} ({jaeger_bin})"
        + (
            f", Prometheus {binaries.PROMETHEUS_RELEASE} ({prometheus_bin})"
            if prometheus_bin
            else ""
        )
        + f"; logs and records in {logs}",
        flush=True,
    )
    failed: list[str] = []
    for name in names:
        try:
            if name == FLEET:
                assert prometheus_bin is not None
                import fleet

                fleet.run_fleet(
                    sys.modules[__name__],
                    collector,
                    jaeger_bin,
                    prometheus_bin,
                    logs,
                    args.python,
                    args.keep,
                )
            elif name == STACK:
                print(
                    "\n=== e2e variant 'stack': README \"See it in Jaeger\", make stack", flush=True
                )
                import stack

                stack.walk_readme(logs, args.python)
                print(f"\nvariant {name!r}: PASSED", flush=True)
            else:
                run_variant(VARIANTS[name], collector, jaeger_bin, logs, args.python, args.keep)
        except (E2EFailure, subprocess.TimeoutExpired) as failure:
            print(f"\nvariant {name!r}: FAILED: {failure}", flush=True)
            failed.append(name)
    print(
        f"\ne2e: variants {', '.join(names)}; build/cache {built - started:.0f} s, run "
        f"{time.monotonic() - built:.0f} s; logs and the demo's records: {logs}"
    )
    if failed:
        print(f"e2e: FAILED: {', '.join(failed)}")
    print(f"e2e: {len(names) - len(failed)} passed, {len(failed)} failed", flush=True)
    return 1 if failed else 0


#: How many runs' logs the cache keeps (the newest; older ones are removed when a run starts).
KEEP_RUNS = 5


def _logs_dir() -> Path:
    """A fresh directory for this run's logs and records, inside the e2e cache (next to the
    binaries, not loose in /tmp); only the newest :data:`KEEP_RUNS` runs are kept."""
    runs = binaries.cache_root() / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    for old in sorted(runs.iterdir(), key=lambda p: p.stat().st_mtime)[: -(KEEP_RUNS - 1)]:
        shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=runs))


if __name__ == "__main__":
    sys.exit(main())

"""`make e2e`'s fleet variant (README "At scale"): the demo through a two-tier collector fleet.

    demo --OTLP/HTTP--> agent (collector-config/fleet-agent.yaml: load_balancing by trace id)
         --OTLP/gRPC--> gateway 1 | gateway 2 (collector-config/fleet-gateway.yaml:
                        signal_to_metrics, then tail_sampling)
         --OTLP/gRPC--> Jaeger v2          (the sampled traces)
         <--scrape----  Prometheus 3 (collector-config/prometheus.yml)  (the derived metrics)

All processes on 127.0.0.1, on free ports; the shipped files are used unchanged but for their
addresses (``--set`` for the collectors; Prometheus' targets and interval) and the sampling
threshold (``PAYI_KEEP_TRACE_COST_USD``, the gateway config's own knob). The demo runs through
``e2e/fleet_demo.py``, which also records the SDK's own metric points and each span's cost and
status. Checks:

* Jaeger holds exactly the traces the gateways' policy keeps (an error, or a GenAI call
  costing at least the threshold; computed from the demo's spans, plus fleet_demo.py's error
  probe trace), each whole - spans, parents, names, ``payi.*`` as the demo produced them -
  although the spans went through two gateways; none of the others; the gateways together
  received every span once (their own ``otelcol_receiver_accepted_spans``);
* every query of the README's PromQL block (section "At scale"), asked of Prometheus' HTTP API,
  returns the SDK's own metrics summed the same way (same label sets; cost equal to 1e-9
  relative, tokens exactly);
* the demo's printed cost tables (by account and user, by use case and step: the SDK's metrics
  as the demo shows them, 6 decimals) equal the derived sums.

The comparison functions here take plain data, so tests/test_e2e_checks.py runs them on
made-up answers.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import time
import urllib.parse
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
AGENT_CONFIG = REPO / "collector-config" / "fleet-agent.yaml"
GATEWAY_CONFIG = REPO / "collector-config" / "fleet-gateway.yaml"
PROMETHEUS_CONFIG = REPO / "collector-config" / "prometheus.yml"
FLEET_DEMO = HERE / "fleet_demo.py"
GATEWAYS = 2
#: The e2e's sampling threshold (USD per call): the demo's calls cost 1e-6..2e-5 (fake
#: server, real prices), so this keeps some of its traces and drops the others.
KEEP_COST_USD = "0.000015"
#: The gateway's tail_sampling decision_wait in the e2e (shipped: 10 s; the demo's traces
#: last well under a second).
DECISION_WAIT = "3s"
COST_ATTRIBUTE = "payi_otel.cost.total"

#: The SDK's metric names (src/payi_otel/_cost.py) as the gateways' Prometheus exporter
#: names the derived ones (UnderscoreEscapingWithSuffixes: unit, then ``_total``).
PROMETHEUS_NAMES = {
    "payi_genai_cost_USD_total": "payi.genai.cost",
    "payi_genai_tokens_total": "payi.genai.tokens",
}
README_SECTION = "## At scale"
#: ``sum by (label, ...) (metric)`` or ``sum by (...) (metric{label="value", ...})``.
_QUERY = re.compile(r"^sum by \((?P<by>[\w, ]*)\) \((?P<metric>\w+)(?:\{(?P<match>[^}]*)\})?\)$")
_MATCHER = re.compile(r'(\w+)="([^"]*)"')


# --------------------------------------------------------------------------- pure checks
def label_name(attribute: str) -> str:
    """An OpenTelemetry attribute name as Prometheus' underscore escaping writes it."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", attribute)


def readme_queries(readme: Path = REPO / "docs" / "at-scale.md") -> list[str]:
    """The PromQL queries of the README's "At scale" section: every line of its ```promql
    blocks that is not a comment."""
    text = readme.read_text(encoding="utf-8")
    start = text.index("\n" + README_SECTION + "\n")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end > 0 else None]
    queries = []
    for block in re.findall(r"```promql\n(.*?)```", section, re.S):
        queries += [ln.strip() for ln in block.splitlines() if ln.strip() and ln[0] != "#"]
    return queries


def parse_query(query: str) -> tuple[str, list[str], dict[str, str]]:
    """(the SDK metric name, the labels summed by, the label matchers) of a README query."""
    found = _QUERY.match(query.strip())
    if found is None:
        raise ValueError(f"not a `sum by (labels) (metric{{...}})` query: {query!r}")
    metric = found.group("metric")
    if metric not in PROMETHEUS_NAMES:
        raise ValueError(f"{query!r}: unknown metric {metric} (known: {sorted(PROMETHEUS_NAMES)})")
    by = [label.strip() for label in found.group("by").split(",") if label.strip()]
    return PROMETHEUS_NAMES[metric], by, dict(_MATCHER.findall(found.group("match") or ""))


Sums = dict[tuple[str, ...], float]


def sdk_sums(points: Iterable[Mapping[str, Any]], query: str) -> Sums:
    """What ``query`` should return, from the SDK's own data points: the points of its metric
    that its matchers select, summed by its labels (a missing attribute: ``""``, as
    Prometheus has no such label)."""
    metric, by, matchers = parse_query(query)
    sums: Sums = defaultdict(float)
    for point in points:
        if point["name"] != metric:
            continue
        labels = {label_name(k): str(v) for k, v in point["attributes"].items()}
        if any(labels.get(k, "") != v for k, v in matchers.items()):
            continue
        sums[tuple(labels.get(label, "") for label in by)] += float(point["value"])
    return dict(sums)


def prometheus_sums(result: Sequence[Mapping[str, Any]], by: Sequence[str]) -> Sums:
    """A Prometheus instant-vector answer (``data.result``) keyed like :func:`sdk_sums`."""
    return {
        tuple(str(item["metric"].get(label, "")) for label in by): float(item["value"][1])
        for item in result
    }


def compare_sums(want: Sums, got: Sums, exact: bool, what: str) -> list[str]:
    """Differences between two keyed sums; cost compares to 1e-9 relative (float sums added
    in another order), token counts exactly."""
    problems = []
    for key in sorted(set(want) | set(got)):
        if key not in got:
            problems.append(f"{what}: {key} missing (want {want[key]})")
        elif key not in want:
            problems.append(f"{what}: {key} unexpected ({got[key]})")
        elif not (
            got[key] == want[key] if exact else math.isclose(got[key], want[key], rel_tol=1e-9)
        ):
            problems.append(f"{what}: {key} = {got[key]!r}, want {want[key]!r}")
    return problems


#: The demo's two cost tables (examples/support_assistant/costs.py) and the attributes of
#: their key columns.
DEMO_TABLES = {
    "By account and user": ("payi.account_name", "payi.user_id"),
    "By use case and step": ("payi.use_case.name", "payi.use_case.step"),
}


def demo_tables(output: str) -> dict[str, dict[tuple[str, ...], tuple[float, int, int]]]:
    """The demo's printed cost tables: title -> {key: (cost, input tokens, output tokens)},
    the ``total`` row under the key ``("total",)``; ``-`` (not set) becomes ``""``."""
    tables: dict[str, dict[tuple[str, ...], tuple[float, int, int]]] = {}
    lines = output.splitlines()
    for index, line in enumerate(lines):
        title = next((t for t in DEMO_TABLES if line.startswith(t + " (")), None)
        if title is None:
            continue
        width = len(DEMO_TABLES[title])
        rows: dict[tuple[str, ...], tuple[float, int, int]] = {}
        for row in lines[index + 2 :]:
            cells = row.split()
            if not cells:
                break
            key = ("total",) if cells[0] == "total" else tuple(cells[:width])
            rows[tuple("" if c == "-" else c for c in key)] = (
                float(cells[-3]),
                int(cells[-2]),
                int(cells[-1]),
            )
            if cells[0] == "total":
                break
        tables[title] = rows
    return tables


def compare_demo_table(
    rows: Mapping[tuple[str, ...], tuple[float, int, int]],
    cost: Sums,
    tokens_in: Sums,
    tokens_out: Sums,
    what: str,
) -> list[str]:
    """The demo's printed rows (cost to its 6 decimals, tokens exactly) against sums keyed
    the same way (cost; input and output tokens)."""
    problems = []
    keys = {k for k in rows if k != ("total",)}
    if keys != set(cost) | set(tokens_in) | set(tokens_out):
        problems.append(f"{what}: rows {sorted(keys)} != {sorted(set(cost) | set(tokens_in))}")
    for key in keys:
        printed, printed_in, printed_out = rows[key]
        got = (cost.get(key, 0.0), tokens_in.get(key, 0.0), tokens_out.get(key, 0.0))
        if abs(printed - got[0]) > 5e-7 or (printed_in, printed_out) != (got[1], got[2]):
            problems.append(f"{what}: {key} printed {rows[key]}, derived {got}")
    if ("total",) in rows:
        total = rows[("total",)]
        got_total = (sum(cost.values()), sum(tokens_in.values()), sum(tokens_out.values()))
        if abs(total[0] - got_total[0]) > 5e-7 or total[1:] != got_total[1:]:
            problems.append(f"{what}: total printed {total}, derived {got_total}")
    return problems


def kept_traces(spans: Mapping[str, Mapping[str, Any]], keep_cost: float) -> set[str]:
    """The trace ids the gateway's tail_sampling keeps: a span with an error status, or a
    GenAI call costing at least ``keep_cost`` (``payi_otel.cost.total``)."""
    return {
        s["trace_id"]
        for s in spans.values()
        if s["status"] == "ERROR" or (s.get("cost") is not None and s["cost"] >= keep_cost)
    }


def prometheus_config(shipped: Mapping[str, Any], targets: Sequence[str]) -> dict[str, Any]:
    """The shipped Prometheus config with its one job's targets and the intervals replaced."""
    config: dict[str, Any] = json.loads(json.dumps(shipped))
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": list(targets)}]
    return config


# --------------------------------------------------------------------------- the run
class Prometheus:
    def __init__(self, port: int, http_json: Callable[[str], Any], host: str) -> None:
        self.base = f"http://{host}:{port}"
        self._get = http_json

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"{self.base}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        answer = self._get(url)
        if answer.get("status") != "success":
            raise ValueError(f"{promql}: {answer}")
        return list(answer["data"]["result"])

    def up_targets(self) -> int:
        return len([r for r in self.query("up == 1")])


def run_fleet(
    run: Any,
    collector: Path,
    jaeger_bin: Path,
    prometheus_bin: Path,
    logs: Path,
    python: str,
    keep: bool,
) -> None:
    """The fleet variant; ``run`` is e2e/run.py's module (processes, Jaeger API, checks)."""
    host = run.HOST
    print(
        f"\n=== e2e variant 'fleet': 1 agent ({AGENT_CONFIG.relative_to(REPO)}) -> {GATEWAYS} "
        f"gateways ({GATEWAY_CONFIG.relative_to(REPO)}) -> Jaeger + Prometheus",
        flush=True,
    )
    port = run.free_port
    service = "payi-otel-e2e-fleet"
    with ExitStack() as stack:
        processes: list[Any] = []

        def stop_all() -> None:
            for process in reversed(processes):
                process.stop()

        stack.callback(stop_all)
        stack.enter_context(run.print_logs_on_failure(processes))

        jaeger_ports = {k: port() for k in ("otlp", "query_http", "query_grpc")}
        jaeger_proc = run.Process(
            "jaeger",
            [str(jaeger_bin), f"--config={run.JAEGER_CONFIG}"],
            logs / "fleet-jaeger.log",
            dict(
                os.environ,
                E2E_JAEGER_OTLP_GRPC_PORT=str(jaeger_ports["otlp"]),
                E2E_JAEGER_QUERY_HTTP_PORT=str(jaeger_ports["query_http"]),
                E2E_JAEGER_QUERY_GRPC_PORT=str(jaeger_ports["query_grpc"]),
            ),
        )
        processes.append(jaeger_proc.start())
        jaeger = run.Jaeger(jaeger_ports["query_http"])
        run.wait_until("Jaeger's query API", lambda: jaeger.services() is not None, 60, jaeger_proc)

        gateways = []
        gateway_env = dict(os.environ, PAYI_KEEP_TRACE_COST_USD=KEEP_COST_USD)
        for number in range(1, GATEWAYS + 1):
            ports = {k: port() for k in ("otlp", "health", "prometheus", "telemetry")}
            overrides = {
                "receivers::otlp::protocols::grpc::endpoint": f"{host}:{ports['otlp']}",
                "extensions::health_check::endpoint": f"{host}:{ports['health']}",
                "exporters::otlp_grpc/jaeger::endpoint": f"{host}:{jaeger_ports['otlp']}",
                "exporters::prometheus::endpoint": f"{host}:{ports['prometheus']}",
                "processors::tail_sampling::decision_wait": DECISION_WAIT,
                **telemetry(host, ports["telemetry"]),
            }
            process = run.Process(
                f"gateway-{number}",
                collector_args(collector, GATEWAY_CONFIG, overrides),
                logs / f"fleet-gateway-{number}.log",
                gateway_env,
            )
            processes.append(process.start())
            gateways.append((process, ports))
        for process, ports in gateways:
            health = f"http://{host}:{ports['health']}/"
            run.wait_until(
                f"{process.name}'s health_check",
                lambda h=health: run.http_get(h)[0] == 200,
                60,
                process,
            )

        prometheus_port = port()
        data = logs / "fleet-prometheus-data"
        shutil.rmtree(data, ignore_errors=True)
        config_path = logs / "fleet-prometheus.yml"
        targets = [f"{host}:{ports['prometheus']}" for _, ports in gateways]
        config = prometheus_config(yaml.safe_load(PROMETHEUS_CONFIG.read_text()), targets)
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        prometheus_proc = run.Process(
            "prometheus",
            [
                str(prometheus_bin),
                f"--config.file={config_path}",
                f"--storage.tsdb.path={data}",
                f"--web.listen-address={host}:{prometheus_port}",
            ],
            logs / "fleet-prometheus.log",
        )
        processes.append(prometheus_proc.start())
        prometheus = Prometheus(prometheus_port, run.http_json, host)
        run.wait_until(
            "Prometheus scraping both gateways",
            lambda: prometheus.up_targets() == GATEWAYS,
            60,
            prometheus_proc,
        )

        agent_ports = {k: port() for k in ("grpc", "http", "health", "telemetry")}
        gateway_list = json.dumps([f"{host}:{ports['otlp']}" for _, ports in gateways])
        agent_overrides = {
            "receivers::otlp::protocols::grpc::endpoint": f"{host}:{agent_ports['grpc']}",
            "receivers::otlp::protocols::http::endpoint": f"{host}:{agent_ports['http']}",
            "extensions::health_check::endpoint": f"{host}:{agent_ports['health']}",
            "exporters::load_balancing::resolver::static::hostnames": gateway_list,
            "exporters::load_balancing/metrics::resolver::static::hostnames": gateway_list,
            **telemetry(host, agent_ports["telemetry"]),
        }
        agent = run.Process(
            "agent",
            collector_args(collector, AGENT_CONFIG, agent_overrides),
            logs / "fleet-agent.log",
        )
        processes.append(agent.start())
        health = f"http://{host}:{agent_ports['health']}/"
        run.wait_until(
            "the agent's health_check", lambda: run.http_get(health)[0] == 200, 60, agent
        )

        record_path = logs / "fleet-demo-traces.json"
        fleet_path = logs / "fleet-demo-sdk.json"
        demo_env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        demo_env.update(
            OTEL_SERVICE_NAME=service,
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://{host}:{agent_ports['http']}",
            OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
            PAYI_DEMO_TRACES_JSON=str(record_path),
            PAYI_E2E_FLEET_JSON=str(fleet_path),
            PYTHONUNBUFFERED="1",
        )
        demo_log = logs / "fleet-demo.log"
        started = time.monotonic()
        with demo_log.open("wb") as out:
            demo = subprocess.run(
                [python, str(FLEET_DEMO)],
                env=demo_env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=300,
                check=False,
            )
        output = demo_log.read_text(errors="replace")
        if demo.returncode != 0 or not record_path.is_file() or not fleet_path.is_file():
            print(output)
            raise run.E2EFailure(f"the demo exited with {demo.returncode} (log: {demo_log})")
        record = json.loads(record_path.read_text())
        facts = json.loads(fleet_path.read_text())
        produced = sum(len(t["spans"]) for t in record["traces"])
        print(
            f"demo: {len(record['traces'])} traces, {produced} spans, exported "
            f"{record['otlp_delivered']} (failed {record['otlp_failed']}) to the agent in "
            f"{time.monotonic() - started:.1f} s",
            flush=True,
        )
        if record["otlp_failed"] or record["otlp_delivered"] != produced:
            raise run.E2EFailure(f"the demo delivered {record['otlp_delivered']} of {produced}")

        problems = check_jaeger(run, jaeger, record, facts, service, gateways, jaeger_proc)
        problems += check_prometheus(run, prometheus, facts, output, prometheus_proc)
        problems += check_gateways(
            run, gateways, produced + sum(len(t["spans"]) for t in facts["probe"])
        )
        if problems:
            raise run.E2EFailure(
                f"the fleet differs from what the demo produced ({len(problems)}):\n  "
                + "\n  ".join(problems[:30])
            )
        print("\nvariant 'fleet': PASSED", flush=True)
        if keep:
            run.keep_running(
                f"Jaeger API at {jaeger.base}, Prometheus at {prometheus.base}, agent "
                f"OTLP/HTTP at http://{host}:{agent_ports['http']}"
            )


def telemetry(host: str, port: int) -> dict[str, str]:
    """The collector's own metrics (default: a Prometheus endpoint on :8888) on ``port``."""
    reader = {"pull": {"exporter": {"prometheus": {"host": host, "port": port}}}}
    return {"service::telemetry::metrics::readers": json.dumps([reader])}


def collector_args(collector: Path, config: Path, overrides: Mapping[str, str]) -> list[str]:
    return [str(collector), f"--config={config}", *(f"--set={k}={v}" for k, v in overrides.items())]


def check_jaeger(
    run: Any,
    jaeger: Any,
    record: Mapping[str, Any],
    facts: Mapping[str, Any],
    service: str,
    gateways: Sequence[tuple[Any, Mapping[str, int]]],
    jaeger_proc: Any,
) -> list[str]:
    expected = {t["trace_id"]: t for t in [*record["traces"], *facts["probe"]]}
    kept = kept_traces(facts["spans"], float(KEEP_COST_USD)) & set(expected)
    dropped = set(expected) - kept
    probes = {t["trace_id"] for t in facts["probe"]}
    if not probes or not probes <= kept:
        return [f"the error probe traces {sorted(probes)} are not all kept by the policy"]
    if len(kept) == len(probes) or not dropped:
        return [
            f"the threshold {KEEP_COST_USD} USD keeps {len(kept - probes)} of the demo's "
            f"{len(record['traces'])} traces: the check needs some kept and some dropped "
            "(change KEEP_COST_USD)"
        ]

    def arrived() -> bool:
        for process, _ in gateways:
            process.check_alive()
        found, _ = jaeger.search(service)
        if found != kept:
            return False
        traces = [jaeger.trace(tid) for tid in kept]
        return all(
            t is not None and len(t.spans) >= len(expected[t.trace_id]["spans"]) for t in traces
        )

    started = time.monotonic()
    run.wait_until(f"Jaeger to hold the {len(kept)} kept traces", arrived, 90, jaeger_proc)
    # Past every decision: a dropped trace, a late span or a duplicate would show by now.
    time.sleep(float(DECISION_WAIT.rstrip("s")) + 2)
    print(
        f"Jaeger: the {len(kept)} kept traces there {time.monotonic() - started:.1f} s after the "
        f"demo ended (tail_sampling: keep a trace with an error or a call >= {KEEP_COST_USD} USD)",
        flush=True,
    )
    problems: list[str] = []
    found, _ = jaeger.search(service)
    if found != kept:
        problems.append(f"Jaeger holds {sorted(found)}, the policy keeps {sorted(kept)}")
    print(f"\n{'trace id':32}  {'spans':>5}  {'max call USD':>12}  verdict  in Jaeger")
    for tid, want in expected.items():
        costs = [s["cost"] for s in facts["spans"].values() if s["trace_id"] == tid and s["cost"]]
        got = jaeger.trace(tid)
        if tid in kept:
            if got is None:
                problems.append(f"{tid}: kept by the policy, not in Jaeger")
            else:
                problems += run.check_trace(want, got, service, redact=False)
        elif got is not None and got.spans:
            problems.append(f"{tid}: dropped by the policy, yet {len(got.spans)} spans in Jaeger")
        shown = f"{len(got.spans)} spans, whole" if got is not None and got.spans else "absent"
        error = any(s["status"] == "ERROR" for s in facts["spans"].values() if s["trace_id"] == tid)
        print(
            f"{tid}  {len(want['spans']):>5}  {max(costs, default=0):>12.7f}  "
            f"{'keep' if tid in kept else 'drop':7}  {shown}"
            + ("  (error probe)" if error else f"  {want['spans'][0]['name']}")
        )
    return problems


def check_prometheus(
    run: Any, prometheus: Prometheus, facts: Mapping[str, Any], output: str, proc: Any
) -> list[str]:
    points = facts["sdk_points"]
    queries = readme_queries()
    if not queries:
        return [f"the README's {README_SECTION!r} section has no PromQL query"]

    def answers() -> Optional[dict[str, Sums]]:
        got = {}
        for query in queries:
            _, by, _ = parse_query(query)
            got[query] = prometheus_sums(prometheus.query(query), by)
            if compare_sums(sdk_sums(points, query), got[query], exact=False, what=query):
                return None
        return got

    started = time.monotonic()
    try:
        got = run.wait_until("Prometheus to return the SDK's sums", answers, 45, proc)
        print(
            f"\nPrometheus: every README query equal to the SDK's own metrics "
            f"{time.monotonic() - started:.1f} s after the traces arrived",
            flush=True,
        )
    except run.E2EFailure:
        got = {q: prometheus_sums(prometheus.query(q), parse_query(q)[1]) for q in queries}
    problems: list[str] = []
    for query in queries:
        metric, by, _ = parse_query(query)
        want = sdk_sums(points, query)
        problems += compare_sums(want, got[query], exact=metric.endswith("tokens"), what=query)
        print(f"\n  {query}")
        for key in sorted(set(want) | set(got[query])):
            shown = ", ".join(f"{b}={k or '-'}" for b, k in zip(by, key))
            print(
                f"    {shown:70} SDK {want.get(key, float('nan')):.9g}  derived "
                f"{got[query].get(key, float('nan')):.9g}"
            )

    tables = demo_tables(output)
    cost_metric = "payi_genai_cost_USD_total"
    tokens_metric = "payi_genai_tokens_total"
    print("\nThe demo's printed cost tables against the derived sums:")
    for title, attributes in DEMO_TABLES.items():
        if title not in tables:
            problems.append(f"the demo printed no table {title!r}")
            continue
        labels = ", ".join(label_name(a) for a in attributes)
        derived = {
            name: prometheus_sums(prometheus.query(query), [label_name(a) for a in attributes])
            for name, query in (
                ("cost", f"sum by ({labels}) ({cost_metric})"),
                ("in", f'sum by ({labels}) ({tokens_metric}{{payi_otel_token_type="input"}})'),
                ("out", f'sum by ({labels}) ({tokens_metric}{{payi_otel_token_type="output"}})'),
            )
        }
        found = compare_demo_table(
            tables[title], derived["cost"], derived["in"], derived["out"], title
        )
        problems += found
        total = tables[title].get(("total",), (0.0, 0, 0))
        print(
            f"  {title}: {len(tables[title]) - 1} rows, total {total[0]:.6f} USD, "
            f"{total[1]} input / {total[2]} output tokens: "
            f"{'equal' if not found else 'DIFFERENT'} (derived total "
            f"{sum(derived['cost'].values()):.9f} USD)"
        )
    return problems


def check_gateways(
    run: Any, gateways: Sequence[tuple[Any, Mapping[str, int]]], produced: int
) -> list[str]:
    """Each gateway's own count of the spans it received (its telemetry): together, every
    span the demo produced, once."""
    counts = []
    for _, ports in gateways:
        _, body = run.http_get(f"http://{run.HOST}:{ports['telemetry']}/metrics")
        total = 0.0
        for line in body.decode().splitlines():
            if line.startswith("otelcol_receiver_accepted_spans"):
                total += float(line.rsplit(" ", 1)[1])
        counts.append(int(total))
    print(
        "\nSpans per gateway (routed by trace id): "
        + ", ".join(f"gateway-{i + 1} {c}" for i, c in enumerate(counts))
        + f"; the demo and the error probes produced {produced}"
    )
    if sum(counts) != produced:
        return [f"the gateways received {counts} spans, {sum(counts)} in all, not {produced}"]
    if not all(counts):
        return [f"a gateway received no span ({counts}): the routing spread nothing"]
    return []

"""The collector fleet's shipped files (README "At scale"), parsed and cross-checked: no
collector, Docker or Prometheus needed (`make e2e`'s fleet variant runs them for real;
tests/test_e2e_config.py runs the collector's own `validate` on them where it is built).

* ``collector-config/fleet-gateway.yaml``: the cost and token metrics are derived from every
  span, before sampling; their names, units, dimensions and token types are the SDK's own
  (``payi_otel._cost``); the sampling policy keeps errors and expensive calls; the metrics
  reach the Prometheus exporter as cumulative counters;
* ``collector-config/fleet-agent.yaml``: spans routed by trace id to the compose gateways;
* ``collector-config/prometheus.yml`` and ``docker-compose.yml``'s ``fleet`` profile: the
  addresses, ports, mounts and pinned releases line up (the ones `make e2e` builds);
* the README's PromQL queries ask only for what the gateways derive.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_deploy_config import (
    bind_mounts,
    command_args,
    component_type,
    container_ports,
    depends_on,
    environment,
    host_port,
    image_tag,
    pipelines,
    structural_problems,
)

from payi_otel import _cost

ROOT = Path(__file__).resolve().parent.parent
AGENT = ROOT / "collector-config" / "fleet-agent.yaml"
GATEWAY = ROOT / "collector-config" / "fleet-gateway.yaml"
PROMETHEUS = ROOT / "collector-config" / "prometheus.yml"
COMPOSE = ROOT / "docker-compose.yml"
GATEWAY_SERVICES = ("otel-gateway-1", "otel-gateway-2")
FLEET_SERVICES = {"otel-agent", *GATEWAY_SERVICES, "prometheus", "demo-fleet"}


def _load(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


fleet = _load("e2e_fleet", ROOT / "e2e" / "fleet.py")
build = _load("e2e_binaries_fleet", ROOT / "e2e" / "binaries.py")


@pytest.fixture(scope="module")
def gateway() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(GATEWAY.read_text())
    return config


@pytest.fixture(scope="module")
def agent() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(AGENT.read_text())
    return config


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = yaml.safe_load(COMPOSE.read_text())["services"]
    return result


def _of_type(ids: list[str], kind: str) -> list[str]:
    return [i for i in ids if component_type(i) == kind]


def _definitions(gateway: dict[str, Any]) -> list[dict[str, Any]]:
    (connector,) = _of_type(list(gateway["connectors"]), "signal_to_metrics")
    spans: list[dict[str, Any]] = gateway["connectors"][connector]["spans"]
    return spans


# --------------------------------------------------------------------------- the gateway
def test_fleet_configs_are_consistent(gateway: dict[str, Any], agent: dict[str, Any]) -> None:
    """Every component used is defined and every one defined is used; memory_limiter first
    and batch last in every pipeline (the rules the single collector's config follows)."""
    assert structural_problems(gateway) == []
    assert structural_problems(agent) == []


def test_cost_is_derived_from_every_span_before_sampling(gateway: dict[str, Any]) -> None:
    stages = pipelines(gateway)
    (connector,) = gateway["connectors"]
    feeding = [n for n, p in stages.items() if connector in p["exporters"]]
    sampling = [
        n for n, p in stages.items() if _of_type(p.get("processors") or [], "tail_sampling")
    ]
    assert len(feeding) == 1 and len(sampling) == 1
    feed, sample = stages[feeding[0]], stages[sampling[0]]
    assert feeding[0].startswith("traces") and sampling[0].startswith("traces")
    # The connector sees what the sampling pipeline sees, all of it: the same receivers,
    # and nothing in between that drops spans.
    assert feed["receivers"] == sample["receivers"] == ["otlp"]
    assert [component_type(p) for p in feed["processors"]] == ["memory_limiter", "batch"]
    # The sampled traces go to Jaeger; nothing else does.
    assert _of_type(sample["exporters"], "otlp_grpc") == sample["exporters"]
    assert gateway["exporters"][sample["exporters"][0]]["endpoint"] == "jaeger:4317"


def test_derived_metrics_become_cumulative_prometheus_counters(gateway: dict[str, Any]) -> None:
    stages = pipelines(gateway)
    (connector,) = gateway["connectors"]
    (name,) = [n for n, p in stages.items() if connector in p["receivers"]]
    metrics = stages[name]
    assert name.startswith("metrics") and metrics["receivers"] == [connector]
    assert [component_type(p) for p in metrics["processors"]] == [
        "memory_limiter",
        "delta_to_cumulative",
        "batch",
    ]
    (exporter,) = metrics["exporters"]
    assert component_type(exporter) == "prometheus"
    settings = gateway["exporters"][exporter]
    assert settings["translation_strategy"] == "UnderscoreEscapingWithSuffixes"
    assert host_port(settings["endpoint"]) == ("0.0.0.0", 8889)
    # The applications' own metrics never reach that exporter (the same names would add up).
    for other, pipeline in stages.items():
        if other != name:
            assert exporter not in pipeline["exporters"], other
    for definition in _definitions(gateway):
        assert definition["sum"]["monotonic"] is True, definition["name"]


def test_derived_metrics_are_the_sdks(gateway: dict[str, Any]) -> None:
    """Names, units, dimensions and token types as payi_otel._cost records them."""
    sdk_dimensions = {*_cost._DIMENSIONS, _cost._USER} - {"payi.limit_ids"}
    definitions = _definitions(gateway)
    cost = [d for d in definitions if d["name"] == _cost.COST_METRIC]
    tokens = [d for d in definitions if d["name"] == _cost.TOKENS_METRIC]
    assert len(cost) == 1 and len(cost) + len(tokens) == len(definitions)
    assert cost[0]["unit"] == _cost.CURRENCY
    assert cost[0]["conditions"] == ['span.attributes["payi_otel.cost.total"] != nil']
    assert cost[0]["sum"]["value"] == 'Double(span.attributes["payi_otel.cost.total"])'
    want = {(attribute, token_type) for _, attribute, token_type in _cost._USAGE}
    got = set()
    for definition in tokens:
        assert definition["unit"] == "{token}"
        (typed,) = [a for a in definition["attributes"] if a.get("key") == "payi_otel.token.type"]
        (attribute,) = re.findall(r'span\.attributes\["([^"]+)"\]', definition["sum"]["value"])
        assert definition["conditions"] == [f'span.attributes["{attribute}"] > 0']
        got.add((attribute, typed["default_value"]))
    assert got == want
    # Every metric: the SDK's dimensions (limit_ids aside), each optional, and the model.
    descriptions = {d["description"] for d in tokens}
    assert len(descriptions) == 1, "one description: the token definitions make one metric"
    for definition in definitions:
        keys = {a["key"]: a for a in definition["attributes"] if a["key"] != "payi_otel.token.type"}
        assert set(keys) == sdk_dimensions | {"gen_ai.request.model"}, definition["name"]
        assert all(a.get("optional") is True for a in keys.values())
        assert definition["include_resource_attributes"] == [{"key": "service.name"}]


def test_sampling_keeps_errors_and_expensive_traces(gateway: dict[str, Any]) -> None:
    (processor,) = _of_type(list(gateway["processors"]), "tail_sampling")
    policies = {p["type"]: p for p in gateway["processors"][processor]["policies"]}
    assert set(policies) == {"status_code", "ottl_condition"}
    assert policies["status_code"]["status_code"]["status_codes"] == ["ERROR"]
    (condition,) = policies["ottl_condition"]["ottl_condition"]["span"]
    assert condition == (
        'span.attributes["payi_otel.cost.total"] >= ${env:PAYI_KEEP_TRACE_COST_USD:-0.01}'
    )


def test_kept_traces_follow_the_policy() -> None:
    spans = {
        "a1": {"trace_id": "A", "status": "UNSET", "cost": 0.02},
        "a2": {"trace_id": "A", "status": "UNSET", "cost": None},
        "b1": {"trace_id": "B", "status": "UNSET", "cost": 0.009},
        "b2": {"trace_id": "B", "status": "UNSET", "cost": 0.009},  # cheap calls add nothing
        "c1": {"trace_id": "C", "status": "ERROR", "cost": None},
        "d1": {"trace_id": "D", "status": "OK", "cost": 0.01},  # at the threshold: kept
    }
    assert fleet.kept_traces(spans, 0.01) == {"A", "C", "D"}


# --------------------------------------------------------------------------- the agent
def test_agent_routes_spans_by_trace_id_to_the_gateways(
    agent: dict[str, Any], gateway: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    stages = pipelines(agent)
    gateway_port = host_port(gateway["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"])[1]
    for signal in ("traces", "logs", "metrics"):
        (exporter,) = stages[signal]["exporters"]
        assert component_type(exporter) == "load_balancing"
        settings = agent["exporters"][exporter]
        key = "streamID" if signal == "metrics" else "traceID"
        assert settings["routing_key"] == key, signal
        assert settings["protocol"]["otlp"]["tls"]["insecure"] is True
        hostnames = settings["resolver"]["static"]["hostnames"]
        assert [host_port(h) for h in hostnames] == [(s, gateway_port) for s in GATEWAY_SERVICES]
    for name in GATEWAY_SERVICES:
        assert gateway_port in container_ports(services[name])


# --------------------------------------------------------------------------- compose, Prometheus
def test_compose_fleet_runs_the_shipped_files_at_the_built_releases(
    services: dict[str, dict[str, Any]],
) -> None:
    assert set(services) >= FLEET_SERVICES
    for name in FLEET_SERVICES:
        assert services[name].get("profiles") == ["fleet"], name
        assert depends_on(services[name]) <= set(services)
    configs = {"otel-agent": AGENT, **{g: GATEWAY for g in GATEWAY_SERVICES}}
    for name, config in configs.items():
        service = services[name]
        assert image_tag(service["image"]) == build.OTELCOL_VERSION, name
        assert service["image"].startswith("otel/opentelemetry-collector-contrib:")
        (arg,) = command_args(service)
        mounts = {target: source for source, target in bind_mounts(service)}
        assert (ROOT / mounts[arg.split("=", 1)[1]]).resolve() == config, name
    assert services["otel-collector"]["image"] == services["otel-agent"]["image"]
    prometheus = services["prometheus"]
    assert prometheus["image"] == f"prom/prometheus:v{build.PROMETHEUS_RELEASE}"
    (arg,) = command_args(prometheus)
    mounts = {target: source for source, target in bind_mounts(prometheus)}
    assert (ROOT / mounts[arg.split("=", 1)[1]]).resolve() == PROMETHEUS
    # Prometheus 3.X.Y is Go module v0.3XX.Y: the release compose runs is the one e2e builds.
    major, minor, patch = build.PROMETHEUS_RELEASE.split(".")
    assert f"v0.{major}{int(minor):02d}.{patch}" == build.PROMETHEUS_MODULE_VERSION


def test_prometheus_scrapes_every_gateway_exporter(
    gateway: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    (job,) = config["scrape_configs"]
    (static,) = job["static_configs"]
    port = host_port(gateway["exporters"]["prometheus"]["endpoint"])[1]
    assert [host_port(t) for t in static["targets"]] == [(s, port) for s in GATEWAY_SERVICES]
    for name in GATEWAY_SERVICES:
        assert port in container_ports(services[name])
    # What `make e2e` runs: the same file, only its targets and intervals replaced.
    e2e = fleet.prometheus_config(config, ["127.0.0.1:1", "127.0.0.1:2"])
    assert e2e["scrape_configs"][0]["static_configs"] == [
        {"targets": ["127.0.0.1:1", "127.0.0.1:2"]}
    ]
    assert {k: v for k, v in e2e["scrape_configs"][0].items() if k != "static_configs"} == {
        k: v for k, v in job.items() if k != "static_configs"
    }


def test_demo_fleet_sends_to_the_agent(
    agent: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    env = environment(services["demo-fleet"])
    http_port = host_port(agent["receivers"]["otlp"]["protocols"]["http"]["endpoint"])[1]
    assert host_port(env["OTEL_EXPORTER_OTLP_ENDPOINT"]) == ("otel-agent", http_port)
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert http_port in container_ports(services["otel-agent"])
    assert services["demo-fleet"]["build"] == services["demo"]["build"]


# --------------------------------------------------------------------------- the README
def test_readme_queries_ask_for_what_the_gateways_derive(gateway: dict[str, Any]) -> None:
    queries = fleet.readme_queries()
    assert len(queries) >= 4
    labels = {fleet.label_name(a["key"]) for d in _definitions(gateway) for a in d["attributes"]}
    asked = set()
    for query in queries:
        metric, by, matchers = fleet.parse_query(query)
        assert metric in (_cost.COST_METRIC, _cost.TOKENS_METRIC)
        assert set(by) | set(matchers) <= labels, query
        asked |= set(by)
    # The dimensions: account, user, use case name and step, model.
    assert {
        "payi_account_name",
        "payi_user_id",
        "payi_use_case_name",
        "payi_use_case_step",
        "gen_ai_request_model",
    } <= asked


def test_readme_query_parser_rejects_other_queries() -> None:
    for query in (
        "sum(payi_genai_cost_USD_total)",
        "sum by (payi_user_id) (rate(payi_genai_cost_USD_total[5m]))",
        "sum by (payi_user_id) (payi_genai_cost_total)",
    ):
        with pytest.raises(ValueError):
            fleet.parse_query(query)

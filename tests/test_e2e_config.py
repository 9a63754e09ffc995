"""The collector config against the real collector, and the e2e build manifest against the config.

* ``e2e/otelcol-builder.yaml`` (what `make e2e` builds with ocb) must hold exactly the
  components the shipped configs use (the collector, its redaction overlay, the fleet's agent
  and gateway), at the compose-pinned release.
* ``collector-config/redact-user-id.yaml`` must be the commented recipe in the shipped config.
* With the collector `make e2e` built in its cache: ``otelcol validate`` on the shipped config,
  with the overlay, and with the commented recipe enabled as its comment says. Skipped, with
  the reason, when that binary is not there (`make e2e` builds it; it needs Go).
"""

from __future__ import annotations

import copy
import importlib.util
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_deploy_config import redaction_snippet

ROOT = Path(__file__).resolve().parent.parent
COLLECTOR_CONFIG = ROOT / "collector-config" / "otel-collector.yaml"
REDACT_OVERLAY = ROOT / "collector-config" / "redact-user-id.yaml"
FLEET_AGENT = ROOT / "collector-config" / "fleet-agent.yaml"
FLEET_GATEWAY = ROOT / "collector-config" / "fleet-gateway.yaml"
MANIFEST = ROOT / "e2e" / "otelcol-builder.yaml"
COMPOSE_FILE = ROOT / "docker-compose.yml"

#: Component type -> the Go module that provides it (core: go.opentelemetry.io/collector,
#: contrib: github.com/open-telemetry/opentelemetry-collector-contrib).
CORE = "go.opentelemetry.io/collector/"
CONTRIB = "github.com/open-telemetry/opentelemetry-collector-contrib/"
MODULES: dict[str, dict[str, str]] = {
    "extensions": {"health_check": CONTRIB + "extension/healthcheckextension"},
    "receivers": {"otlp": CORE + "receiver/otlpreceiver"},
    "processors": {
        "memory_limiter": CORE + "processor/memorylimiterprocessor",
        "batch": CORE + "processor/batchprocessor",
        "attributes": CONTRIB + "processor/attributesprocessor",
        "tail_sampling": CONTRIB + "processor/tailsamplingprocessor",
        "delta_to_cumulative": CONTRIB + "processor/deltatocumulativeprocessor",
    },
    "exporters": {
        "otlp_grpc": CORE + "exporter/otlpexporter",
        "debug": CORE + "exporter/debugexporter",
        "load_balancing": CONTRIB + "exporter/loadbalancingexporter",
        "prometheus": CONTRIB + "exporter/prometheusexporter",
    },
    "connectors": {"signal_to_metrics": CONTRIB + "connector/signaltometricsconnector"},
}


def _load_build() -> Any:
    spec = importlib.util.spec_from_file_location("e2e_build", ROOT / "e2e" / "binaries.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _load_build()


def used_types(*configs: dict[str, Any]) -> dict[str, set[str]]:
    """Component types each config defines, per kind (``otlp_grpc/jaeger`` -> ``otlp_grpc``)."""
    used: dict[str, set[str]] = {kind: set() for kind in MODULES}
    for config in configs:
        for kind in MODULES:
            used[kind] |= {cid.split("/", 1)[0] for cid in config.get(kind) or {}}
    return used


def manifest_modules(manifest: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Per kind: module path -> version, from the ``gomod`` lines."""
    modules: dict[str, dict[str, str]] = {}
    for kind in (*MODULES, "providers"):
        modules[kind] = dict(entry["gomod"].split() for entry in manifest.get(kind) or [])
    return modules


def compose_collector_version() -> str:
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    image = compose["services"]["otel-collector"]["image"]
    return str(image.rsplit(":", 1)[1])


def test_manifest_has_exactly_the_components_the_configs_use() -> None:
    configs = [
        yaml.safe_load(path.read_text())
        for path in (COLLECTOR_CONFIG, REDACT_OVERLAY, FLEET_AGENT, FLEET_GATEWAY)
    ]
    manifest = manifest_modules(yaml.safe_load(MANIFEST.read_text()))
    for kind, types in used_types(*configs).items():
        unknown = types - set(MODULES[kind])
        assert not unknown, f"{kind} {unknown}: add their modules to MODULES and the manifest"
        assert set(manifest[kind]) == {MODULES[kind][t] for t in types}, kind


def test_manifest_is_at_the_release_compose_pins() -> None:
    version = compose_collector_version()
    manifest = yaml.safe_load(MANIFEST.read_text())
    assert manifest["dist"]["version"] == version == build.OTELCOL_VERSION
    modules = manifest_modules(manifest)
    for kind in MODULES:
        assert set(modules[kind].values()) == {f"v{version}"}, kind
    # Providers are stable (v1.x) modules released with the same core release.
    assert len(set(modules["providers"].values())) == 1
    assert next(iter(modules["providers"].values())).startswith("v1.")
    assert "  output_path: ./otelcol-payi\n" in MANIFEST.read_text()  # binaries.py replaces it


def test_redact_overlay_is_the_commented_recipe() -> None:
    text = COLLECTOR_CONFIG.read_text()
    overlay = yaml.safe_load(REDACT_OVERLAY.read_text())
    assert overlay["processors"] == redaction_snippet(text)
    shipped = yaml.safe_load(text)
    (processor_id,) = overlay["processors"]
    shipped_traces = shipped["service"]["pipelines"]["traces"]["processors"]
    overlay_traces = overlay["service"]["pipelines"]["traces"]["processors"]
    # The shipped processors, in order, with the redaction inserted after memory_limiter.
    assert [p for p in overlay_traces if p != processor_id] == shipped_traces
    assert overlay_traces.index(processor_id) == 1
    assert set(overlay) == {"processors", "service"}


# --------------------------------------------------------------------------- real collector
COLLECTOR = build.collector_path()
needs_collector = pytest.mark.skipif(
    not COLLECTOR.is_file(),
    reason=f"no collector built at {COLLECTOR} (`make e2e` builds it with Go)",
)


def validate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(COLLECTOR), "validate", *args], capture_output=True, text=True, timeout=60, check=False
    )


@needs_collector
def test_collector_validates_the_shipped_config() -> None:
    done = validate(f"--config={COLLECTOR_CONFIG}")
    assert done.returncode == 0, done.stderr


@needs_collector
@pytest.mark.parametrize("config", [FLEET_AGENT, FLEET_GATEWAY], ids=lambda p: p.stem)
def test_collector_validates_the_fleet_configs(config: Path) -> None:
    done = validate(f"--config={config}")
    assert done.returncode == 0, done.stderr


@needs_collector
def test_collector_validates_the_config_with_the_redact_overlay() -> None:
    done = validate(f"--config={COLLECTOR_CONFIG}", f"--config={REDACT_OVERLAY}")
    assert done.returncode == 0, done.stderr


@needs_collector
def test_collector_validates_the_commented_recipe_once_enabled(tmp_path: Path) -> None:
    text = COLLECTOR_CONFIG.read_text()
    snippet = redaction_snippet(text)
    (processor_id,) = snippet
    enabled = copy.deepcopy(yaml.safe_load(text))
    enabled["processors"].update(snippet)
    enabled["service"]["pipelines"]["traces"]["processors"].insert(1, processor_id)
    path = tmp_path / "enabled.yaml"
    path.write_text(yaml.safe_dump(enabled))
    done = validate(f"--config={path}")
    assert done.returncode == 0, done.stderr


@needs_collector
def test_collector_validate_rejects_a_broken_config() -> None:
    """The control: validate does fail, on an unknown component and on an unknown key."""
    unknown_processor = validate(
        f"--config={COLLECTOR_CONFIG}",
        "--set=service::pipelines::traces::processors=[memory_limiter,nonexistent,batch]",
    )
    assert unknown_processor.returncode != 0
    assert re.search(r"nonexistent", unknown_processor.stderr + unknown_processor.stdout)
    bad_key = validate(f"--config={COLLECTOR_CONFIG}", "--set=processors::batch::no_such_setting=1")
    assert bad_key.returncode != 0
    assert "no_such_setting" in bad_key.stderr + bad_key.stdout


def test_compose_runs_the_jaeger_release_the_e2e_builds() -> None:
    import yaml

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["jaeger"]["image"] == f"jaegertracing/jaeger:{build.JAEGER_RELEASE}"

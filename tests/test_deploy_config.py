"""Static checks of the demo deployment: collector config, docker-compose.yml, Dockerfile.

No Docker engine is needed. The files are parsed and cross-checked, so that a
component missing from a pipeline, a wrong port or service name, or an unpinned image
shows up here rather than at ``docker compose up``.
"""

from __future__ import annotations

import copy
import fnmatch
import re
import shlex
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COLLECTOR_CONFIG = ROOT / "collector-config" / "otel-collector.yaml"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

COMPONENT_KINDS = ("receivers", "processors", "exporters")
COLLECTOR_SERVICE = "otel-collector"
JAEGER_SERVICE = "jaeger"
DEMO_SERVICE = "demo"
OTLP_GRPC_PORT = 4317
OTLP_HTTP_PORT = 4318
JAEGER_UI_PORT = 16686

# Exporter types renamed by the collector: the old name -> (the new name, first version
# with the new name). From that version on the old name is only a deprecated alias.
# Before it, only the old name exists.
RENAMED_EXPORTERS: dict[str, tuple[str, tuple[int, ...]]] = {
    "otlp": ("otlp_grpc", (0, 144, 0)),
    "otlphttp": ("otlp_http", (0, 144, 0)),
}
OTLP_GRPC_EXPORTER_TYPES = {"otlp", "otlp_grpc"}


# --------------------------------------------------------------------------- helpers
def component_type(component_id: str) -> str:
    """``otlp_grpc/jaeger`` -> ``otlp_grpc`` (the part before the optional ``/name``)."""
    return component_id.split("/", 1)[0]


def host_port(endpoint: str) -> tuple[str, int]:
    """Host and port of ``host:port``, ``[::]:port`` or ``scheme://host:port/path``."""
    parts = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
    assert parts.hostname is not None, f"no host in endpoint {endpoint!r}"
    assert parts.port is not None, f"no explicit port in endpoint {endpoint!r}"
    return parts.hostname, parts.port


def image_tag(image: str) -> Optional[str]:
    """The tag of an image reference (``None`` when there is none); digests are ignored."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def version_tuple(tag: str) -> tuple[int, ...]:
    match = re.match(r"v?(\d+)\.(\d+)\.(\d+)", tag)
    assert match, f"tag {tag!r} is not a semantic version"
    return tuple(int(g) for g in match.groups())


def pipelines(config: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    result: dict[str, dict[str, list[str]]] = config["service"]["pipelines"]
    return result


def structural_problems(config: dict[str, Any]) -> list[str]:
    """Everything ``otelcol validate`` would reject about references, plus the
    processor-order rules this project adopts. An empty list means OK."""
    problems: list[str] = []
    defined = {kind: set(config.get(kind) or {}) for kind in (*COMPONENT_KINDS, "extensions")}
    connectors = set(config.get("connectors") or {})
    used: dict[str, set[str]] = {kind: set() for kind in (*COMPONENT_KINDS, "extensions")}

    service = config.get("service") or {}
    if not service.get("pipelines"):
        problems.append("service.pipelines is empty")
    for name, pipeline in (service.get("pipelines") or {}).items():
        for kind in COMPONENT_KINDS:
            ids = pipeline.get(kind) or []
            if kind != "processors" and not ids:
                problems.append(f"pipeline {name!r} has no {kind}")
            for component_id in ids:
                used[kind].add(component_id)
                # A connector may be used as a receiver or an exporter.
                if component_id not in defined[kind] and not (
                    kind != "processors" and component_id in connectors
                ):
                    problems.append(
                        f"pipeline {name!r} uses undefined {kind[:-1]} {component_id!r}"
                    )
        processors = pipeline.get("processors") or []
        if not processors or component_type(processors[0]) != "memory_limiter":
            problems.append(f"pipeline {name!r}: memory_limiter must be the first processor")
        if not processors or component_type(processors[-1]) != "batch":
            problems.append(f"pipeline {name!r}: batch must be the last processor")
    for extension_id in service.get("extensions") or []:
        used["extensions"].add(extension_id)
        if extension_id not in defined["extensions"]:
            problems.append(f"service.extensions uses undefined extension {extension_id!r}")
    for kind, ids in defined.items():
        for component_id in sorted(ids - used[kind]):
            problems.append(f"{kind[:-1]} {component_id!r} is defined but never used")
    return problems


def service_ports(service: dict[str, Any]) -> list[tuple[Optional[int], int]]:
    """``(published host port or None, container port)`` for each ``ports`` entry."""
    result: list[tuple[Optional[int], int]] = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):  # long syntax
            published = entry.get("published")
            result.append((int(published) if published else None, int(entry["target"])))
            continue
        spec = str(entry).split("/", 1)[0]  # drop "/tcp"
        # [ip:]host:container or just container; the IP may be [::1] or contain colons.
        host_part, _, container = spec.rpartition(":")
        published = host_part.rsplit(":", 1)[-1] if host_part else ""
        result.append((int(published) if published else None, int(container)))
    return result


def container_ports(service: dict[str, Any]) -> set[int]:
    """Ports the service's container is declared to listen on (``expose`` + ``ports``)."""
    exposed = {int(str(p).split("/", 1)[0]) for p in service.get("expose") or []}
    return exposed | {container for _, container in service_ports(service)}


def published_ports(service: dict[str, Any]) -> set[int]:
    return {container for published, container in service_ports(service) if published}


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def depends_on(service: dict[str, Any]) -> set[str]:
    return set(service.get("depends_on") or [])  # list form, or the keys of the map form


def command_args(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """``(host source, container target)`` of each bind mount (named volumes skipped)."""
    mounts: list[tuple[str, str]] = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                mounts.append((volume["source"], volume["target"]))
            continue
        source, _, rest = str(volume).partition(":")
        if source.startswith((".", "/", "~")):
            mounts.append((source, rest.split(":", 1)[0]))
    return mounts


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, with line continuations joined."""
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    instructions = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, args = stripped.partition(" ")
            instructions.append((keyword.upper(), args.strip()))
    return instructions


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def collector_text() -> str:
    return COLLECTOR_CONFIG.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def collector(collector_text: str) -> dict[str, Any]:
    config = yaml.safe_load(collector_text)
    assert isinstance(config, dict)
    return config


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose["services"]
    assert {JAEGER_SERVICE, COLLECTOR_SERVICE, DEMO_SERVICE} <= set(result)
    return result


@pytest.fixture(scope="module")
def collector_version(services: dict[str, dict[str, Any]]) -> tuple[int, ...]:
    tag = image_tag(services[COLLECTOR_SERVICE]["image"])
    assert tag is not None
    return version_tuple(tag)


def otlp_receiver_endpoints(collector: dict[str, Any]) -> dict[str, tuple[str, int]]:
    """protocol (``grpc``/``http``) -> (host, port) of the OTLP receiver(s) in use."""
    used = {r for p in pipelines(collector).values() for r in p["receivers"]}
    endpoints: dict[str, tuple[str, int]] = {}
    for receiver_id in used:
        if component_type(receiver_id) != "otlp":
            continue
        for protocol, settings in (collector["receivers"][receiver_id] or {})["protocols"].items():
            assert settings and settings.get("endpoint"), (
                f"{receiver_id}.{protocol} relies on the default endpoint, which is localhost "
                "and unreachable from other containers. Set 0.0.0.0:<port>."
            )
            endpoints[protocol] = host_port(settings["endpoint"])
    return endpoints


# --------------------------------------------------------------------------- collector config
def test_collector_config_references_are_consistent(collector: dict[str, Any]) -> None:
    assert structural_problems(collector) == []


def test_structural_check_catches_mistakes(collector: dict[str, Any]) -> None:
    """The checker above must itself detect each kind of mistake."""
    broken = copy.deepcopy(collector)
    broken["exporters"]["otlp_grpc/unused"] = {"endpoint": "x:4317"}
    traces = broken["service"]["pipelines"]["traces"]
    traces["processors"] = [*reversed(traces["processors"]), "filter/undefined"]
    broken["service"]["extensions"].append("zpages")
    problems = "\n".join(structural_problems(broken))
    for expected in (
        "'otlp_grpc/unused' is defined but never used",
        "undefined processor 'filter/undefined'",
        "memory_limiter must be the first",
        "batch must be the last",
        "undefined extension 'zpages'",
    ):
        assert expected in problems


def test_every_pipeline_limits_memory_first_and_batches_last(collector: dict[str, Any]) -> None:
    for name, pipeline in pipelines(collector).items():
        processors = pipeline["processors"]
        assert component_type(processors[0]) == "memory_limiter", name
        assert component_type(processors[-1]) == "batch", name
    for processor_id, settings in collector["processors"].items():
        if component_type(processor_id) == "memory_limiter":
            assert settings.get("check_interval"), "memory_limiter is a no-op without it"
            assert settings.get("limit_mib") or settings.get("limit_percentage")


def test_otlp_receiver_listens_on_standard_ports_on_all_interfaces(
    collector: dict[str, Any],
) -> None:
    endpoints = otlp_receiver_endpoints(collector)
    assert endpoints.get("grpc") == ("0.0.0.0", OTLP_GRPC_PORT)
    assert endpoints.get("http") == ("0.0.0.0", OTLP_HTTP_PORT)


def test_exporter_names_match_pinned_collector_version(
    collector: dict[str, Any], collector_version: tuple[int, ...]
) -> None:
    for exporter_id in collector["exporters"]:
        kind = component_type(exporter_id)
        for old, (new, since) in RENAMED_EXPORTERS.items():
            if collector_version >= since:
                assert kind != old, f"{old!r} is a deprecated alias since {since}; use {new!r}"
            else:
                assert kind != new, f"{new!r} does not exist before {since}; use {old!r}"


def test_traces_go_to_jaeger_over_otlp_grpc(
    collector: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    traces = pipelines(collector)["traces"]
    grpc_exporters = [
        e for e in traces["exporters"] if component_type(e) in OTLP_GRPC_EXPORTER_TYPES
    ]
    assert len(grpc_exporters) == 1, traces["exporters"]
    settings = collector["exporters"][grpc_exporters[0]]
    host, port = host_port(settings["endpoint"])
    assert host == JAEGER_SERVICE and host in services
    assert port == OTLP_GRPC_PORT
    assert port in container_ports(services[JAEGER_SERVICE]), "jaeger must expose OTLP gRPC"
    # Plaintext inside the compose network: gRPC would otherwise attempt a TLS handshake.
    assert settings.get("tls", {}).get("insecure") is True
    assert not settings["endpoint"].startswith("https://")


def test_health_check_is_reachable(
    collector: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    host, port = host_port(collector["extensions"]["health_check"]["endpoint"])
    assert host == "0.0.0.0"
    assert port in published_ports(services[COLLECTOR_SERVICE])


# --------------------------------------------------------------------------- user-id redaction
REDACTION_BLOCK = re.compile(
    r"^[ \t]*# BEGIN payi\.user_id redaction example\n(?P<body>.*?)^[ \t]*# END payi\.user_id",
    re.MULTILINE | re.DOTALL,
)


def redaction_snippet(collector_text: str) -> dict[str, Any]:
    match = REDACTION_BLOCK.search(collector_text)
    assert match, "the commented-out payi.user_id redaction example is missing"
    lines = match.group("body").splitlines()
    assert lines and all(line.lstrip().startswith("#") for line in lines), "must stay commented"
    # Uncomment as the instructions say: drop the first "# " and keep the indentation.
    uncommented = "\n".join(re.sub(r"^(\s*)# ?", r"\1", line, count=1) for line in lines)
    snippet = yaml.safe_load("processors:\n" + uncommented)["processors"]
    assert isinstance(snippet, dict) and len(snippet) == 1
    return snippet


def test_user_id_redaction_example_is_documented_and_inactive(
    collector_text: str, collector: dict[str, Any]
) -> None:
    assert re.search(r"#.*\bpayi\.user_id\b", collector_text)
    assert re.search(r"#\s*-?\s*key:\s*payi\.user_id", collector_text)
    assert re.search(r"#\s*action:\s*(hash|delete)\b", collector_text)
    assert re.search(r"#.*To enable", collector_text)
    (processor_id,) = redaction_snippet(collector_text)
    assert processor_id not in collector["processors"], "the example must not be active"
    used = {p for pipeline in pipelines(collector).values() for p in pipeline["processors"]}
    assert processor_id not in used


def test_user_id_redaction_example_is_valid_once_enabled(
    collector_text: str, collector: dict[str, Any]
) -> None:
    snippet = redaction_snippet(collector_text)
    ((processor_id, settings),) = snippet.items()
    assert component_type(processor_id) in {"attributes", "transform"}
    if component_type(processor_id) == "attributes":
        actions = {a["key"]: a["action"] for a in settings["actions"]}
        assert actions.get("payi.user_id") in {"hash", "delete"}
    # Enable it as the comment instructs: define it, put it between the other processors.
    enabled = copy.deepcopy(collector)
    enabled["processors"].update(snippet)
    traces = enabled["service"]["pipelines"]["traces"]
    traces["processors"].insert(1, processor_id)
    assert structural_problems(enabled) == []
    assert re.search(
        rf"processors: \[memory_limiter, {re.escape(processor_id)}, batch\]", collector_text
    ), "the enabling instructions should show the resulting processors list"


# --------------------------------------------------------------------------- docker-compose
def test_demo_sends_otlp_http_to_the_collector(
    collector: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    demo = services[DEMO_SERVICE]
    env = environment(demo)
    assert env.get("OTEL_SERVICE_NAME") == "payi-otel-demo"
    endpoint = env["OTEL_EXPORTER_OTLP_ENDPOINT"]
    parts = urlsplit(endpoint)
    assert parts.scheme == "http", "the collector's receivers have no TLS"
    assert parts.path in ("", "/"), "a base URL: the SDK appends /v1/traces itself"
    host, port = host_port(endpoint)
    assert host == COLLECTOR_SERVICE
    # The port is the collector's OTLP/HTTP receiver, so the protocol must be HTTP too.
    assert port == otlp_receiver_endpoints(collector)["http"][1]
    assert env.get("OTEL_EXPORTER_OTLP_PROTOCOL") == "http/protobuf"
    assert port in container_ports(services[COLLECTOR_SERVICE])
    assert COLLECTOR_SERVICE in depends_on(demo)


def test_collector_publishes_its_receiver_ports(
    collector: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    published = published_ports(services[COLLECTOR_SERVICE])
    for _, port in otlp_receiver_endpoints(collector).values():
        assert port in published


def test_jaeger_ui_is_published(services: dict[str, dict[str, Any]]) -> None:
    assert JAEGER_UI_PORT in published_ports(services[JAEGER_SERVICE])
    tag = image_tag(services[JAEGER_SERVICE]["image"])
    assert tag is not None and tag.startswith("2."), "Jaeger v2 (OTLP-native) is expected"


def test_collector_runs_the_config_file_that_is_tested_here(
    services: dict[str, dict[str, Any]],
) -> None:
    collector_service = services[COLLECTOR_SERVICE]
    args = command_args(collector_service)
    config_paths = [a.split("=", 1)[1] for a in args if a.startswith("--config=")]
    config_paths += [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--config"]
    assert len(config_paths) == 1, args
    mounts = {target: source for source, target in bind_mounts(collector_service)}
    assert config_paths[0] in mounts, f"{config_paths[0]} is not mounted"
    assert (ROOT / mounts[config_paths[0]]).resolve() == COLLECTOR_CONFIG


def test_mounted_and_built_files_exist(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for source, _ in bind_mounts(service):
            assert (ROOT / source).exists(), f"{name}: bind-mount source {source} is missing"
        build = service.get("build")
        if build is None:
            continue
        if isinstance(build, str):
            build = {"context": build}
        context = ROOT / build.get("context", ".")
        assert context.is_dir(), f"{name}: build context {context} is missing"
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), f"{name}: {dockerfile} is missing"


def test_every_image_is_pinned(services: dict[str, dict[str, Any]]) -> None:
    images = [s["image"] for s in services.values() if "image" in s]
    images += [args.split()[-1] for kw, args in dockerfile_instructions(DOCKERFILE) if kw == "FROM"]
    images = [i for i in images if i.lower() != "scratch"]
    assert len(images) >= 3
    for image in images:
        tag = image_tag(image)
        assert "@sha256:" in image or tag, f"{image} has no tag"
        assert tag is None or tag != "latest", f"{image} uses latest"
        if tag is not None:
            assert re.match(r"v?\d+\.\d+\.\d+", tag), f"{image}: pin a full version"


def test_only_the_demo_is_built_and_services_are_known(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        assert ("image" in service) != ("build" in service), name
        assert depends_on(service) <= set(services), name


# --------------------------------------------------------------------------- Dockerfile
def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def is_dockerignored(relative: str, patterns: list[str]) -> bool:
    relative = relative.strip("/")
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        candidates = [pattern, pattern.removeprefix("**/")]
        if any(fnmatch.fnmatch(relative, p) for p in candidates):
            ignored = not negate
    return ignored


def test_dockerfile_copies_files_that_exist_and_are_not_ignored() -> None:
    patterns = dockerignore_patterns()
    assert {".venv", ".git"} <= set(patterns)
    copies = [
        args.split()
        for kw, args in dockerfile_instructions(DOCKERFILE)
        if kw in {"COPY", "ADD"} and "--from" not in args
    ]
    sources = [src for args in copies for src in args[:-1] if not src.startswith("--")]
    assert {"pyproject.toml", "README.md", "src/", "examples/"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), f"COPY source {source} is missing"
        assert not is_dockerignored(source, patterns), f"{source} is excluded by .dockerignore"


def test_dockerfile_runs_the_demo_and_installs_the_exporter() -> None:
    instructions = dockerfile_instructions(DOCKERFILE)
    (base,) = [args for kw, args in instructions if kw == "FROM"]
    assert base.startswith("python:3.11.")
    run = " ".join(args for kw, args in instructions if kw == "RUN")
    for package in ("openai", "anthropic", "opentelemetry-exporter-otlp-proto-http"):
        assert re.search(rf"(?<![\w-]){re.escape(package)}(?![\w-])", run), package
    assert re.search(r"pip install\b.*\s\.(\s|$)", run), "the package itself must be installed"
    (cmd,) = [args for kw, args in instructions if kw == "CMD"]
    argv = yaml.safe_load(cmd)  # exec form is a JSON array
    assert argv == ["python", "examples/support_assistant/main.py"]
    assert (ROOT / argv[1]).is_file(), f"the demo entry point {argv[1]} is missing"

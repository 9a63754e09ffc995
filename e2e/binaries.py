"""Build, once, the three real binaries `make e2e` runs, and cache them outside the repo.

* the OpenTelemetry Collector, by the official builder (ocb) from ``e2e/otelcol-builder.yaml``:
  exactly the components the configs in ``collector-config/`` use (the single collector and
  the fleet's agent and gateway), at the release docker-compose.yml pins (0.161.0);
* Jaeger v2 (``cmd/jaeger``), by ``go build`` of the ``github.com/jaegertracing/jaeger``
  module at :data:`JAEGER_MODULE_VERSION`;
* Prometheus (``cmd/prometheus``), by ``go build`` of the ``github.com/prometheus/prometheus``
  module at :data:`PROMETHEUS_MODULE_VERSION`, for the fleet variant.

The cache is ``${PAYI_OTEL_E2E_CACHE:-${XDG_CACHE_HOME:-~/.cache}/payi-otel-e2e}``, one
directory per version (the collector's also per manifest content), so a warm run builds
nothing and a changed manifest or version builds anew. A build goes to a temporary directory
first and is renamed into place only when it succeeded.

    python e2e/binaries.py            # build what is missing; print the binaries' paths

Needs ``go`` (1.25+) and the Go module proxy. Standard library only.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MANIFEST = HERE / "otelcol-builder.yaml"

#: The collector release: ocb, the core modules (v0.x, paired with v1.53.0) and contrib modules.
OTELCOL_VERSION = "0.161.0"
#: docker-compose.yml runs ``jaegertracing/jaeger:2.13.0``, this release. Jaeger's releases after
#: v1.76.0 / v2.13.0 (Dec 2025) carry only v2.x tags, and the Go module proxy answers 403 for
#: ``github.com/jaegertracing/jaeger@v2.16.0`` (and has no ``.../v2`` module), so v1.76.0,
#: which is Jaeger v2.13.0, is the newest Jaeger that ``go`` can build here.
JAEGER_MODULE_VERSION = "v1.76.0"
JAEGER_RELEASE = "2.13.0"
JAEGER_PACKAGE = "github.com/jaegertracing/jaeger/cmd/jaeger"
#: Prometheus for the fleet variant (README "At scale"): docker-compose.yml runs
#: ``prom/prometheus:v3.16.0``; its Go module is tagged v0.316.0 (v0.3XX.Y is Prometheus 3.XX.Y).
PROMETHEUS_MODULE_VERSION = "v0.316.0"
PROMETHEUS_RELEASE = "3.16.0"
PROMETHEUS_PACKAGE = "github.com/prometheus/prometheus/cmd/prometheus"
#: Build tag: no service discovery but the static and file ones (the scrape targets are
#: static), which leaves out the cloud SDKs - a third of the build.
PROMETHEUS_TAGS = "remove_all_sd"


def cache_root() -> Path:
    explicit = os.environ.get("PAYI_OTEL_E2E_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "payi-otel-e2e"


def manifest_digest() -> str:
    return hashlib.sha256(MANIFEST.read_bytes()).hexdigest()[:12]


def collector_path() -> Path:
    """Where the built collector is (it may not exist yet)."""
    return cache_root() / f"otelcol-{OTELCOL_VERSION}-{manifest_digest()}" / "otelcol-payi"


def jaeger_path() -> Path:
    return cache_root() / f"jaeger-{JAEGER_MODULE_VERSION}" / "jaeger"


def prometheus_path() -> Path:
    return cache_root() / f"prometheus-{PROMETHEUS_MODULE_VERSION}" / "prometheus"


def _run(args: list[str], cwd: Path, env: dict[str, str], log: Path) -> None:
    print("  $ " + " ".join(args), flush=True)
    with log.open("a") as out:
        done = subprocess.run(
            args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, check=False
        )
    if done.returncode != 0:
        sys.stdout.write(log.read_text(errors="replace")[-6000:])
        raise SystemExit(f"e2e build: `{' '.join(args)}` failed ({done.returncode}); log: {log}")


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("CGO_ENABLED", "0")
    env["GOFLAGS"] = (env.get("GOFLAGS", "") + " -mod=mod").strip()
    return env


def _install(target: Path, build: Callable[[Path, Path], None]) -> Path:
    """Run ``build(workdir, log)`` in a scratch directory beside ``target``; it must leave the
    binary at ``workdir / target.name``; then move that directory into place."""
    target.parent.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=target.parent.name + ".tmp-", dir=target.parent.parent))
    log = work / "build.log"
    try:
        started = time.monotonic()
        build(work, log)
        if not (work / target.name).is_file():
            raise SystemExit(f"e2e build: no {target.name} after the build; log: {log}")
        shutil.rmtree(target.parent, ignore_errors=True)
        work.rename(target.parent)
        print(f"  built {target} in {time.monotonic() - started:.0f} s", flush=True)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return target


def _collector_go_mod(manifest: str) -> str:
    """The go.mod ocb's template would write for ``manifest`` (its ``gomod`` lines and its
    ``replaces``)."""
    modules = [
        line.split("gomod:", 1)[1].strip()
        for line in manifest.splitlines()
        if line.strip().startswith("- gomod:")
    ]
    core = f"v{OTELCOL_VERSION}"
    modules += [
        f"go.opentelemetry.io/collector/service {core}",
        f"go.opentelemetry.io/collector/otelcol {core}",
    ]
    requires = "".join(f"\t{m}\n" for m in modules)
    replaces = (
        "".join(
            f"replace {line.strip()[2:].strip()}\n"
            for line in manifest.split("\nreplaces:\n", 1)[1].splitlines()
            if line.strip().startswith("- ")
        )
        if "\nreplaces:\n" in manifest
        else ""
    )
    return f"module otelcol-payi\n\ngo 1.25\n\nrequire (\n{requires})\n{replaces}"


def ensure_collector() -> Path:
    target = collector_path()
    if target.is_file():
        return target
    print(f"e2e build: OpenTelemetry Collector {OTELCOL_VERSION} with ocb -> {target}", flush=True)

    def build(work: Path, log: Path) -> None:
        env = _go_env()
        env["GOBIN"] = str(work / "bin")
        _run(
            ["go", "install", f"go.opentelemetry.io/collector/cmd/builder@v{OTELCOL_VERSION}"],
            work,
            env,
            log,
        )
        text = MANIFEST.read_text()
        marker = "  output_path: ./otelcol-payi\n"
        if marker not in text:
            raise SystemExit(f"e2e build: {MANIFEST} lost its line {marker.strip()!r}")
        manifest = work / "manifest.yaml"
        manifest.write_text(text.replace(marker, f"  output_path: {work / 'src'}\n"))
        # ocb writes the sources only (--skip-get-modules --skip-compilation); the go.mod and the
        # build are ours. ocb's own `go mod tidy` also resolves the components' test-only
        # dependencies, some of which the Go module proxy here does not serve; and since
        # v0.161.0 --skip-get-modules no longer writes a go.mod at all. The go.mod below
        # requires what ocb's template does (every manifest module, the service telemetry and
        # otelcol at the release); `go build -mod=mod` (GOFLAGS above) then adds just the
        # modules the binary imports, at the versions those modules require (checked:
        # `otelcol-payi components`).
        _run(
            [
                str(work / "bin" / "builder"),
                f"--config={manifest}",
                "--skip-get-modules",
                "--skip-compilation",
            ],
            work,
            env,
            log,
        )
        (work / "src" / "go.mod").write_text(_collector_go_mod(text))
        _run(
            ["go", "build", "-trimpath", "-ldflags=-s -w", "-o", "otelcol-payi", "."],
            work / "src",
            env,
            log,
        )
        (work / "src" / "otelcol-payi").rename(work / "otelcol-payi")
        shutil.rmtree(work / "src")
        shutil.rmtree(work / "bin")

    return _install(target, build)


def _go_tool_build(
    name: str, go: str, package: str, version: str, flags: list[str], ldflags: str
) -> Callable[[Path, Path], None]:
    """A build (for :func:`_install`) of Go package ``package@version`` into ``work/name``,
    from a throw-away module that requires it as a tool (Jaeger's and Prometheus' way)."""

    def build(work: Path, log: Path) -> None:
        env = _go_env()
        module = work / "mod"
        module.mkdir()
        (module / "go.mod").write_text(f"module payi-otel-e2e/{name}\n\n{go}\n")
        _run(["go", "get", "-tool", f"{package}@{version}"], module, env, log)
        command = ["go", "build", "-trimpath", *flags, f"-ldflags={ldflags}"]
        _run([*command, "-o", str(work / name), package], module, env, log)
        shutil.rmtree(module)

    return build


def ensure_jaeger() -> Path:
    target = jaeger_path()
    if target.is_file():
        return target
    print(
        f"e2e build: Jaeger {JAEGER_RELEASE} ({JAEGER_PACKAGE}@{JAEGER_MODULE_VERSION}) "
        f"-> {target}",
        flush=True,
    )

    build = _go_tool_build("jaeger", "go 1.25", JAEGER_PACKAGE, JAEGER_MODULE_VERSION, [], "-s -w")
    return _install(target, build)


def ensure_prometheus() -> Path:
    target = prometheus_path()
    if target.is_file():
        return target
    print(
        f"e2e build: Prometheus {PROMETHEUS_RELEASE} ({PROMETHEUS_PACKAGE}@"
        f"{PROMETHEUS_MODULE_VERSION}, -tags {PROMETHEUS_TAGS}) -> {target}",
        flush=True,
    )

    version = f"-X github.com/prometheus/common/version.Version={PROMETHEUS_RELEASE}"
    build = _go_tool_build(
        "prometheus",
        "go 1.26.7",
        PROMETHEUS_PACKAGE,
        PROMETHEUS_MODULE_VERSION,
        [f"-tags={PROMETHEUS_TAGS}"],
        f"-s -w {version}",
    )
    return _install(target, build)


def main() -> int:
    if shutil.which("go") is None:
        print("e2e build: `go` is not on PATH", file=sys.stderr)
        return 2
    started = time.monotonic()
    collector = ensure_collector()
    jaeger = ensure_jaeger()
    prometheus = ensure_prometheus()
    print(
        f"e2e build: ready in {time.monotonic() - started:.0f} s\n  collector: {collector}\n"
        f"  jaeger:    {jaeger}\n  prometheus: {prometheus}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Build, once, the two real binaries `make e2e` runs, and cache them outside the repo.

* the OpenTelemetry Collector, by the official builder (ocb) from ``e2e/otelcol-builder.yaml``:
  exactly the components ``collector-config/otel-collector.yaml`` uses, at the release
  docker-compose.yml pins (0.147.0);
* Jaeger v2 (``cmd/jaeger``), by ``go build`` of the ``github.com/jaegertracing/jaeger``
  module at :data:`JAEGER_MODULE_VERSION`.

The cache is ``${PAYI_OTEL_E2E_CACHE:-${XDG_CACHE_HOME:-~/.cache}/payi-otel-e2e}``, one
directory per version (the collector's also per manifest content), so a warm run builds
nothing and a changed manifest or version builds anew. A build goes to a temporary directory
first and is renamed into place only when it succeeded.

    python e2e/binaries.py            # build what is missing; print the two binaries' paths

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
OTELCOL_VERSION = "0.147.0"
#: docker-compose.yml runs ``jaegertracing/jaeger:2.13.0``, this release. Jaeger's releases after
#: v1.76.0 / v2.13.0 (Dec 2025) carry only v2.x tags, and the Go module proxy answers 403 for
#: ``github.com/jaegertracing/jaeger@v2.16.0`` (and has no ``.../v2`` module), so v1.76.0,
#: which is Jaeger v2.13.0, is the newest Jaeger that ``go`` can build here.
JAEGER_MODULE_VERSION = "v1.76.0"
JAEGER_RELEASE = "2.13.0"
JAEGER_PACKAGE = "github.com/jaegertracing/jaeger/cmd/jaeger"


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
        # --skip-get-modules: ocb's own `go mod tidy` also resolves the components' test-only
        # dependencies, some of which the Go module proxy here does not serve at 0.147.0
        # (e.g. collector/extension/zpagesextension). The build itself needs none of them:
        # `go build -mod=mod` (GOFLAGS above) adds just the modules the binary imports, at
        # the versions the manifest's modules require (checked: `otelcol-payi components`).
        _run(
            [str(work / "bin" / "builder"), f"--config={manifest}", "--skip-get-modules"],
            work,
            env,
            log,
        )
        (work / "src" / "otelcol-payi").rename(work / "otelcol-payi")
        shutil.rmtree(work / "src")
        shutil.rmtree(work / "bin")

    return _install(target, build)


def ensure_jaeger() -> Path:
    target = jaeger_path()
    if target.is_file():
        return target
    print(
        f"e2e build: Jaeger {JAEGER_RELEASE} ({JAEGER_PACKAGE}@{JAEGER_MODULE_VERSION}) "
        f"-> {target}",
        flush=True,
    )

    def build(work: Path, log: Path) -> None:
        env = _go_env()
        module = work / "mod"
        module.mkdir()
        (module / "go.mod").write_text("module payi-otel-e2e/jaeger\n\ngo 1.25\n")
        _run(["go", "get", "-tool", f"{JAEGER_PACKAGE}@{JAEGER_MODULE_VERSION}"], module, env, log)
        _run(
            [
                "go",
                "build",
                "-trimpath",
                "-ldflags=-s -w",
                "-o",
                str(work / "jaeger"),
                JAEGER_PACKAGE,
            ],
            module,
            env,
            log,
        )
        shutil.rmtree(module)

    return _install(target, build)


def main() -> int:
    if shutil.which("go") is None:
        print("e2e build: `go` is not on PATH", file=sys.stderr)
        return 2
    started = time.monotonic()
    collector = ensure_collector()
    jaeger = ensure_jaeger()
    print(
        f"e2e build: ready in {time.monotonic() - started:.0f} s\n  collector: {collector}\n"
        f"  jaeger:    {jaeger}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

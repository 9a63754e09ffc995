"""A one-line description of the machine and software a benchmark ran on."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Dict, Optional

__all__ = ["PACKAGES", "describe", "package_versions", "source_revision"]

#: Distributions whose versions are recorded with the results.
PACKAGES = (
    "payi-otel",
    "opentelemetry-sdk",
    "opentelemetry-api",
    "opentelemetry-instrumentation-openai-v2",
    "openai",
    "httpx2",
    "wrapt",
)


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or "unknown CPU"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Processor", "cpu model"):
            return value.strip()
    return platform.processor() or "unknown CPU"


def _cores() -> str:
    total = os.cpu_count()
    usable: Optional[int] = None
    if hasattr(os, "sched_getaffinity"):
        usable = len(os.sched_getaffinity(0))
    if usable is not None and usable != total:
        return f"{usable} usable of {total} cores"
    return f"{total} cores"


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text(encoding="utf-8").splitlines():
            if line.startswith("PRETTY_NAME="):
                pretty = line.partition("=")[2].strip().strip('"')
                return f"{pretty}, {platform.system()} {platform.release()}"
    except OSError:
        pass
    return platform.platform()


def source_revision(root: Path) -> str:
    """The git commit of ``root`` (the checkout measured), ``+dirty`` if ``src/`` has
    uncommitted changes; ``unknown`` outside git."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "src"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def package_versions() -> Dict[str, str]:
    versions: Dict[str, str] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def describe(root: Path) -> str:
    """CPU, cores, Python, OS, package versions, the checkout's commit and the date (UTC),
    on one line."""
    python = f"{platform.python_implementation()} {platform.python_version()}"
    packages = ", ".join(f"{k} {v}" for k, v in package_versions().items())
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"{_cpu_model()}, {_cores()}; {python}; {_os_name()}; {packages}; "
        f"source {source_revision(root)}; {date}"
    )

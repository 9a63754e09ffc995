#!/usr/bin/env python3
"""Run the official GenAI instrumentations' own test suites with payi_otel instrumented.

For each package: download its sdist with pip, unpack it, build a venv under
``.venv-upstream/<key>`` with the package's test requirements (``tests/requirements.latest.txt``,
its contrib-repo ``-e`` paths rewritten to PyPI releases or to the unpacked sdist), the tox test
dependencies, a stand-in for the unpublished ``opentelemetry-test-util-genai``
(``tests_upstream/test_util_genai``) and this repository; then run the sdist's tests (the
cassettes replay, ``--vcr-record=none``: no network) with ``-p payi_upstream_plugin``.

Standard library only. Usage::

    python tests_upstream/run.py [--only openai] [--version openai=1.3b0] [--baseline]
                                 [--requirements latest|oldest] [--pin 'anthropic==1.17.0']
                                 [-- extra pytest args]

``--baseline`` runs each suite a second time with ``PAYI_UPSTREAM_PLUGIN=0`` (payi_otel not
instrumented) to tell payi_otel's failures from the suite's own. Exit status: 0 when every
instrumented run passed with no GenAI span lacking ``payi.*``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = ROOT / ".venv-upstream"
SHIM = HERE / "test_util_genai"

PACKAGES = {
    "openai": "opentelemetry-instrumentation-genai-openai",
    "anthropic": "opentelemetry-instrumentation-genai-anthropic",
    "bedrock": "opentelemetry-instrumentation-genai-bedrock",
    "google_genai": "opentelemetry-instrumentation-google-genai",
}

# What the contrib repository's tox.ini adds to every `*-latest` test env ({[testenv]test_deps}
# and {[testenv]pytest_deps}); its `-e util/opentelemetry-test-util-genai` is our stand-in (SHIM).
TOX_DEPS = [
    "opentelemetry-api",
    "opentelemetry-semantic-conventions",
    "opentelemetry-sdk",
    "opentelemetry-instrumentation",
    "opentelemetry-test-utils",
    "pytest>=8",
    "pytest-asyncio>=0.24",
    "pytest-vcr>=1.0.2",
]

# Keys whose values reach api.openai.com / api.anthropic.com if a cassette is missing.
SCRUBBED_ENV = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL")


def log(message: str) -> None:
    print(f"[upstream] {message}", flush=True)


def run(cmd: list[str], **kwargs: object) -> None:
    log("$ " + " ".join(str(c) for c in cmd))
    subprocess.run(cmd, check=True, **kwargs)  # type: ignore[call-overload]


def sdist_version(project: str, filename: str) -> str:
    stem = re.sub(r"\.(tar\.gz|zip)$", "", filename)
    prefix = project.replace("-", "_") + "-"
    if not stem.lower().startswith(prefix):
        raise SystemExit(f"unexpected sdist name {filename!r} for {project}")
    return stem[len(prefix) :]


def download_sdist(project: str, version: str | None) -> Path:
    """The sdist of ``project`` (pip resolves the version unless given), cached by version."""
    cache = WORK / "_sdists"
    cache.mkdir(parents=True, exist_ok=True)
    if version:
        for path in cache.glob(project.replace("-", "_") + f"-{version}.*"):
            return path
    spec = f"{project}=={version}" if version else project
    with tempfile.TemporaryDirectory() as tmp:
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                spec,
                "-d",
                tmp,
            ]
        )
        (found,) = Path(tmp).iterdir()
        target = cache / found.name
        shutil.move(str(found), target)
    return target


def unpack(sdist: Path) -> Path:
    target = WORK / "_src" / re.sub(r"\.(tar\.gz|zip)$", "", sdist.name)
    if (target / "tests").is_dir():
        return target
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        with tarfile.open(sdist) as archive:
            if hasattr(tarfile, "data_filter"):
                archive.extractall(tmp, filter="data")
            else:
                archive.extractall(tmp)
        (top,) = Path(tmp).iterdir()
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(top), target)
    return target


def rewrite_requirements(source: Path, project: str, src: Path) -> tuple[list[str], list[str]]:
    """The requirement lines of ``source`` runnable outside the contrib repo, and the notes.

    ``-e <path>`` lines name directories of the contrib monorepo: the package under test becomes
    the unpacked sdist; any other ``opentelemetry-*`` directory becomes that PyPI distribution.
    """
    lines: list[str] = []
    notes: list[str] = []
    for raw in source.read_text(encoding="utf-8").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        editable = re.match(r"^(-e|--editable)\s+(\S+)$", line)
        if editable:
            path, bracket, extras = editable.group(2).partition("[")
            name = Path(path).name
            if name == project:
                lines.append(str(src))
                notes.append(f"{line} -> the unpacked sdist")
            elif name.startswith("opentelemetry-"):
                lines.append(name + bracket + extras)  # its extras too (util-genai[upload])
                notes.append(f"{line} -> {name + bracket + extras} (PyPI)")
            else:
                notes.append(f"{line} -> dropped")
            continue
        nested = re.match(r"^(-r|-c|--requirement|--constraint)\s+(\S+)$", line)
        if nested:
            lines.append(f"{nested.group(1)} {(source.parent / nested.group(2)).resolve()}")
            continue
        lines.append(line)
    return lines, notes


def requirement_name(line: str) -> str:
    match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)", line)
    return re.sub(r"[-_.]+", "-", match.group(1)).lower() if match else ""


def apply_pins(requirements: list[str], pins: list[str]) -> list[str]:
    """``requirements`` with each pin replacing the lines of its distribution (else added)."""
    pinned = {requirement_name(pin): pin for pin in pins}
    kept = [line for line in requirements if requirement_name(line) not in pinned]
    return kept + list(pinned.values())


def prepare_venv(key: str, project: str, src: Path, flavour: str, pins: list[str]) -> Path:
    """``.venv-upstream/<key>`` with everything installed; rebuilt when its inputs change."""
    target = WORK / key
    python = target / "bin" / "python"
    requirements, notes = rewrite_requirements(
        src / "tests" / f"requirements.{flavour}.txt", project, src
    )
    requirements = apply_pins(requirements, pins)
    if str(src) not in requirements:
        requirements.append(str(src))
    inputs = {
        "python": sys.version,
        "requirements": requirements,
        "tox_deps": TOX_DEPS,
        "shim": _tree_hash(SHIM),
        "repo_pyproject": _tree_hash(ROOT / "pyproject.toml"),
    }
    stamp = target / "payi-upstream-stamp.json"
    fresh = not (stamp.exists() and json.loads(stamp.read_text()) == inputs and python.exists())
    if fresh:
        for note in notes:
            log(f"{key}: requirement {note}")
        if target.exists():
            shutil.rmtree(target)
        venv.EnvBuilder(with_pip=True).create(target)
        req_file = target / "requirements.upstream.txt"
        req_file.write_text("\n".join(requirements + TOX_DEPS) + "\n", encoding="utf-8")
        run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
        run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "-r",
                str(req_file),
                str(SHIM),
                str(ROOT),
            ]
        )
        stamp.write_text(json.dumps(inputs, indent=2), encoding="utf-8")
    else:
        # The repository's code may have changed since: reinstall it alone.
        run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--force-reinstall",
                str(ROOT),
            ]
        )
    return python


def _tree_hash(path: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if {"__pycache__", "build"} & set(file.parts) or ".egg-info" in str(file):
            continue
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def run_tests(key: str, python: Path, src: Path, enabled: bool, extra: list[str]) -> dict:
    report = WORK / "reports" / f"{key}{'' if enabled else '-baseline'}.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")])),
        PAYI_UPSTREAM_PLUGIN="1" if enabled else "0",
        PAYI_UPSTREAM_REPORT=str(report),
        PYTHONDONTWRITEBYTECODE="1",
    )
    cmd = [
        str(python),
        "-m",
        "pytest",
        "tests",
        # As the contrib repository's tox.ini runs them: conformance needs the weaver binary.
        "--ignore=tests/test_conformance.py",
        "-c",
        str(HERE / "pytest.ini"),
        "--rootdir",
        str(src),
        "-p",
        "payi_upstream_plugin",
        "-p",
        "no:cacheprovider",
        "--vcr-record=none",
        "-q",
        *extra,
    ]
    started = time.monotonic()
    log(f"{key}: pytest ({'payi_otel instrumented' if enabled else 'baseline'})")
    code = subprocess.run(cmd, cwd=src, env=env).returncode
    elapsed = time.monotonic() - started
    if not report.exists():
        raise SystemExit(f"{key}: pytest exited {code} without writing {report}")
    summary = json.loads(report.read_text(encoding="utf-8"))
    summary["pytest_seconds"] = round(elapsed, 1)
    summary["report"] = str(report)
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=sorted(PACKAGES), action="append")
    parser.add_argument(
        "--version",
        action="append",
        default=[],
        metavar="KEY=VERSION",
        help="pin a package's version, e.g. openai=1.3b0 (default: pip's pick)",
    )
    parser.add_argument("--requirements", default="latest", choices=["latest", "oldest"])
    parser.add_argument(
        "--pin",
        action="append",
        default=[],
        metavar="REQUIREMENT",
        help="replace a requirement, e.g. 'anthropic==1.17.0' (diagnosis)",
    )
    parser.add_argument(
        "--baseline", action="store_true", help="also run each suite with PAYI_UPSTREAM_PLUGIN=0"
    )
    parser.add_argument("pytest_args", nargs="*", help="after --: extra pytest arguments")
    args = parser.parse_args()
    versions = dict(item.split("=", 1) for item in args.version)
    unknown = set(versions) - set(PACKAGES)
    if unknown:
        parser.error(f"unknown package key(s) {sorted(unknown)}; use {sorted(PACKAGES)}")
    results: dict[str, dict] = {}
    ok = True
    for key in args.only or sorted(PACKAGES):
        project = PACKAGES[key]
        started = time.monotonic()
        sdist = download_sdist(project, versions.get(key))
        version = sdist_version(project, sdist.name)
        src = unpack(sdist)
        python = prepare_venv(key, project, src, args.requirements, args.pin)
        setup_seconds = round(time.monotonic() - started, 1)
        entry = {
            "project": project,
            "version": version,
            "pins": args.pin,
            "setup_seconds": setup_seconds,
        }
        entry["instrumented"] = run_tests(key, python, src, True, args.pytest_args)
        if args.baseline:
            entry["baseline"] = run_tests(key, python, src, False, args.pytest_args)
        entry["total_seconds"] = round(time.monotonic() - started, 1)
        results[key] = entry
        done = entry["instrumented"]
        ok = ok and done["genai_spans_without_payi"] == 0
        if "baseline" in entry:
            # With a baseline, upstream's own failures (failing without payi_otel too, e.g.
            # cassettes recorded with an older SDK) do not count: payi_otel must add none.
            base = entry["baseline"]
            added = sorted(
                set(done["failed_tests"] + done["error_tests"])
                - set(base["failed_tests"] + base["error_tests"])
            )
            entry["failures_added_by_payi_otel"] = added
            ok = ok and not added
            for nodeid in added:
                log(f"{key}: fails only with payi_otel: {nodeid}")
        else:
            ok = ok and done["exit_status"] == 0
    summary_path = WORK / "reports" / "summary.json"
    summary_path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print()
    print(
        f"{'package':<10} {'run':<12} {'passed':>6} {'failed':>6} {'errors':>6} "
        f"{'skipped':>7} {'genai':>6} {'no payi':>7} {'seconds':>7}"
    )
    for key, entry in results.items():
        for run_name in ("instrumented", "baseline"):
            r = entry.get(run_name)
            if r is None:
                continue
            print(
                f"{key:<10} {run_name:<12} {r['passed']:>6} {r['failed']:>6} {r['errors']:>6} "
                f"{r['skipped']:>7} {r['genai_spans']:>6} {r['genai_spans_without_payi']:>7} "
                f"{r['pytest_seconds']:>7}"
            )
        print(f"{key:<10} {project_line(entry)}")
    print(f"summary: {summary_path}")
    return 0 if ok else 1


def project_line(entry: dict) -> str:
    return (
        f"{entry['project']}=={entry['version']}: setup {entry['setup_seconds']}s, "
        f"total {entry['total_seconds']}s"
    )


if __name__ == "__main__":
    sys.exit(main())

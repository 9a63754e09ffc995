"""``python -m payi_otel doctor``: what payi_otel would do in this environment, without doing it.

The answer to "why don't I see my headers / spans?" without reading the source (README,
"Check your setup"). Read-only: nothing is instrumented, no setting is installed. It reports

* the versions that matter (Python, payi-otel, the OpenTelemetry API and SDK);
* per registered provider: whether its SDK is installed, and which official GenAI
  instrumentation would supply its spans - or why none would (not installed, needs a newer
  Python, outside its SDK range, disabled by ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``);
* the settings the environment gives (the ``PAYI_*`` variables, read as
  ``opentelemetry-instrument`` reads them: a bad one is named, its default used);
* where attribution headers go and where they don't: each base URL set in the environment
  (``OPENAI_BASE_URL``, ...) and each provider's public API;
* whether the OTLP endpoint in the environment answers (one TCP connection, 1 s at most).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import socket
import sys
from collections.abc import Iterator, Mapping
from typing import FrozenSet, List, Optional, TextIO, Tuple
from urllib.parse import urlsplit

from payi_otel import _genai, _settings
from payi_otel._model.parameters import REGISTRY
from payi_otel._on_import import installed
from payi_otel._providers import providers
from payi_otel.version import __version__

__all__ = ["BASE_URL_VARIABLES", "doctor", "main"]

#: The variables the SDKs read their endpoint from (each SDK's own names, the first set
#: wins), with the URL used when none is set.
BASE_URL_VARIABLES: Tuple[Tuple[str, Tuple[str, ...], str], ...] = (
    ("openai", ("OPENAI_BASE_URL",), "https://api.openai.com/v1"),
    ("anthropic", ("ANTHROPIC_BASE_URL",), "https://api.anthropic.com"),
    ("openai (Azure)", ("AZURE_OPENAI_ENDPOINT",), "https://<resource>.openai.azure.com"),
    ("google-genai", ("GOOGLE_GEMINI_BASE_URL",), "https://generativelanguage.googleapis.com"),
    ("google-genai (Vertex AI)", ("GOOGLE_VERTEX_BASE_URL",), "https://aiplatform.googleapis.com"),
    (
        "boto3 bedrock-runtime",
        ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "AWS_ENDPOINT_URL"),
        "https://bedrock-runtime.<region>.amazonaws.com",
    ),
)
_OTLP_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def _version(distribution: str) -> Optional[str]:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _span_source(family: _genai.Family) -> str:
    """Which instrumentation would supply the family's GenAI spans, or why none."""
    enabled = _genai._enabled(family, _genai._disabled())
    if not enabled:
        names = ", ".join(i.distribution for i in family.instrumentations)
        return f"none: {names} disabled by {_genai.DISABLED_ENV}"
    reasons: List[str] = []
    for inst in enabled:
        instrumentor, why = _genai._load(inst)
        if instrumentor is None:
            reasons.append(why)
            continue
        version = _version(inst.distribution) or "?"
        conflict = instrumentor._check_dependency_conflicts()
        if conflict is None:
            return f"{inst.distribution} {version}"
        forced = _genai._forced(inst, conflict)
        if forced is not None:
            return (
                f"{inst.distribution} {version}, turned on past its range (one WARNING: {forced})"
            )
        reasons.append(str(conflict))
    if family.native_spans_module and installed(family.native_spans_module):
        return "the SDK's own spans"
    return "NONE (" + "; ".join(reasons) + ")"


def _providers_report() -> Iterator[str]:
    families = {family.sdk: family for family in _genai.FAMILIES}
    for provider in providers():
        label = provider.label or provider.name
        module = provider.name
        if not installed(module):
            yield f"  {label}: not installed"
            continue
        distribution = {"google.genai": "google-genai"}.get(module, module)
        version = _version(distribution) or "?"
        family = families.get(module)
        source = _span_source(family) if family is not None else "no GenAI instrumentation known"
        yield f"  {label} {version}: GenAI spans from {source}"
    for family in _genai.FRAMEWORKS:  # agent frameworks: their agent, tool and workflow spans
        if installed(family.sdk):
            yield f"  {family.label or family.sdk}: agent spans from {_span_source(family)}"


def _settings_report(settings: _settings.Settings, environ_names: FrozenSet[str]) -> Iterator[str]:
    params = {k: v for k, v in settings.effective.params.items() if k != "use_case_id"}
    if "use_case_name" not in environ_names:
        params.pop("use_case_name", None)
    shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
    yield f"  global level: {shown or '(none set)'}" + (
        "" if "use_case_name" in environ_names else "; use case name: your script's name"
    )
    yield f"  header dialect: {settings.wire.dialect.name}"
    if settings.wire.hosts is None:
        yield "  header hosts: every host but the model providers' public APIs (default)"
    else:
        yield f"  header hosts: only {', '.join(settings.wire.hosts) or '(none)'}"
    yield f"  baggage propagation: {'on' if settings.propagate_baggage else 'off'}"
    yield "  native attribution (Bedrock requestMetadata, Vertex labels): " + (
        "on" if settings.native_attribution else "off"
    )


def _wire_report(settings: _settings.Settings, environ: Mapping[str, str]) -> Iterator[str]:
    for sdk, variables, default in BASE_URL_VARIABLES:
        variable = next((v for v in variables if environ.get(v)), None)
        url = environ[variable] if variable else None
        where = f"{variable}={url}" if url else f"{default} (default: {variables[0]} unset)"
        verdict = "headers sent" if settings.wire.sends_to(url or default) else "no headers"
        yield f"  {sdk}: {where} -> {verdict}"


def _otlp_report(environ: Mapping[str, str]) -> Iterator[str]:
    variable = next((v for v in _OTLP_VARIABLES if environ.get(v)), None)
    exporter = environ.get("OTEL_TRACES_EXPORTER", "otlp")
    if variable is None:
        yield (
            f"  OTEL_EXPORTER_OTLP_ENDPOINT unset (OTEL_TRACES_EXPORTER={exporter}): "
            "opentelemetry-instrument would export to localhost:4317"
        )
        return
    url = environ[variable]
    parts = urlsplit(url if "://" in url else f"http://{url}")
    port = parts.port or (443 if parts.scheme == "https" else 4318)
    host = parts.hostname or "localhost"
    try:
        with socket.create_connection((host, port), timeout=1.0):
            verdict = "answers"
    except OSError as error:
        verdict = f"does NOT answer ({error.__class__.__name__}: {error})"
    yield f"  {variable}={url}: {host}:{port} {verdict}"


def doctor(out: TextIO = sys.stdout, environ: Optional[Mapping[str, str]] = None) -> int:
    """Print the report; 0 when nothing is wrong, 1 when something needs fixing (a bad
    variable, an SDK without GenAI spans, an OTLP endpoint that does not answer)."""
    environ = os.environ if environ is None else environ
    lines: List[str] = []
    problems = 0
    lines.append(
        f"payi-otel {__version__} on Python {sys.version.split()[0]}; OpenTelemetry API "
        f"{_version('opentelemetry-api')}, SDK {_version('opentelemetry-sdk')}"
    )
    lines.append("\nSDKs and their GenAI spans:")
    for line in _providers_report():
        problems += "NONE (" in line
        lines.append(line)
    lines.append("\nSettings from the environment (PAYI_*):")
    errors: List[str] = []
    handler = _Collect(errors)
    logger = logging.getLogger("payi_otel")
    logger.addHandler(handler)
    try:
        settings = _settings.build({}, lenient=True, environ=environ)
    finally:
        logger.removeHandler(handler)
    lines.extend(f"  ERROR {error}" for error in errors)
    problems += len(errors)
    given = frozenset(p.name for p in REGISTRY if environ.get(p.env) not in (None, ""))
    lines.extend(_settings_report(settings, given))
    lines.append("\nWhere attribution headers go (base URLs from the environment):")
    lines.extend(_wire_report(settings, environ))
    lines.append("\nTrace export:")
    for line in _otlp_report(environ):
        problems += "does NOT answer" in line
        lines.append(line)
    lines.append("\n" + ("nothing to fix" if not problems else f"{problems} thing(s) to fix above"))
    print("\n".join(lines), file=out)
    return 1 if problems else 0


class _Collect(logging.Handler):
    """Keeps the ERROR lines settings log for a bad variable (under the loader's rules)."""

    def __init__(self, into: List[str]) -> None:
        super().__init__(logging.ERROR)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record.getMessage())


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["doctor"]:
        print("usage: python -m payi_otel doctor", file=sys.stderr)
        return 2
    return doctor()

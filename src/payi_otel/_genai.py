"""GenAI spans: turn on the official OpenTelemetry GenAI instrumentation of each installed SDK.

Per SDK family (a registered provider: ``_providers``), the instrumentations in the order of
preference its provider gives (``Provider.instrumentations``): for openai the maintained
``opentelemetry-instrumentation-genai-openai`` first, then the deprecated
``opentelemetry-instrumentation-openai-v2`` (the only one on Python 3.9). Whichever is already
instrumented is kept; two instrumenting the same SDK would give one call two GenAI spans, so
the less preferred ones are turned off. When none can be turned on, one WARNING says why and
what to install (docs: README, "GenAI spans"). An instrumentation whose declared SDK range
leaves out a major release it was tested with (``Instrumentation.forced_majors``) is turned on
past its version check there, and one WARNING says so. ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``
turns an instrumentation off by its entry point's name, as the loader does. An instrumentation
turned on here leaves the process environment as it found it (:func:`_keeping_environment`).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from types import FrameType
from typing import Any, Callable, Dict, List, Optional, Set, Tuple, overload

from opentelemetry.trace import TracerProvider

from payi_otel._log import log_once, logger
from payi_otel._on_import import installed, when_imported
from payi_otel._providers import Instrumentation, derived, providers

__all__ = [
    "FAMILIES",
    "Family",
    "Instrumentation",
    "enable_genai_spans",
    "genai_scope_prefixes",
]

DISABLED_ENV = "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"


@dataclass(frozen=True)
class Family:
    """An SDK (its import name) and its GenAI instrumentations."""

    sdk: str
    instrumentations: Tuple[Instrumentation, ...]
    #: The SDK starts GenAI spans of its own (anthropic >= 1.14: ``anthropic._tracing``).
    native_spans_module: Optional[str] = None
    #: What its calls are called in messages (``Provider.label``; default: the SDK).
    label: str = ""
    #: The SDK's module whose import makes it ready (``Provider.ready_module``; default: the
    #: SDK, as ``Provider.ready`` and for an agent framework).
    ready_module: str = ""

    @property
    def ready(self) -> str:
        return self.ready_module or self.sdk


@derived
def _registered_families() -> Tuple[Family, ...]:
    return (
        tuple(
            Family(
                p.name, p.instrumentations, p.native_spans_module, p.label or p.name, p.ready_module
            )
            for p in providers()
            if p.instrumentations  # none: nothing to turn on
        )
        + FRAMEWORKS
    )  # issue 21


# --- issue 21: agent frameworks --------------------------------------------------------------
#
# Agent frameworks make no model calls of their own (they call the SDKs above, whose GenAI
# instrumentations make the inference spans); their official instrumentations add the
# ``invoke_workflow`` / ``invoke_agent`` / ``execute_tool`` spans around them, which the span
# processor attributes like any GenAI span. Turned on by the same rules as an SDK's: when the
# framework is installed, unless already on or disabled by name; one WARNING when it cannot be
# (genai-langchain declares ``langchain``, not only ``langchain-core``: pip install langchain).

#: The agent frameworks whose GenAI instrumentation is turned on, by the framework's import name.
FRAMEWORKS: Tuple[Family, ...] = (
    Family(
        "agents",
        (
            Instrumentation(
                "opentelemetry-instrumentation-genai-openai-agents",
                "opentelemetry.instrumentation.genai.openai_agents",
                "OpenAIAgentsInstrumentor",
            ),
        ),
        label="OpenAI Agents SDK (agents)",
    ),
    Family(
        "langchain_core",
        (
            Instrumentation(
                "opentelemetry-instrumentation-genai-langchain",
                "opentelemetry.instrumentation.genai.langchain",
                "LangChainInstrumentor",
            ),
        ),
        label="LangChain / LangGraph (langchain_core)",
    ),
)

# --- end issue 21 ------------------------------------------------------------------------------


class _Families(Sequence[Family]):
    """Every registered provider's family, read from the registry when used."""

    @overload
    def __getitem__(self, index: int) -> Family: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Family]: ...

    def __getitem__(self, index: Any) -> Any:
        return _registered_families()[index]

    def __len__(self) -> int:
        return len(_registered_families())


#: The SDK families :func:`enable_genai_spans` turns GenAI spans on for: the registered
#: providers' (a test may put a tuple of its own here).
FAMILIES: Sequence[Family] = _Families()

#: The official GenAI instrumentations' scopes, whatever their SDK (the ``genai-*`` packages,
#: ``opentelemetry-util-genai``'s handler): their spans are GenAI spans even when they start
#: without ``gen_ai.*``. Each provider adds its own (``Provider.genai_scope_prefixes``).
_GENAI_SCOPES: Tuple[str, ...] = (
    "opentelemetry.instrumentation.genai.",
    "opentelemetry.util.genai",
)


@derived
def genai_scope_prefixes() -> Tuple[str, ...]:
    """Instrumentation scopes whose spans are GenAI spans even when they start without
    ``gen_ai.*``: the official GenAI instrumentations', and each registered provider's."""
    found = [prefix for p in providers() for prefix in p.genai_scope_prefixes()]
    return tuple(dict.fromkeys((*_GENAI_SCOPES, *found)))


def _disabled() -> List[str]:
    """``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``, as the auto-instrumentation loader reads it."""
    return [name.strip() for name in os.environ.get(DISABLED_ENV, "").split(",")]


def _entry_points(inst: Instrumentation, sdk: str) -> Tuple[str, ...]:
    """The loader's names of an instrumentation: its ``opentelemetry_instrumentor`` entry
    points (``google-genai`` for the SDK ``google.genai``; ``bedrock`` for genai-bedrock, whose
    SDK is ``botocore``, the name of botocore's own instrumentation), else the SDK's name."""
    try:
        entry_points = importlib.metadata.distribution(inst.distribution).entry_points
    except importlib.metadata.PackageNotFoundError:
        return (sdk,)
    names = tuple(ep.name for ep in entry_points if ep.group == "opentelemetry_instrumentor")
    return names or (sdk,)


def _enabled(family: Family, disabled: List[str]) -> Tuple[Instrumentation, ...]:
    """The family's instrumentations that ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` leaves
    on: it names an instrumentation by its entry point (what the loader itself skips)."""
    if "*" in disabled:
        return ()
    names = {name for name in disabled if name}
    if not names:
        return family.instrumentations
    return tuple(
        inst
        for inst in family.instrumentations
        if names.isdisjoint(_entry_points(inst, family.sdk))
    )


def _forced(inst: Instrumentation, conflict: Any) -> Optional[str]:
    """Why the instrumentation is turned on past its version ``conflict``, when the installed
    SDK is only a major release it was tested with beyond its declared range ("": past a
    declared distribution it never imports, not installed: said nowhere); else None."""
    if inst.works_without and conflict.found is None:
        try:
            from packaging.requirements import Requirement

            if Requirement(str(conflict.required)).name in inst.works_without:
                return ""
        except Exception:
            return None
    if not inst.forced_majors:
        return None
    try:
        from packaging.requirements import Requirement
        from packaging.version import Version

        required = Requirement(str(conflict.required))
        found = Version(str(conflict.found).rsplit(" ", 1)[-1])
    except Exception:  # no version found (not installed), or one that does not parse
        return None
    if found.major not in inst.forced_majors:
        return None
    if not all(
        spec.contains(found, prereleases=True)
        for spec in required.specifier
        if spec.operator not in ("<", "<=")
    ):
        return None
    try:
        version = importlib.metadata.version(inst.distribution)
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    return (
        f"{inst.distribution} {version} declares {required} but {required.name} {found} is "
        f"installed; payi_otel turns it on anyway (tested with {required.name} {found.major})"
    )


def _load(inst: Instrumentation) -> Tuple[Any, str]:
    """The instrumentor instance, or None and why it cannot be used."""
    if sys.version_info[:2] < inst.min_python:
        return None, f"{inst.distribution} needs Python >= {'.'.join(map(str, inst.min_python))}"
    if not installed(inst.module.rsplit(".", 1)[0]) or not installed(inst.module):
        return None, f"{inst.distribution} is not installed"
    try:
        module = importlib.import_module(inst.module)
        return getattr(module, inst.instrumentor)(), ""
    except Exception as exc:  # an ImportError inside it: a release that does not fit
        return None, f"{inst.distribution} does not load ({type(exc).__name__}: {exc})"


def _loaded_instrumented(inst: Instrumentation) -> Any:
    """The instrumentor if its module is imported and it is instrumented, else None."""
    module = sys.modules.get(inst.module)
    cls = getattr(module, inst.instrumentor, None)
    if cls is None:
        return None
    # The singleton as it is: calling the class would run its __init__ again.
    instance = getattr(cls, "_instance", None)
    return instance if getattr(instance, "_is_instrumented_by_opentelemetry", False) else None


#: Held while an instrumentation is turned on (:func:`_keeping_environment`); reentrant: turning
#: one on may import another SDK, whose own is turned on then.
_environment_lock = threading.RLock()


@contextlib.contextmanager
def _keeping_environment(distribution: str) -> Iterator[None]:
    """Instrument with the process environment's ``OTEL_*`` variables left as they were.

    The GenAI instrumentations read their switches from the environment at every call
    (``opentelemetry-util-genai``), so a variable one sets when it is instrumented switches
    every other one too: ``opentelemetry-instrumentation-google-genai`` sets
    ``OTEL_INSTRUMENTATION_GENAI_EMIT_EVENT=true``, which makes every OpenAI and Anthropic
    call emit a ``gen_ai.client.inference.operation.details`` event as well (issue 20: ~10%
    of payi_otel's cost per call). Each variable an instrumentation added or changed is put
    back as the user had it (one DEBUG line); whoever wants the events sets it themselves.
    One at a time: SDKs imported at once in two threads are instrumented at once
    (``_on_import``), and one's snapshot must not take in what the other one set.
    """
    with _environment_lock:
        before = {k: v for k, v in os.environ.items() if k.startswith("OTEL_")}
        try:
            yield
        finally:
            _restore(before, distribution)


def _restore(before: Dict[str, str], distribution: str) -> None:
    after = {k: v for k, v in os.environ.items() if k.startswith("OTEL_")}
    changed = sorted(key for key in {*before, *after} if before.get(key) != after.get(key))
    for key in changed:
        if key in before:
            os.environ[key] = before[key]
        else:
            del os.environ[key]
    if changed:
        logger.debug(
            "payi_otel: %s set %s in the process environment when instrumented; put "
            "back as it was (it would switch every GenAI instrumentation)",
            distribution,
            ", ".join(changed),
        )


def _enable_family(family: Family, provider: Optional[TracerProvider]) -> List[Callable[[], Any]]:
    instrumented = [
        (inst, found)
        for inst in family.instrumentations
        if (found := _loaded_instrumented(inst)) is not None
    ]
    if instrumented:
        for inst, extra in instrumented[1:]:
            extra.uninstrument()
            log_once(
                f"genai-dup:{family.sdk}",
                "payi_otel: both %s and %s instrument %s, which would give every call two "
                "GenAI spans; %s is turned off (pip uninstall %s)",
                instrumented[0][0].distribution,
                inst.distribution,
                family.sdk,
                inst.distribution,
                inst.distribution,
            )
        return []
    reasons: List[str] = []
    for inst in family.instrumentations:
        instrumentor, why = _load(inst)
        if instrumentor is None:
            reasons.append(why)
            continue
        conflict = instrumentor._check_dependency_conflicts()
        forced = None
        if conflict is not None:
            forced = _forced(inst, conflict)
            if forced is None:
                reasons.append(str(conflict))
                continue
        try:
            forcing = {"skip_dep_check": True} if forced is not None else {}
            with _keeping_environment(inst.distribution):
                instrumentor.instrument(tracer_provider=provider, **forcing)
        except Exception as exc:
            reasons.append(f"{inst.distribution} failed to instrument ({exc!r})")
            logger.debug("payi_otel: %s failed to instrument", inst.distribution, exc_info=True)
            continue
        if forced:
            log_once(
                f"genai-forced:{family.sdk}",
                "payi_otel: %s, so %s calls get GenAI spans. To silence this warning, install "
                "an SDK release in its range (pip install '%s'), or turn its GenAI spans off "
                "(%s=%s)",
                forced,
                family.sdk,
                conflict.required,
                DISABLED_ENV,
                _entry_points(inst, family.sdk)[0],
            )
        return [instrumentor.uninstrument]
    if family.native_spans_module and installed(family.native_spans_module):
        return []  # the SDK's own call spans are its GenAI spans
    preferred = family.instrumentations[0]
    fix = (
        f"pip install -U {preferred.distribution}"
        if sys.version_info[:2] >= preferred.min_python
        else f"use Python >= {'.'.join(map(str, preferred.min_python))} and "
        f"pip install {preferred.distribution}"
    )
    log_once(
        f"genai-none:{family.sdk}",
        "payi_otel: no GenAI spans for %s calls (%s); their x-payi-* headers are still "
        "stamped. To fix: %s",
        family.label or family.sdk,
        "; ".join(reasons),
        fix,
    )
    return []


def _being_instrumented(family: Family) -> bool:
    """Whether the SDK is being imported by code of one of its own GenAI instrumentations:
    the program imports that instrumentation (half imported: it cannot be turned on yet; its
    own import's end does it, :func:`enable_genai_spans`), or turns it on (it is on when that
    returns; turning one on here too would double every GenAI span)."""
    packages = tuple(inst.module for inst in family.instrumentations)
    frame: Optional[FrameType] = sys._getframe(1)
    while frame is not None:
        name = frame.f_globals.get("__name__")
        if isinstance(name, str) and (
            name in packages or name.startswith(tuple(p + "." for p in packages))
        ):
            return True
        frame = frame.f_back
    return False


#: The SDKs whose GenAI instrumentation is being turned on now (each by one thread, once: turning
#: it on imports it, whose own import's end would try again).
_enabling: Set[str] = set()
_enabling_lock = threading.Lock()


def _half_imported(family: Family, importing: str) -> bool:
    """Whether one of the family's instrumentations (but ``importing``, whose import runs its
    post-import hooks) is being imported now, in any thread: importing it here, under the SDK's
    import lock, would deadlock with a thread that holds the instrumentation's and waits for
    the SDK's (found in review: a WARNING that the SDK's calls get no GenAI spans)."""
    return any(
        getattr(getattr(sys.modules.get(module), "__spec__", None), "_initializing", False)
        for module in _waited_for(family)
        if module != importing
    )


def _waited_for(family: Family) -> Tuple[str, ...]:
    """The family's instrumentations' modules, and the modules of other SDKs they patch
    (``Instrumentation.patches``: one being imported is patched when its import ends)."""
    return tuple(
        module for inst in family.instrumentations for module in (inst.module, *inst.patches)
    )


def _enable_when_ready(
    family: Family, provider: Optional[TracerProvider], hooked: bool = False, importing: str = ""
) -> List[Callable[[], Any]]:
    """``hooked``: the step waits for each instrumentation's import too, so one half imported
    is turned on when its import ends (``importing``: the module whose import runs it)."""
    if family.ready not in sys.modules or _being_instrumented(family):
        return []
    if hooked and _half_imported(family, importing):
        return []
    with _enabling_lock:
        if family.sdk in _enabling:
            return []
        _enabling.add(family.sdk)
    try:
        return _enable_family(family, provider)
    finally:
        with _enabling_lock:
            _enabling.discard(family.sdk)


def enable_genai_spans(provider: Optional[TracerProvider]) -> List[Callable[[], Any]]:
    """Make sure each installed SDK has exactly one GenAI instrumentation on, when the
    program imports the SDK (``_on_import``: now if it is imported) or, should one of those
    instrumentations import the SDK itself, when that one's import ends; the undo callables
    of those turned on here (and of those still waiting)."""
    disabled = _disabled()
    undo: List[Callable[[], Any]] = []
    for family in FAMILIES:
        if not installed(family.sdk):
            continue
        kept = _enabled(family, disabled)
        if not kept:
            continue
        family = replace(family, instrumentations=kept)
        hooked = family.ready not in sys.modules  # an instrumentation may import it: after that
        what = f"GenAI spans of {family.sdk}"
        step = partial(_enable_when_ready, family, provider, hooked, family.ready)
        undo.extend(when_imported(family.ready, step, what))
        if hooked:
            for module in _waited_for(family):
                if module in sys.modules or not installed(module.partition(".")[0]):
                    continue
                step = partial(_enable_when_ready, family, provider, hooked, module)
                undo.extend(when_imported(module, step, what))
    return undo

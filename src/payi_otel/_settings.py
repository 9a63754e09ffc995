"""The process settings: one frozen :class:`Settings`, and the one reference to it.

``payi_instrument()`` (or ``PayiInstrumentor().instrument()``) builds the settings once
(:func:`build`: its keyword arguments over the ``PAYI_*`` variables) and installs them
(:func:`install`); uninstrumenting installs :func:`default`. Everything that depends on them -
the scopes, the request hook, the span processor's helpers, the redirect guards - reads
:data:`current`, once per operation::

    settings = _settings.current  # a module attribute: never ``from _settings import current``

The settings are never changed in place: each :func:`build` / :func:`default` is a new
:attr:`Settings.version`, which caches of values derived from the global level key on.

A variable that does not parse is the user's mistake: in code, ``payi_instrument()`` raises it;
under ``opentelemetry-instrument`` (``lenient``) there is no code to raise into, so it is one
ERROR line naming it and its default applies (:class:`_Source`, the one place deciding).
"""

from __future__ import annotations

import difflib
import functools
import itertools
import json
import os
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, FrozenSet, Optional, Tuple, TypeVar

from opentelemetry import trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import Tracer, TracerProvider

from payi_otel import _environment as env
from payi_otel._log import log_once, logger
from payi_otel._model.codec import means_not_given, parse_value
from payi_otel._model.dialects import X_PAYI, Dialect
from payi_otel._model.effective import Effective
from payi_otel._model.merge import fold, merge, new_level
from payi_otel._model.model_mappings import ModelMapping, parse_mappings
from payi_otel._model.parameters import (
    BAGGAGE_ACCEPT_DEFAULT,
    ENV_NAMES,
    PARAMETERS,
    ParameterError,
    ParameterTypeError,
    ParameterValueError,
    Params,
    validate_params,
)
from payi_otel._model.user_prices import UserPrice, parse_prices  # issue 20
from payi_otel._model.wire_policy import WirePolicy, dialect_for, host_patterns
from payi_otel.version import __version__

if TYPE_CHECKING:
    from payi_otel._providers._base import ResponseObserver

__all__ = [
    "SCOPE_SPAN_ATTRIBUTES",
    "TRACER_NAME",
    "Settings",
    "add_observer",
    "baggage_accept",
    "build",
    "current",
    "default",
    "install",
    "policy_from",
]

#: The instrumentation scope of payi_otel's own (scope) spans.
TRACER_NAME = "payi_otel"
#: ``scope_span_attributes``: what a scope span carries (the first is the default).
SCOPE_SPAN_ATTRIBUTES = ("own", "effective")


_DEFAULT_WIRE = WirePolicy()


@dataclass(frozen=True)
class Settings:
    """Everything ``payi_instrument()`` decided, for the whole process."""

    #: New for each built settings (a derived one, :func:`add_observer`, keeps it: its global
    #: level is the same): caches of what the global level gives key on it.
    version: int
    #: The global level: ``config`` over ``PAYI_*`` over the default use case.
    effective: Effective
    #: payi_otel's tracer, for scope spans (from ``tracer_provider``, else the global one).
    tracer: Tracer
    #: Whether ``payi_instrument()`` is in force (headers get stamped).
    instrumented: bool = False
    propagate_baggage: bool = False
    #: The parameters incoming baggage may set.
    baggage_accept: FrozenSet[str] = BAGGAGE_ACCEPT_DEFAULT
    #: False: the spanless mode (scopes start no span).
    scope_spans: bool = True
    #: Scope spans carry the whole effective set (``scope_span_attributes="effective"``)
    #: rather than what their scope set.
    effective_scope_spans: bool = False
    #: Where attribution headers go, and in which dialect.
    wire: WirePolicy = _DEFAULT_WIRE
    #: ``payi.user_id`` as a metric dimension.
    metrics_user_id: bool = False
    #: The use case, user and account in the provider's own attribution fields too (Vertex
    #: AI ``labels``, Bedrock ``requestMetadata``), which go to the provider.
    native_attribution: bool = False
    #: Turn on the official GenAI instrumentation of each installed SDK.
    genai_spans: bool = True
    tracer_provider: Optional[TracerProvider] = None
    meter_provider: Optional[MeterProvider] = None
    #: Reported every completed GenAI call (``_providers``' ``CallRecord``).
    observers: Tuple[ResponseObserver, ...] = ()
    #: What to price a call naming a deployment (or any model as sent) as
    #: (``model_mappings=`` / ``PAYI_MODEL_MAPPINGS``; ``_model.model_mappings``).
    model_mappings: Tuple[ModelMapping, ...] = ()
    # --- issue 21 ---
    #: Zero-code request scopes (``payi_otel.web``): (request header, parameter) pairs ...
    web_headers: Tuple[Tuple[str, str], ...] = ()
    #: ... and the route template as ``use_case_step``.
    web_route_step: bool = False
    #: An agent's or tool's name is the ``use_case_step`` of the calls it makes.
    agent_steps: bool = False
    #: ``user.id`` mirrored on GenAI spans (and ``session.id`` with ``session_property``).
    standard_attributes: bool = False
    #: The request property mirrored as ``session.id`` / ``gen_ai.conversation.id``.
    session_property: Optional[str] = None
    # --- end issue 21 ---
    #: issue 19: one Pay-i ingest record per inference call (``ingest=`` / ``PAYI_INGEST``).
    ingest: bool = False
    # --- issue 20: cost at scale ---
    #: The user's price table (``prices=`` / ``PAYI_PRICES_FILE``), over genai-prices'.
    prices: Tuple[UserPrice, ...] = ()
    #: ``request_properties`` keys that are metric dimensions (``metric_properties=`` /
    #: ``PAYI_METRIC_PROPERTIES``).
    metric_properties: Tuple[str, ...] = ()
    #: Scope spans get their calls' usage and cost at their end (``scope_totals=`` /
    #: ``PAYI_SCOPE_TOTALS``).
    scope_totals: bool = False
    # --- end issue 20 ---


_versions = itertools.count()


def _tracer(provider: Optional[TracerProvider]) -> Tracer:
    # The global one: a ProxyTracer until a global provider is set, then it delegates to it.
    if provider is None:
        return trace.get_tracer(TRACER_NAME, __version__)
    return provider.get_tracer(TRACER_NAME, __version__)


def default() -> Settings:
    """The settings when payi_otel is not instrumented: an empty global level."""
    return Settings(next(_versions), Effective({}), _tracer(None))


#: The settings in force: read as ``_settings.current``, once per operation.
current: Settings = default()

_lock = threading.Lock()


def install(settings: Settings) -> None:
    """Put ``settings`` in force."""
    global current
    with _lock:
        current = settings


def add_observer(observer: ResponseObserver) -> Callable[[], None]:
    """Report every completed call to ``observer``; returns the undo."""
    global current
    with _lock:
        current = replace(current, observers=(*current.observers, observer))

    def remove() -> None:
        global current
        with _lock:
            kept = tuple(o for o in current.observers if o is not observer)
            current = replace(current, observers=kept)

    return remove


# --- building the settings ---------------------------------------------------------------------

T = TypeVar("T")

IGNORED = "payi_otel: %s; the variable is ignored"
DEFAULTED = "payi_otel: %s; the default is used"


class _Source:
    """One build's environment, and what a value in it that does not parse does."""

    def __init__(self, environ: Mapping[str, str], lenient: bool) -> None:
        self.environ = environ
        self.lenient = lenient

    def read(self, parse: Callable[[], T], default: T, outcome: str = IGNORED) -> T:
        """``parse()``; a ``ParameterError`` raises, or when lenient is logged (``outcome``
        says what happens instead) and ``default`` is used."""
        try:
            return parse()
        except ParameterError as error:
            if not self.lenient:
                raise
            logger.error(outcome, error)
            return default

    def flag(self, name: str, default: bool) -> bool:
        """A ``true`` / ``false`` variable; ``default`` when it is unset."""
        value = self.read(functools.partial(env.read_bool, self.environ, name), None)
        return default if value is None else value


def _bool_option(value: object, name: str, fallback: Callable[[], bool]) -> bool:
    """A keyword's bool, else ``fallback()`` (its variable)."""
    if value is None:
        return fallback()
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, not {type(value).__name__}")
    return value


def build(
    options: Mapping[str, Any],
    *,
    lenient: bool = False,
    environ: Optional[Mapping[str, str]] = None,
) -> Settings:
    """The settings from ``PayiInstrumentor().instrument()``'s keyword arguments (``options``)
    over ``environ`` (default: ``os.environ``); ``lenient``: under ``opentelemetry-instrument``.

    A keyword argument of the wrong type or value always raises; a variable that does not
    parse raises, or when lenient is logged and its default used (module docstring).
    """
    environ = os.environ if environ is None else environ
    source = _Source(environ, lenient)
    _misspelt(environ)
    params = _global_params(
        options.get("config"), source, options.get("caller_file") or _main_script()
    )
    log_prompts = options.get("log_prompt_and_response")
    if log_prompts is not None:  # issue 19: the switch's global level, over config's
        keyword = validate_params({"log_prompt_and_response": log_prompts}, source="keyword")
        params = merge(params, new_level(keyword))
    from_env = source.flag(env.PROPAGATE_BAGGAGE, False)
    propagate = _bool_option(
        options.get("propagate_baggage"), "propagate_baggage", lambda: from_env
    )
    metrics_user_id = _bool_option(
        options.get("metrics_user_id"),
        "metrics_user_id",
        lambda: source.flag(env.METRICS_USER_ID, False),
    )
    scope_spans = _bool_option(
        options.get("scope_spans"), "scope_spans", lambda: source.flag(env.SCOPE_SPANS, True)
    )
    native_attribution = _bool_option(
        options.get("native_attribution"),
        "native_attribution",
        lambda: source.flag(env.NATIVE_ATTRIBUTION, False),
    )
    attributes = options.get("scope_span_attributes")
    if attributes is None:
        read = functools.partial(
            env.read_choice, environ, env.SCOPE_SPAN_ATTRIBUTES, SCOPE_SPAN_ATTRIBUTES
        )
        attributes = source.read(read, None) or SCOPE_SPAN_ATTRIBUTES[0]
    elif attributes not in SCOPE_SPAN_ATTRIBUTES:
        raise ValueError(
            f"scope_span_attributes must be one of {SCOPE_SPAN_ATTRIBUTES}, got {attributes!r}"
        )
    # Read apart: a bad PAYI_BAGGAGE_ACCEPT under the loader must not drop a valid
    # PAYI_HEADER_HOSTS allow-list with it (nor the reverse).
    accept = source.read(
        lambda: baggage_accept(options.get("baggage_accept"), environ),
        BAGGAGE_ACCEPT_DEFAULT,
        DEFAULTED,
    )
    # The dialect and the hosts read apart too: a bad one must not reset the other (a review:
    # a mistyped PAYI_HEADER_HOSTS sent x-payi-* to Pay-i's proxy, a mistyped dialect sent
    # user ids past the allow-list).
    wire = WirePolicy(
        source.read(
            lambda: dialect_from(options.get("header_dialect"), environ),
            _DEFAULT_WIRE.dialect,
            DEFAULTED,
        ),
        source.read(
            lambda: hosts_from(options.get("header_hosts"), environ),
            _DEFAULT_WIRE.hosts,
            DEFAULTED,
        ),
    )
    mappings = options.get("model_mappings")
    model_mappings: Tuple[ModelMapping, ...]
    if mappings is None:
        model_mappings = source.read(functools.partial(_env_mappings, environ), ())
    else:
        model_mappings = parse_mappings(mappings, "model_mappings")
    # issue 19: ``ingest`` is a bool, or the exporter to send with (``_instrumentor``).
    ingest = options.get("ingest")
    if not (ingest is None or isinstance(ingest, bool) or hasattr(ingest, "attach")):
        raise TypeError(
            f"ingest must be a bool or a PayiIngestExporter, not {type(ingest).__name__}"
        )
    ingest_on = (
        source.flag(env.INGEST, False)
        if ingest is None
        else (ingest if isinstance(ingest, bool) else True)
    )
    prices, metric_properties, totals = _cost_options(options, source)  # issue 20
    provider: Optional[TracerProvider] = options.get("tracer_provider")
    return Settings(
        version=next(_versions),
        effective=Effective(merge({}, new_level(params))),
        tracer=_tracer(provider),
        instrumented=True,
        propagate_baggage=propagate,
        baggage_accept=accept,
        scope_spans=scope_spans,
        effective_scope_spans=attributes == "effective",
        wire=wire,
        metrics_user_id=metrics_user_id,
        native_attribution=native_attribution,
        genai_spans=bool(options.get("genai_spans", True)),
        tracer_provider=provider,
        meter_provider=options.get("meter_provider"),
        model_mappings=model_mappings,
        **_issue21_options(options, source),
        ingest=ingest_on,
        prices=prices,
        metric_properties=metric_properties,
        scope_totals=totals,
    )


# --- issue 21: web services, agent frameworks, standard attributes ---------------------------


def _issue21_options(options: Mapping[str, Any], source: _Source) -> Mapping[str, Any]:
    """``agent_steps``, ``standard_attributes``, ``session_property`` over their variables;
    ``PAYI_WEB_HEADERS`` / ``PAYI_WEB_ROUTE_STEP`` (zero-code request scopes)."""
    environ = source.environ
    no_headers: Tuple[Tuple[str, str], ...] = ()
    headers = source.read(
        lambda: tuple(env.read_web_headers(environ.get(env.WEB_HEADERS, ""), env.WEB_HEADERS)),
        no_headers,
    )
    session = options.get("session_property")
    if session is None:
        session = environ.get(env.SESSION_PROPERTY, "").strip() or None
    elif not isinstance(session, str) or not session:
        raise TypeError(f"session_property must be a non-empty str, not {session!r}")
    return {
        "web_headers": headers,
        "web_route_step": source.flag(env.WEB_ROUTE_STEP, False),
        "agent_steps": _bool_option(
            options.get("agent_steps"),
            "agent_steps",
            lambda: source.flag(env.AGENT_STEPS, False),
        ),
        "standard_attributes": _bool_option(
            options.get("standard_attributes"),
            "standard_attributes",
            lambda: source.flag(env.STANDARD_ATTRIBUTES, False) or session is not None,
        ),
        "session_property": session,
    }


# --- end issue 21 ------------------------------------------------------------------------------


# --- issue 20: cost at scale -------------------------------------------------------------------


def _cost_options(
    options: Mapping[str, Any], source: _Source
) -> Tuple[Tuple[UserPrice, ...], Tuple[str, ...], bool]:
    """``prices``, ``metric_properties`` and ``scope_totals`` over their variables."""
    prices = options.get("prices")
    table: Tuple[UserPrice, ...]
    names: Tuple[str, ...]
    names = table = ()
    if prices is None:
        table = source.read(functools.partial(_prices_file, source.environ), table)
    else:
        table = parse_prices(prices, "prices")
    keys = options.get("metric_properties")
    if keys is None:
        text = source.environ.get(env.METRIC_PROPERTIES, "")
        names = source.read(
            lambda: metric_property_keys(env.read_list(text), env.METRIC_PROPERTIES), names
        )
    else:
        names = metric_property_keys(keys, "metric_properties")
    totals = _bool_option(
        options.get("scope_totals"),
        "scope_totals",
        lambda: source.flag(env.SCOPE_TOTALS, False),
    )
    return table, names, totals


def _prices_file(environ: Mapping[str, str]) -> Tuple[UserPrice, ...]:
    """``PAYI_PRICES_FILE``: the user's price table, a JSON file; unset or empty: none."""
    path = environ.get(env.PRICES_FILE, "").strip()
    if not path:
        return ()
    what = f"{env.PRICES_FILE}={path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ParameterValueError(f"{what}: cannot read it ({error.strerror})") from None
    try:
        value = json.loads(text)
    except ValueError as error:
        raise ParameterValueError(f"{what} must hold JSON ({error})") from None
    try:
        return parse_prices(value, what)
    except ParameterTypeError as error:  # a file's content has a bad value, whatever it is
        raise ParameterValueError(str(error)) from None


def metric_property_keys(keys: object, what: str) -> Tuple[str, ...]:
    """``request_properties`` keys to add as metric dimensions: a list of non-empty strings."""
    if isinstance(keys, str) or not isinstance(keys, Iterable):
        raise ParameterTypeError(
            f"{what} must be a list of request_properties keys, not {type(keys).__name__}"
        )
    names = []
    for key in keys:
        if not isinstance(key, str) or not key.strip():
            raise ParameterValueError(
                f"{what} must be a list of non-empty request_properties keys, got {key!r}"
            )
        names.append(key.strip())
    return tuple(dict.fromkeys(names))


# --- end issue 20 ------------------------------------------------------------------------------


def _env_mappings(environ: Mapping[str, str]) -> Tuple[ModelMapping, ...]:
    """``PAYI_MODEL_MAPPINGS``: a JSON array of model mappings; unset: none."""
    value = env.read_json(environ, env.MODEL_MAPPINGS)
    if value is None:
        return ()
    try:
        return parse_mappings(value, env.MODEL_MAPPINGS)
    except ParameterTypeError as error:  # a variable's text has a bad value, whatever it is
        raise ParameterValueError(str(error)) from None


def _main_script() -> Optional[str]:
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if isinstance(path, str):
        return path
    return sys.argv[0] if sys.argv and sys.argv[0] else None


def default_use_case_name(caller_file: Optional[str]) -> Optional[str]:
    """The stem of the file that called ``payi_instrument()`` (the main script's, in
    ``opentelemetry-instrument``)."""
    if not caller_file or caller_file.startswith(("<", "-")):
        return None  # ``python -c`` and a multiprocessing spawn child: no script (a review)
    path = Path(caller_file)
    if path.stem == "__main__":  # ``python -m package``: the package's name
        return path.parent.name or None
    return path.stem or None


def _global_params(
    config: Optional[Mapping[str, object]], source: _Source, caller_file: Optional[str]
) -> Params:
    """The global level's parameters: three sources merged by the one merge engine, lowest
    first: the default use case (the caller's file stem), ``PAYI_*`` variables, ``config``.

    An empty variable clears a string, list or dict (so ``PAYI_USE_CASE_NAME=`` turns the
    default use case off) and leaves the version unset.
    """
    if config is not None and not isinstance(config, Mapping):
        raise ParameterTypeError(f"config must be a mapping, not {type(config).__name__}")
    own = validate_params(dict(config or {}), source="payi_instrument config")
    from_env: Params = {}
    for name, env_name in ENV_NAMES.items():
        text = source.environ.get(env_name)
        if text is None or means_not_given(name, text):
            continue
        value = source.read(functools.partial(parse_value, name, text, what=env_name), None)
        if value is not None:
            from_env[name] = value
    default: Params = {}
    use_case = default_use_case_name(caller_file)
    if use_case:
        default["use_case_name"] = use_case
    return fold({}, (new_level(default), new_level(from_env), new_level(own)))


def baggage_accept(value: Optional[Iterable[str]], environ: Mapping[str, str]) -> FrozenSet[str]:
    """The parameters incoming baggage may set: ``value`` (names, or ``["*"]`` for all), else
    ``PAYI_BAGGAGE_ACCEPT`` (comma-separated), else the registry's default."""
    if value is None:
        text = environ.get(env.BAGGAGE_ACCEPT)
        if text is None:
            return BAGGAGE_ACCEPT_DEFAULT
        names = [name.strip() for name in env.read_list(text)]
        what = env.BAGGAGE_ACCEPT
    elif isinstance(value, str) or not isinstance(value, Iterable):
        raise ParameterTypeError(
            f"baggage_accept must be a list of parameter names, not {type(value).__name__}"
        )
    else:
        names, what = list(value), "baggage_accept"
    if names == ["*"]:
        return frozenset(PARAMETERS)
    unknown = [n for n in names if n not in PARAMETERS]
    if unknown:
        raise ParameterValueError(f"{what} names unknown parameters: {unknown}")
    return frozenset(names)


def _misspelt(environ: Mapping[str, str]) -> None:
    """A ``PAYI_*`` variable payi_otel does not read, one edit or two from one it does
    (``PAYI_USERID``): one WARNING naming it, or every call would be billed without it and
    nothing said (a review). Other ``PAYI_*`` names (another tool's) are left alone."""
    known = {*ENV_NAMES.values(), *env.switch_names(), *env.PAYI_CLIENT}
    for name in environ:
        if not name.startswith("PAYI_") or name in known:
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.85)
        if close:
            log_once(
                f"env-misspelt:{name}",
                "payi_otel: %s is not a payi_otel variable and is ignored: did you mean %s?",
                name,
                close[0],
            )


def policy_from(
    dialect: Optional[str], hosts: Optional[Sequence[str]], environ: Mapping[str, str]
) -> WirePolicy:
    """The policy from ``payi_instrument(header_dialect=, header_hosts=)`` over
    ``PAYI_HEADER_DIALECT`` and ``PAYI_HEADER_HOSTS`` (comma-separated; empty: no host)."""
    return WirePolicy(dialect_from(dialect, environ), hosts_from(hosts, environ))


def dialect_from(dialect: Optional[str], environ: Mapping[str, str]) -> Dialect:
    """``header_dialect=`` over ``PAYI_HEADER_DIALECT`` (default: ``x-payi``)."""
    if dialect is None:
        return dialect_for(environ.get(env.HEADER_DIALECT) or X_PAYI.name, env.HEADER_DIALECT)
    return dialect_for(dialect, "header_dialect")


def hosts_from(
    hosts: Optional[Sequence[str]], environ: Mapping[str, str]
) -> Optional[Tuple[str, ...]]:
    """``header_hosts=`` over ``PAYI_HEADER_HOSTS`` (None: neither, the default policy)."""
    if hosts is not None:
        return host_patterns(hosts, "header_hosts")
    if env.HEADER_HOSTS in environ:
        return host_patterns(env.read_list(environ[env.HEADER_HOSTS]), env.HEADER_HOSTS)
    return None

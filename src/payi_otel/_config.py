"""The global level: ``payi_instrument(config=...)`` over ``PAYI_*`` environment variables."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import FrozenSet, List, Optional, Tuple

from payi_otel._model.codec import means_not_given, parse_value
from payi_otel._model.merge import fold, new_level
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

__all__ = [
    "BAGGAGE_ACCEPT_ENV",
    "METRICS_USER_ID_ENV",
    "PROPAGATE_BAGGAGE_ENV",
    "SCOPE_SPANS_ENV",
    "SCOPE_SPAN_ATTRIBUTES",
    "SCOPE_SPAN_ATTRIBUTES_ENV",
    "baggage_accept",
    "global_params",
    "parse_bool_env",
]

PROPAGATE_BAGGAGE_ENV = "PAYI_PROPAGATE_BAGGAGE"
BAGGAGE_ACCEPT_ENV = "PAYI_BAGGAGE_ACCEPT"


def baggage_accept(value: Optional[Iterable[str]], environ: Mapping[str, str]) -> FrozenSet[str]:
    """The parameters incoming baggage may set: ``value`` (names, or ``["*"]`` for all), else
    ``PAYI_BAGGAGE_ACCEPT`` (comma-separated), else the registry's default."""
    if value is None:
        text = environ.get(BAGGAGE_ACCEPT_ENV)
        if text is None:
            return BAGGAGE_ACCEPT_DEFAULT
        names = [n.strip() for n in text.split(",") if n.strip()]
        what = BAGGAGE_ACCEPT_ENV
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


#: ``payi.user_id`` as a metric dimension (off by default: one series per user).
METRICS_USER_ID_ENV = "PAYI_METRICS_USER_ID"

SCOPE_SPANS_ENV = "PAYI_SCOPE_SPANS"
SCOPE_SPAN_ATTRIBUTES_ENV = "PAYI_SCOPE_SPAN_ATTRIBUTES"
SCOPE_SPAN_ATTRIBUTES = ("own", "effective")

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}


def params_from_env(
    environ: Mapping[str, str], errors: Optional[List[ParameterError]] = None
) -> Params:
    """Parameters given by ``PAYI_*`` variables; a value that does not parse is a ValueError
    (or, with ``errors``, appended there and the variable ignored).

    An empty variable clears a string, list or dict (so ``PAYI_USE_CASE_NAME=`` turns the
    default use case off) and leaves the version unset.
    """
    params: Params = {}
    for name, env_name in ENV_NAMES.items():
        text = environ.get(env_name)
        if text is None or means_not_given(name, text):
            continue
        try:
            params[name] = parse_value(name, text, what=env_name)
        except ParameterError as exc:
            if errors is None:
                raise
            errors.append(exc)
    return params


def parse_bool_env(environ: Mapping[str, str], name: str) -> Optional[bool]:
    """``true``/``false`` (case-insensitive; also 1/0, yes/no, on/off); None when unset."""
    text = environ.get(name)
    if text is None:
        return None
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ParameterValueError(f"{name} must be 'true' or 'false', got {text!r}")


def default_use_case_name(caller_file: Optional[str]) -> Optional[str]:
    """The stem of the file that called ``payi_instrument()`` (the main script's, in
    ``opentelemetry-instrument``)."""
    if not caller_file or caller_file.startswith("<"):
        return None
    stem = Path(caller_file).stem
    return stem or None


def global_params(
    config: Optional[Mapping[str, object]],
    environ: Mapping[str, str],
    caller_file: Optional[str],
    errors: Optional[List[ParameterError]] = None,
) -> Tuple[Params, Optional[bool]]:
    """The global level's parameters and the ``PAYI_PROPAGATE_BAGGAGE`` setting.

    Three sources merged by the one merge engine, lowest first: the default use case (the
    caller's file stem), ``PAYI_*`` variables, ``config``. With ``errors``, a variable that
    does not parse is appended there and ignored instead of raised (``opentelemetry-instrument``).
    """
    if config is not None and not isinstance(config, Mapping):
        raise ParameterTypeError(f"config must be a mapping, not {type(config).__name__}")
    own = validate_params(dict(config or {}), source="payi_instrument config")
    from_env = params_from_env(environ, errors)
    default: Params = {}
    name = default_use_case_name(caller_file)
    if name:
        default["use_case_name"] = name
    params = fold({}, (new_level(default), new_level(from_env), new_level(own)))
    try:
        propagate = parse_bool_env(environ, PROPAGATE_BAGGAGE_ENV)
    except ParameterError as exc:
        if errors is None:
            raise
        errors.append(exc)
        propagate = None
    return params, propagate

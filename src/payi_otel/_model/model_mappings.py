"""Model mappings: what to price a call as when the model it names is not a model.

An Azure OpenAI call names a deployment (``prod-chat``), a Bedrock call may name an
application inference profile (an opaque ARN): neither prices by itself. A mapping, in the
shape of Pay-i's ``PayiInstrumentModelMapping`` (``payi/lib/PayiInstrumentModelMapping.py``)::

    {"model": "prod-chat",                       # the model as the call sends it
     "host": "my-res.openai.azure.com",          # optional: only calls to this host
     "price_as_category": "system.azureopenai",  # what to price it as (one of these two,
     "price_as_resource": "gpt-4o",              #   or both)
     "resource_scope": "global"}                 # optional

matches a call exactly on ``model``, and on the normalised host (lower-cased, no scheme,
port or path) when it names one; the first match wins (as Pay-i's ``find_model_mapping``).

A matching mapping is a source of ``price_as_*`` the call did not give (:func:`mapped_params`):
it applies only when the call's resolved parameters have neither ``price_as_category`` nor
``price_as_resource`` in force - an explicit one, from any scope or the call's own headers,
wins over the mapping, as in Pay-i's SDK - and then sets the mapping's ``price_as_category``
and ``price_as_resource``, and its ``resource_scope`` unless the call has one. The category
and resource are taken together or not at all: one from the context and one from a mapping
would price the call as a pair nobody wrote. The values are validated by the one parameter
registry (``validate_value``), so they travel like any parameter: headers, span, cost, ingest.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Optional, Tuple
from urllib.parse import urlsplit

from payi_otel._model.in_force import is_cleared
from payi_otel._model.parameters import (
    ParameterTypeError,
    ParameterValueError,
    Params,
    validate_value,
)

__all__ = [
    "MAPPED",
    "ModelMapping",
    "find_mapping",
    "host_of",
    "mapped_params",
    "parse_mappings",
]

#: The parameters a mapping may give (Pay-i's names).
MAPPED = ("price_as_category", "price_as_resource", "resource_scope")
_PRICE_AS = MAPPED[:2]
_KEYS = ("model", "host", *MAPPED)


@dataclass(frozen=True)
class ModelMapping:
    """One validated mapping (:func:`parse_mappings`)."""

    model: str
    #: The normalised host it is limited to, or None: any host.
    host: Optional[str]
    #: The parameters it gives (validated, none empty): a subset of :data:`MAPPED`.
    params: Tuple[Tuple[str, str], ...]


def host_of(url: Optional[str]) -> Optional[str]:
    """The normalised host of a URL or a bare host name (``my-res.openai.azure.com``,
    ``https://my-res.openai.azure.com:443/openai``): lower-cased, no port, no trailing dot."""
    if not url:
        return None
    try:
        host = urlsplit(url if "://" in url else f"https://{url}").hostname
    except ValueError:
        return None
    if not host:
        return None
    return host.rstrip(".") or None


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ParameterTypeError(f"{what} must be a str, not {type(value).__name__}")
    return value


def _one(entry: object, what: str) -> ModelMapping:
    if not isinstance(entry, Mapping):
        raise ParameterTypeError(
            f"{what} must be a mapping with 'model' and 'price_as_category' and/or "
            f"'price_as_resource', not {type(entry).__name__}"
        )
    for key in entry:
        if key not in _KEYS:
            close = difflib.get_close_matches(str(key), _KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ParameterValueError(f"{what} has an unknown key {key!r}{hint}")
    model = _text(entry.get("model"), f"{what}['model']")
    if not model.strip():
        raise ParameterValueError(f"{what}['model'] must not be empty")
    host: Optional[str] = None
    if entry.get("host") is not None:
        given = _text(entry["host"], f"{what}['host']")
        host = host_of(given.strip())
        if host is None:
            raise ParameterValueError(f"{what}['host'] must be a host name, got {given!r}")
    params = []
    for name in MAPPED:
        value = entry.get(name)
        if value is None:
            continue
        checked = validate_value(name, value, what=f"{what}[{name!r}]")
        if not is_cleared(checked):
            params.append((name, str(checked)))
    if not any(name in _PRICE_AS for name, _ in params):
        raise ParameterValueError(
            f"{what} (model {model!r}) needs 'price_as_category' or 'price_as_resource'"
        )
    return ModelMapping(model, host, tuple(params))


def parse_mappings(value: object, what: str) -> Tuple[ModelMapping, ...]:
    """Validate a list of mappings (``what`` names where it came from: the keyword argument
    or the variable). Raises ``ParameterTypeError`` / ``ParameterValueError``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ParameterTypeError(
            f"{what} must be a list of mappings (dicts), not {type(value).__name__}"
        )
    return tuple(_one(entry, f"{what}[{index}]") for index, entry in enumerate(value))


def find_mapping(
    mappings: Sequence[ModelMapping], model: Optional[str], url: Optional[str]
) -> Optional[ModelMapping]:
    """The first mapping for a call of ``model`` to ``url``, if any."""
    if not model:
        return None
    host: Optional[str] = None
    for mapping in mappings:
        if mapping.model != model:
            continue
        if mapping.host is not None:
            if host is None:
                host = host_of(url) or ""
            if mapping.host != host:
                continue
        return mapping
    return None


def mapped_params(params: Params, mapping: ModelMapping) -> Optional[Params]:
    """What ``mapping`` adds to a call resolved to ``params``: None when the call has a
    ``price_as_*`` in force (it wins) or the mapping adds nothing."""
    for name in _PRICE_AS:
        value = params.get(name)
        if value is not None and not is_cleared(value):
            return None
    added: Params = {}
    for name, value in mapping.params:
        current = params.get(name)
        if name in _PRICE_AS or current is None or is_cleared(current):
            added[name] = value
    return added or None

"""The one parameter registry: one record per Pay-i parameter, and validation.

Every table - kinds, ``payi.*`` span attributes, ``PAYI_*`` variables, baggage keys, name-ID
pairs, and each wire dialect's header names (``_model.dialects`` reads its column:
``Parameter.header``, ``Parameter.payi_header``) - is derived from :data:`REGISTRY`; adding a
parameter is one row. Every entry point (``@track``, ``track_context``,
``payi_instrument(config=...)``, ``PAYI_*`` variables, per-call headers, baggage) turns its
input into :data:`Params` through this module, so the type rules and error messages are the
same everywhere (docs/parameters.md).

Representation of one level's parameters (a plain ``dict``, never mutated once built):

* absent key -> unset (inherit from the level below);
* ``""`` / ``()`` / ``{}`` -> cleared (overrides the level below with "empty");
* anything else -> a value: ``str``, ``int``, ``bool``, ``tuple[str, ...]`` or
  ``dict[str, str | None]`` (a ``None`` dict value means "remove this key from the level
  below"). The int and the bool have no cleared state.
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Dict, Optional, Tuple, Union

from typing_extensions import TypedDict

__all__ = [
    "ATTRIBUTE_NAMES",
    "ATTRIBUTE_PREFIX",
    "BAGGAGE_ACCEPT_DEFAULT",
    "BAGGAGE_PREFIX",
    "DICT_PARAMETERS",
    "ENV_NAMES",
    "HEADER_PREFIX",
    "LIST_PARAMETERS",
    "PAIRS",
    "PARAMETERS",
    "REGISTRY",
    "SCOPE_ATTRIBUTE",
    "Kind",
    "Pair",
    "Parameter",
    "ParameterError",
    "ParameterTypeError",
    "ParameterValueError",
    "Params",
    "ScopeParameters",
    "Value",
    "params_key",
    "validate_params",
    "validate_value",
]


class Kind(enum.Enum):
    """How a parameter merges (docs/precedence.md)."""

    STRING = "string"
    INT = "int"
    LIST = "list"
    DICT = "dict"
    BOOL = "bool"


HEADER_PREFIX = "x-payi-"
ATTRIBUTE_PREFIX = "payi."
BAGGAGE_PREFIX = "payi."
ENV_PREFIX = "PAYI_"
#: On scope spans: which method opened the scope (``track`` | ``track_context``).
SCOPE_ATTRIBUTE = "payi.scope"


@dataclass(frozen=True)
class Parameter:
    """One Pay-i parameter. Its header is ``x-payi-<name with dashes>``, its variable
    ``PAYI_<NAME>``, its baggage key ``payi.<name>``; its span attribute is given (a dict
    expands to ``<attribute>.<key>``). ``pair`` names the name-ID pair it belongs to.
    ``payi_header`` is the name Pay-i's own SDK (``payi``, ``PayiHeaderNames`` in
    ``payi/lib/helpers.py``) gives the header, None where it has none (that parameter is not
    sent in the ``payi-proxy`` dialect)."""

    name: str
    kind: Kind
    attribute: str
    pair: Optional[str] = None
    #: Whether incoming W3C baggage may set it by default. Budget and pricing controls
    #: (limits, price-as, resource scope) are not taken from another process unless allowed.
    from_baggage: bool = True
    payi_header: Optional[str] = None

    @property
    def header(self) -> str:
        return HEADER_PREFIX + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


#: Every parameter, in the order used for headers, attributes and ``get_context()``.
REGISTRY: Tuple[Parameter, ...] = (
    Parameter(
        "use_case_name",
        Kind.STRING,
        "payi.use_case.name",
        pair="use_case",
        payi_header="xProxy-UseCase-Name",
    ),
    Parameter(
        "use_case_id",
        Kind.STRING,
        "payi.use_case.id",
        pair="use_case",
        payi_header="xProxy-UseCase-ID",
    ),
    Parameter(
        "use_case_version",
        Kind.INT,
        "payi.use_case.version",
        pair="use_case",
        payi_header="xProxy-UseCase-Version",
    ),
    Parameter(
        "use_case_step",
        Kind.STRING,
        "payi.use_case.step",
        pair="use_case",
        payi_header="xProxy-UseCase-Step",
    ),
    Parameter(
        "use_case_properties",
        Kind.DICT,
        "payi.use_case.properties",
        pair="use_case",
        payi_header="xProxy-UseCase-Properties",
    ),
    Parameter("experience_name", Kind.STRING, "payi.experience.name", pair="experience"),
    Parameter("experience_id", Kind.STRING, "payi.experience.id", pair="experience"),
    Parameter(
        "limit_ids", Kind.LIST, "payi.limit_ids", payi_header="xProxy-Limit-IDs", from_baggage=False
    ),
    Parameter("request_tags", Kind.LIST, "payi.request_tags"),
    Parameter("user_id", Kind.STRING, "payi.user_id", payi_header="xProxy-User-ID"),
    Parameter("account_name", Kind.STRING, "payi.account_name", payi_header="xProxy-Account-Name"),
    Parameter(
        "request_properties",
        Kind.DICT,
        "payi.request.properties",
        payi_header="xProxy-Request-Properties",
    ),
    Parameter(
        "price_as_category",
        Kind.STRING,
        "payi.price_as.category",
        payi_header="xProxy-PriceAs-Category",
        from_baggage=False,
    ),
    Parameter(
        "price_as_resource",
        Kind.STRING,
        "payi.price_as.resource",
        payi_header="xProxy-PriceAs-Resource",
        from_baggage=False,
    ),
    Parameter(
        "resource_scope",
        Kind.STRING,
        "payi.resource_scope",
        payi_header="xProxy-Resource-Scope",
        from_baggage=False,
    ),
    # Whether Pay-i keeps the call's prompt and response (``track(log_prompt_and_response=)``
    # in Pay-i's SDK). Pay-i's proxy header is a presence-only switch, sent for ``False``:
    # ``_model.dialects.PAYI_PROXY``. Not taken from incoming baggage by default: another
    # process does not turn logging of this one's prompts on.
    Parameter(
        "log_prompt_and_response",
        Kind.BOOL,
        "payi.log_prompt_and_response",
        payi_header="xProxy-Logging-Disable",
        from_baggage=False,
    ),
)


@dataclass(frozen=True)
class Pair:
    """A name-ID pair (``<pair>_name``, ``<pair>_id``) and the parameters that belong to
    the same entity (the pair's other members)."""

    name: str
    id: str
    members: Tuple[str, ...] = ()

    @property
    def fields(self) -> Tuple[str, ...]:
        return (self.name, self.id, *self.members)


def _pairs() -> Tuple[Pair, ...]:
    pairs = []
    for role in dict.fromkeys(p.pair for p in REGISTRY if p.pair):
        name, id_ = f"{role}_name", f"{role}_id"
        members = tuple(p.name for p in REGISTRY if p.pair == role and p.name not in (name, id_))
        pairs.append(Pair(name, id_, members))
    return tuple(pairs)


PARAMETERS: Mapping[str, Kind] = {p.name: p.kind for p in REGISTRY}
ATTRIBUTE_NAMES: Mapping[str, str] = {p.name: p.attribute for p in REGISTRY}
ENV_NAMES: Mapping[str, str] = {p.name: p.env for p in REGISTRY}
PAIRS: Tuple[Pair, ...] = _pairs()
#: The parameters incoming baggage may set unless configured otherwise.
BAGGAGE_ACCEPT_DEFAULT = frozenset(p.name for p in REGISTRY if p.from_baggage)
LIST_PARAMETERS = frozenset(n for n, k in PARAMETERS.items() if k is Kind.LIST)
DICT_PARAMETERS = frozenset(n for n, k in PARAMETERS.items() if k is Kind.DICT)


class ScopeParameters(TypedDict, total=False):
    """The keyword arguments of ``@track`` and ``track_context`` (all optional; ``None`` means
    unset). Typed for editors and type checkers; a test keeps it equal to :data:`REGISTRY`."""

    use_case_name: Optional[str]
    use_case_id: Optional[str]
    use_case_version: Optional[int]
    use_case_step: Optional[str]
    use_case_properties: Optional[Mapping[str, Optional[str]]]
    experience_name: Optional[str]
    experience_id: Optional[str]
    limit_ids: Optional[Sequence[str]]
    request_tags: Optional[Sequence[str]]
    user_id: Optional[str]
    account_name: Optional[str]
    request_properties: Optional[Mapping[str, Optional[str]]]
    price_as_category: Optional[str]
    price_as_resource: Optional[str]
    resource_scope: Optional[str]
    log_prompt_and_response: Optional[bool]


Value = Union[str, int, bool, Tuple[str, ...], Dict[str, Optional[str]]]
Params = Dict[str, Value]

_FORBIDDEN = ("\r", "\n", "\x00")


class ParameterError(Exception):
    """Base of the errors raised for a caller's bad Pay-i parameter (always names it)."""

    # Shown in tracebacks as the public name (``payi_otel.ParameterTypeError``), not the
    # private module it is defined in.
    __module__ = "payi_otel"


class ParameterTypeError(ParameterError, TypeError):
    """A Pay-i parameter (or header) of the wrong type."""

    __module__ = "payi_otel"


class ParameterValueError(ParameterError, ValueError):
    """A Pay-i parameter (or header, or variable) with a bad value."""

    __module__ = "payi_otel"


#: The version is sent as an int attribute: OTLP carries int64.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1


def _text(value: str, what: str) -> str:
    """``value``'s exact text (a ``str`` subclass, e.g. a str Enum member, becomes its
    plain ``str`` value), checked: no CR, LF or NUL, and valid Unicode."""
    text = value if type(value) is str else str.__str__(value)
    if text.isprintable():  # no CR, LF, NUL nor lone surrogate: one C call (the hot path)
        return text
    if "\r" in text or "\n" in text or "\x00" in text:  # _FORBIDDEN, unrolled (hot path)
        raise ParameterValueError(
            f"{what} must not contain CR, LF or NUL characters: {text[:80]!r}"
        )
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ParameterValueError(
                f"{what} must be valid Unicode (it has a lone surrogate): {text[:80]!r}"
            ) from None
    return text


def validate_value(name: str, value: object, *, what: Optional[str] = None) -> Value:
    """Check one parameter value and return its canonical form.

    ``what`` names the parameter in error messages (defaults to ``name``; headers and
    environment variables pass their own name). Raises ``TypeError`` for a wrong type and
    ``ValueError`` for a bad value.
    """
    label = what or name
    kind = PARAMETERS.get(name)
    if kind is None:
        raise ParameterTypeError(f"unknown Pay-i parameter {name!r}")
    if kind is Kind.STRING:
        if not isinstance(value, str):
            raise ParameterTypeError(f"{label} must be a str, not {type(value).__name__}")
        return _text(value, label)
    if kind is Kind.BOOL:
        if not isinstance(value, bool):
            raise ParameterTypeError(f"{label} must be a bool, not {type(value).__name__}")
        return value
    if kind is Kind.INT:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParameterTypeError(f"{label} must be an int, not {type(value).__name__}")
        number = int(value)
        if not INT_MIN <= number <= INT_MAX:
            raise ParameterValueError(f"{label} must fit in 64 bits, got {number}")
        return number
    if kind is Kind.LIST:
        if not isinstance(value, (list, tuple)):
            raise ParameterTypeError(
                f"{label} must be a list of str, not {type(value).__name__}"
                + (" (wrap a single value in a list)" if isinstance(value, str) else "")
            )
        items = []
        for item in value:
            if not isinstance(item, str):
                raise ParameterTypeError(f"{label} elements must be str, not {type(item).__name__}")
            item = _text(item, label)
            if "," in item:
                raise ParameterValueError(f"{label} elements must not contain a comma: {item!r}")
            if not item.strip():
                raise ParameterValueError(f"{label} elements must not be empty")
            items.append(item)
        return tuple(items)
    # Kind.DICT
    if not isinstance(value, Mapping):
        raise ParameterTypeError(
            f"{label} must be a dict of str to str, not {type(value).__name__}"
        )
    result: Dict[str, Optional[str]] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise ParameterTypeError(f"{label} keys must be str, not {type(key).__name__}")
        if not key:
            raise ParameterValueError(f"{label} keys must not be empty")
        key = _text(key, label)
        if item is not None:
            if not isinstance(item, str):
                raise ParameterTypeError(
                    f"{label}[{key!r}] must be a str or None, not {type(item).__name__}"
                )
            item = _text(item, label)
        result[key] = item
    return result


def params_key(params: Params) -> Tuple[Tuple[str, object], ...]:
    """A hashable form of validated ``params`` (equal keys, equal params; the same params
    given in another order may get another key, which only costs a cache miss)."""
    if DICT_PARAMETERS.isdisjoint(params):  # every value hashable as it is
        return tuple(params.items())
    return tuple(
        [
            (name, tuple(value.items()) if type(value) is dict else value)
            for name, value in params.items()
        ]
    )


def _did_you_mean(name: str) -> str:
    """`` (did you mean 'user_id'?)`` for a mistyped parameter name (``userid``), else ``""``."""
    close = difflib.get_close_matches(name, PARAMETERS, n=1, cutoff=0.6)
    if not close:
        folded = {p.replace("_", ""): p for p in PARAMETERS}
        found = folded.get(name.replace("_", "").replace("-", "").lower())
        close = [found] if found else []
    return f" (did you mean {close[0]!r}?)" if close else ""


def validate_params(params: Mapping[str, object], *, source: str) -> Params:
    """Validate keyword parameters; ``None`` values mean "unset" and are dropped.

    ``source`` names the API that received them (``"track"``, ``"track_context"``,
    ``"config"``) for the unknown-parameter message.
    """
    result: Params = {}
    for name, value in params.items():
        if name not in PARAMETERS:
            raise ParameterTypeError(
                f"{source}() got an unexpected parameter {name!r}{_did_you_mean(name)}"
            )
        if value is None:
            continue
        if type(value) is str and PARAMETERS[name] is Kind.STRING:  # the common case, inlined
            result[name] = _text(value, name)
        else:
            result[name] = validate_value(name, value)
    return result

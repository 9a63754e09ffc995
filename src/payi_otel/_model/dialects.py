"""The wire dialects of the attribution headers (contract section 3a, docs/parameters.md).

A :class:`Dialect` is everything one wire form knows, in one object, as the OpenTelemetry
API's ``W3CBaggagePropagator`` is for ``baggage``: its header names (a column of the one
parameter registry, or a name made from each parameter), how it encodes values, which of a
caller's headers it recognises, :meth:`~Dialect.extract` (a caller's headers to parameters),
:meth:`~Dialect.inject` (parameters to headers) and :attr:`~Dialect.fields`.

Two are registered: ``x-payi`` (the default: every ``x-payi-*`` name is ours) and
``payi-proxy`` (Pay-i's own SDK in proxy mode: its ``xProxy-*`` names, properties as base64 of
the JSON, and no header for the parameters it has no name for; its other ``xProxy-*`` headers,
an API key, are the caller's own). One is in force for sending (``header_dialect=``,
``_model.wire_policy``); a caller's headers are read in every registered dialect at once
(:data:`Dialects`, as OpenTelemetry's ``CompositePropagator`` runs each propagator), and a
redirect to another origin loses every header under any registered dialect's prefix.
Adding a dialect is one :class:`Dialect` and one :func:`register`.
"""

from __future__ import annotations

import base64
import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Dict, FrozenSet, Optional, Protocol, Set, Tuple, Union

from payi_otel._model.codec import (
    REMOVED,
    format_value,
    means_not_given,
    parse_value,
    to_header_value,
)
from payi_otel._model.in_force import emitted
from payi_otel._model.parameters import (
    HEADER_PREFIX,
    PARAMETERS,
    REGISTRY,
    Kind,
    Parameter,
    ParameterTypeError,
    ParameterValueError,
    Params,
    Value,
)

__all__ = [
    "PAYI_PROXY",
    "X_PAYI",
    "Dialect",
    "Dialects",
    "Encoder",
    "Resolved",
    "as_base64_json",
    "as_text",
    "dialect_named",
    "dialect_names",
    "header_name",
    "is_attribution_header",
    "is_dialect_header",
    "parse_headers",
    "register",
    "registered",
    "unregister",
]

#: How a dialect writes one parameter's value in a header: ``(parameter, value) -> text``.
Encoder = Callable[[str, Value], str]


def as_text(name: str, value: Value) -> str:
    """The value's text form (``_model.codec``), percent-encoded where it cannot go in a header
    as-is; a dict as its compact JSON (the ``x-payi`` dialect)."""
    return to_header_value(format_value(name, value))


def as_base64_json(name: str, value: Value) -> str:
    """:func:`as_text`, but a dict's JSON as standard base64, as Pay-i's SDK sends it in proxy
    mode (``_update_extra_headers`` in ``payi/lib/instrument.py``)."""
    if PARAMETERS[name] is Kind.DICT:
        return base64.b64encode(format_value(name, value).encode("ascii")).decode("ascii")
    return as_text(name, value)


def header_name(name: object) -> Optional[str]:
    """A header name as text: ``str`` as it is, ``bytes`` (which httpx accepts) as Latin-1."""
    if isinstance(name, str):
        return name
    if isinstance(name, (bytes, bytearray)):
        return bytes(name).decode("latin-1")
    return None


class Dialects:
    """Dialects read together (OpenTelemetry's ``CompositePropagator``): which headers any of
    them recognises or owns, and the parameters a caller's headers give in any of them.
    :func:`registered` is every registered dialect; each :class:`Dialect` reads as one."""

    __slots__ = ("_claimed", "_parameters", "_prefixes", "_presence", "dialects")

    def __init__(self, dialects: Sequence[Dialect]) -> None:
        self.dialects: Tuple[Dialect, ...] = tuple(dialects)
        #: Every dialect's header names, lower-cased -> parameter.
        self._parameters: Dict[str, str] = {}
        #: Presence-only headers, lower-cased -> the value their presence gives.
        self._presence: Dict[str, Value] = {}
        for dialect in self.dialects:
            for parameter, header in dialect.headers.items():
                self._parameters[header.lower()] = parameter
                if parameter in dialect.presence:
                    self._presence[header.lower()] = dialect.presence[parameter]
        self._prefixes = tuple(d.prefix for d in self.dialects)
        self._claimed = tuple(d.prefix for d in self.dialects if d.claims_prefix)

    @property
    def fields(self) -> FrozenSet[str]:
        """Every header name any of them sends."""
        return frozenset(h for d in self.dialects for h in d.headers.values())

    def recognises(self, name: object) -> bool:
        """Whether ``name`` (case-insensitive; ``str`` or ``bytes``) is an attribution header
        in one of them: a parameter's name, or any name under a prefix a dialect claims (a
        typo there is the caller's mistake, :meth:`extract` says so)."""
        text = header_name(name)
        if text is None:
            return False
        lowered = text.lower()
        return lowered in self._parameters or lowered.startswith(self._claimed)

    def owns(self, name: object) -> bool:
        """Whether ``name`` is under one of their prefixes: an attribution header or another
        of that family (Pay-i's ``xProxy-Api-Key``), what never crosses to another origin."""
        text = header_name(name)
        return text is not None and text.lower().startswith(self._prefixes)

    def _unknown(self, header: str, lowered: str) -> ParameterValueError:
        claimer = next(d for d in self.dialects if d.claims_prefix and lowered.startswith(d.prefix))
        known = [h.lower() for h in claimer.headers.values()]
        close = difflib.get_close_matches(lowered, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return ParameterValueError(
            f"unknown Pay-i header {header!r}{hint}; the call was not sent "
            "(known: docs/parameters.md)"
        )

    def extract(self, source: Mapping[Any, object]) -> Tuple[Params, FrozenSet[str]]:
        """The parameters one source of a call's headers gives (a client's default headers,
        or the call's own), and the parameters it removes (given as ``codec.REMOVED``).

        Names are case-insensitive, ``str`` or ``bytes``, in any of these dialects. ``None``
        means not given (seed: the scope's value is used), and so does an empty version
        (``codec.means_not_given``). One name in two cases: the later entry wins, as the SDKs
        merge headers. One parameter under two spellings with different values is a
        ``ParameterValueError`` naming both headers. A name under a claimed prefix that is no
        parameter's (a typo such as ``x-payi-use-case-nme``) is the caller's mistake: a
        ``ParameterValueError`` naming it, so no call goes out with its attribution silently
        missing (docs/parameters.md). How the sources of one call combine:
        ``_model.merge.combine``.
        """
        texts: Dict[str, Tuple[str, Value]] = {}
        removed: Set[str] = set()
        for raw, value in source.items():
            header = header_name(raw)
            if header is None:
                continue
            lowered = header.lower()
            name = self._parameters.get(lowered)
            if name is None:
                if lowered.startswith(self._claimed):
                    raise self._unknown(header, lowered)
                continue
            if value is None:
                continue
            if value is REMOVED:
                removed.add(name)
                continue
            if not isinstance(value, str):
                raise ParameterTypeError(
                    f"header {header!r} must be a str, not {type(value).__name__}"
                )
            presence = self._presence.get(lowered)
            if presence is not None:
                parsed: Value = presence  # any value, empty included: present is present
            elif means_not_given(name, value):
                continue
            else:
                parsed = parse_value(name, value, what=f"header {header!r}")
            earlier = texts.get(name)
            if earlier is not None and earlier[0].lower() != lowered and earlier[1] != parsed:
                raise ParameterValueError(
                    f"header {earlier[0]!r} and header {header!r} give "
                    f"{name} different values in one call"
                )
            texts[name] = (header, parsed)
        return {name: parsed for name, (_, parsed) in texts.items()}, frozenset(removed)


class Resolved(Protocol):
    """What :meth:`Dialect.inject` takes besides plain parameters: an ``Effective``, which
    makes each dialect's headers once (``Effective.headers``)."""

    def headers(self, dialect: Dialect) -> Mapping[str, str]: ...


@dataclass(frozen=True, eq=False)
class Dialect:
    """One wire form of the attribution headers.

    ``headers`` maps each parameter it carries to its header name as sent (a parameter
    absent from it is not sent in this dialect); every name is under ``prefix`` (lower-case),
    the family a redirect to another origin drops. ``claims_prefix``: every name under the
    prefix is an attribution header, so an unknown one is a caller's typo (``x-payi``), not
    somebody else's header (Pay-i's ``xProxy-Api-Key``). ``encode`` writes a value.
    Build one over the registry with :meth:`over_registry`; equal only to itself.
    """

    name: str
    prefix: str
    headers: Mapping[str, str]
    encode: Encoder = as_text
    claims_prefix: bool = False
    #: Switches it sends as presence-only headers: parameter -> the value the header's
    #: presence means (whatever its text), sent as ``True``; the other value sends nothing.
    presence: Mapping[str, Value] = field(default_factory=dict)
    _alone: Dialects = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.name != self.name.strip().lower() or not self.name:
            raise ValueError(f"a dialect's name is lower-case text, got {self.name!r}")
        outside = [h for h in self.headers.values() if not h.lower().startswith(self.prefix)]
        if self.prefix != self.prefix.lower() or not self.prefix or outside:
            raise ValueError(
                f"dialect {self.name!r}: every header must be under its lower-case prefix "
                f"{self.prefix!r} ({outside})"
            )
        unknown = [p for p in self.headers if p not in PARAMETERS]
        if unknown:
            raise ValueError(f"dialect {self.name!r}: unknown parameters {unknown}")
        stray = [p for p in self.presence if p not in self.headers]
        if stray or any(PARAMETERS[p] is not Kind.BOOL for p in self.presence):
            raise ValueError(f"dialect {self.name!r}: presence-only headers are switches it sends")
        object.__setattr__(self, "headers", MappingProxyType(dict(self.headers)))
        object.__setattr__(self, "presence", MappingProxyType(dict(self.presence)))
        object.__setattr__(self, "_alone", Dialects((self,)))

    @classmethod
    def over_registry(
        cls,
        name: str,
        header_of: Callable[[Parameter], Optional[str]],
        *,
        prefix: str,
        encode: Encoder = as_text,
        claims_prefix: bool = False,
        presence: Optional[Mapping[str, Value]] = None,
    ) -> Dialect:
        """The dialect whose header for each parameter is ``header_of(parameter)`` (a column
        of the registry, such as ``Parameter.header``, or a name made from the parameter's
        name), None where it has none; in registry order."""
        headers = {p.name: h for p in REGISTRY for h in (header_of(p),) if h is not None}
        return cls(name, prefix, headers, encode, claims_prefix, dict(presence or {}))

    @property
    def fields(self) -> FrozenSet[str]:
        """The header names it sends (``TextMapPropagator.fields``)."""
        return self._alone.fields

    def recognises(self, name: object) -> bool:
        """Whether a caller's header ``name`` is one of its attribution headers."""
        return self._alone.recognises(name)

    def owns(self, name: object) -> bool:
        """Whether ``name`` is under its prefix (never crosses to another origin)."""
        return self._alone.owns(name)

    def extract(self, source: Mapping[Any, object]) -> Tuple[Params, FrozenSet[str]]:
        """The parameters ``source`` gives in this dialect's names, and those it removes
        (:meth:`Dialects.extract`; a call's headers are read in every registered dialect:
        :func:`parse_headers`)."""
        return self._alone.extract(source)

    def inject(self, source: Union[Params, Resolved]) -> Mapping[str, str]:
        """The attribution headers of what is in force in ``source`` (parameters, or an
        ``Effective``, whose headers per dialect are made once), values encoded."""
        if not isinstance(source, dict):
            return source.headers(self)
        names, presence = self.headers, self.presence
        return {
            names[name]: "True" if name in presence else self.encode(name, value)
            for name, value in emitted(source)
            if name in names and (name not in presence or value == presence[name])
        }


X_PAYI = Dialect.over_registry(
    "x-payi", lambda p: p.header, prefix=HEADER_PREFIX, claims_prefix=True
)
# Pay-i's SDK sends ``xProxy-Logging-Disable: True`` in a scope with
# ``log_prompt_and_response=False`` and reads any value of it as "off" (``payi/lib/instrument.py``).
PAYI_PROXY = Dialect.over_registry(
    "payi-proxy",
    lambda p: p.payi_header,
    prefix="xproxy-",
    encode=as_base64_json,
    presence={"log_prompt_and_response": False},
)

# --- the registry ------------------------------------------------------------------------------

_dialects: Dict[str, Dialect] = {X_PAYI.name: X_PAYI, PAYI_PROXY.name: PAYI_PROXY}
_registered = Dialects(tuple(_dialects.values()))


def register(dialect: Dialect) -> None:
    """Make ``dialect`` selectable by name (``header_dialect=``, ``PAYI_HEADER_DIALECT``), its
    names read in every call's headers, its prefix dropped on a cross-origin redirect.
    Its name and header names must be new."""
    global _registered
    if dialect.name in _dialects:
        raise ValueError(f"a dialect named {dialect.name!r} is already registered")
    taken = {h.lower() for h in _registered.fields} & {h.lower() for h in dialect.fields}
    if taken:
        raise ValueError(f"dialect {dialect.name!r}: headers already registered: {sorted(taken)}")
    _dialects[dialect.name] = dialect
    _registered = Dialects(tuple(_dialects.values()))


def unregister(name: str) -> None:
    """Forget the dialect ``name`` (the two built-in ones stay)."""
    global _registered
    if name in (X_PAYI.name, PAYI_PROXY.name):
        raise ValueError(f"the {name!r} dialect is built in")
    _dialects.pop(name, None)
    _registered = Dialects(tuple(_dialects.values()))


def registered() -> Dialects:
    """Every registered dialect, read together."""
    return _registered


def dialect_names() -> Tuple[str, ...]:
    """The registered dialects' names, ``x-payi`` first."""
    return tuple(_dialects)


def dialect_named(name: str) -> Optional[Dialect]:
    """The registered dialect ``name``, else None."""
    return _dialects.get(name)


def is_attribution_header(name: object) -> bool:
    """Whether a caller's header is an attribution header of any registered dialect (any
    ``x-payi-*`` name, or one of Pay-i's ``xProxy-*`` names of a parameter; its other
    ``xProxy-*`` headers are the caller's own and pass through untouched)."""
    return _registered.recognises(name)


def is_dialect_header(name: object) -> bool:
    """Whether a header is under any registered dialect's prefix (any ``x-payi-*`` or
    ``xProxy-*`` header): what never crosses to another origin."""
    return _registered.owns(name)


def parse_headers(source: Mapping[Any, object]) -> Tuple[Params, FrozenSet[str]]:
    """The parameters one source of a call's headers gives, and those it removes, in any
    registered dialect's names (:meth:`Dialects.extract`), whichever is in force."""
    return _registered.extract(source)

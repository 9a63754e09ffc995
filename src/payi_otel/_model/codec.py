"""The one codec: the text form of parameter values, shared by headers, ``PAYI_*`` variables
and baggage, and the parsing of per-call ``x-payi-*`` headers.

One parser and one formatter per kind (docs/parameters.md): strings as-is, the version as a
decimal int, lists comma-separated (split on commas and trimmed when parsed), dicts as a
compact, ASCII-escaped JSON object. An empty text means "cleared" for every kind but the int.
"""

from __future__ import annotations

import base64
import difflib
import json
import re
from collections.abc import Mapping
from typing import Any, Dict, FrozenSet, Optional, Set, Tuple
from urllib.parse import quote

from payi_otel._model.parameters import (
    HEADER_PREFIX,
    PARAMETER_BY_ANY_HEADER,
    PARAMETER_BY_HEADER,
    PARAMETERS,
    Kind,
    ParameterTypeError,
    ParameterValueError,
    Params,
    Value,
    validate_value,
)

__all__ = [
    "REMOVED",
    "format_value",
    "format_wire_value",
    "header_name",
    "is_pay_i_header",
    "is_payi_header",
    "means_not_given",
    "parse_headers",
    "parse_value",
    "to_header_value",
]

_INT = re.compile(r"[+-]?[0-9]{1,19}\Z")
# A header value sent as-is: printable ASCII, no space at either end (RFC 9110 field-value).
_PLAIN = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?\Z")
# Kept as-is inside a value that has to be percent-encoded: printable ASCII but "%" and " ".
_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%")


def parse_value(name: str, text: str, *, what: str) -> Value:
    """Parse the text form of parameter ``name``; errors name ``what`` (a header or variable).

    CR, LF and NUL are refused in every kind, before any trimming.
    """
    if "\r" in text or "\n" in text or "\x00" in text:
        raise ParameterValueError(f"{what} must not contain CR, LF or NUL characters")
    kind = PARAMETERS[name]
    if kind is Kind.INT:
        stripped = text.strip()
        if not _INT.match(stripped):
            raise ParameterValueError(
                f"{what} must be a decimal integer, got {text[:40]!r}"
                + ("..." if len(text) > 40 else "")
            )
        return validate_value(name, int(stripped), what=what)
    if kind is Kind.LIST:
        items = [item.strip() for item in text.split(",")]
        return validate_value(name, [item for item in items if item], what=what)
    if kind is Kind.DICT:
        if not text.strip():
            return {}
        try:
            loaded = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ParameterValueError(
                f"{what} must be a JSON object of strings: {type(exc).__name__}: {exc}"
            ) from None
        if not isinstance(loaded, dict):
            raise ParameterValueError(
                f"{what} must be a JSON object of strings, got {type(loaded).__name__}"
            )
        for key, item in loaded.items():
            if item is not None and not isinstance(item, str):
                raise ParameterValueError(
                    f"{what} must be a JSON object of strings: {key!r} is {type(item).__name__}"
                )
        return validate_value(name, loaded, what=what)
    return validate_value(name, text, what=what)


def format_value(name: str, value: Value) -> str:
    """The text form of a value (inverse of :func:`parse_value`)."""
    kind = PARAMETERS[name]
    if kind is Kind.LIST:
        assert isinstance(value, tuple)
        return ",".join(value)
    if kind is Kind.DICT:
        assert isinstance(value, dict)
        present: Dict[str, Optional[str]] = {k: v for k, v in value.items() if v is not None}
        return json.dumps(present, separators=(",", ":"), ensure_ascii=True)
    return str(value)


def format_wire_value(name: str, value: Value, base64_dicts: bool = False) -> str:
    """A header value: :func:`format_value` made sendable (:func:`to_header_value`); with
    ``base64_dicts`` (Pay-i's proxy dialect) a dict's JSON is sent as standard base64, as
    Pay-i's SDK does in proxy mode (``_update_extra_headers`` in ``payi/lib/instrument.py``)."""
    text = format_value(name, value)
    if base64_dicts and PARAMETERS[name] is Kind.DICT:
        return base64.b64encode(text.encode("ascii")).decode("ascii")
    return to_header_value(text)


def to_header_value(text: str) -> str:
    """``text`` if it can go in an HTTP header as-is, else percent-encoded (RFC 3986, UTF-8).

    As-is means printable ASCII with no space at either end; anything else (non-ASCII,
    control characters such as TAB or ESC, leading or trailing spaces) is encoded, spaces
    and ``%`` included, so the whole value decodes back with one ``unquote``.
    """
    if _PLAIN.match(text):
        return text
    return quote(text, safe=_SAFE, encoding="utf-8")


# --- per-call headers ------------------------------------------------------------------------

#: Pay-i's own spelling of the attribution headers (``xProxy-*``, lower-cased).
PAYI_PREFIX = "xproxy-"


def header_name(name: object) -> Optional[str]:
    """A header name as text: ``str`` as it is, ``bytes`` (which httpx accepts) as Latin-1."""
    if isinstance(name, str):
        return name
    if isinstance(name, (bytes, bytearray)):
        return bytes(name).decode("latin-1")
    return None


def is_payi_header(name: object) -> bool:
    """An attribution header: any ``x-payi-*`` name, or one of Pay-i's ``xProxy-*`` names of
    a parameter (case-insensitive; ``str`` or ``bytes``). Pay-i's other ``xProxy-*`` headers
    (its API key, its provider base URI) are the caller's own and pass through untouched."""
    text = header_name(name)
    if text is None:
        return False
    lowered = text.lower()
    return lowered.startswith(HEADER_PREFIX) or lowered in PARAMETER_BY_ANY_HEADER


def is_pay_i_header(name: object) -> bool:
    """Any ``x-payi-*`` or ``xProxy-*`` header (what never crosses to another origin)."""
    text = header_name(name)
    return text is not None and text.lower().startswith((HEADER_PREFIX, PAYI_PREFIX))


def _unknown_header(header: str) -> ParameterValueError:
    close = difflib.get_close_matches(header.lower(), PARAMETER_BY_HEADER, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ParameterValueError(
        f"unknown Pay-i header {header!r}{hint}; the call was not sent (known: docs/parameters.md)"
    )


class _Removed:
    """The type of :data:`REMOVED`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "REMOVED"


#: A per-call header value that removes the parameter a lower source of the same call gave
#: (a provider maps its SDK's ``Omit`` to it: a call's ``Omit()`` un-sets the client's default
#: header for that call, as the SDKs do for every other header). ``None`` is "not given".
REMOVED = _Removed()


def means_not_given(name: str, text: str) -> bool:
    """Whether ``text`` gives parameter ``name`` no value at all: an empty (or blank) text
    for the int, which has no empty state (seeds' table), so the level below stays in force.
    The one rule for an empty ``PAYI_USE_CASE_VERSION`` and an empty version header
    (docs/parameters.md)."""
    return PARAMETERS[name] is Kind.INT and not text.strip()


def parse_headers(source: Mapping[Any, object]) -> Tuple[Params, FrozenSet[str]]:
    """The parameters one source of a call's headers gives (a client's default headers, or
    the call's own), and the parameters it removes (given as :data:`REMOVED`).

    Names are case-insensitive, ``str`` or ``bytes``, in either spelling (``x-payi-*`` or
    Pay-i's ``xProxy-*``). ``None`` means not given (seed: the scope's value is used), and so
    does an empty version (:func:`means_not_given`). One name in two cases: the later entry
    wins, as the SDKs merge headers. One parameter under both spellings with different
    values is a ``ParameterValueError`` naming both headers. An ``x-payi-*`` name that is no
    parameter's (a typo such as ``x-payi-use-case-nme``) is the caller's mistake: a
    ``ParameterValueError`` naming it, so no call goes out with its attribution silently
    missing (docs/parameters.md). How the sources of one call combine: ``_merge.combine``.
    """
    texts: Dict[str, Tuple[str, Value]] = {}
    removed: Set[str] = set()
    for raw, value in source.items():
        header = header_name(raw)
        if header is None:
            continue
        name = PARAMETER_BY_ANY_HEADER.get(header.lower())
        if name is None:
            if header.lower().startswith(HEADER_PREFIX):
                raise _unknown_header(header)
            continue
        if value is None:
            continue
        if value is REMOVED:
            removed.add(name)
            continue
        if not isinstance(value, str):
            raise ParameterTypeError(f"header {header!r} must be a str, not {type(value).__name__}")
        if means_not_given(name, value):
            continue
        parsed = parse_value(name, value, what=f"header {header!r}")
        earlier = texts.get(name)
        if earlier is not None and earlier[0].lower() != header.lower() and earlier[1] != parsed:
            raise ParameterValueError(
                f"header {earlier[0]!r} and header {header!r} give "
                f"{name} different values in one call"
            )
        texts[name] = (header, parsed)
    return {name: parsed for name, (_, parsed) in texts.items()}, frozenset(removed)

"""The one codec: the text form of parameter values, shared by headers, ``PAYI_*`` variables
and baggage, and percent-encoding for headers. (Header names, and which dialect writes a value
how: ``_model.dialects``.)

One parser and one formatter per kind (docs/parameters.md): strings as-is, the version as a
decimal int, a switch as ``true`` / ``false`` (read case-insensitively, with 1/0, yes/no,
on/off), lists comma-separated (split on commas and trimmed when parsed), dicts as a compact,
ASCII-escaped JSON object. An empty text means "cleared" for every kind but the int and the
switch, for which it means "not given".
"""

from __future__ import annotations

import json
import re
from typing import Dict, Optional
from urllib.parse import quote

from payi_otel._model.parameters import (
    PARAMETERS,
    Kind,
    ParameterValueError,
    Value,
    validate_value,
)

__all__ = [
    "FALSE_TEXTS",
    "REMOVED",
    "TRUE_TEXTS",
    "format_value",
    "means_not_given",
    "parse_value",
    "to_header_value",
]

#: The texts of a switch (a ``bool`` parameter, and every ``PAYI_*`` on/off variable).
TRUE_TEXTS = frozenset({"true", "1", "yes", "on"})
FALSE_TEXTS = frozenset({"false", "0", "no", "off"})

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
    if kind is Kind.BOOL:
        lowered = text.strip().lower()
        if lowered in TRUE_TEXTS or lowered in FALSE_TEXTS:
            return lowered in TRUE_TEXTS
        raise ParameterValueError(f"{what} must be 'true' or 'false', got {text[:40]!r}")
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
    if kind is Kind.BOOL:
        return "true" if value else "false"
    return str(value)


def to_header_value(text: str) -> str:
    """``text`` if it can go in an HTTP header as-is, else percent-encoded (RFC 3986, UTF-8).

    As-is means printable ASCII with no space at either end; anything else (non-ASCII,
    control characters such as TAB or ESC, leading or trailing spaces) is encoded, spaces
    and ``%`` included, so the whole value decodes back with one ``unquote``.
    """
    if _PLAIN.match(text):
        return text
    return quote(text, safe=_SAFE, encoding="utf-8")


# --- per-call header values ------------------------------------------------------------------


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
    for the int and the switch, which have no empty state (seeds' table), so the level below
    stays in force. The one rule for an empty ``PAYI_USE_CASE_VERSION`` and an empty version
    header (docs/parameters.md)."""
    kind = PARAMETERS[name]
    return (kind is Kind.INT or kind is Kind.BOOL) and not text.strip()

"""Per-call ``x-payi-*`` headers: parse them into a level and resolve it over the context.

This is the highest level of the precedence (contract section 3). Parsing raises the
caller's ``TypeError``/``ValueError`` naming the header, before anything is sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Dict, Tuple

from payi_otel.codec import parse_value
from payi_otel.effective import HEADER_NAMES, Effective
from payi_otel.merge import new_level
from payi_otel.parameters import ParameterTypeError, Params

__all__ = ["PARAMETER_BY_HEADER", "is_payi_header", "parse_headers", "resolve_call"]

PARAMETER_BY_HEADER: Mapping[str, str] = {header: name for name, header in HEADER_NAMES.items()}
_PREFIX = "x-payi-"


def is_payi_header(name: object) -> bool:
    return isinstance(name, str) and name.lower().startswith(_PREFIX)


def parse_headers(sources: Iterable[Mapping[str, object]], *, skip: Tuple[type, ...]) -> Params:
    """The parameters given by ``x-payi-*`` headers; later sources win (case-insensitive).

    ``None`` and instances of ``skip`` (the SDK's ``Omit``/``NotGiven``) count as absent.
    Unknown ``x-payi-*`` names are left alone (sent as the caller wrote them).
    """
    texts: Dict[str, Tuple[str, object]] = {}
    for source in sources:
        for header, value in source.items():
            if not is_payi_header(header):
                continue
            lowered = header.lower()
            if lowered not in PARAMETER_BY_HEADER:
                continue
            if value is None or isinstance(value, skip):
                # Unset: the scopes' value (seed: None "uses decorator/context value").
                texts.pop(lowered, None)
                continue
            texts[lowered] = (header, value)
    params: Params = {}
    for lowered, (header, value) in texts.items():
        if not isinstance(value, str):
            raise ParameterTypeError(f"header {header!r} must be a str, not {type(value).__name__}")
        name = PARAMETER_BY_HEADER[lowered]
        params[name] = parse_value(name, value, what=f"header {header!r}")
    return params


def resolve_call(effective: Effective, call_params: Params) -> Effective:
    """The parameters of one call: its header level merged over the effective context.

    A new id for a name given without one is generated here, once per logical call, so
    retries resend the same id.
    """
    if not call_params:
        return effective
    return effective.child(new_level(call_params))

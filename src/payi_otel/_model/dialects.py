"""The wire dialects of the attribution headers (contract section 3a, docs/parameters.md).

``x-payi`` (the default) and ``payi-proxy`` (Pay-i's own SDK in proxy mode: its ``xProxy-*``
names, properties as base64 of the JSON, and no header for the parameters it has no name for).
"""

from __future__ import annotations

from typing import Mapping

from payi_otel._model.parameters import HEADER_NAMES, PAYI_HEADER_NAMES

__all__ = ["DIALECTS", "HEADER_NAMES_BY_DIALECT", "PAYI_PROXY", "X_PAYI"]

X_PAYI = "x-payi"
PAYI_PROXY = "payi-proxy"
DIALECTS = (X_PAYI, PAYI_PROXY)
HEADER_NAMES_BY_DIALECT: Mapping[str, Mapping[str, str]] = {
    X_PAYI: HEADER_NAMES,
    PAYI_PROXY: PAYI_HEADER_NAMES,
}

"""Cassette helpers: ``before_record_response`` callables that scrub response headers.

Loaded as a pytest plugin by the upstream conftests; the cassettes are plain vcrpy YAML, which
vcrpy's own serializer reads, so no serializer or matcher is registered here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

Response = dict[str, Any]


def scrub_response_headers(names: Iterable[str]) -> Callable[[Response], Response]:
    """Drop the named response headers (case-insensitive)."""
    drop = {name.lower() for name in names}

    def scrub(response: Response) -> Response:
        headers = response.get("headers")
        if isinstance(headers, dict):
            for key in [k for k in headers if k.lower() in drop]:
                del headers[key]
        return response

    return scrub


def scrub_response_headers_overwrite(values: Mapping[str, str]) -> Callable[[Response], Response]:
    """Set the named response headers to fixed values (keeping a recorded key's spelling)."""

    def scrub(response: Response) -> Response:
        headers = response.get("headers")
        if isinstance(headers, dict):
            spelled = {key.lower(): key for key in headers}
            for name, value in values.items():
                headers[spelled.get(name.lower(), name)] = value
        return response

    return scrub

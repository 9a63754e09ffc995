"""Cassette helpers, loaded as a pytest plugin by the upstream conftests (over pytest-vcr).

* ``@pytest.mark.cassette("<name>")`` makes a test replay the cassette ``<name>.yaml`` (several
  tests share one recording) instead of the one named after the test.
* ``before_record_response`` callables that scrub response headers.

The cassettes are plain vcrpy YAML, which vcrpy's own serializer reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pytest

Response = dict[str, Any]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "cassette(name): replay the cassette <name>.yaml instead of the test's own"
    )


@pytest.fixture
def vcr_cassette_name(request: pytest.FixtureRequest) -> str:
    """pytest-vcr's cassette name (the test's), unless a ``cassette`` mark names another."""
    marker = request.node.get_closest_marker("cassette")
    if marker is not None and marker.args:
        return str(marker.args[0])
    if request.cls is not None:
        return f"{request.cls.__name__}.{request.node.name}"
    return str(request.node.name)


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

"""Where attribution headers may go, and in which dialect (contract section 3a): the policy.

Attribution headers are personal and business data: they are sent only where they are read.
:class:`WirePolicy` says, for a request URL, whether the resolved headers are stamped on it at
all (the values go on the spans either way), and in which dialect. The default sends them
everywhere but to the model providers' public API hosts (:data:`PROVIDER_HOSTS`); an
allow-list (``header_hosts=`` / ``PAYI_HEADER_HOSTS``) replaces that default with exactly the
hosts it names. Reading the options and variables is ``_settings``' job; holding the policy on
every redirect hop is ``_destinations``'.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional, Tuple
from urllib.parse import urlsplit

from payi_otel._model.dialects import DIALECTS, X_PAYI
from payi_otel._model.parameters import ParameterTypeError, ParameterValueError

__all__ = ["PROVIDER_HOSTS", "WirePolicy", "dialect_named", "host_patterns"]

#: The model providers' public API hosts (shell patterns): nobody there reads Pay-i's headers.
PROVIDER_HOSTS: Tuple[str, ...] = (
    "api.openai.com",
    "*.openai.azure.com",
    "*.services.ai.azure.com",
    "*.cognitiveservices.azure.com",
    "api.anthropic.com",
    "bedrock-runtime.*.amazonaws.com",
    "*-aiplatform.googleapis.com",
    "aiplatform.googleapis.com",
    "generativelanguage.googleapis.com",
    "api.mistral.ai",
    "api.cohere.com",
    "api.cohere.ai",
    "api.groq.com",
    "api.x.ai",
    "api.deepseek.com",
    "api.together.xyz",
    "api.fireworks.ai",
)


def _matches(host: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(host, pattern) for pattern in patterns)


@dataclass(frozen=True)
class WirePolicy:
    """The dialect, and the hosts that get attribution headers: ``hosts`` None is the
    default (all but :data:`PROVIDER_HOSTS`), else exactly the hosts matching one of its
    patterns (``*`` matches every host, ``*.example.com`` every subdomain)."""

    dialect: str = X_PAYI
    hosts: Optional[Tuple[str, ...]] = None

    def sends_to(self, url: Optional[str]) -> bool:
        """Whether a request to ``url`` carries attribution headers (an unknown URL: as an
        unknown host does)."""
        host = ""
        if url:
            try:
                host = (urlsplit(url).hostname or "").lower().rstrip(".")
            except ValueError:
                host = ""
        if self.hosts is not None:
            return bool(host) and _matches(host, self.hosts)
        return not (host and _matches(host, PROVIDER_HOSTS))


def dialect_named(value: object, what: str) -> str:
    """``value`` as a dialect name (``what`` names the option or variable it came from)."""
    if not isinstance(value, str):
        raise ParameterTypeError(f"{what} must be a str, not {type(value).__name__}")
    dialect = value.strip().lower()
    if dialect not in DIALECTS:
        raise ParameterValueError(f"{what} must be one of {', '.join(DIALECTS)}, got {dialect!r}")
    return dialect


def host_patterns(value: object, what: str) -> Tuple[str, ...]:
    """``value`` as host patterns, lowercased, without a trailing dot."""
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ParameterTypeError(f"{what} must be a list of host names, not {type(value).__name__}")
    hosts = []
    for item in value:
        if not isinstance(item, str):
            raise ParameterTypeError(f"{what} elements must be str, not {type(item).__name__}")
        host = item.strip().lower().rstrip(".")
        if not host or "/" in host or " " in host:
            raise ParameterValueError(f"{what} elements must be host names, got {item!r}")
        hosts.append(host)
    return tuple(hosts)

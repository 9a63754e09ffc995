"""Where attribution headers may go, and in which dialect (contract section 3a): the policy.

Attribution headers are personal and business data: they are sent only where they are read.
:class:`WirePolicy` says, for a request URL, whether the resolved headers are stamped on it at
all (the values go on the spans either way), and in which dialect. The default sends them
everywhere but to the model providers' public API hosts, which only the providers know (each
declares its own; the provider registry hands them down: :func:`refuse_by_default`); an
allow-list (``header_hosts=`` / ``PAYI_HEADER_HOSTS``) replaces that default with exactly the
hosts it names. Reading the options and variables is ``_settings``' job; holding the policy on
every redirect hop is ``_destinations``'.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable, Optional, Tuple
from urllib.parse import urlsplit

from payi_otel._model.dialects import X_PAYI, Dialect, dialect_named, dialect_names
from payi_otel._model.parameters import ParameterTypeError, ParameterValueError

__all__ = ["WirePolicy", "dialect_for", "host_patterns", "refuse_by_default", "refused_by_default"]


def _no_hosts() -> Tuple[str, ...]:
    return ()


#: Where a policy without an allow-list finds the hosts it refuses, unless given its own: the
#: model providers' public API hosts, from the layer above (``_providers._registry``).
_provider_hosts: Callable[[], Tuple[str, ...]] = _no_hosts


def refuse_by_default(hosts: Callable[[], Tuple[str, ...]]) -> None:
    """Set where the default policy finds the hosts it refuses (shell patterns; read at
    each decision, so a provider registered later counts)."""
    global _provider_hosts
    _provider_hosts = hosts


def refused_by_default() -> Tuple[str, ...]:
    """The hosts a policy without an allow-list (nor its own ``refused``) refuses now: the
    registered providers' public API hosts (a new tuple when the registry changes)."""
    return _provider_hosts()


def _matches(host: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(host, pattern) for pattern in patterns)


@dataclass(frozen=True)
class WirePolicy:
    """The dialect (a registered ``_model.dialects.Dialect``), and the hosts that get
    attribution headers: ``hosts`` None is the default (all but the ``refused`` ones, by
    default the model providers' public API hosts: :func:`refuse_by_default`), else exactly
    the hosts matching one of its patterns (``*`` matches every host, ``*.example.com`` every
    subdomain)."""

    dialect: Dialect = X_PAYI
    hosts: Optional[Tuple[str, ...]] = None
    refused: Optional[Tuple[str, ...]] = None

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
        refused = self.refused if self.refused is not None else refused_by_default()
        return not (host and _matches(host, refused))


def dialect_for(value: object, what: str) -> Dialect:
    """The registered dialect ``value`` names (``what`` names the option or variable it came
    from)."""
    if not isinstance(value, str):
        raise ParameterTypeError(f"{what} must be a str, not {type(value).__name__}")
    name = value.strip().lower()
    chosen = dialect_named(name)
    if chosen is None:
        names = ", ".join(dialect_names())
        raise ParameterValueError(f"{what} must be one of {names}, got {name!r}")
    return chosen


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

"""The provider registry: each provider's name and a lazy loader of its class (as contrib
botocore's ``extensions/__init__.py``). Adding a provider is its module plus one line in
:data:`PROVIDERS`; what the rest of payi_otel knows of providers is read from here.

A provider's module is imported the first time :func:`providers` is asked (not when
payi_otel is), and its class made once. What other modules derive from the providers' facts
(``_genai``'s families and GenAI scopes, ``_cost``'s price ids, ``_ingest``'s categories,
the wire policy's refused hosts) is computed by :func:`derived` functions, once per state of
the registry: a provider registered later (a test's ``monkeypatch.setitem(PROVIDERS, ...)``)
is seen by all of them.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Callable, Dict, Tuple, Type, TypeVar
from urllib.parse import urlsplit

from payi_otel._log import internal_error
from payi_otel._model import wire_policy
from payi_otel._providers._base import CallRecord, Provider

__all__ = ["PROVIDERS", "Loader", "derived", "is_generation", "providers", "public_hosts"]

#: Returns a provider's class, importing its module when first called.
Loader = Callable[[], Type[Provider]]

T = TypeVar("T")


def _lazy_load(module: str, cls: str) -> Loader:
    def loader() -> Type[Provider]:
        provider: Type[Provider] = getattr(importlib.import_module(module, __package__), cls)
        return provider

    return loader


class Registry(MutableMapping[str, Loader]):
    """Provider name -> loader; every change bumps :attr:`version` (what :func:`derived`
    recomputes on)."""

    def __init__(self, loaders: Mapping[str, Loader]) -> None:
        self._loaders: Dict[str, Loader] = dict(loaders)
        self._lock = threading.Lock()
        self.version = 0

    def __getitem__(self, name: str) -> Loader:
        return self._loaders[name]

    def __setitem__(self, name: str, loader: Loader) -> None:
        with self._lock:
            self._loaders[name] = loader
            self.version += 1

    def __delitem__(self, name: str) -> None:
        with self._lock:
            del self._loaders[name]
            self.version += 1

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._loaders))

    def __len__(self) -> int:
        return len(self._loaders)


PROVIDERS = Registry(
    {
        "openai": _lazy_load(".openai", "OpenAIProvider"),
        "anthropic": _lazy_load(".anthropic", "AnthropicProvider"),
        "botocore": _lazy_load(".bedrock", "BedrockProvider"),  # issue 18: AWS Bedrock
        "aiobotocore": _lazy_load(".aiobotocore", "AioBedrockProvider"),  # Bedrock, async
        "google.genai": _lazy_load(".google_genai", "GoogleGenAIProvider"),  # issue 18: Gemini
    }
)

# One instance per (name, loader), kept while that loader is registered under that name.
_instances: Dict[str, Tuple[Loader, Provider]] = {}
_instances_lock = threading.Lock()


def _load() -> Tuple[Provider, ...]:
    loaded = []
    with _instances_lock:
        for name in PROVIDERS:
            loader = PROVIDERS.get(name)
            if loader is None:
                continue
            known = _instances.get(name)
            if known is None or known[0] is not loader:
                try:
                    known = (loader, loader()())
                except Exception:
                    internal_error(f"provider:{name}", f"the provider {name!r} does not load")
                    continue
                _instances[name] = known
            loaded.append(known[1])
        for name in set(_instances) - set(PROVIDERS):
            del _instances[name]
    return tuple(loaded)


def derived(build: Callable[[], T]) -> Callable[[], T]:
    """``build`` (which reads :func:`providers`) computed once per state of the registry."""
    state: Tuple[int, T] | None = None

    def get() -> T:
        nonlocal state
        known = state  # one read: a version and the value built for it
        version = PROVIDERS.version
        if known is None or known[0] != version:
            # Not locked: two threads may both build; each result is the same.
            known = state = (version, build())
        return known[1]

    return get


#: Every registered provider, in registration order (their modules imported at first use).
providers: Callable[[], Tuple[Provider, ...]] = derived(_load)


@derived
def public_hosts() -> Tuple[str, ...]:
    """Every registered provider's services' public API hosts (shell patterns)."""
    return tuple(dict.fromkeys(host for p in providers() for s in p.services for host in s.hosts))


# The wire policy (the model wing: it names no provider) refuses these hosts by default.
wire_policy.refuse_by_default(public_hosts)


@derived
def _modelless() -> Dict[str, Tuple[str, ...]]:
    return {p.name: p.modelless_generations for p in providers() if p.modelless_generations}


def is_generation(record: CallRecord) -> bool:
    """Whether a completed call generated what it reports (what is priced, summed and sent to
    Pay-i): it names a model, or it is an API call that generates without naming one
    (``Provider.modelless_generations``). Any other call naming none - ``responses.retrieve``,
    ``models.list``, files - reports the usage of a generation already counted, or none."""
    request = record.request
    if request is not None and not request.billed:
        return False  # token counting, moderation, jobs, ...: nothing generated is billed here
    if record.request_model:
        return True
    endings = _modelless().get(record.provider)
    url = request.url if endings and request is not None else None
    if not url:
        return False
    path = urlsplit(url).path.rstrip("/")
    return any(path.endswith(ending) for ending in endings or ())

"""The provider seam: what the generic request hook needs from one SDK family.

A :class:`Provider` says where its SDK sends every API call (the methods to wrap), how to read
the caller's headers and the model from a call, how to send the call with other headers, and
how to read token usage from what the call returned (a response, or the items of a stream).
The core (``_core``) does the rest, the same for every SDK: resolve, stamp, attribute, run the
call in its context, observe the response. docs/architecture.md shows how a provider plugs in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Dict, Optional, Protocol, Tuple

from opentelemetry.trace import Span

from payi_otel._model.effective import Effective

__all__ = ["Call", "CallRecord", "PatchPoint", "Provider", "ResponseObserver", "Usage"]

Args = Tuple[Any, ...]
Kwargs = Dict[str, Any]


@dataclass(frozen=True)
class PatchPoint:
    """A method to wrap: ``module``'s ``attribute`` (``"Class.method"``)."""

    module: str
    attribute: str
    is_async: bool


@dataclass(frozen=True)
class Call:
    """One outgoing call as the provider reads it."""

    #: The caller's attribution headers, one mapping per source of the per-call level,
    #: lowest first (client defaults, then the call's own): a value None is not given, and
    #: ``_codec.REMOVED`` removes what a lower source gave (the SDK's ``Omit``).
    headers: Tuple[Mapping[str, object], ...]
    #: The model asked for, when the request names one.
    model: Optional[str] = None
    #: Where the call goes (absolute URL), when known: decides whether attribution headers
    #: are sent at all (``_destinations``).
    url: Optional[str] = None


@dataclass(frozen=True)
class Usage:
    """Token usage of one call (None: the response did not say).

    In a :class:`CallRecord`, ``input_tokens`` counts every input token, cache reads and
    writes included, and ``output_tokens`` every output token, reasoning included (as the
    GenAI semantic conventions count ``gen_ai.usage.input_tokens`` / ``output_tokens``);
    a provider's own counts are brought to that by :meth:`Provider.usage_totals`.
    """

    input_tokens: Optional[int] = None
    output_tokens: Optional[int] = None
    cache_read_tokens: Optional[int] = None
    cache_write_tokens: Optional[int] = None
    reasoning_tokens: Optional[int] = None

    def updated(self, other: Usage) -> Usage:
        """These counts with ``other``'s known ones over them (a stream reports in parts)."""
        return Usage(
            **{
                name: getattr(other, name) if getattr(other, name) is not None else value
                for name, value in self.__dict__.items()
            }
        )


@dataclass(frozen=True)
class CallRecord:
    """What the response side knows of a call when it completes."""

    provider: str
    #: The resolved parameters the call was sent with (its headers, its span attributes).
    call: Effective
    request_model: Optional[str]
    response_model: Optional[str]
    usage: Optional[Usage]
    #: The span current when the call was sent (the GenAI span, when one is on).
    span: Span
    duration_s: float
    streamed: bool
    error: Optional[BaseException] = None


class ResponseObserver(Protocol):
    """Called once per completed call (for a stream: when it is exhausted or closed)."""

    def __call__(self, record: CallRecord) -> None: ...


class Provider(Protocol):
    """One SDK family behind the seam."""

    #: The SDK's import name, also the GenAI provider name (``openai``, ``anthropic``).
    name: str

    def patch_points(self) -> Sequence[PatchPoint]:
        """The methods every API call of the SDK goes through, once per logical call.
        Raises ImportError when the SDK is not installed."""
        ...

    def read(self, instance: Any, args: Args, kwargs: Kwargs) -> Call:
        """The caller's headers, the model and the URL of the call about to be sent."""
        ...

    def stamp(
        self, instance: Any, args: Args, kwargs: Kwargs, headers: Mapping[str, str]
    ) -> Tuple[Args, Kwargs]:
        """The arguments that send the call with ``headers`` as its only attribution headers
        (the caller's ``x-payi-*`` / ``xProxy-*`` ones, in any case and either spelling,
        replaced; ``headers`` may be empty), everything else unchanged; and no attribution
        header follows a redirect to another origin."""
        ...

    def usage(self, item: object) -> Optional[Usage]:
        """Token usage reported by a response or by one item of a stream, if any."""
        ...

    def usage_totals(self, usage: Usage) -> Usage:
        """``usage`` (merged over a whole call) with ``input_tokens`` counting cache reads
        and writes too, for an API that reports them apart."""
        ...

    def ask_usage(self, args: Args, kwargs: Kwargs) -> Optional[Tuple[Args, Kwargs]]:
        """The arguments that make a stream report its usage, for an API that reports it
        only when asked and a caller who did not ask; None: send the call as it is."""
        ...

    def is_usage_only(self, item: object) -> bool:
        """Whether a stream item only carries the usage :meth:`ask_usage` asked for (the
        caller, who did not ask, never sees it)."""
        ...

    def response_model(self, item: object) -> Optional[str]:
        """The model a response or stream item reports, if any."""
        ...

    def is_stream(self, result: object) -> bool:
        """Whether ``result`` is a stream whose items arrive later."""
        ...

    def is_raw_response(self, result: object) -> bool:
        """Whether ``result`` is the SDK's raw response (``with_raw_response``,
        ``with_streaming_response``), whose ``parse()`` gives the response or stream."""
        ...

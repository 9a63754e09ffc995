"""The provider seam: :class:`Provider`, one SDK family's facts and hooks.

A provider owns everything payi_otel knows about its SDK: its facts (the import name, the
official GenAI instrumentations, their scopes, the model services its clients call: their
Pay-i categories, genai-prices ids and public API hosts) and its hooks (where every API call
goes through, how to read the caller's headers and the model from a call, how to send it with
other headers, how to read usage from what it returned). Every hook here is a documented
no-op (as contrib botocore's ``_AwsSdkExtension``), so a provider overrides only what its SDK
needs. The core (``_core``) does the rest, the same for every SDK: resolve, stamp, attribute,
run the call in its context, observe the response; ``_genai``, ``_cost``, ``_ingest`` and the
wire policy read the facts through the registry (``_registry``). docs/architecture.md,
"The provider seam", shows how a provider plugs in.
"""

from __future__ import annotations

import dataclasses
import enum
import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Dict, List, Optional, Protocol, Tuple, Type, TypeVar
from urllib.parse import urlsplit

from opentelemetry.context import Context
from opentelemetry.trace import Span

from payi_otel._model.effective import Effective

__all__ = [
    "USAGE_PARTS",
    "Call",
    "CallRecord",
    "Instrumentation",
    "PatchPoint",
    "Provider",
    "ResponseObserver",
    "Role",
    "Service",
    "Usage",
]

Args = Tuple[Any, ...]
Kwargs = Dict[str, Any]

_T = TypeVar("_T")
_FACTORY = object()


def _stored_at_once(cls: Type[_T]) -> Type[_T]:
    """A frozen dataclass made with an ``__init__`` that stores its fields in the instance's
    ``__dict__`` in one update, where the generated one calls ``object.__setattr__`` once per
    field: the same parameters, defaults and instance, in a third of the time (issue 20: the
    request hook makes a few per call). A class this does not cover (``__post_init__``,
    keyword-only or non-init fields, slots) keeps its generated ``__init__``."""
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    if (
        hasattr(cls, "__post_init__")
        or "__slots__" in cls.__dict__
        or any(not f.init or getattr(f, "kw_only", False) is True for f in fields)
    ):
        return cls
    names: Dict[str, Any] = {"_FACTORY": _FACTORY}
    params, lines = [], []
    for f in fields:
        if f.default is not dataclasses.MISSING:
            names[f"_d_{f.name}"] = f.default
            params.append(f"{f.name}=_d_{f.name}")
        elif f.default_factory is not dataclasses.MISSING:
            names[f"_f_{f.name}"] = f.default_factory
            params.append(f"{f.name}=_FACTORY")
            lines.append(f"    if {f.name} is _FACTORY: {f.name} = _f_{f.name}()")
        else:
            params.append(f.name)
    stored = ", ".join(f"{f.name!r}: {f.name}" for f in fields)
    lines.append(f"    self.__dict__.update({{{stored}}})")
    exec(f"def __init__(self, {', '.join(params)}):\n" + "\n".join(lines), names)
    init = names["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init  # type: ignore[method-assign]
    return cls


# --- facts -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instrumentation:
    """One GenAI instrumentation package: its distribution, module and instrumentor class."""

    distribution: str
    module: str
    instrumentor: str
    min_python: Tuple[int, int] = (3, 10)
    #: Major releases of its SDK beyond the range it declares that it was tested with: there
    #: it is turned on past its version check, with one WARNING (``_genai``).
    forced_majors: Tuple[int, ...] = ()
    #: Modules of other SDKs its instrumentor imports to patch them when they are installed
    #: (genai-bedrock: aiobotocore's client): one being imported when the SDK becomes ready
    #: (aiobotocore's client imports botocore's) is patched when its import ends (``_genai``).
    patches: Tuple[str, ...] = ()
    #: Distributions it declares but never imports, not installed: it is turned on without
    #: them (genai-bedrock declares boto3 and patches botocore and aiobotocore: an
    #: aiobotocore user has no boto3).
    works_without: Tuple[str, ...] = ()


@dataclass(frozen=True)
class Service:
    """A model service an SDK's clients call (OpenAI's API, Azure OpenAI, Bedrock, ...): how
    its calls are named in GenAI spans, billed by Pay-i and priced by genai-prices, and where
    its public API is."""

    #: Pay-i's category of its calls (``PayiCategories``): ``system.openai``; None: Pay-i
    #: has none (an API known only by its hosts).
    category: Optional[str] = None
    #: genai-prices' provider id: ``openai``, ``azure``, ``aws``; None: none.
    price_id: Optional[str] = None
    #: The ``gen_ai.provider.name`` / ``gen_ai.system`` values its GenAI spans carry.
    genai_names: Tuple[str, ...] = ()
    #: Other names of the service in ``price_as_category`` (``system.`` left out), priced
    #: as ``price_id``: the category's own name always counts.
    category_aliases: Tuple[str, ...] = ()
    #: Its public API hosts (shell patterns): nobody there reads Pay-i's headers, so the
    #: default wire policy sends them none.
    hosts: Tuple[str, ...] = ()
    #: ``server.address`` patterns that make a span named with the SDK's own provider name a
    #: call of this service (genai-openai names an Azure OpenAI call ``openai``).
    addresses: Tuple[str, ...] = ()
    #: The names of the SDK's client classes that call this service (``AzureOpenAI``): a call
    #: of such a client, or of a subclass, is a call of this service
    #: (:meth:`Provider.service_of`).
    clients: Tuple[str, ...] = ()
    #: Pay-i's resource name of a call of this service (or of another service filed under
    #: its category), from its span's request and response models, where Pay-i's SDK does
    #: not name it by the request model as given (``google.`` + the response's model version
    #: for Gemini, ``anthropic.`` + the model for Claude on Vertex AI); None from it, or no
    #: function: the request model (``_ingest``).
    ingest_resource: Optional[Callable[[Optional[str], Optional[str]], Optional[str]]] = None
    #: genai-prices knows its calls by the model as sent (Bedrock's model ids and inference
    #: profiles: ``global.`` ones have their own price) rather than the model its replies
    #: name: priced by the request's model first.
    prices_as_sent: bool = False
    #: Its calls name a deployment, not a model (Azure OpenAI): one that cannot be priced
    #: logs a WARNING to add a model mapping.
    deployments: bool = False


# --- where a call is read and where it is stamped --------------------------------------------


class Role(enum.Enum):
    """What the core does at a patch point."""

    #: Read the call, resolve its parameters, run it in their context, observe its response;
    #: and stamp it here too, unless the provider has a :attr:`SEND` point.
    ENTRY = "entry"
    #: Stamp the request of the call this provider's entry resolved, found in the context
    #: (an SDK that builds its HTTP request below its per-call method: botocore's
    #: ``BaseClient._make_api_call`` is the entry, ``Endpoint.prepare_request`` the send).
    #: Reached outside an entry, the request goes out untouched.
    SEND = "send"
    #: Runs the caller's own code inside a call (google-genai's Automatic Function Calling
    #: runs the caller's Python tools inside ``generate_content``): run in the context the
    #: call was made from, not the call's, so what the tools send is not the call - their
    #: own calls are attributed as where the call was made, their other requests go out as
    #: written. Reached outside an entry, it runs as it is.
    TOOLS = "tools"


@dataclass(frozen=True)
class PatchPoint:
    """A method to wrap: ``module``'s ``attribute`` (``"Class.method"``, or a function's
    name), in a :class:`Role`."""

    module: str
    attribute: str
    is_async: bool
    role: Role = Role.ENTRY
    #: Wrap it beneath the ``wrapt`` wrappers already on it, not on top: for an entry point
    #: that an official GenAI instrumentation wraps too (botocore's
    #: ``BaseClient._make_api_call``, which genai-bedrock wraps; google-genai's
    #: ``Models.generate_content``), so that whichever was instrumented first, the GenAI span
    #: is current when the call is read and still open when its response is observed (its
    #: stream wrapper outside the core's).
    beneath: bool = False
    #: A method some supported releases of the SDK do not have: skipped there, silently.
    optional: bool = False


@_stored_at_once
@dataclass(frozen=True)
class Call:
    """One outgoing call as the provider reads it."""

    #: The caller's attribution headers, one mapping per source of the per-call level,
    #: lowest first (client defaults, then the call's own): a value None is not given, and
    #: ``_codec.REMOVED`` removes what a lower source gave (the SDK's ``Omit``).
    headers: Tuple[Mapping[str, object], ...] = ()
    #: The model asked for, when the request names one.
    model: Optional[str] = None
    #: Where the call goes (absolute URL), when known: decides whether attribution headers
    #: are sent at all (the wire policy). A :attr:`Role.SEND` point may say it later
    #: (:meth:`Provider.send_url`).
    url: Optional[str] = None
    #: The caller's other headers for this call (not attribution headers), for an SDK with no
    #: per-call headers parameter of its own (botocore: payi_otel's ``extra_headers=``, taken
    #: out of the call by :meth:`Provider.prepare`): added, as they are, where the request is
    #: stamped at a :attr:`Role.SEND` point, wherever it goes (they are the caller's).
    other_headers: Mapping[str, str] = field(default_factory=dict)
    #: False: an API call that may name a model but whose cost is not this call's (token
    #: counting, moderation, fine-tuning and batch jobs, image and video prediction): stamped
    #: as every call, never priced or sent to Pay-i (``_registry.is_generation``).
    billed: bool = True


# --- the response side -----------------------------------------------------------------------


@_stored_at_once
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
    # Parts of the counts above that a price may rate apart (:data:`USAGE_PARTS`), each
    # named as genai-prices names it and counted in the count its name says: audio, image
    # and video input, output and cache reads; cache writes kept for an hour (Anthropic's
    # ``ttl: "1h"``, at a higher rate than the 5-minute default).
    cache_write_1h_tokens: Optional[int] = None
    input_audio_tokens: Optional[int] = None
    output_audio_tokens: Optional[int] = None
    cache_audio_read_tokens: Optional[int] = None
    input_image_tokens: Optional[int] = None
    output_image_tokens: Optional[int] = None
    cache_image_read_tokens: Optional[int] = None
    input_video_tokens: Optional[int] = None
    output_video_tokens: Optional[int] = None
    cache_video_read_tokens: Optional[int] = None
    #: Tokens of further iterations billed with the call but left out of its counts above
    #: (Anthropic's compaction iterations: ``usage.iterations``): input (uncached), output,
    #: cache reads, cache writes; the provider's :meth:`Provider.usage_totals` adds them.
    iterations: Optional[Tuple[int, int, int, int]] = None

    def updated(self, other: Usage) -> Usage:
        """These counts with ``other``'s known ones over them (a stream reports in parts)."""
        merged = self.__dict__.copy()
        for name, value in other.__dict__.items():
            if value is not None:
                merged[name] = value
        found = object.__new__(Usage)
        found.__dict__.update(merged)  # (as ``_stored_at_once`` stores them)
        return found


#: The :class:`Usage` fields that are parts of its four counts (input, output, cache reads,
#: cache writes) a price may rate apart: genai-prices' usage keys of the same names
#: (``_prices.Tokens.parts``; README "Cost and usage").
USAGE_PARTS: Tuple[str, ...] = (
    "cache_write_1h_tokens",
    "input_audio_tokens",
    "output_audio_tokens",
    "cache_audio_read_tokens",
    "input_image_tokens",
    "output_image_tokens",
    "cache_image_read_tokens",
    "input_video_tokens",
    "output_video_tokens",
    "cache_video_read_tokens",
)


@_stored_at_once
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
    #: The service the call went to (:meth:`Provider.service_of`); None: the provider's own.
    service: Optional[Service] = None
    # --- issue 19: what Pay-i's ingest record and answer need -----------------------------
    #: The call as the provider read it (its URL, model, the caller's headers).
    request: Optional[Call] = None
    #: What the SDK returned (a stream: its last item), for the provider's response id and
    #: Pay-i's answer on a proxied call (``xproxy_result``).
    response: Any = None
    #: When the call started (seconds since the epoch).
    started_at: Optional[float] = None
    #: Seconds from the start to a stream's first item.
    first_item_s: Optional[float] = None
    #: The arguments the entry point was called with (the request as sent, for Pay-i's
    #: prompt logging, off by default).
    arguments: Optional[Tuple[Args, Kwargs]] = None
    #: The context the call was sent in (issue 20: the scopes open around it, for their
    #: totals); None when not known.
    context: Optional[Context] = None


class ResponseObserver(Protocol):
    """Called once per completed call (for a stream: when it is exhausted or closed)."""

    def __call__(self, record: CallRecord) -> None: ...


# --- the provider ----------------------------------------------------------------------------


class Provider:
    """One SDK family behind the seam: its facts (class attributes) and its hooks.

    Every hook is a no-op until a subclass overrides it: a provider whose SDK reports no usage
    leaves the response hooks alone, one that cannot carry headers leaves :meth:`stamp`. One
    instance per registered provider (``_registry.providers()``) is made and kept; a hook may
    keep what :meth:`patch_points` found of the SDK (its types) on it.
    """

    #: The SDK's import name, also its GenAI provider name (``openai``, ``anthropic``).
    name: ClassVar[str] = ""
    #: What its calls are called in messages (default: :attr:`name`), e.g. "AWS Bedrock
    #: (botocore)": a WARNING about botocore must not read as if every AWS call were meant.
    label: ClassVar[str] = ""
    #: Its official GenAI instrumentations, the preferred first (``_genai`` turns on one).
    instrumentations: ClassVar[Tuple[Instrumentation, ...]] = ()
    #: A module of the SDK that starts GenAI spans itself (then no instrumentation is needed).
    native_spans_module: ClassVar[Optional[str]] = None
    #: The module of the SDK whose import makes it ready to instrument (default: :attr:`name`):
    #: importing it imports every module its patch points and GenAI instrumentations need.
    #: Its hooks run while the importing thread holds that module's import lock, so they
    #: must import nothing of the SDK that another thread may be importing then (botocore's
    #: package imports none of its client: its ``botocore.client``).
    ready_module: ClassVar[str] = ""

    @property
    def ready(self) -> str:
        """The module whose import makes the SDK ready (:attr:`ready_module`, else its name)."""
        return self.ready_module or self.name

    #: The model services its clients call, its own first (its category, price id, hosts).
    services: ClassVar[Tuple[Service, ...]] = ()
    #: URL path endings of API calls that generate without naming a model in the request
    #: (OpenAI's Responses API with a stored prompt, ``prompt={"id": ...}``): such a call is
    #: priced and ingested by its reply's model (``_registry.is_generation``).
    modelless_generations: ClassVar[Tuple[str, ...]] = ()
    #: Instrumentation scopes (prefixes) whose GenAI spans count ``gen_ai.usage.input_tokens``
    #: without cache reads and writes, as the provider's API does (genai-bedrock's); Pay-i
    #: ingest (``_ingest``) then does not take the cache counts out of it again.
    uncached_input_scopes: ClassVar[Tuple[str, ...]] = ()

    #: How Pay-i's SDK reports this provider's cache writes in an ingest record, which
    #: payi_otel's per-call records follow (``_ingest``): as ``text_cache_write`` (else left
    #: in ``text``: Pay-i's OpenAI instrumentor has no cache-write unit), and those kept an
    #: hour apart as ``text_cache_write_1h`` (its Anthropic instrumentor's).
    ingests_cache_writes: ClassVar[bool] = True
    ingests_hour_cache_writes: ClassVar[bool] = False

    def genai_scope_prefixes(self) -> Tuple[str, ...]:
        """Instrumentation scopes whose spans are GenAI spans even when they start without
        ``gen_ai.*``. Default: its instrumentations' modules (their tracers' names)."""
        return tuple(inst.module for inst in self.instrumentations)

    # -- the request side ---------------------------------------------------------------------

    def patch_points(self) -> Sequence[PatchPoint]:
        """The methods to wrap: every API call of the SDK goes through its :attr:`Role.ENTRY`
        points once per logical call. Raises ImportError when the SDK is not installed.
        Default: none (the provider only brings facts)."""
        return ()

    def read(self, instance: Any, args: Args, kwargs: Kwargs) -> Optional[Call]:
        """At an entry point: the caller's headers, the model and the URL of the call about
        to be sent; None when it is no GenAI call of this provider (e.g. another service of
        a client layer the SDK shares), which then goes out untouched. Default: a call with no
        caller headers, model and URL unknown."""
        return Call()

    def read_planned(
        self, instance: Any, args: Args, kwargs: Kwargs, keep: object
    ) -> Optional[Call]:
        """What :meth:`read` gives, for the call a plan is made from (``keep``: what
        :meth:`plan_key` gave to keep). A provider whose plan key names something it read
        from the client (a base URL object) reads the call with that, not by reading the
        client again: another thread may have changed the client in between, and the plan
        is kept under the key for every later call. Default: :meth:`read`."""
        return self.read(instance, args, kwargs)

    def plan_key(
        self, instance: Any, args: Args, kwargs: Kwargs
    ) -> Optional[Tuple[Tuple[object, ...], object]]:
        """Issue 20, the common call's shortcut (``_providers/_core``: "planned calls"): for
        a call that names no attribution header (neither its own nor its client's defaults),
        asks nothing of :meth:`prepare` or :meth:`ask_usage` (not a stream) and goes where
        this provider knows without asking the client: a key such that every call with that
        key gives the same :meth:`read` and :meth:`service_of`, and an object to keep while
        the key is remembered (the key may name it by ``id``). None: the call takes the whole
        path. Default: None (every call does)."""
        return None

    def prepare(
        self, instance: Any, args: Args, kwargs: Kwargs, call: Effective
    ) -> Tuple[Args, Kwargs]:
        """At an entry point, once the call's parameters are resolved (``call``): the
        arguments to send it with. For what the SDK itself must not see (a per-call option
        that is payi_otel's, taken out before the SDK validates the call: botocore's
        ``extra_headers=``) and for attribution the provider's own API carries
        (``native_attribution``). Default: the arguments unchanged."""
        return args, kwargs

    def patch_more(self) -> List[Callable[[], None]]:
        """Anything else the provider changes while payi_otel is instrumented, beyond its
        patch points (e.g. another instrumentation's duplicate GenAI spans of the same calls
        switched off); called right after its patch points are wrapped. Returns the undo
        callables. Default: nothing."""
        return []

    def service_of(self, instance: Any, call: Call) -> Optional[Service]:
        """At an entry point: the service ``call`` (read by :meth:`read`) goes to, when not
        the provider's own (the first of :attr:`services`); None: its own. Default: the
        first other service with a Pay-i category naming the client's class (or a base class
        of it) in :attr:`Service.clients`, else whose :attr:`Service.hosts` or
        :attr:`Service.addresses` match the call's host (each class and host looked up
        once)."""
        services = self.services
        if len(services) < 2:
            return None
        seen: Dict[object, Optional[Service]] = self.__dict__.setdefault("_services_seen", {})
        cls = type(instance)
        found = seen.get(cls, _UNSEEN)
        if found is _UNSEEN:
            found = seen[cls] = _service_by_class(services, cls)
        url = call.url
        if found is None and url:
            found = seen.get(url, _UNSEEN)
            if found is _UNSEEN:
                if len(seen) > 1024:
                    seen.clear()
                found = seen[url] = _service_by_host(services, url)
        return found  # type: ignore[return-value]

    def send_url(self, instance: Any, args: Args, kwargs: Kwargs) -> Optional[str]:
        """At a send point: the URL the request goes to. Default: None, the entry's URL."""
        return None

    def stamp(
        self, instance: Any, args: Args, kwargs: Kwargs, headers: Mapping[str, str]
    ) -> Tuple[Args, Kwargs]:
        """The arguments that send the call with ``headers`` as its only attribution headers
        (the caller's ``x-payi-*`` / ``xProxy-*`` ones, in any case and either spelling,
        replaced; ``headers`` may be empty), everything else unchanged; and no attribution
        header follows a redirect to another origin. Runs at the send point when the
        provider has one, else at the entry. Default: the arguments unchanged (the SDK
        carries no headers: the call is attributed on its spans only)."""
        return args, kwargs

    def ask_usage(self, args: Args, kwargs: Kwargs) -> Optional[Tuple[Args, Kwargs]]:
        """The arguments that make a stream report its usage, for an API that reports it
        only when asked and a caller who did not ask; None (default): send the call as it
        is."""
        return None

    # -- the response side --------------------------------------------------------------------

    def usage(self, item: object) -> Optional[Usage]:
        """Token usage reported by a response or by one item of a stream, if any. Default:
        None (no usage: the call is reported without it, and is not priced)."""
        return None

    def usage_totals(self, usage: Usage) -> Usage:
        """``usage`` (merged over a whole call) with ``input_tokens`` counting cache reads
        and writes too, for an API that reports them apart. Default: as it is."""
        return usage

    def is_usage_only(self, item: object) -> bool:
        """Whether a stream item only carries the usage :meth:`ask_usage` asked for (the
        caller, who did not ask, never sees it). Default: False."""
        return False

    def is_last(self, item: object) -> bool:
        """Whether a stream item is its call's last word, with its final usage (a responses
        stream's ``response.completed``, ConverseStream's ``metadata``): the call is reported
        then, before the item is passed on, while the GenAI span an instrumentation ends on
        that item is still open for its usage and cost. Default: False (reported when the
        stream ends, is closed or collected)."""
        return False

    def response_model(self, item: object) -> Optional[str]:
        """The model a response or stream item reports, if any. Default: None."""
        return None

    def pending(self, item: object, error: Optional[BaseException] = None) -> Optional[str]:
        """The id of a generation that ``item`` (a response, or a stream's first or last
        item) says is still running, and whose usage a later call of the API reports
        (OpenAI's background responses): the call is held and reported once then, with that
        usage (``_background``). Asked only of a call that completed without usage
        (``error``: how a stream of it ended, if it failed: one the API itself ended is no
        longer running). Default: None."""
        return None

    def settled(self, item: object) -> Optional[str]:
        """The id of a generation that ``item`` shows finished (its usage in it), which may
        be one :meth:`pending` held. Asked only while one is held. Default: None."""
        return None

    def is_stream(self, result: object) -> bool:
        """Whether ``result`` is a stream whose items arrive later. Default: False."""
        return False

    def reply_of(self, error: BaseException) -> object:
        """The reply a call that raised ``error`` got, when the SDK raised it after the
        provider answered (openai's ``LengthFinishReasonError`` carries its completion, usage
        and all: the call was billed); None: none. Default: None."""
        return None

    def sends_when_read(self, result: object) -> bool:
        """Whether the stream ``result`` sends its requests as it is read (a generator:
        google-genai's ``generate_content_stream`` sends nothing until its first item is
        asked for, and one request per Automatic Function Calling turn). Each read then runs
        in the call's context, so the send points find the call. Default: False (the request
        was sent when the call returned)."""
        return False

    def stream_of(self, result: object) -> Optional[object]:
        """A stream nested in the response ``result`` (botocore's ConverseStream returns it
        as ``response["stream"]``), to be observed in its place (:meth:`with_stream`).
        Default: None (no nested stream)."""
        return None

    def with_stream(self, result: object, stream: object) -> object:
        """``result`` with ``stream`` (the core's observing proxy of :meth:`stream_of`) in
        the nested stream's place: what the caller gets. Default: ``result`` unchanged."""
        return result

    def is_raw_response(self, result: object) -> bool:
        """Whether ``result`` is the SDK's raw response (``with_raw_response``,
        ``with_streaming_response``), whose ``parse()`` gives the response or stream.
        Default: False."""
        return False


# --- which service a call goes to (Provider.service_of) ---------------------------------------

_UNSEEN = object()


def _service_by_class(services: Tuple[Service, ...], cls: type) -> Optional[Service]:
    names = {base.__name__ for base in cls.__mro__}
    return next((s for s in services[1:] if s.category and names.intersection(s.clients)), None)


def _service_by_host(services: Tuple[Service, ...], url: str) -> Optional[Service]:
    try:
        host = (urlsplit(url).hostname or "").rstrip(".")
    except ValueError:
        return None
    if not host:
        return None
    for service in services[1:]:
        if not service.category:
            continue  # an API known only by its hosts: its calls are the provider's own
        for pattern in (*service.hosts, *service.addresses):
            if fnmatch.fnmatchcase(host, pattern):
                return service
    return None

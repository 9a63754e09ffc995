"""Usage and cost of every GenAI call, on its span and as metrics (README: "Cost and usage").

:class:`CostObserver` is a response observer (``_providers._core.add_observer``): for each
completed call with usage it prices the tokens (``_prices``: the user's prices, else
``genai-prices``, cache-aware; as the provider / model of ``price_as_category`` /
``price_as_resource`` when the call resolved them; the genai-prices provider ids are the
registered providers' facts: ``Service.price_id``), puts the usage (GenAI semantic
conventions) and the cost (``payi_otel.cost.*``: ``payi.*`` are the headers a call sent) on
the call's GenAI span, and adds both to two counters, ``payi.genai.tokens`` and
``payi.genai.cost``, by the call's attribution (:class:`UsageMetrics`; the sums, and the
scope totals, in batches: ``_deferred``; the counters: ``_published``). A model nobody
prices gets usage without cost and one DEBUG line; a usage genai-prices refuses, usage
without cost and one WARNING. A call is priced at its start time whenever it is priced.
Without ``genai-prices`` (it needs Python >= 3.11) only the user's prices price; one WARNING
says so; usage is still recorded.
"""

from __future__ import annotations

import threading
from typing import (
    Any,
    Dict,
    Iterable,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
    cast,
)

from opentelemetry import metrics
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import Span
from opentelemetry.util.types import AttributeValue

from payi_otel import _scope_totals as scope_totals
from payi_otel._deferred import defer
from payi_otel._log import internal_error, log_once, logger
from payi_otel._model.effective import Effective
from payi_otel._model.parameters import ATTRIBUTE_NAMES
from payi_otel._model.user_prices import UserPrice
from payi_otel._prices import Linear, Price, PriceTable, Tokens, linear_region
from payi_otel._providers import (
    USAGE_PARTS,
    CallRecord,
    Service,
    Usage,
    derived,
    is_generation,
    providers,
)
from payi_otel._published import TOKENS, publish
from payi_otel._span_attributes import names as attribute_names
from payi_otel._span_attributes import write as write_attributes
from payi_otel._spans import _is_scope_span, from_genai_scope, is_call_span, is_genai_span

__all__ = [
    "COST_METRIC",
    "CURRENCY",
    "MAX_PROPERTY_VALUES",
    "MAX_SERIES",
    "OTHER",
    "TOKENS_METRIC",
    "CostObserver",
    "UsageMetrics",
]

TOKENS_METRIC = "payi.genai.tokens"
COST_METRIC = "payi.genai.cost"
#: ``genai-prices`` prices in US dollars; a user's price may name another currency.
CURRENCY = "USD"
#: Distinct values of one ``metric_properties`` key kept as its own dimension value; past
#: it, a new value is counted as :data:`OTHER`.
MAX_PROPERTY_VALUES = 100
OTHER = "_other"
#: Series (distinct attribute sets) per metric, as the OpenTelemetry SDK's default
#: cardinality limit; past it, a new one is counted under ``otel.metric.overflow=true``.
MAX_SERIES = 2000

#: Usage field -> (span attribute of the GenAI semantic conventions, ``payi_otel.token.type``).
_USAGE: Tuple[Tuple[str, str, str], ...] = (
    ("input_tokens", "gen_ai.usage.input_tokens", "input"),
    ("output_tokens", "gen_ai.usage.output_tokens", "output"),
    ("cache_read_tokens", "gen_ai.usage.cache_read.input_tokens", "cache_read"),
    ("cache_write_tokens", "gen_ai.usage.cache_creation.input_tokens", "cache_creation"),
    ("reasoning_tokens", "gen_ai.usage.reasoning.output_tokens", "reasoning"),
)
#: Parameters that are metric dimensions (their ``payi.*`` attribute names).
_DIMENSIONS = tuple(
    ATTRIBUTE_NAMES[name]
    for name in ("use_case_name", "use_case_step", "account_name", "limit_ids")
)
_USER = ATTRIBUTE_NAMES["user_id"]
_PROPERTY = ATTRIBUTE_NAMES["request_properties"]
_OVERFLOW: Tuple[object, ...] = ("otel.metric.overflow",)


class _Entry(NamedTuple):
    """What the sums need of one completed call (not its record: that holds the response)."""

    call: Effective
    provider: str
    service: Optional[Service]
    request_model: Optional[str]
    response_model: Optional[str]
    usage: Usage
    #: The innermost scope's totals in the context it was sent in (``scope_totals``).
    totals: Optional[scope_totals.ScopeTotals]
    #: Its price; :data:`_LATER`: priced when the sums get it.
    price: object
    #: When the call started (seconds since the epoch; None: not known): what a price that
    #: depends on the time of day is read at, whenever the call is priced.
    started_at: Optional[float]


_LATER = object()
#: What a call is priced and summed by: its record, or its entry in the queue.
_Priced = Union[CallRecord, _Entry]


@derived
def _price_ids() -> Mapping[str, str]:
    """Pay-i's ``price_as_category`` names a service ``system.<name>``: each registered
    service's name and aliases -> its genai-prices provider id (the first provider to name
    one wins)."""
    ids: Dict[str, str] = {}
    for provider in providers():
        for service in provider.services:
            if service.price_id is None:
                continue
            names = service.category_aliases
            if service.category:
                names = (_category_name(service.category), *names)
            for name in names:
                ids.setdefault(name, service.price_id)
    return ids


@derived
def _own_services() -> Mapping[str, Service]:
    """Each registered provider's name -> its own service (the first of its services)."""
    return {p.name: p.services[0] for p in providers() if p.services}


def _service(record: _Priced) -> Optional[Service]:
    """The service a call went to: the one its provider told (``CallRecord.service``), else
    the provider's own."""
    return record.service or _own_services().get(record.provider)


def _genai_name(record: _Priced) -> str:
    """The metrics' ``gen_ai.provider.name`` of a call: the first GenAI name of the service
    it went to (``azure.ai.openai``, ``aws.bedrock``, ``gcp.vertex_ai``); a provider's own
    service that goes by several, one per backend (google.genai's ``gemini`` /
    ``vertex_ai``), by the provider's name."""
    service = record.service
    if service is None:
        service = _own_services().get(record.provider)
        if service is not None and len(service.genai_names) > 1:
            return record.provider
    if service is None or not service.genai_names:
        return record.provider
    return service.genai_names[0]


def _category_name(category: str) -> str:
    return category[len("system.") :] if category.startswith("system.") else category


def _provider_id(category: str) -> str:
    name = _category_name(category)
    return _price_ids().get(name, name)


def _tokens(usage: Usage) -> Tokens:
    counts = usage.__dict__
    parts: Tuple[Tuple[str, int], ...] = ()
    for name in USAGE_PARTS:  # (not zero: each a rate of its own, when the model has one)
        count = counts[name]
        if count:
            parts += ((name, count),)
    # (``tuple.__new__``: a NamedTuple's own ``__new__`` is one more Python call.)
    return tuple.__new__(
        Tokens,
        (
            usage.input_tokens or 0,
            usage.output_tokens or 0,
            usage.cache_read_tokens or 0,
            usage.cache_write_tokens or 0,
            parts,
        ),
    )


class CostObserver:
    """Prices each completed call, annotates its span and records the metrics."""

    def __init__(
        self,
        meter_provider: Optional[MeterProvider] = None,
        *,
        metrics_user_id: bool = False,
        prices: Sequence[UserPrice] = (),
        metric_properties: Sequence[str] = (),
    ) -> None:
        self._prices = PriceTable(prices, _provider_id)
        self._targets: Dict[Tuple[object, ...], _Targets] = {}
        self._last_price: Tuple[Tuple[object, ...], Optional[Linear], object] = ((), None, None)
        #: ``_account``, bound once (a bound method made per call costs one allocation).
        self._accounting = self._account
        #: Whether a call was priced by this observer yet (the first is priced at once).
        self._priced_one = False
        names = (*_DIMENSIONS, _USER) if metrics_user_id else _DIMENSIONS
        self._metrics = UsageMetrics(
            meter_provider or metrics.get_meter_provider(), names, metric_properties
        )

    def __call__(self, record: CallRecord) -> None:
        try:
            usage = record.usage
            # Not a generation (responses.retrieve reports the usage of a response already
            # counted when it was created): counting it would bill the same tokens twice.
            if usage is None or not is_generation(record):
                return
            price: object = _LATER
            span = record.span
            if span.is_recording():
                by_scope = from_genai_scope(span)
                # A GenAI span, and not an agent / tool / workflow span (current when no
                # inference span is). Its scope first: reading a span's attributes costs more.
                if (
                    by_scope or (not _is_scope_span(span) and is_genai_span(span))
                ) and is_call_span(span):
                    # The span ends with the call: it is priced now, and its sums get the
                    # same price.
                    price = self._price(record, usage)
                    _annotate(span, usage, price, by_scope)
            if not self._priced_one:
                # The first call is priced at once, as before the batches: it imports
                # genai-prices (or says, once, that it is missing) in the call that needs it.
                self._priced_one = True
                if price is _LATER:
                    price = self._price(record, usage)
            # (``tuple.__new__``: a NamedTuple's own ``__new__`` is one more Python call.)
            entry = tuple.__new__(
                _Entry,
                (
                    record.call,
                    record.provider,
                    record.service,
                    record.request_model,
                    record.response_model,
                    usage,
                    scope_totals.innermost(record.context),
                    price,
                    record.started_at,
                ),
            )
            # Issue 20: the sums are read only when collected or when a scope ends.
            defer(self._accounting, entry)
        except Exception:
            internal_error("cost", "pricing a GenAI call failed")

    def _account(self, entry: _Entry) -> None:
        """A call's usage and cost, added to the metric sums and its scopes' totals (in a
        batch: ``_deferred``)."""
        usage = entry.usage
        price = (
            self._price(entry, usage)
            if entry.price is _LATER
            else cast(Optional[Price], entry.price)
        )
        self._metrics.record(entry, usage, price)
        totals = entry.totals
        if totals is not None:
            totals.add(
                usage.input_tokens or 0,
                usage.output_tokens or 0,
                None if price is None else price.total,
                CURRENCY if price is None else price.currency,
            )

    # -- price -------------------------------------------------------------------------------

    def _price(self, record: _Priced, usage: Usage) -> Optional[Price]:
        if usage.input_tokens is None and usage.output_tokens is None:
            return None
        params = record.call.params
        key = (
            record.provider,
            record.service,
            params.get("price_as_category"),
            params.get("price_as_resource"),
            record.response_model,
            record.request_model,
        )
        tokens = _tokens(usage)
        table = self._prices
        # Issue 20: the last call's key and the linear price that priced it (a request's
        # calls are priced alike), while genai-prices' snapshot is the one it was priced in
        # (the user's prices are the table's for good; ``PriceTable.linear``).
        # Read first: prices a concurrent update brings make the remembered one stale.
        snapshot = table.genai.current_snapshot()
        last = self._last_price
        linear = last[1]
        if (
            last[0] == key
            and last[2] is snapshot
            and linear is not None
            and linear_region(tokens, linear.rated)
        ):
            price = linear.price(tokens)
            if price is not None:  # (else beyond the fast path: looked up below)
                return price
        targets = self._targets.get(key)
        if targets is None:
            if len(self._targets) >= 4096:  # a bound, for models named per call
                self._targets.clear()
            targets = self._targets[key] = _targets(record, key[2], key[3])
        for provider_id, model in targets:
            try:
                try:
                    price = table.price(provider_id, model, tokens, record.started_at)
                except ValueError:
                    if not tokens.parts:
                        raise
                    # Parts genai-prices refuses as given (a gateway's inconsistent details):
                    # priced as their counts' tokens, as before parts were read.
                    price = table.price(
                        provider_id, model, tokens._replace(parts=()), record.started_at
                    )
            except ValueError as error:  # usage calc_price refuses (cache beyond the input)
                log_once(
                    f"cost:refused:{provider_id}:{model}",
                    "payi_otel: a call of model %r of provider %r cannot be priced (%s); "
                    "such calls get usage without cost",
                    model,
                    provider_id,
                    error,
                )
                return None
            if price is not None:
                # Remembered with the snapshot read before any target was looked up: an
                # earlier target genai-prices did not price may be priced by new prices.
                linear = table.linear(provider_id, model)
                self._last_price = (key if linear is not None else (), linear, snapshot)
                return price
            if table.newly_unpriced(provider_id, model):
                logger.debug(
                    "payi_otel: no price for model %r of provider %r (genai-prices and "
                    "prices= have none); its calls get usage without cost",
                    model,
                    provider_id,
                )
        service = _service(record)
        if service is not None and service.deployments and not key[3]:
            log_once(
                f"cost:unmapped:{service.category}:{record.request_model}",
                "payi_otel: %s: no price for deployment %r (its replies name model %r); its "
                "calls get usage without cost. Add a model mapping: payi_instrument("
                "model_mappings=[{'model': %r, 'price_as_resource': '<model>'}]) or "
                'PAYI_MODEL_MAPPINGS (README, "Model mappings")',
                service.category,
                record.request_model,
                record.response_model,
                record.request_model,
            )
        return None


def _targets(record: _Priced, category: object, resource: object) -> _Targets:
    """What to price a call as, in order: (genai-prices provider id, model) pairs."""
    provider = _provider_id(category) if isinstance(category, str) and category else None
    service = _service(record)
    own = (service.price_id if service is not None else None) or record.provider
    if isinstance(resource, str) and resource:
        # Priced as that model: of the category's provider, else of the call's, else of
        # whichever provider genai-prices finds it under.
        if provider is None:
            return ((own, resource), (None, resource))
        return ((provider, resource),)
    named = (record.response_model, record.request_model)
    if service is not None and service.prices_as_sent:
        named = named[::-1]  # Bedrock: the id as passed names the price (``global.``)
    models = dict.fromkeys(m for m in named if m)
    return tuple((provider or own, m) for m in models)


_Targets = Tuple[Tuple[Optional[str], str], ...]


def _annotate(span: Span, usage: Usage, price: Optional[Price], by_scope: bool) -> None:
    """Usage and cost on the GenAI span (the caller checked it is one, recording, and whether
    it comes from a GenAI instrumentation's scope: ``by_scope``). The ``gen_ai.usage.*``
    attributes belong to the GenAI instrumentation that made the span, which sets them as the
    conventions say (and leaves some out on purpose): they are added only where it reported
    none (a stream whose usage only payi_otel asked for; a span no GenAI instrumentation
    made), and zero cache or reasoning counts never."""
    existing = attribute_names(span)
    attributes: Dict[str, AttributeValue] = {}
    # An instrumentation that reports usage reports the two counts the conventions require.
    reported = "gen_ai.usage.input_tokens" in existing or "gen_ai.usage.output_tokens" in existing
    if not (reported and by_scope):
        for field, attribute, _ in _USAGE:
            count = getattr(usage, field)
            required = field in ("input_tokens", "output_tokens")
            if count is not None and (count or required) and attribute not in existing:
                attributes[attribute] = count
    if price is not None:
        floats = price.floats
        attributes["payi_otel.cost.input"] = floats[0]
        attributes["payi_otel.cost.output"] = floats[1]
        attributes["payi_otel.cost.total"] = floats[2]
        attributes["payi_otel.cost.currency"] = price.currency
        attributes["payi_otel.cost.provider"] = price.provider
        attributes["payi_otel.cost.model"] = price.model
        attributes["payi_otel.cost.source"] = price.source
    write_attributes(span, attributes)


class UsageMetrics:
    """The ``payi.genai.tokens`` and ``payi.genai.cost`` counters, summed in process.

    A synchronous counter's ``add()`` costs the OpenTelemetry SDK ~5-7 µs (an attribute set
    made hashable, looked up, locked), and a call adds up to six: more than the rest of the
    cost path together. So the sums are kept here - one tuple key and one dict lookup per
    call - and reported by two asynchronous (observable) counters at each collection, as
    the cumulative sums they are: the same metric names, kinds (monotonic sums), units,
    attributes and values a reader sees. The SDK's exemplars (a sample span per point) are
    lost. At most :data:`MAX_SERIES` attribute sets per metric (the SDK's own default limit),
    then one overflow series; each ``metric_properties`` key at most
    :data:`MAX_PROPERTY_VALUES` values, then :data:`OTHER`.
    """

    def __init__(
        self, provider: MeterProvider, names: Sequence[str], properties: Sequence[str] = ()
    ) -> None:
        self._names = tuple(names)
        self._properties = tuple(properties)
        self._seen: Dict[str, Set[str]] = {key: set() for key in self._properties}
        #: Attribution key -> [input, output, cache_read, cache_creation, reasoning, cost
        #: (None: never priced), its attributes, each token type's attributes].
        self._series: Dict[Tuple[object, ...], List[Any]] = {}
        #: The last call's shape (its parameters - a request's calls share one
        #: ``Effective`` -, provider, service, models, currency) and its series. Only the
        #: last: an ``Effective`` kept alive keeps its merge cache too
        #: (``_model.effective``'s bound).
        self._last: Tuple[Tuple[object, ...], List[Any]] = ((), [])
        #: Reentrant: a finalizer run by a collection may report a call on this thread.
        self._lock = threading.RLock()
        # Reported by the provider's counters, made once for every instrumentation on it
        # (``_published``: an SDK meter drops a second registration's callbacks).
        publish(provider, self, _describe)

    def record(self, record: _Entry, usage: Usage, price: Optional[Price]) -> None:
        call = record.call
        currency = None if price is None or price.currency == CURRENCY else price.currency
        # What names the series, besides the dimensions the parameters give (the same for one
        # ``Effective``): the last call's series is remembered for it (issue 20).
        shape = (
            call,
            record.provider,
            record.service,
            record.request_model,
            record.response_model,
            currency,
        )
        last = self._last
        if last[0] == shape:
            series = last[1]
        else:
            found = (
                _genai_name(record),
                record.request_model,
                record.response_model,
                *self._attribution_of(call),
                currency,
            )
            known = self._series.get(found)
            series = self._new_series(found) if known is None else known
            self._last = (shape, series)
        counts = (
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_tokens,
            usage.cache_write_tokens,
            usage.reasoning_tokens,
        )
        cost = None if price is None else price.floats[2]
        # Only number arithmetic and list stores under the lock: no allocation the garbage
        # collector counts, so no collection - which runs finalizers, among them an abandoned
        # stream's, which reports its call here - can start while the lock is held.
        with self._lock:
            if counts[0]:
                series[0] += counts[0]
            if counts[1]:
                series[1] += counts[1]
            if counts[2]:
                series[2] += counts[2]
            if counts[3]:
                series[3] += counts[3]
            if counts[4]:
                series[4] += counts[4]
            if cost is not None:
                series[5] = cost if series[5] is None else series[5] + cost

    def _attribution_of(self, call: Effective) -> Tuple[object, ...]:
        """The dimensions a call's parameters give its series (issue 20: its series is
        remembered for the last call's shape in :attr:`_last`). The same every time for one
        ``Effective``: a property value, once kept or counted as :data:`OTHER`, stays so (the
        kept values only grow)."""
        payi = call.attributes()
        key: List[object] = []
        for name in self._names:
            value = payi.get(name)
            if value.__class__ is tuple:
                # One data point per call: the limits as in the header, comma-separated.
                value = ",".join(value)
            key.append(value if value != "" else None)
        if self._properties:
            key.extend(self._property_values(call))
        return tuple(key)

    def _property_values(self, call: Effective) -> Iterable[Optional[str]]:
        properties = call.params.get("request_properties")
        for key in self._properties:
            value = properties.get(key) if isinstance(properties, dict) else None
            if not isinstance(value, str) or not value:
                yield None
                continue
            seen = self._seen[key]
            if value not in seen:
                if len(seen) >= MAX_PROPERTY_VALUES:
                    yield OTHER
                    continue
                with self._lock:
                    seen.add(value)
            yield value

    def _new_series(self, key: Tuple[object, ...]) -> List[Any]:
        """The series of ``key``, made and published once. :attr:`_series` is never changed
        in place: a new series publishes a new mapping (built outside the lock: it allocates;
        the lock only checks that no other series was published meanwhile), so readers need
        no lock (a collection reading it under a lock could run a finalizer that waits for a
        thread waiting for that lock: ``_deferred``)."""
        while True:
            current = self._series
            known = current.get(key)
            if known is not None:
                return known
            if len(current) >= MAX_SERIES:
                overflow = current.get(_OVERFLOW)
                if overflow is not None:
                    return overflow
                key = _OVERFLOW
                attributes: Dict[str, AttributeValue] = {"otel.metric.overflow": True}
            else:
                names = (
                    "gen_ai.provider.name",
                    "gen_ai.request.model",
                    "gen_ai.response.model",
                    *self._names,
                    *(f"{_PROPERTY}.{p}" for p in self._properties),
                    "payi_otel.cost.currency",
                )
                attributes = {
                    name: value  # type: ignore[misc]
                    for name, value in zip(names, key)
                    if value is not None and value != ""
                }
            per_type = tuple(
                {**attributes, "payi_otel.token.type": token_type} for _, _, token_type in _USAGE
            )
            made = [0, 0, 0, 0, 0, None, attributes, per_type]
            grown = {**current, key: made}
            with self._lock:
                if self._series is current:
                    self._series = grown
                    return made

    def points(self, metric: str) -> Iterable[Tuple[float, Dict[str, AttributeValue]]]:
        """The sums of ``metric`` (``_published``: the caller flushed the queue)."""
        series = self._series  # a published mapping: never changed (_new_series)
        if metric == TOKENS:
            for row in series.values():
                for index, attributes in enumerate(row[7]):
                    if row[index]:
                        yield row[index], attributes
        else:
            for row in series.values():
                if row[5] is not None:
                    yield row[5], row[6]


def _describe(metric: str) -> Dict[str, str]:
    """Name, unit and description of the counter of ``metric`` (``_published``)."""
    if metric == TOKENS:
        return {
            "name": TOKENS_METRIC,
            "unit": "{token}",
            "description": "GenAI tokens by payi_otel.token.type (input includes cache_read "
            "and cache_creation; output includes reasoning)",
        }
    return {
        "name": COST_METRIC,
        "unit": CURRENCY,
        "description": "GenAI cost (genai-prices, or the user's prices; "
        "payi_otel.cost.currency when not USD)",
    }

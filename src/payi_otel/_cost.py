"""Usage and cost of every GenAI call, on its span and as metrics (README: "Cost and usage").

:class:`CostObserver` is a response observer (``_providers._core.add_observer``): for each completed
call with usage it prices the tokens with ``genai-prices`` (cache-aware; as the provider /
model of ``price_as_category`` / ``price_as_resource`` when the call resolved them; the
genai-prices provider ids are the registered providers' facts: ``Service.price_id``), puts
the usage (GenAI semantic conventions) and the cost (``payi_otel.cost.*``: ``payi.*`` are
the headers a call sent) on the call's GenAI span, and adds both to two counters,
``payi.genai.tokens`` and ``payi.genai.cost``, by the call's attribution. A model
``genai-prices`` does not know gets usage without cost and one DEBUG line. Without
``genai-prices`` (it needs Python >= 3.11) there is no cost at all, and one WARNING says so;
usage is still recorded.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Set, Tuple

from opentelemetry import metrics
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import Span
from opentelemetry.util.types import AttributeValue

from payi_otel._genai import genai_scope_prefixes
from payi_otel._log import internal_error, log_once, logger
from payi_otel._model.parameters import ATTRIBUTE_NAMES
from payi_otel._providers import CallRecord, Service, Usage, derived, providers
from payi_otel._spans import is_genai_span
from payi_otel.version import __version__

if TYPE_CHECKING:
    from genai_prices.types import PriceCalculation

__all__ = ["COST_METRIC", "CURRENCY", "TOKENS_METRIC", "CostObserver"]

TOKENS_METRIC = "payi.genai.tokens"
COST_METRIC = "payi.genai.cost"
#: ``genai-prices`` prices in US dollars.
CURRENCY = "USD"

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


def _service(record: CallRecord) -> Optional[Service]:
    """The service a call went to: the one its provider told (``CallRecord.service``), else
    the provider's own."""
    return record.service or _own_services().get(record.provider)


def _genai_name(record: CallRecord) -> str:
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


def _load_prices() -> Any:
    """``genai_prices.calc_price`` and ``Usage``, or None (one WARNING) when not installed."""
    try:
        import genai_prices
    except ImportError:
        logger.warning(
            "payi_otel: genai-prices is not installed (it needs Python >= 3.11), so GenAI "
            "calls get usage but no cost; on Python >= 3.11: pip install 'genai-prices>=0.2'"
        )
        return None
    return genai_prices


def _provider_id(category: str) -> str:
    name = _category_name(category)
    return _price_ids().get(name, name)


class CostObserver:
    """Prices each completed call, annotates its span and records the metrics."""

    def __init__(
        self, meter_provider: Optional[MeterProvider] = None, *, metrics_user_id: bool = False
    ) -> None:
        meter = (meter_provider or metrics.get_meter_provider()).get_meter("payi_otel", __version__)
        self._tokens = meter.create_counter(
            TOKENS_METRIC,
            unit="{token}",
            description="GenAI tokens by payi_otel.token.type (input includes cache_read and "
            "cache_creation; output includes reasoning)",
        )
        self._cost = meter.create_counter(
            COST_METRIC, unit=CURRENCY, description="GenAI cost from genai-prices"
        )
        self._metrics_user_id = metrics_user_id
        self._prices = _load_prices()
        self._unknown: Set[Tuple[Optional[str], str]] = set()
        self._lock = threading.Lock()

    def __call__(self, record: CallRecord) -> None:
        try:
            usage = record.usage
            # No model asked for: not a generation (e.g. responses.retrieve reports the usage
            # of a response already counted when it was created) - counting it would bill
            # the same tokens twice.
            if usage is None or not record.request_model:
                return
            price = self._price(record, usage)
            _annotate(record.span, usage, price)
            self._record_metrics(record, usage, price)
        except Exception:
            internal_error("cost", "pricing a GenAI call failed")

    # -- price -------------------------------------------------------------------------------

    def _price(self, record: CallRecord, usage: Usage) -> Optional[PriceCalculation]:
        prices = self._prices
        if prices is None or (usage.input_tokens is None and usage.output_tokens is None):
            return None
        params = record.call.params
        category = params.get("price_as_category")
        resource = params.get("price_as_resource")
        provider = _provider_id(category) if isinstance(category, str) and category else None
        service = _service(record)
        own = (service.price_id if service is not None else None) or record.provider
        if isinstance(resource, str) and resource:
            # Priced as that model: of the category's provider, else of the call's, else of
            # whichever provider genai-prices finds it under.
            targets: List[Tuple[Optional[str], str]] = [(provider or own, resource)]
            if provider is None:
                targets.append((None, resource))
        else:
            named = (record.response_model, record.request_model)
            if service is not None and service.prices_as_sent:
                named = named[::-1]  # Bedrock: the id as passed names the price (``global.``)
            models = dict.fromkeys(m for m in named if m)
            targets = [(provider or own, m) for m in models]
        priced_usage = prices.Usage(
            **{
                name: getattr(usage, name)
                for name in (
                    "input_tokens",
                    "output_tokens",
                    "cache_read_tokens",
                    "cache_write_tokens",
                )
                if getattr(usage, name) is not None
            }
        )
        for provider_id, model in targets:
            if (provider_id, model) in self._unknown:
                continue
            try:
                calculation: PriceCalculation = prices.calc_price(
                    priced_usage, model_ref=model, provider_id=provider_id
                )
                return calculation
            except LookupError:
                with self._lock:
                    self._unknown.add((provider_id, model))
                logger.debug(
                    "payi_otel: genai-prices has no price for model %r of provider "
                    "%r; its calls get usage without cost",
                    model,
                    provider_id,
                )
        if service is not None and service.deployments and not resource:
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

    # -- metrics -----------------------------------------------------------------------------

    def _record_metrics(
        self, record: CallRecord, usage: Usage, price: Optional[PriceCalculation]
    ) -> None:
        attributes = self._dimensions(record)
        for field, _, token_type in _USAGE:
            count = getattr(usage, field)
            if count:  # a zero adds nothing to a sum, and each add costs the SDK ~7 us
                self._tokens.add(count, {**attributes, "payi_otel.token.type": token_type})
        if price is not None:
            self._cost.add(float(price.total_price), attributes)

    def _dimensions(self, record: CallRecord) -> Dict[str, AttributeValue]:
        payi = record.call.attributes()
        dimensions: Dict[str, AttributeValue] = {"gen_ai.provider.name": _genai_name(record)}
        if record.request_model:
            dimensions["gen_ai.request.model"] = record.request_model
        if record.response_model:
            dimensions["gen_ai.response.model"] = record.response_model
        names = (*_DIMENSIONS, _USER) if self._metrics_user_id else _DIMENSIONS
        for name in names:
            value = payi.get(name)
            if isinstance(value, (list, tuple)):
                # One data point per call: the limits as in the header, comma-separated.
                value = ",".join(str(v) for v in value)
            if value is not None and value != "":
                dimensions[name] = value
        return dimensions


def _annotate(span: Span, usage: Usage, price: Optional[PriceCalculation]) -> None:
    """Usage and cost on the GenAI span (none without one: the current span is then some
    other span). The ``gen_ai.usage.*`` attributes belong to the GenAI instrumentation that
    made the span, which sets them as the conventions say (and leaves some out on purpose):
    they are added only where it reported none (a stream whose usage only payi_otel asked
    for; a span no GenAI instrumentation made), and zero cache or reasoning counts never."""
    if not span.is_recording() or not is_genai_span(span):
        return
    existing: Mapping[str, Any] = getattr(span, "attributes", None) or {}
    attributes: Dict[str, AttributeValue] = {}
    scope = getattr(getattr(span, "instrumentation_scope", None), "name", None) or ""
    reported = any(key.startswith("gen_ai.usage.") for key in existing)
    if not (reported and scope.startswith(genai_scope_prefixes())):
        for field, attribute, _ in _USAGE:
            count = getattr(usage, field)
            required = field in ("input_tokens", "output_tokens")
            if count is not None and (count or required) and attribute not in existing:
                attributes[attribute] = count
    if price is not None:
        attributes.update(
            {
                "payi_otel.cost.input": float(price.input_price),
                "payi_otel.cost.output": float(price.output_price),
                "payi_otel.cost.total": float(price.total_price),
                "payi_otel.cost.currency": CURRENCY,
                "payi_otel.cost.provider": price.provider.id,
                "payi_otel.cost.model": price.model.id,
            }
        )
    span.set_attributes(attributes)

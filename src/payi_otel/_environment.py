"""Every ``PAYI_*`` variable that is not a parameter's, and how its text reads.

The parameters' own variables (``PAYI_USER_ID``, ...) are the registry's
(``_model.parameters.ENV_NAMES``); these are the switches of ``payi_instrument()``, each the
fallback of the keyword argument of the same name. What a value means and what a bad one does
is ``_settings``' job; here is only the text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import List, Optional, Tuple

from payi_otel._model.codec import FALSE_TEXTS, TRUE_TEXTS
from payi_otel._model.parameters import PARAMETERS, ParameterValueError

__all__ = [
    "BAGGAGE_ACCEPT",
    "HEADER_DIALECT",
    "HEADER_HOSTS",
    "INGEST",
    "INGEST_SPOOL",
    "METRICS_USER_ID",
    "METRIC_PROPERTIES",
    "MODEL_MAPPINGS",
    "NATIVE_ATTRIBUTION",
    "PRICES_FILE",
    "PROPAGATE_BAGGAGE",
    "SCOPE_SPANS",
    "SCOPE_SPAN_ATTRIBUTES",
    "SCOPE_TOTALS",
    "read_bool",
    "read_choice",
    "read_json",
    "read_list",
]

#: ``propagate_baggage``: ``payi.*`` W3C baggage in and out.
PROPAGATE_BAGGAGE = "PAYI_PROPAGATE_BAGGAGE"
#: ``baggage_accept``: the parameters incoming baggage may set (comma-separated, or ``*``).
BAGGAGE_ACCEPT = "PAYI_BAGGAGE_ACCEPT"
#: ``metrics_user_id``: ``payi.user_id`` as a metric dimension (off by default: one series
#: per user).
METRICS_USER_ID = "PAYI_METRICS_USER_ID"
#: ``scope_spans``: whether scopes start spans.
SCOPE_SPANS = "PAYI_SCOPE_SPANS"
#: ``scope_span_attributes``: ``own`` | ``effective``.
SCOPE_SPAN_ATTRIBUTES = "PAYI_SCOPE_SPAN_ATTRIBUTES"
#: ``header_dialect``: ``x-payi`` | ``payi-proxy``.
HEADER_DIALECT = "PAYI_HEADER_DIALECT"
#: ``header_hosts``: the only hosts that get attribution headers (comma-separated).
HEADER_HOSTS = "PAYI_HEADER_HOSTS"
#: ``native_attribution``: the providers' own request fields carry the use case, user and
#: account too (Bedrock's ``requestMetadata``, Vertex AI's ``labels``); off by default.
NATIVE_ATTRIBUTION = "PAYI_NATIVE_ATTRIBUTION"
#: ``model_mappings``: what to price a deployment (or any model as sent) as: a JSON array of
#: ``{"model", "host"?, "price_as_category"?, "price_as_resource"?, "resource_scope"?}``.
MODEL_MAPPINGS = "PAYI_MODEL_MAPPINGS"
# --- issue 19: Pay-i ingest ---------------------------------------------------------------
#: ``ingest``: one Pay-i ingest record per inference call (README "Using with Pay-i").
INGEST = "PAYI_INGEST"
#: ``PayiIngestExporter(spool=)``: the crash-safe spool file of unsent ingest records.
INGEST_SPOOL = "PAYI_INGEST_SPOOL"
# (``log_prompt_and_response``'s ``PAYI_LOG_PROMPT_AND_RESPONSE`` is a parameter's: the registry.)

# --- issue 20: cost at scale ---------------------------------------------------------------
#: ``prices``: the path of a JSON file holding the user's price table (a list of entries:
#: ``_model.user_prices``).
PRICES_FILE = "PAYI_PRICES_FILE"
#: ``metric_properties``: ``request_properties`` keys that are metric dimensions
#: (comma-separated).
METRIC_PROPERTIES = "PAYI_METRIC_PROPERTIES"
#: ``scope_totals``: each scope span gets its calls' usage and cost at its end.
SCOPE_TOTALS = "PAYI_SCOPE_TOTALS"
# --- end issue 20 --------------------------------------------------------------------------

_TRUE = TRUE_TEXTS  # one rule for every switch's text, a parameter's (the codec) or not
_FALSE = FALSE_TEXTS | {""}


def read_bool(environ: Mapping[str, str], name: str) -> Optional[bool]:
    """``true``/``false`` (case-insensitive; also 1/0, yes/no, on/off); None when unset."""
    text = environ.get(name)
    if text is None:
        return None
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ParameterValueError(f"{name} must be 'true' or 'false', got {text!r}")


def read_list(text: str) -> List[str]:
    """A comma-separated list without its blank items; each item as written (the reader
    strips or validates it, naming it as given)."""
    return [item for item in text.split(",") if item.strip()]


def read_choice(environ: Mapping[str, str], name: str, choices: Sequence[str]) -> Optional[str]:
    """One of ``choices`` (case-insensitive); None when unset or empty."""
    text = environ.get(name, "").strip().lower()
    if not text:
        return None
    if text not in choices:
        raise ParameterValueError(f"{name} must be one of {tuple(choices)}, got {text!r}")
    return text


def read_json(environ: Mapping[str, str], name: str) -> Optional[object]:
    """The JSON value of a variable; None when unset or blank."""
    text = environ.get(name, "")
    if not text.strip():
        return None
    try:
        value: object = json.loads(text)
    except ValueError as error:
        raise ParameterValueError(f"{name} must be JSON ({error}), got {text[:80]!r}") from None
    return value


# --- issue 21: web services, agent frameworks, standard attributes ---------------------------

#: Zero-code request scopes: ``X-User-Id=user_id,X-Tenant=account_name`` (request header ->
#: parameter) for every Starlette / FastAPI route and Flask app (``payi_otel.web``).
WEB_HEADERS = "PAYI_WEB_HEADERS"
#: Zero-code request scopes: the route template as ``use_case_step``.
WEB_ROUTE_STEP = "PAYI_WEB_ROUTE_STEP"
#: ``agent_steps``: an agent's or tool's name is the ``use_case_step`` of the calls it makes.
AGENT_STEPS = "PAYI_AGENT_STEPS"
#: ``standard_attributes``: ``user.id`` (and ``session.id``) mirrored on GenAI spans.
STANDARD_ATTRIBUTES = "PAYI_STANDARD_ATTRIBUTES"
#: ``session_property``: the request property mirrored as ``session.id`` /
#: ``gen_ai.conversation.id``.
SESSION_PROPERTY = "PAYI_SESSION_PROPERTY"


def read_web_headers(text: str, what: str) -> List[Tuple[str, str]]:
    """``X-User-Id=user_id,X-Tenant=account_name``: (header, parameter) pairs."""
    found: List[Tuple[str, str]] = []
    for item in read_list(text):
        header, sep, name = item.partition("=")
        if not sep or not header.strip() or name.strip() not in PARAMETERS:
            raise ParameterValueError(
                f"{what} must be 'Header-Name=parameter,...' naming Pay-i parameters, got "
                f"{item.strip()!r}"
            )
        found.append((header.strip(), name.strip()))
    return found


__all__ += [
    "AGENT_STEPS",
    "SESSION_PROPERTY",
    "STANDARD_ATTRIBUTES",
    "WEB_HEADERS",
    "WEB_ROUTE_STEP",
    "read_web_headers",
]

# --- end issue 21 ------------------------------------------------------------------------------


# --- names ------------------------------------------------------------------------------------

#: Pay-i's own client's variables (``payi.Payi``), read by it, not by payi_otel.
PAYI_CLIENT = ("PAYI_API_KEY", "PAYI_BASE_URL")


def switch_names() -> Tuple[str, ...]:
    """Every switch variable named in this module."""
    return tuple(
        value
        for key, value in globals().items()
        if key.isupper() and isinstance(value, str) and value.startswith("PAYI_")
    )


__all__ += ["PAYI_CLIENT", "switch_names"]

"""payi_otel's spans: the span processor that gives every GenAI span the effective ``payi.*``
attributes (payi_otel's own tracer, for scope spans, is in the settings: ``Settings.tracer``).

A GenAI span is one with any ``gen_ai.*`` attribute at start (e.g. from
``opentelemetry-instrumentation-genai-openai``, or the anthropic SDK's own call span), or one
from a GenAI instrumentation's scope (``_genai.genai_scope_prefixes()``: some paths start the
span empty and set ``gen_ai.*`` only at its end). A span
started around the SDK call gets the scope's values here, then the request hook replaces them
with the per-call values (:func:`apply_call_attributes`); a span started inside the SDK call
gets the per-call values directly (:func:`with_call`). Either way a GenAI span's ``payi.*``
attributes equal the ``x-payi-*`` headers its call sent.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from typing import Any, Optional

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import Span as ApiSpan
from opentelemetry.trace import TracerProvider

from payi_otel import _settings
from payi_otel._context import call_effective
from payi_otel._genai import genai_scope_prefixes
from payi_otel._log import internal_error, logger
from payi_otel._model.attributes import AttributeValue
from payi_otel._model.effective import Effective
from payi_otel._model.in_force import emitted
from payi_otel._model.parameters import ATTRIBUTE_PREFIX
from payi_otel._settings import TRACER_NAME
from payi_otel._span_attributes import get as get_attribute
from payi_otel._span_attributes import remove as remove_attributes
from payi_otel._span_attributes import write as write_attributes

__all__ = [
    "CATEGORY_ATTRIBUTE",
    "TRACER_NAME",
    "PayiSpanProcessor",
    "apply_call_attributes",
    "install_processor",
    "is_genai_span",
    "name_service",
]

GENAI_PREFIX = "gen_ai."


# --- the span processor ------------------------------------------------------------------------


def _is_scope_span(span: object) -> bool:
    """Whether ``span`` is one of payi_otel's own scope spans."""
    scope = getattr(span, "instrumentation_scope", None)
    return scope is not None and scope.name == TRACER_NAME


def from_genai_scope(span: object) -> bool:
    """Whether ``span`` comes from a GenAI instrumentation's scope (the usual GenAI span)."""
    name = getattr(getattr(span, "instrumentation_scope", None), "name", None)
    return isinstance(name, str) and name.startswith(genai_scope_prefixes())


def is_genai_span(span: object) -> bool:
    """Whether ``span`` is a recording SDK span with a ``gen_ai.*`` attribute, or one from a
    GenAI instrumentation's scope."""
    # The scope first: a GenAI instrumentation's span (the usual case) is told without
    # reading its attributes.
    if from_genai_scope(span):
        return True
    attributes = getattr(span, "attributes", None)
    if not attributes:
        return False
    return any(key.startswith(GENAI_PREFIX) for key in attributes)


#: GenAI operations that are no inference call (``gen_ai.operation.name``, GenAI semantic
#: conventions): agent frameworks' spans carry ``gen_ai.*`` attributes too, yet no call's
#: usage belongs on them (it would be counted twice) and Pay-i bills none of them.
NOT_CALLS = frozenset(
    {"invoke_agent", "create_agent", "execute_tool", "invoke_workflow", "retrieval", "workflow"}
)


def is_call_span(span: object) -> bool:
    """Whether a GenAI span is no agent, tool or workflow span (:data:`NOT_CALLS`)."""
    operation = get_attribute(span, "gen_ai.operation.name")
    return not (isinstance(operation, str) and operation in NOT_CALLS)


class PayiSpanProcessor(SpanProcessor):
    """Adds the effective Pay-i parameters to GenAI spans when they start."""

    def __init__(self) -> None:
        self.enabled = True

    def on_start(self, span: Span, parent_context: Optional[Context] = None) -> None:
        if not self.enabled:
            return
        if _is_scope_span(span):
            return
        try:
            if is_genai_span(span):
                effective = call_effective(parent_context)
                write_attributes(span, effective.attributes())
                if _settings.current.standard_attributes:  # issue 21
                    write_attributes(span, standard_attributes(effective, span))
                _applied[span] = effective
        except Exception:  # never break span creation
            internal_error("processor", "the span processor failed")

    def on_end(self, span: ReadableSpan) -> None:
        return None

    def shutdown(self) -> None:
        self.enabled = False

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


_installed: weakref.WeakKeyDictionary[Any, PayiSpanProcessor] = weakref.WeakKeyDictionary()
# The parameters whose attributes a live GenAI span carries (set by on_start or the hook).
_applied: weakref.WeakKeyDictionary[Any, Effective] = weakref.WeakKeyDictionary()


def install_processor(provider: TracerProvider) -> Callable[[], None]:
    """Add (or re-enable) the processor on an SDK ``provider``; returns the undo."""
    add = getattr(provider, "add_span_processor", None)
    if add is None:
        logger.warning(
            "payi_otel: the tracer provider %r is not an SDK TracerProvider; GenAI spans "
            "will not get payi.* attributes (pass tracer_provider= or set a global one "
            "before payi_instrument())",
            provider,
        )
        return lambda: None
    processor = _installed.get(provider)
    if processor is None:
        processor = PayiSpanProcessor()
        add(processor)
        _installed[provider] = processor
    processor.enabled = True

    def undo() -> None:
        processor.enabled = False

    return undo


def apply_call_attributes(span: ApiSpan, call: Effective) -> None:
    """Make ``span``'s ``payi.*`` attributes exactly ``call``'s (the headers it sends).

    Only the difference from what the span already carries is written. A per-call header
    that *clears* a value (``""``) must take the scope's ``payi.*`` attribute off the running
    span, which the OpenTelemetry API cannot do (``_span_attributes.remove``).
    """
    if _is_scope_span(span):
        return
    before = _applied.get(span)
    if before is call:
        return  # no per-call headers: the span already carries these values
    if before is None and not is_genai_span(span):
        return
    wanted: Mapping[str, AttributeValue] = call.attributes()
    mirrored = _settings.current.standard_attributes  # issue 21
    if mirrored:
        wanted = {**wanted, **standard_attributes(call, span)}
    if before is not None:
        had = before.attributes()
        if mirrored:
            had = {**had, **standard_attributes(before, span)}
        stale = [key for key in had if key not in wanted]
        changed = {k: v for k, v in wanted.items() if had.get(k, _MISSING) != v}
    else:
        attributes = getattr(span, "attributes", None) or {}
        ours = (ATTRIBUTE_PREFIX, *STANDARD_NAMES) if mirrored else ATTRIBUTE_PREFIX
        stale = [k for k in list(attributes) if k.startswith(ours) and k not in wanted]
        changed = dict(wanted)
    if stale:
        remove_attributes(span, stale)
    if changed:
        write_attributes(span, changed)
    _applied[span] = call


_MISSING = object()


#: On the GenAI span of a call of another service than its SDK's own: the service's Pay-i
#: category (``system.azureopenai``, ``system.aws.bedrock``, ``system.google.vertex``).
CATEGORY_ATTRIBUTE = "payi_otel.category"


def name_service(span: ApiSpan, category: Optional[str]) -> None:
    """Say on a GenAI span which service its call went to, when not its SDK's own: the
    official instrumentations name every ``AzureOpenAI`` call ``openai`` and every
    ``AnthropicBedrock`` / ``AnthropicVertex`` call ``anthropic`` (and util-genai writes
    ``gen_ai.provider.name`` again when the span ends), so the service's Pay-i category
    goes on the span as :data:`CATEGORY_ATTRIBUTE`, which ingest files it under."""
    if category and not _is_scope_span(span) and is_genai_span(span):
        write_attributes(span, {CATEGORY_ATTRIBUTE: category})


# --- issue 21: standard attributes (opt-in) --------------------------------------------------
#
# Other backends group GenAI spans by the general conventions, not by ``payi.*``: with
# ``standard_attributes=True`` (``PAYI_STANDARD_ATTRIBUTES``) a GenAI span also carries its
# user id as ``user.id``, and with ``session_property="<key>"`` (``PAYI_SESSION_PROPERTY``) the
# request property of that key as ``session.id`` and ``gen_ai.conversation.id`` (unless its
# instrumentation set a conversation id of its own). Both are mirrors of what the span's
# ``payi.*`` carry: exactly the values its call sent.

USER_ID = "user.id"
SESSION_ID = "session.id"
CONVERSATION_ID = "gen_ai.conversation.id"
STANDARD_NAMES = (USER_ID, SESSION_ID, CONVERSATION_ID)


def standard_attributes(effective: Effective, span: object) -> Mapping[str, AttributeValue]:
    """The standard attributes mirroring ``effective`` on ``span`` (none when off)."""
    settings = _settings.current
    if not settings.standard_attributes:
        return {}
    found: dict[str, AttributeValue] = {}
    in_force = dict(emitted(effective.params))
    user = in_force.get("user_id")
    if isinstance(user, str):
        found[USER_ID] = user
    key = settings.session_property
    properties = in_force.get("request_properties") if key else None
    session = properties.get(key) if isinstance(properties, dict) and key else None
    if isinstance(session, str) and session:
        found[SESSION_ID] = session
        own = (getattr(span, "attributes", None) or {}).get(CONVERSATION_ID)
        if own is None or own == _mirrored.get(span):
            found[CONVERSATION_ID] = session
            _mirrored[span] = session
    return found


#: The conversation id this processor put on a live span (told apart from the
#: instrumentation's own).
_mirrored: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()

# --- end issue 21 ------------------------------------------------------------------------------

"""``payi.*`` span attributes: parameters rendered as attributes, and read back from them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Dict, Sequence, Tuple, Union

from payi_otel._model.codec import format_value, parse_value
from payi_otel._model.parameters import ATTRIBUTE_NAMES, PARAMETERS, Kind, Params, Value

__all__ = ["MAX_PROPERTY_ATTRIBUTES", "AttributeValue", "attribute_items", "params_from_attributes"]

AttributeValue = Union[str, int, Sequence[str]]

#: Property keys (both dicts together) a span carries as attributes of their own.
MAX_PROPERTY_ATTRIBUTES = 32


def attribute_items(
    items: Sequence[Tuple[str, Value]],
) -> Dict[str, AttributeValue]:
    """``payi.*`` span attributes of ``items`` (values kept as-is, non-ASCII included)."""
    attributes: Dict[str, AttributeValue] = {}
    # A span keeps at most 128 attributes (the SDK default) and evicts the oldest - the
    # instrumentation's gen_ai.* first. So property keys are attributes of their own only
    # while few; past MAX_PROPERTY_ATTRIBUTES each dict is one attribute, its header's JSON
    # text (docs/parameters.md, "Span attributes").
    per_key = sum(len(v) for _, v in items if isinstance(v, dict)) <= MAX_PROPERTY_ATTRIBUTES
    for name, value in items:
        key = ATTRIBUTE_NAMES[name]
        if isinstance(value, dict) and not per_key:
            attributes[key] = format_value(name, value)
        elif isinstance(value, dict):
            for prop, item in value.items():
                if item is not None:
                    attributes[f"{key}.{prop}"] = item
        elif isinstance(value, tuple):
            attributes[key] = value  # a tuple of str: the form the SDK stores (immutable)
        else:
            attributes[key] = value
    return attributes


def params_from_attributes(attributes: Mapping[str, object]) -> Params:
    """The Pay-i parameters a span's ``payi.*`` attributes carry: the inverse of
    :func:`attribute_items` (a properties dict per key, or as one JSON attribute)."""
    params: Params = {}
    for name, attribute in ATTRIBUTE_NAMES.items():
        kind = PARAMETERS[name]
        value = attributes.get(attribute)
        if kind is Kind.DICT:
            prefix = attribute + "."
            found = {
                k[len(prefix) :]: str(v) for k, v in attributes.items() if k.startswith(prefix)
            }
            if isinstance(value, str):  # many keys: the dict as its header's JSON text
                parsed = parse_value(name, value, what=attribute)
                if isinstance(parsed, dict):
                    found.update({k: v for k, v in parsed.items() if v is not None})
            if found:
                params[name] = dict(found)
            continue
        if value is None:
            continue
        if kind is Kind.LIST and isinstance(value, (list, tuple)):
            params[name] = tuple(str(v) for v in value)
        elif kind is Kind.BOOL and isinstance(value, bool):
            params[name] = value
        elif kind is Kind.INT and isinstance(value, int):
            params[name] = int(value)
        else:
            params[name] = str(value)
    return params

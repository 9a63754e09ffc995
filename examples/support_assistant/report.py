"""What the demo prints: the traces as trees, and the ``x-payi-*`` headers each call sent.

Spans come from an in-memory exporter (``ReadableSpan``), requests from the fake LLM server
(``RecordedRequest``: method, path, lower-cased headers, JSON body).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Optional, TextIO

from opentelemetry.sdk.trace import ReadableSpan

# The demo checks itself with the package's own parameter registry (a private module: this
# repository's demo, not an example of the public API).
from payi_otel._model.parameters import REGISTRY

if TYPE_CHECKING:
    from fake_llm_server import RecordedRequest

__all__ = [
    "GENAI_MARK",
    "context_attributes",
    "headers_match",
    "is_genai",
    "match_calls",
    "number_calls",
    "print_check",
    "print_headers",
    "print_traces",
    "traces_record",
]

PAYI = "payi."
HEADER_PREFIX = "x-payi-"
#: The header each ``payi.*`` attribute stands for: payi_otel's own parameter registry.
HEADER_BY_ATTRIBUTE = {p.attribute: p.header for p in REGISTRY}
GENAI_MARK = "[GenAI]"

Pair = tuple[ReadableSpan, Optional["RecordedRequest"]]
"""A GenAI span and the request it sent (``None``: no request sent its headers)."""


# ------------------------------------------------------------------------------ span helpers
def is_genai(span: ReadableSpan) -> bool:
    """A span with any ``gen_ai.*`` attribute (as payi_otel decides too)."""
    return any(key.startswith("gen_ai.") for key in span.attributes or {})


def payi_attributes(span: ReadableSpan) -> dict[str, object]:
    """``payi.*`` attributes without the prefix (and without ``payi.scope``), lists as lists."""
    return {
        key[len(PAYI) :]: list(value) if isinstance(value, tuple) else value
        for key, value in (span.attributes or {}).items()
        if key.startswith(PAYI) and key != "payi.scope"
    }


def _text(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


def context_attributes(context: Mapping[str, object]) -> dict[str, object]:
    """``payi_otel.get_context()`` as span attributes are named (``use_case_step`` ->
    ``use_case.step``, ``request_properties`` -> ``request.properties.<key>``), cleared values
    left out. For the global level, which no span shows on its own."""
    attributes: dict[str, object] = {}
    for name, value in context.items():
        if value in ("", [], {}, None):
            continue
        key = name.replace("request_properties", "request.properties")
        for group in ("use_case_", "experience_", "price_as_"):
            if key.startswith(group):
                key = group[:-1] + "." + key[len(group) :]
        if isinstance(value, Mapping):
            attributes.update({f"{key}.{k}": v for k, v in value.items() if v is not None})
        else:
            attributes[key] = value
    return attributes


def _start(span: ReadableSpan) -> int:
    return span.start_time or 0


def _ms(span: ReadableSpan) -> str:
    return f"{((span.end_time or 0) - (span.start_time or 0)) / 1e6:7.1f} ms"


def _glyphs(out: TextIO) -> tuple[str, str, str, str]:
    """Box-drawing characters if ``out`` can encode them, else ASCII."""
    try:
        "├└│─".encode(out.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return "|- ", "`- ", "|  ", "   "
    return "├─ ", "└─ ", "│  ", "   "


# ------------------------------------------------------------------------------ traces
def _changes(attributes: Mapping[str, object], base: Mapping[str, object]) -> str:
    """``attributes`` where they differ from ``base``; a key ``base`` has and they lack:
    ``(cleared)``."""
    changed = [f"{k}={_text(v)}" for k, v in attributes.items() if base.get(k) != v]
    changed += [f"{k}=(cleared)" for k in base if k not in attributes]
    return " ".join(changed)


def print_traces(
    spans: Sequence[ReadableSpan],
    request_numbers: Optional[Mapping[int, int]] = None,
    global_attributes: Optional[Mapping[str, object]] = None,
    out: TextIO = sys.stdout,
) -> None:
    """Every trace as an indented tree, roots and siblings in start order.

    Each line: span name (GenAI spans marked ``[GenAI]``), duration, and ``payi.*``
    attributes: a scope span carries what its own scope set (``sets ...``); a GenAI span
    carries everything in force for its call, shown where it differs from
    ``global_attributes`` (printed once above; ``name=(cleared)``: the global value is cleared for
    this call). ``request_numbers`` maps a GenAI span's id to the number of the request it
    sent, shown as ``request #n``.
    """
    base = dict(global_attributes or {})
    numbers = request_numbers or {}
    ids = {span.context.span_id for span in spans if span.context}
    children: dict[Optional[int], list[ReadableSpan]] = {}
    for span in spans:
        parent = span.parent.span_id if span.parent and span.parent.span_id in ids else None
        children.setdefault(parent, []).append(span)
    for siblings in children.values():
        siblings.sort(key=_start)
    tee, last, pipe, blank = _glyphs(out)
    lines: list[tuple[str, ReadableSpan, str]] = []

    def walk(span: ReadableSpan, prefix: str, indent: str) -> None:
        """Collect ``span`` after ``prefix``; its children go under ``indent``."""
        attributes = payi_attributes(span)
        if is_genai(span):
            name = f"{GENAI_MARK} {span.name}"
            text = f"in force: {_changes(attributes, base) or 'the global level'}"
        else:
            name = span.name
            own = {k: v for k, v in attributes.items() if k != "scope"}
            text = f"sets {_changes(own, {})}" if own else ""
        span_id = span.context.span_id if span.context else None
        if span_id is not None and span_id in numbers:
            text = f"{text}  (request #{numbers[span_id]})".lstrip()
        lines.append((prefix + name, span, text))
        kids = children.get(span_id, [])
        for i, kid in enumerate(kids):
            is_last = i == len(kids) - 1
            walk(kid, indent + (last if is_last else tee), indent + (blank if is_last else pipe))

    for root in children.get(None, []):
        lines.append(("", root, ""))  # a blank line before each trace
        walk(root, "", "")

    print(f"Global level (payi_instrument): {_changes(base, {})}", file=out)
    print(
        "payi.* attributes, prefix dropped. A scope span carries what its own scope set; a "
        "GenAI span carries everything in force for its call, shown where it differs from "
        "the global level.",
        file=out,
    )
    width = max(len(label) for label, _, _ in lines) + 2
    for label, span, text in lines:
        if not label:
            print(file=out)
            continue
        print(f"{label.ljust(width)}{_ms(span)}  {text}".rstrip(), file=out)


# ------------------------------------------------------------------------------ headers
def payi_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.startswith(HEADER_PREFIX)}


def headers_of_span(span: ReadableSpan) -> dict[str, object]:
    """The ``x-payi-*`` headers a span's ``payi.*`` attributes stand for.

    ``payi.use_case.step`` -> ``x-payi-use-case-step``; lists comma-joined; properties
    (``payi.request.properties.<key>``) as one JSON object, compared parsed. (Values are
    taken as plain ASCII: payi_otel percent-encodes other text on the wire.)
    """
    headers: dict[str, object] = {}
    for key, value in payi_attributes(span).items():
        base, dot_properties, prop = key.partition(".properties.")
        header = HEADER_BY_ATTRIBUTE.get(PAYI + base + (".properties" if dot_properties else ""))
        if header is None:
            continue  # payi.scope: not a header
        if key.endswith(".properties"):  # many keys: the dict as one attribute, its JSON text
            properties = headers.setdefault(header, {})
            assert isinstance(properties, dict)
            properties.update(json.loads(str(value)))
        elif dot_properties:
            properties = headers.setdefault(header, {})
            assert isinstance(properties, dict)
            properties[prop] = str(value)
        elif isinstance(value, (list, tuple)):
            headers[header] = ",".join(str(v) for v in value)
        else:
            headers[header] = str(value)
    return headers


def _comparable(headers: Mapping[str, str]) -> dict[str, object]:
    return {k: json.loads(v) if k.endswith("-properties") else v for k, v in headers.items()}


def headers_match(span: ReadableSpan, headers: Mapping[str, str]) -> bool:
    """Whether the ``x-payi-*`` headers among ``headers`` are exactly the ones ``span``'s
    ``payi.*`` attributes stand for."""
    return _comparable(payi_headers(headers)) == headers_of_span(span)


def match_calls(
    spans: Sequence[ReadableSpan], requests: Sequence[RecordedRequest]
) -> tuple[list[Pair], list[RecordedRequest]]:
    """Pair each GenAI span (in start order) with a request that sent exactly its headers.

    Returns the pairs (request ``None`` when no request matches) and the requests left over.
    Both empty lists mean every call's span and headers agree.
    """
    left = list(requests)
    pairs: list[Pair] = []
    for span in sorted((s for s in spans if is_genai(s)), key=_start):
        found = next((r for r in left if headers_match(span, r.headers)), None)
        if found is not None:
            left.remove(found)
        pairs.append((span, found))
    return pairs, left


def _call(request: RecordedRequest) -> str:
    """What a request was: its OpenAI path, or the Gemini / Bedrock operation it called."""
    path = str(request.path)
    if path.startswith("/model/"):  # Bedrock: /model/{modelId}/{operation}
        return "bedrock " + path.rsplit("/", 1)[1]
    if ":" in path.rsplit("/", 1)[-1]:  # Gemini: /v1beta/models/{model}:{method}
        return "gemini " + path.rsplit(":", 1)[1]
    streamed = isinstance(request.body, dict) and request.body.get("stream") is True
    return path.removeprefix("/v1/") + (" (stream)" if streamed else "")


def number_calls(
    pairs: Sequence[Pair], unmatched: Sequence[RecordedRequest]
) -> tuple[list[RecordedRequest], dict[int, int]]:
    """The requests in table order (GenAI span order, then the unmatched ones), and the
    1-based table number of each matched GenAI span's request, by span id."""
    requests: list[RecordedRequest] = []
    numbers: dict[int, int] = {}
    for span, request in pairs:
        if request is not None:
            requests.append(request)
            if span.context:
                numbers[span.context.span_id] = len(requests)
    return [*requests, *unmatched], numbers


def print_headers(requests: Sequence[RecordedRequest], out: TextIO = sys.stdout) -> None:
    """One line per request with the ``x-payi-*`` headers it sent.

    Headers with the same value on every request are printed once, above the table.
    """
    rows = [payi_headers(r.headers) for r in requests]
    names: list[str] = []
    for row in rows:
        names.extend(n for n in row if n not in names)
    same = [n for n in names if all(n in row and row[n] == rows[0][n] for row in rows)]
    columns = [n for n in names if n not in same]

    print(f"Every request sent: {'  '.join(f'{n}: {rows[0][n]}' for n in same)}", file=out)
    print("Columns are the other x-payi-* headers, without the prefix ('-': not sent).", file=out)
    table = [["#", "call", *(n.removeprefix(HEADER_PREFIX) for n in columns)]]
    for i, (request, row) in enumerate(zip(requests, rows), start=1):
        table.append([str(i), _call(request), *(row.get(n, "-") for n in columns)])
    widths = [max(len(line[c]) for line in table) for c in range(len(table[0]))]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip(), file=out)


def print_check(
    pairs: Sequence[Pair], unmatched: Sequence[RecordedRequest], out: TextIO = sys.stdout
) -> bool:
    """Whether every GenAI span's ``payi.*`` attributes equal its request's headers (and
    every request has its span); prints the verdict and any mismatch."""
    matched = sum(1 for _, request in pairs if request is not None)
    print(
        f"GenAI spans whose payi.* attributes equal the x-payi-* headers of their request: "
        f"{matched}/{len(pairs)}; requests without such a span: {len(unmatched)}",
        file=out,
    )
    for span, request in pairs:
        if request is None:
            print(f"  MISMATCH: span {span.name!r} stands for {headers_of_span(span)}", file=out)
    for request in unmatched:
        print(
            f"  MISMATCH: request {_call(request)} sent {payi_headers(request.headers)}", file=out
        )
    return matched == len(pairs) and not unmatched


# ------------------------------------------------------------------------------ record
def _json_value(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


def traces_record(spans: Sequence[ReadableSpan], pairs: Sequence[Pair]) -> list[dict[str, object]]:
    """What the demo produced, as JSON-ready data (for ``PAYI_DEMO_TRACES_JSON``): per trace
    (in start order) its hex id and every span with its hex id, parent's hex id (``None``
    for a root), name, whether it is a GenAI span, its ``payi.*`` attributes and, for a
    GenAI span, the ``x-payi-*`` headers its request sent (``None``: no request matched)."""
    sent = {span.context.span_id: request for span, request in pairs if span.context}
    traces: dict[int, list[dict[str, object]]] = {}
    for span in sorted(spans, key=_start):
        if span.context is None:
            continue
        request = sent.get(span.context.span_id)
        traces.setdefault(span.context.trace_id, []).append(
            {
                "span_id": f"{span.context.span_id:016x}",
                "parent_span_id": f"{span.parent.span_id:016x}" if span.parent else None,
                "name": span.name,
                "genai": is_genai(span),
                "payi": {
                    k: _json_value(v)
                    for k, v in (span.attributes or {}).items()
                    if k.startswith(PAYI)
                },
                "headers": payi_headers(request.headers) if request is not None else None,
            }
        )
    return [
        {"trace_id": f"{trace_id:032x}", "spans": trace_spans}
        for trace_id, trace_spans in traces.items()
    ]

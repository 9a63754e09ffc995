"""The demo's cost view: what each user and each use case step cost, read from payi_otel's
metrics (``payi.genai.cost``, ``payi.genai.tokens``) through an ``InMemoryMetricReader`` -
the same numbers a metrics backend would chart, not a second computation."""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, TextIO

from opentelemetry.sdk.metrics.export import InMemoryMetricReader

__all__ = ["cost_rows", "print_costs"]

COST = "payi.genai.cost"
TOKENS = "payi.genai.tokens"


def _points(reader: InMemoryMetricReader) -> list[tuple[str, dict[str, Any], float]]:
    data = reader.get_metrics_data()
    points = []
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name in (COST, TOKENS):
                    points += [
                        (metric.name, dict(p.attributes or {}), p.value)
                        for p in metric.data.data_points
                    ]  # type: ignore[union-attr]
    return points


def cost_rows(
    reader: InMemoryMetricReader, by: Sequence[str]
) -> list[tuple[tuple[str, ...], float, int, int]]:
    """(the values of ``by``, cost in USD, input tokens, output tokens), costliest first."""
    cost: dict[tuple[str, ...], float] = defaultdict(float)
    tokens: dict[tuple[str, ...], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for name, attributes, value in _points(reader):
        key = tuple(str(attributes.get(a, "-")) for a in by)
        if name == COST:
            cost[key] += value
        else:
            tokens[key][str(attributes.get("payi_otel.token.type"))] += int(value)
    keys = set(cost) | set(tokens)
    rows = [(k, cost.get(k, 0.0), tokens[k]["input"], tokens[k]["output"]) for k in keys]
    return sorted(rows, key=lambda row: (-row[1], row[0]))


def _table(
    title: str,
    header: Sequence[str],
    rows: list[tuple[tuple[str, ...], float, int, int]],
    out: TextIO,
) -> None:
    print(title, file=out)
    lines = [[*header, "cost (USD)", "input tok", "output tok"]]
    lines += [[*key, f"{cost:.6f}", str(tin), str(tout)] for key, cost, tin, tout in rows]
    total = sum(row[1] for row in rows)
    lines.append(
        [
            "total",
            *([""] * (len(header) - 1)),
            f"{total:.6f}",
            str(sum(r[2] for r in rows)),
            str(sum(r[3] for r in rows)),
        ]
    )
    widths = [max(len(line[c]) for line in lines) for c in range(len(lines[0]))]
    for line in lines:
        cells = [
            cell.rjust(w) if i >= len(header) else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(line, widths))
        ]
        print("  ".join(cells).rstrip(), file=out)


#: The demo's cost tables: (title, column names, metric attributes).
TABLES: tuple[tuple[str, tuple[str, str], tuple[str, str]], ...] = (
    ("By account and user", ("account", "user"), ("payi.account_name", "payi.user_id")),
    ("By use case and step", ("use case", "step"), ("payi.use_case.name", "payi.use_case.step")),
    (
        "By provider and model",
        ("provider", "model"),
        ("gen_ai.provider.name", "gen_ai.request.model"),
    ),
)


def print_costs(reader: InMemoryMetricReader, out: TextIO = sys.stdout) -> None:
    """Cost per account and user, per use case step, and per provider and model, from the
    metrics."""
    for i, (title, columns, by) in enumerate(TABLES):
        if i:
            print(file=out)
        _table(f"{title} ({COST} by {', '.join(by)}):", columns, cost_rows(reader, by), out)
    print("Prices: genai-prices; '-': not set on those calls.", file=out)

"""Prices users control: a price table (``prices=`` / ``PAYI_PRICES_FILE``) over genai-prices'
for negotiated rates, fine-tunes, self-hosted and gateway models; validated with errors naming
the entry; ``payi_otel.cost.source`` says who priced the call (real SDKs, the fake server)."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fixtures_genai import CHAT, MESSAGE, GenAI
from fixtures_otel import Metrics

from payi_otel import (
    ParameterTypeError,
    ParameterValueError,
    PayiInstrumentor,
    payi_instrument,
    track_context,
)

CACHE = {"x-fake-usage": json.dumps({"cached_tokens": 6, "cache_write_tokens": 4})}
RATES = {"input": "0.10", "output": "0.40", "cache_read": "0.025"}


def only_span(genai: GenAI) -> dict[str, Any]:
    spans = genai.otel.genai_spans()
    assert len(spans) == 1, [s.name for s in spans]
    return dict(spans[0].attributes or {})


def fresh(genai: GenAI) -> None:
    """Forget the spans and requests so far (the invariant is checked on what follows)."""
    genai.otel.exporter.clear()
    genai.server.reset()


def by_rates(span: dict[str, Any], rates: dict[str, Any]) -> Decimal:
    """The price of a span's usage at per-million rates, as documented: cache reads and
    writes at their own rate when given, else at the input rate."""
    total_in = span["gen_ai.usage.input_tokens"]
    read = span.get("gen_ai.usage.cache_read.input_tokens", 0)
    write = span.get("gen_ai.usage.cache_creation.input_tokens", 0)
    rate = {
        k: Decimal(str(v))
        for k, v in rates.items()
        if k in ("input", "output", "cache_read", "cache_write")
    }
    per = Decimal(1_000_000)
    return (
        rate["input"] * (total_in - read - write)
        + rate.get("cache_read", rate["input"]) * read
        + rate.get("cache_write", rate["input"]) * write
        + rate["output"] * span["gen_ai.usage.output_tokens"]
    ) / per


def test_a_negotiated_rate_overrides_genai_prices(genai: GenAI) -> None:
    genai.openai.chat.completions.create(**{**CHAT, "model": "gpt-4o-mini"}, extra_headers=CACHE)
    public = only_span(genai)
    assert public["payi_otel.cost.source"] == "genai-prices"
    fresh(genai)
    genai.reinstrument(prices=[{"model": "gpt-4o-mini", "provider": "openai", **RATES}])
    genai.openai.chat.completions.create(**{**CHAT, "model": "gpt-4o-mini"}, extra_headers=CACHE)
    span = only_span(genai)
    assert span["payi_otel.cost.source"] == "user"
    assert span["payi_otel.cost.total"] == float(by_rates(span, RATES))
    assert span["payi_otel.cost.total"] != public["payi_otel.cost.total"]
    assert (span["payi_otel.cost.provider"], span["payi_otel.cost.model"]) == (
        "openai",
        "gpt-4o-mini",
    )
    assert span["payi_otel.cost.currency"] == "USD"


def test_fine_tunes_by_prefix_and_the_longest_prefix_wins(genai: GenAI) -> None:
    model = "ft:gpt-4o-mini:acme:support:9xZ"
    genai.openai.chat.completions.create(**{**CHAT, "model": model})
    assert "payi_otel.cost.total" not in only_span(genai)  # in no public table
    fresh(genai)
    broad = {"model": "ft:gpt-4o-mini:*", "input": 1, "output": 1}
    narrow = {"model": "FT:gpt-4o-mini:acme:*", "input": "0.3", "output": "1.2"}
    genai.reinstrument(prices=[broad, narrow])
    genai.openai.chat.completions.create(**{**CHAT, "model": model})
    span = only_span(genai)
    assert span["payi_otel.cost.total"] == float(by_rates(span, narrow))
    assert span["payi_otel.cost.model"] == model


def test_a_self_hosted_model_in_another_currency_is_its_own_metric_series(
    genai: GenAI,
) -> None:
    metrics = Metrics()
    entry = {"model": "llama-3.1-70b-internal", "input": 0.05, "output": 0.05, "currency": "eur"}
    genai.reinstrument(prices=[entry], meter_provider=metrics.provider)
    with track_context(account_name="acme"):
        genai.openai.chat.completions.create(**{**CHAT, "model": "llama-3.1-70b-internal"})
        genai.openai.chat.completions.create(**{**CHAT, "model": "gpt-4o-mini"})
    spans = {s.name: dict(s.attributes or {}) for s in genai.otel.genai_spans()}
    own = spans["chat llama-3.1-70b-internal"]
    assert own["payi_otel.cost.currency"] == "EUR" and own["payi_otel.cost.source"] == "user"
    by_currency = metrics.sum_by("payi.genai.cost", "payi_otel.cost.currency")
    # USD (genai-prices) carries no currency attribute, as before; EUR is its own series.
    assert by_currency == pytest.approx(
        {
            "EUR": own["payi_otel.cost.total"],
            None: spans["chat gpt-4o-mini"]["payi_otel.cost.total"],
        }
    )


def test_an_entry_for_another_provider_does_not_apply(genai: GenAI) -> None:
    genai.reinstrument(prices=[{"model": "claude-haiku-4-5", "provider": "system.openai", **RATES}])
    genai.anthropic.messages.create(**MESSAGE)
    assert only_span(genai)["payi_otel.cost.source"] == "genai-prices"
    fresh(genai)
    genai.reinstrument(
        prices=[{"model": "claude-haiku-4-5", "provider": "system.anthropic", **RATES}]
    )
    genai.anthropic.messages.create(**MESSAGE)
    span = only_span(genai)
    assert span["payi_otel.cost.source"] == "user"
    assert span["payi_otel.cost.provider"] == "anthropic"


def test_a_gateway_model_priced_through_price_as_resource(genai: GenAI) -> None:
    """A gateway's own model name, mapped (model_mappings) to a name the table prices."""
    genai.reinstrument(
        model_mappings=[{"model": "router/fast", "price_as_resource": "acme-fast"}],
        prices=[{"model": "acme-fast", **RATES}],
    )
    genai.openai.chat.completions.create(**{**CHAT, "model": "router/fast"})
    span = only_span(genai)
    assert span["payi_otel.cost.model"] == "acme-fast"
    assert span["payi_otel.cost.total"] == float(by_rates(span, RATES))


def test_the_prices_file(genai: GenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps([{"model": "gpt-4o-mini", **RATES}]))
    monkeypatch.setenv("PAYI_PRICES_FILE", str(path))
    genai.reinstrument()
    genai.openai.chat.completions.create(**{**CHAT, "model": "gpt-4o-mini"})
    span = only_span(genai)
    assert span["payi_otel.cost.source"] == "user"
    # A keyword argument wins over the variable.
    fresh(genai)
    genai.reinstrument(prices=[])
    genai.openai.chat.completions.create(**{**CHAT, "model": "gpt-4o-mini"})
    assert only_span(genai)["payi_otel.cost.source"] == "genai-prices"


@pytest.mark.parametrize(
    ("table", "error", "message"),
    [
        ({"model": "m"}, ParameterTypeError, "prices must be a list of price entries"),
        ([["m", 1, 2]], ParameterTypeError, "prices[0] must be a mapping"),
        ([{"model": "m", "input": 1}], ParameterValueError, "prices[0] (model 'm'): missing"),
        (
            [{"model": "ok", "input": 1, "output": 1}, {"model": "m", "input": -1, "output": 1}],
            ParameterValueError,
            "prices[1] (model 'm'): 'input' must be a finite number >= 0",
        ),
        ([{"model": "m", "input": "nan", "output": 1}], ParameterValueError, "finite"),
        ([{"model": "m", "input": True, "output": 1}], ParameterTypeError, "must be a number"),
        ([{"model": "m", "input": "cheap", "output": 1}], ParameterValueError, "'cheap'"),
        (
            [{"model": "m", "input": 1, "output": 1, "cached": 1}],
            ParameterValueError,
            "unknown keys ['cached']",
        ),
        (
            [{"model": "m", "input": 1, "output": 1, "currency": "dollars"}],
            ParameterValueError,
            "3-letter ISO 4217",
        ),
        # Beyond any real price: pricing would compute at its scale every call.
        (
            [{"model": "m", "input": "1E-31", "output": 1}],
            ParameterValueError,
            "'input' must be below 1,000,000,000,000,000 (per million tokens) with at most 30 "
            "decimal places, got '1E-31'",
        ),
        ([{"model": "m", "input": 1, "output": 1e15}], ParameterValueError, "'output' must be"),
        (
            [{"model": "m", "input": 1, "output": 1, "cache_read": "0." + "0" * 10**6 + "1"}],
            ParameterValueError,
            "'cache_read' must be below",
        ),
        ([{"model": "a*b", "input": 1, "output": 1}], ParameterValueError, "one '*'"),
        ([{"model": "", "input": 1, "output": 1}], ParameterValueError, "'model' must not be"),
    ],
)
def test_a_bad_table_is_refused_naming_the_entry(
    instrument: Any, table: Any, error: type, message: str
) -> None:
    with pytest.raises(error) as raised:
        payi_instrument(prices=table)
    assert message in str(raised.value)


def test_a_bad_prices_file_names_the_variable_and_the_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, instrument: Any
) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps([{"model": "x", "input": 1, "output": "-2"}]))
    monkeypatch.setenv("PAYI_PRICES_FILE", str(path))
    with pytest.raises(ParameterValueError) as raised:
        payi_instrument()
    assert f"PAYI_PRICES_FILE={path}[0] (model 'x'): 'output'" in str(raised.value)
    path.write_text("[{")
    with pytest.raises(ParameterValueError, match="must hold JSON"):
        payi_instrument()
    monkeypatch.setenv("PAYI_PRICES_FILE", str(tmp_path / "missing.json"))
    with pytest.raises(ParameterValueError, match="cannot read it"):
        payi_instrument()


# --- the README's snippet ---------------------------------------------------------------------


def readme_prices_snippet() -> str:
    # README "Cost and usage" is in docs/cost-and-usage.md (issue 22).
    readme = (Path(__file__).resolve().parent.parent / "docs" / "cost-and-usage.md").read_text(
        encoding="utf-8"
    )
    section = readme.split("**Your own prices.**", 1)[1].split("\n**", 1)[0]
    [snippet] = re.findall(r"```python\n(.*?)```", section, re.S)
    return snippet


def test_the_readme_prices_snippet_runs(genai: GenAI) -> None:
    PayiInstrumentor().uninstrument()  # the snippet calls payi_instrument() itself
    exec(compile(readme_prices_snippet(), "README.md", "exec"), {})
    with track_context(request_properties={"tenant": "t1"}):
        genai.openai.chat.completions.create(**{**CHAT, "model": "ft:gpt-4o-mini:acme::x1"})
        genai.openai.chat.completions.create(**{**CHAT, "model": "llama-3.1-70b-internal"})
    spans = {s.name: dict(s.attributes or {}) for s in genai.otel.genai_spans()}
    tuned = spans["chat ft:gpt-4o-mini:acme::x1"]
    assert tuned["payi_otel.cost.source"] == "user"
    rates = {"input": "0.30", "output": "1.20", "cache_read": "0.15"}
    assert tuned["payi_otel.cost.total"] == float(by_rates(tuned, rates))
    assert spans["chat llama-3.1-70b-internal"]["payi_otel.cost.currency"] == "EUR"

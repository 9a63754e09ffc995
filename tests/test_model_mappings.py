"""Model mappings (``payi_instrument(model_mappings=...)`` / ``PAYI_MODEL_MAPPINGS``), in the
shape of Pay-i's ``PayiInstrumentModelMapping``: a deployment (or any model as sent) priced
as a model. A matching mapping (exact on the model, on the normalised host when it names one)
gives the call ``price_as_category`` / ``price_as_resource`` (and ``resource_scope``) only when
the call has no ``price_as_*`` of its own; they then travel like any parameter - headers in
both dialects, the GenAI span, cost and metrics, ingest. Validated by the one registry; a bad
variable raises in code and is one ERROR line under zero-code. Real SDKs, the fake server."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from cloud_support import MODE_IDS, PAIRWISE_MODES, Mode, ingested, price
from fixtures_genai import (
    AZURE_CHAT,
    AZURE_DEPLOYMENT,
    BEDROCK_CLAUDE,
    MESSAGE,
    GenAI,
    anthropic_bedrock_client,
    azure_client,
)
from fixtures_otel import payi_attrs

from payi_otel import (
    ParameterTypeError,
    ParameterValueError,
    PayiInstrumentor,
    _settings,
    track_context,
)
from payi_otel._instrumentor import after_instrumentors, before_instrumentors
from payi_otel._model.model_mappings import ModelMapping

# README "Model mappings" is in docs/cost-and-usage.md (issue 22).
README = Path(__file__).resolve().parent.parent / "docs" / "cost-and-usage.md"
TO_GPT_4O = {
    "model": AZURE_DEPLOYMENT,
    "price_as_category": "system.azureopenai",
    "price_as_resource": "gpt-4o",
    "resource_scope": "global",
}
MAPPED = {
    "x-payi-price-as-category": "system.azureopenai",
    "x-payi-price-as-resource": "gpt-4o",
    "x-payi-resource-scope": "global",
}


@pytest.fixture(params=PAIRWISE_MODES, ids=lambda m: MODE_IDS[m])
def mode(request: pytest.FixtureRequest, genai: GenAI) -> Mode:
    spans, dialect = request.param
    return Mode(genai, spans, dialect)


def _mapped_params(record: Any) -> dict[str, object]:
    names = ("price_as_category", "price_as_resource", "resource_scope")
    return {k: v for k, v in record.call.params.items() if k in names}


# --- a mapping prices a deployment, everywhere a parameter goes -------------------------------


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "stream"])
async def test_a_mapped_deployment_travels_like_a_parameter_and_is_priced_as_its_model(
    mode: Mode, streamed: bool
) -> None:
    mode.start(model_mappings=[TO_GPT_4O])
    async with azure_client(mode.genai, is_async=True) as client:
        async with track_context(user_id="alice"):
            reply = await client.chat.completions.create(**AZURE_CHAT, stream=streamed)
            if streamed:
                _ = [chunk async for chunk in reply]
    sent = mode.genai.attribution()[-1]
    assert {k: sent[k] for k in MAPPED} == MAPPED
    assert sent["x-payi-user-id"] == "alice"
    record = mode.record()
    assert _mapped_params(record) == {
        "price_as_category": "system.azureopenai",
        "price_as_resource": "gpt-4o",
        "resource_scope": "global",
    }
    assert record.usage is not None
    expected = price("gpt-4o", "azure", record.usage)
    assert mode.metrics.total("payi.genai.cost") == pytest.approx(float(expected.total_price))
    if mode.spans:
        (span,) = mode.genai.otel.genai_spans()
        attributes = span.attributes or {}
        assert attributes["payi.price_as.resource"] == "gpt-4o"
        assert attributes["payi.resource_scope"] == "global"
        assert attributes["payi_otel.cost.model"] == "gpt-4o"
        assert attributes["payi_otel.cost.provider"] == "azure"
        (record_in,) = ingested(mode.genai.otel.spans())
        assert record_in["category"] == "system.azureopenai"
        assert record_in["resource"] == "gpt-4o"
        assert record_in["resource_scope"] == "global"


def test_a_mapping_applies_to_any_provider_s_model_as_sent(genai: GenAI) -> None:
    """Claude on Bedrock through an application inference profile (an opaque ARN)."""
    arn = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123"
    mode = Mode(genai, True, "x-payi").start(
        model_mappings=[{"model": arn, "price_as_resource": BEDROCK_CLAUDE}]
    )
    with anthropic_bedrock_client(genai) as client:
        client.messages.create(**{**MESSAGE, "model": arn})
    assert genai.sent()[-1]["x-payi-price-as-resource"] == BEDROCK_CLAUDE
    record = mode.record()
    assert record.usage is not None
    expected = price(BEDROCK_CLAUDE, "aws", record.usage)
    assert mode.metrics.total("payi.genai.cost") == pytest.approx(float(expected.total_price))


# --- matching -----------------------------------------------------------------------------------


def _host_mapping(host: str) -> dict[str, str]:
    return {"model": AZURE_DEPLOYMENT, "host": host, "price_as_resource": "gpt-4o"}


def test_a_mapping_matches_exactly_on_the_model_and_on_its_normalised_host(genai: GenAI) -> None:
    port = genai.server.base_url.rsplit(":", 1)[1]
    matching = ["127.0.0.1", f"http://127.0.0.1:{port}/openai", "HTTPS://127.0.0.1."]
    other = [
        {"model": AZURE_DEPLOYMENT.upper(), "price_as_resource": "gpt-4o"},  # exact model
        {"model": AZURE_DEPLOYMENT + "-2", "price_as_resource": "gpt-4o"},
        _host_mapping("my-res.openai.azure.com"),
    ]
    for mappings, expected in [
        (other, None),
        *[([*other, _host_mapping(host)], "gpt-4o") for host in matching],
        # The first match wins.
        (
            [
                {"model": AZURE_DEPLOYMENT, "price_as_resource": "gpt-4o-mini"},
                _host_mapping("127.0.0.1"),
            ],
            "gpt-4o-mini",
        ),
    ]:
        genai.reinstrument(model_mappings=mappings)
        with azure_client(genai) as client:
            client.chat.completions.create(**AZURE_CHAT)
        assert genai.sent()[-1].get("x-payi-price-as-resource") == expected, mappings


# --- an explicit price_as_* wins --------------------------------------------------------------


def test_an_explicit_price_as_from_a_scope_the_call_or_the_config_wins(genai: GenAI) -> None:
    genai.reinstrument(model_mappings=[TO_GPT_4O])
    with azure_client(genai) as client:
        with track_context(price_as_resource="gpt-4o-mini"):
            client.chat.completions.create(**AZURE_CHAT)
        client.chat.completions.create(
            **AZURE_CHAT, extra_headers={"xProxy-PriceAs-Category": "system.openai"}
        )
        with track_context(resource_scope="region.eastus"):
            client.chat.completions.create(**AZURE_CHAT)
        with track_context(price_as_resource=""):  # cleared: none in force
            client.chat.completions.create(**AZURE_CHAT)
    by_scope, by_call, scoped, cleared = genai.sent()
    # The mapping gives all of its price or nothing: never half of it over the call's own.
    assert by_scope.get("x-payi-price-as-resource") == "gpt-4o-mini"
    assert "x-payi-price-as-category" not in by_scope and "x-payi-resource-scope" not in by_scope
    assert by_call.get("x-payi-price-as-category") == "system.openai"
    assert "x-payi-price-as-resource" not in by_call and "x-payi-resource-scope" not in by_call
    # The mapping applies, and the call's own resource scope stays.
    assert scoped["x-payi-price-as-resource"] == "gpt-4o"
    assert scoped["x-payi-resource-scope"] == "region.eastus"
    assert {k: cleared[k] for k in MAPPED} == MAPPED

    genai.reinstrument({"price_as_resource": "gpt-4.1"}, model_mappings=[TO_GPT_4O])
    with azure_client(genai) as client:
        client.chat.completions.create(**AZURE_CHAT)
    assert genai.sent()[-1]["x-payi-price-as-resource"] == "gpt-4.1"
    assert "x-payi-resource-scope" not in genai.sent()[-1]


# --- from the environment ---------------------------------------------------------------------


def test_the_variable_gives_the_mappings_and_the_keyword_argument_wins(
    genai: GenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYI_MODEL_MAPPINGS", json.dumps([TO_GPT_4O]))
    genai.reinstrument()
    with azure_client(genai) as client:
        client.chat.completions.create(**AZURE_CHAT)
        genai.reinstrument(model_mappings=[])  # none, whatever the variable says
        client.chat.completions.create(**AZURE_CHAT)
    from_env, none = genai.sent()
    assert {k: from_env[k] for k in MAPPED} == MAPPED
    assert not set(MAPPED) & set(none)


BAD_VARIABLES = {
    "not-json": "[{model: prod-chat}]",
    "not-a-list": json.dumps(TO_GPT_4O),
    "no-price": json.dumps([{"model": AZURE_DEPLOYMENT, "resource_scope": "global"}]),
    "unknown-key": json.dumps([{"model": AZURE_DEPLOYMENT, "price_as_model": "gpt-4o"}]),
    "bad-value": json.dumps([{"model": AZURE_DEPLOYMENT, "price_as_resource": "gpt\n4o"}]),
}


@pytest.mark.parametrize("text", BAD_VARIABLES.values(), ids=list(BAD_VARIABLES))
def test_a_bad_variable_raises_in_code_and_is_one_error_line_under_zero_code(
    text: str, caplog: pytest.LogCaptureFixture
) -> None:
    environ = {"PAYI_MODEL_MAPPINGS": text}
    with pytest.raises(ValueError, match="PAYI_MODEL_MAPPINGS"):
        _settings.build({"caller_file": "<test>"}, environ=environ)
    with caplog.at_level(logging.ERROR, logger="payi_otel"):
        settings = _settings.build({"caller_file": "<test>"}, lenient=True, environ=environ)
    [record] = caplog.records
    assert "PAYI_MODEL_MAPPINGS" in record.getMessage()
    assert record.getMessage().endswith("the variable is ignored")
    assert settings.model_mappings == ()


def test_under_zero_code_a_good_variable_maps_and_a_bad_one_is_ignored(
    genai: GenAI, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    PayiInstrumentor().uninstrument()
    monkeypatch.setenv("PAYI_MODEL_MAPPINGS", json.dumps([TO_GPT_4O]))
    before_instrumentors()
    try:
        genai.reinstrument()
    finally:
        after_instrumentors()
    with azure_client(genai) as client:
        client.chat.completions.create(**AZURE_CHAT)
        monkeypatch.setenv("PAYI_MODEL_MAPPINGS", "[not json")
        before_instrumentors()
        try:
            with caplog.at_level(logging.ERROR, logger="payi_otel"):
                genai.reinstrument()
        finally:
            after_instrumentors()
        client.chat.completions.create(**AZURE_CHAT)
    mapped, unmapped = genai.sent()
    assert {k: mapped[k] for k in MAPPED} == MAPPED
    assert not set(MAPPED) & set(unmapped)
    [error] = [r for r in caplog.records if r.name == "payi_otel"]
    assert error.levelno == logging.ERROR and "PAYI_MODEL_MAPPINGS" in error.getMessage()


BAD_KEYWORDS: dict[str, tuple[Any, type[Exception], str]] = {
    "a-dict": (TO_GPT_4O, ParameterTypeError, r"model_mappings must be a list"),
    "a-str-entry": (["prod-chat"], ParameterTypeError, r"model_mappings\[0\] must be a mapping"),
    "no-model": ([{"price_as_resource": "x"}], ParameterTypeError, r"\['model'\] must be a str"),
    "empty-model": ([{"model": " ", "price_as_resource": "x"}], ParameterValueError, "empty"),
    "no-price": ([{"model": "m", "resource_scope": "global"}], ParameterValueError, "needs"),
    "typo": (
        [{"model": "m", "price_as_resorce": "x"}],
        ParameterValueError,
        "did you mean 'price_as_resource'",
    ),
    "int-resource": ([{"model": "m", "price_as_resource": 4}], ParameterTypeError, "str"),
    "crlf": ([{"model": "m", "price_as_category": "a\r\nb"}], ParameterValueError, "CR"),
    "bad-host": (
        [{"model": "m", "host": "https://", "price_as_resource": "x"}],
        ValueError,
        "host",
    ),
}


@pytest.mark.parametrize(("value", "error", "match"), BAD_KEYWORDS.values(), ids=list(BAD_KEYWORDS))
def test_a_bad_keyword_argument_always_raises(
    value: Any, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        _settings.build({"caller_file": "<test>", "model_mappings": value}, lenient=True)


def test_a_mapping_without_price_values_is_refused_and_empty_values_are_none() -> None:
    [mapping] = _settings.build(
        {
            "caller_file": "<test>",
            "model_mappings": [
                {"model": "m", "host": None, "price_as_category": "", "price_as_resource": "x"}
            ],
        }
    ).model_mappings
    assert mapping == ModelMapping("m", None, (("price_as_resource", "x"),))


# --- cost: an Azure deployment that cannot be priced -----------------------------------------


def test_an_unpriced_azure_deployment_warns_once_to_add_a_mapping(
    genai: GenAI, caplog: pytest.LogCaptureFixture
) -> None:
    genai.server.azure_deployments["ft-chat"] = "ft:gpt-4o:acme:support:abc123"
    mode = Mode(genai, True, "x-payi").start()
    chat = {**AZURE_CHAT, "model": "ft-chat"}
    with caplog.at_level(logging.DEBUG, logger="payi_otel"), azure_client(genai) as client:
        for _ in range(2):
            client.chat.completions.create(**chat)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name == "payi_otel"]
    assert len(warnings) == 1
    assert "ft-chat" in warnings[0].getMessage() and "model mapping" in warnings[0].getMessage()
    assert mode.metrics.points("payi.genai.cost") == []
    assert all(r.usage is not None for r in mode.records)

    caplog.clear()
    mode.start(model_mappings=[{"model": "ft-chat", "price_as_resource": "gpt-4o"}])
    with caplog.at_level(logging.DEBUG, logger="payi_otel"), azure_client(genai) as client:
        client.chat.completions.create(**chat)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name == "payi_otel"]
    assert mode.metrics.total("payi.genai.cost") > 0
    (span,) = genai.otel.genai_spans()[-1:]
    assert payi_attrs(span)["payi.price_as.resource"] == "gpt-4o"


# --- the README's example ---------------------------------------------------------------------


def _readme_section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("## Model mappings")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def test_the_readme_example_runs_and_maps_the_deployment(genai: GenAI) -> None:
    section = _readme_section()
    code = re.search(r"```python\n(.*?)```", section, re.S)
    shell = re.search(r"```shell\n(.*?)```", section, re.S)
    assert code and shell
    PayiInstrumentor().uninstrument()
    namespace: dict[str, Any] = {}
    exec(compile(code.group(1), "README.md", "exec"), namespace)  # calls payi_instrument()
    from_code = _settings.current.model_mappings
    assert from_code and from_code[0].model == AZURE_DEPLOYMENT
    with azure_client(genai) as client:
        client.chat.completions.create(**AZURE_CHAT)
    sent = genai.sent()[-1]
    assert sent["x-payi-price-as-resource"] == "gpt-4o"
    assert sent["x-payi-price-as-category"] == "system.azureopenai"
    # The variable's example says the same as the first mapping of the code's.
    assignment = shell.group(1).strip()
    name, _, value = assignment.partition("=")
    assert name == "export PAYI_MODEL_MAPPINGS"
    environ = {"PAYI_MODEL_MAPPINGS": value.strip("'")}
    from_env = _settings.build({"caller_file": "<test>"}, environ=environ).model_mappings
    assert from_env == from_code[:1]

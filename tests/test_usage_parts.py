"""Parts of a call's usage priced at their own rates (README "Cost and usage"): cache writes
kept an hour (Anthropic, Claude on Bedrock and Vertex), audio and image tokens (OpenAI,
Gemini), OpenAI's cache writes. Each read from the real SDK's response on the fake server,
priced exactly as genai-prices prices the same usage, and held to genai-prices' own
extractors, so a part genai-prices learns to read and payi_otel does not fails here."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from fake_payi_server import FakePayiServer
from fixtures_genai import (
    MESSAGE,
    GenAI,
    anthropic_bedrock_client,
    anthropic_vertex_client,
    bedrock_call,
    google_client,
    google_config,
    mock_openai,
)
from fixtures_otel import Metrics
from genai_prices import Usage, calc_price, data_snapshot
from ingest_support import exporter_for, fake_payi_module, payi
from opentelemetry.sdk.trace import ReadableSpan

from payi_otel._prices import PriceTable, Tokens
from payi_otel._providers import USAGE_PARTS
from payi_otel._providers.anthropic import AnthropicProvider
from payi_otel._providers.google_genai import _MODALITIES, _MODALITY_DETAILS
from payi_otel._providers.openai import OpenAIProvider

__all__ = ["fake_payi_module", "payi"]  # fixtures

#: genai-prices' usage keys payi_otel reads (its parts, and the four counts).
_OURS = {*USAGE_PARTS, "cache_read_tokens", "cache_write_tokens"}


#: A Responses API reply of a model that charges cache writes (in ``input_tokens_details``).
CACHE_WRITING_REPLY: dict[str, Any] = {
    "id": "resp_1",
    "object": "response",
    "created_at": 1,
    "status": "completed",
    "model": "gpt-6-cyber",
    "output": [],
    "parallel_tool_calls": True,
    "tool_choice": "auto",
    "tools": [],
    "usage": {
        "input_tokens": 10_000,
        "input_tokens_details": {"cached_tokens": 2_000, "cache_write_tokens": 5_000},
        "output_tokens": 300,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 10_300,
    },
}


@pytest.fixture
def metrics(genai: GenAI) -> Metrics:
    found = Metrics()
    genai.reinstrument(meter_provider=found.provider)
    return found


def fake_usage(**counts: int) -> dict[str, str]:
    return {"x-fake-usage": json.dumps(counts)}


def genai_span(genai: GenAI) -> ReadableSpan:
    spans = genai.otel.genai_spans()
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


def assert_cost(genai: GenAI, metrics: Metrics, want: Any, without: Any) -> None:
    """The call's span and metric carry ``want`` (genai-prices' price of its usage with its
    parts), which differs from ``without`` (the same usage priced as text)."""
    assert want.total_price != without.total_price
    attributes = genai_span(genai).attributes or {}
    assert attributes["payi_otel.cost.total"] == float(want.total_price)
    assert attributes["payi_otel.cost.input"] == float(want.input_price)
    assert attributes["payi_otel.cost.output"] == float(want.output_price)
    assert metrics.total("payi.genai.cost") == pytest.approx(float(want.total_price))


def price(model: str, provider: str, **usage: int) -> Any:
    return calc_price(Usage(**usage), model_ref=model, provider_id=provider)


# --- held to genai-prices' extractors -------------------------------------------------------


def _extractors(provider_id: str) -> list[Any]:
    snapshot = data_snapshot.get_snapshot()
    return next(p for p in snapshot.providers if p.id == provider_id).extractors or []


@pytest.mark.parametrize(
    ("provider_id", "flavors", "ours"),
    [
        ("openai", ("chat", "responses", "realtime", "images"), OpenAIProvider),
        ("anthropic", ("default",), AnthropicProvider),
    ],
)
def test_every_part_genai_prices_reads_is_read(
    provider_id: str, flavors: tuple[str, ...], ours: Any
) -> None:
    checked = 0
    for extractor in _extractors(provider_id):
        if extractor.api_flavor not in flavors:
            continue
        for mapping in extractor.mappings:
            if mapping.dest not in _OURS or mapping.path == "cache_creation_input_tokens":
                continue
            path = mapping.path if isinstance(mapping.path, str) else ".".join(mapping.path)
            assert path in ours.usage_fields.get(mapping.dest, ()), (extractor.api_flavor, path)
            checked += 1
    assert checked >= 2


def test_every_gemini_modality_genai_prices_reads_is_read() -> None:
    ours = {details: part for details, part in _MODALITY_DETAILS}
    checked = 0
    for extractor in _extractors("google"):
        if extractor.api_flavor != "default":
            continue
        for mapping in extractor.mappings:
            if mapping.dest not in USAGE_PARTS or isinstance(mapping.path, str):
                continue
            camel, match = mapping.path[0], mapping.path[1]
            details = "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)
            modality = match.match.equals
            assert details in ours, camel
            assert ours[details].format(_MODALITIES[modality]) == mapping.dest, mapping.path
            checked += 1
    assert checked >= 10


def test_a_call_with_parts_is_priced_as_calc_price_prices_it() -> None:
    """Every model that prices a part apart, with random usages holding every part it
    prices: ``PriceTable`` (as the cost observer prices) equals ``calc_price``, exactly."""
    from genai_prices import types

    table = PriceTable()
    rng = random.Random(20)
    models = 0
    for provider in data_snapshot.get_snapshot().providers:
        for model in provider.models:
            current = model.prices
            if not isinstance(current, types.ModelPrice):
                current = current[-1].prices
            keys = [
                k.replace("_mtok", "_tokens")
                for k, v in vars(current).items()
                if v is not None and k.replace("_mtok", "_tokens") in USAGE_PARTS
            ]
            if not keys:
                continue
            models += 1
            for _ in range(3):
                inp, out = rng.randint(1_000, 10**6), rng.randint(1_000, 10**6)
                read, write = inp // 4, inp // 5
                every = {"cache_write_1h_tokens": rng.randint(1, write)}
                for m in ("audio", "image", "video"):  # (each part within what holds it)
                    every[f"input_{m}_tokens"] = rng.randint(1, inp // 8)
                    every[f"cache_{m}_read_tokens"] = rng.randint(
                        0, min(read // 3, every[f"input_{m}_tokens"])
                    )
                    every[f"output_{m}_tokens"] = rng.randint(1, out // 4)
                parts = {k: every[k] for k in keys if every[k]}
                tokens = Tokens(inp, out, read, write, tuple(parts.items()))
                try:
                    want = price(
                        model.id,
                        provider.id,
                        input_tokens=inp,
                        output_tokens=out,
                        cache_read_tokens=read,
                        cache_write_tokens=write,
                        **parts,
                    )
                except LookupError:  # not found by its own id (either way: the equality test)
                    assert table.price(provider.id, model.id, tokens) is None
                    continue
                got = table.price(provider.id, model.id, tokens)
                assert got is not None
                assert (got.input, got.output, got.total) == (
                    want.input_price,
                    want.output_price,
                    want.total_price,
                ), (provider.id, model.id, parts)
    assert models >= 40


# --- read from each SDK's response --------------------------------------------------------


#: (client, model, genai-prices provider) of each Claude client: Anthropic's own, and Claude
#: on Bedrock and Vertex AI through the anthropic SDK's cloud clients.
_CLAUDE = {
    "anthropic": (None, "claude-sonnet-4-5", "anthropic"),
    "bedrock": (
        anthropic_bedrock_client,
        "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "aws",
    ),
    "vertex": (anthropic_vertex_client, "claude-sonnet-4-5@20250929", "google"),
}


@pytest.mark.parametrize("cloud", sorted(_CLAUDE))
@pytest.mark.parametrize("how", ["create", "stream", "async"])
async def test_claude_one_hour_cache_writes(
    genai: GenAI, metrics: Metrics, cloud: str, how: str
) -> None:
    make, model, provider = _CLAUDE[cloud]
    call = {
        **MESSAGE,
        "model": model,
        "extra_headers": fake_usage(cache_write_tokens=400, cache_write_1h_tokens=300),
    }
    if how == "async":
        client = genai.async_anthropic if make is None else make(genai, is_async=True)
        message = await client.messages.create(**call)
    else:
        client = genai.anthropic if make is None else make(genai)
        if how == "stream":
            with client.messages.stream(**call) as stream:
                message = stream.get_final_message()
        else:
            message = client.messages.create(**call)
    usage = {
        "input_tokens": message.usage.input_tokens + 400,
        "cache_write_tokens": 400,
        "output_tokens": message.usage.output_tokens,
    }
    assert_cost(
        genai,
        metrics,
        price(model, provider, **usage, cache_write_1h_tokens=300),
        price(model, provider, **usage),
    )


@pytest.mark.parametrize("stream", [False, True])
def test_openai_audio_tokens(genai: GenAI, metrics: Metrics, stream: bool) -> None:
    call: dict[str, Any] = {
        "model": "gpt-audio",
        "messages": [{"role": "user", "content": "Hello"}],
        "extra_headers": fake_usage(audio_input_tokens=300, audio_output_tokens=50),
    }
    if stream:
        chunks = list(genai.openai.chat.completions.create(**call, stream=True))
        assert all(c.usage is None for c in chunks)  # the usage chunk asked for stays hidden
        attributes = genai_span(genai).attributes or {}
        prompt = int(attributes["gen_ai.usage.input_tokens"])  # type: ignore[call-overload]
        completion = int(attributes["gen_ai.usage.output_tokens"])  # type: ignore[call-overload]
    else:
        reply = genai.openai.chat.completions.create(**call)
        assert reply.usage is not None
        prompt, completion = reply.usage.prompt_tokens, reply.usage.completion_tokens
    usage = {"input_tokens": prompt, "output_tokens": completion}
    assert_cost(
        genai,
        metrics,
        price("gpt-audio", "openai", **usage, input_audio_tokens=300, output_audio_tokens=50),
        price("gpt-audio", "openai", **usage),
    )


@pytest.mark.parametrize("backend", ["gemini", "vertex"])
def test_gemini_audio_tokens(genai: GenAI, metrics: Metrics, backend: str) -> None:
    client = google_client(genai, backend)
    response = client.models.generate_content(
        model="gemini-2.5-flash",
        contents="Hello",
        config=google_config(fake_usage(audio_input_tokens=700)),
    )
    meta = response.usage_metadata
    assert meta is not None and meta.prompt_token_count and meta.candidates_token_count
    usage = {"input_tokens": meta.prompt_token_count, "output_tokens": meta.candidates_token_count}
    assert_cost(
        genai,
        metrics,
        price("gemini-2.5-flash", "google", **usage, input_audio_tokens=700),
        price("gemini-2.5-flash", "google", **usage),
    )


@pytest.mark.parametrize("operation", ["converse", "converse_stream"])
def test_bedrock_converse_one_hour_cache_writes(
    genai: GenAI, metrics: Metrics, operation: str
) -> None:
    model = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
    bedrock_call(
        genai,
        operation,
        extra_headers=fake_usage(cache_write_tokens=500, cache_write_1h_tokens=200),
        model=model,
    )
    attributes = genai_span(genai).attributes or {}
    assert attributes["gen_ai.usage.cache_creation.input_tokens"] == 500
    # (genai-bedrock's input count leaves the cache writes out, as Bedrock's does)
    uncached = int(attributes["gen_ai.usage.input_tokens"])  # type: ignore[call-overload]
    usage = {
        "input_tokens": uncached + 500,
        "output_tokens": int(attributes["gen_ai.usage.output_tokens"]),  # type: ignore[call-overload]
        "cache_write_tokens": 500,
    }
    assert_cost(
        genai,
        metrics,
        price(model, "aws", **usage, cache_write_1h_tokens=200),
        price(model, "aws", **usage),
    )


def test_pay_i_gets_one_hour_cache_writes_as_their_own_unit(
    genai: GenAI, payi: FakePayiServer
) -> None:
    """As Pay-i's SDK reports them: ``text_cache_write`` (5 minutes) and
    ``text_cache_write_1h``."""
    exporter = exporter_for(payi.base_url)
    genai.reinstrument(ingest=exporter)
    genai.anthropic.messages.create(
        **MESSAGE, extra_headers=fake_usage(cache_write_tokens=70, cache_write_1h_tokens=30)
    )
    genai.anthropic.messages.create(**MESSAGE, extra_headers=fake_usage(cache_write_tokens=20))
    assert exporter.force_flush()
    units = [r.body["units"] for r in payi.ingested()]
    assert units[0]["text_cache_write"] == {"input": 40, "output": 0}
    assert units[0]["text_cache_write_1h"] == {"input": 30, "output": 0}
    assert units[1]["text_cache_write"] == {"input": 20, "output": 0}
    assert "text_cache_write_1h" not in units[1]


def test_openai_cache_writes_are_priced_as_written(genai: GenAI) -> None:
    """OpenAI's models that charge cache writes report them in ``input_tokens_details``
    (``prompt_tokens_details`` in chat): priced at the write rate, not the input's."""
    import httpx2

    model = "gpt-6-cyber"
    reply = CACHE_WRITING_REPLY
    metrics = Metrics()
    genai.reinstrument(meter_provider=metrics.provider)
    genai.check_invariant = False  # the mock is not the fake server
    client = mock_openai(lambda _: httpx2.Response(200, json=reply))
    client.responses.create(model=model, input="hi")
    usage = {"input_tokens": 10_000, "cache_read_tokens": 2_000, "output_tokens": 300}
    want = price(model, "openai", **usage, cache_write_tokens=5_000)
    assert want.total_price != price(model, "openai", **usage).total_price
    assert metrics.total("payi.genai.cost") == pytest.approx(float(want.total_price))


@pytest.mark.parametrize("backend", ["gemini", "vertex"])
def test_gemini_audio_with_cached_text_is_priced(
    genai: GenAI, metrics: Metrics, backend: str
) -> None:
    """A cached text prefix with fresh audio: the cache details list only TEXT, so none of
    the audio was cached (genai-prices refuses to guess; a review found such calls unpriced)."""
    client = google_client(genai, backend)
    response = client.models.generate_content(
        model="gemini-2.5-flash",
        contents="Hello",
        config=google_config(fake_usage(cached_tokens=6, audio_input_tokens=700)),
    )
    meta = response.usage_metadata
    assert meta is not None and meta.prompt_token_count and meta.candidates_token_count
    usage = {
        "input_tokens": meta.prompt_token_count,
        "output_tokens": meta.candidates_token_count,
        "cache_read_tokens": 6,
    }
    assert_cost(
        genai,
        metrics,
        price(
            "gemini-2.5-flash",
            "google",
            **usage,
            input_audio_tokens=700,
            cache_audio_read_tokens=0,
        ),
        price("gemini-2.5-flash", "google", **usage),
    )


def test_a_part_the_model_does_not_rate_keeps_the_fast_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Image input to gemini-2.5-flash (which rates no image tokens apart) is priced by the
    linear form, as calc_price prices it, without calling calc_price."""
    import genai_prices

    table = PriceTable()
    tokens = Tokens(5_000, 300, 0, 0, (("input_image_tokens", 1_290),))
    want = price("gemini-2.5-flash", "google", input_tokens=5_000, output_tokens=300)
    rated = Tokens(5_000, 300, 0, 0, (("input_audio_tokens", 1_290),))
    rated_want = price(
        "gemini-2.5-flash",
        "google",
        input_tokens=5_000,
        output_tokens=300,
        input_audio_tokens=1_290,
    )
    assert table.price("google", "gemini-2.5-flash", Tokens(1, 1, 0, 0)) is not None  # warm

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("calc_price called")

    with monkeypatch.context() as patched:
        patched.setattr(genai_prices, "calc_price", refused)
        got = table.price("google", "gemini-2.5-flash", tokens)
    assert got is not None and got.total == want.total_price
    got = table.price("google", "gemini-2.5-flash", rated)  # a part it rates: calc_price
    assert got is not None and got.total == rated_want.total_price != want.total_price


def test_pay_i_gets_cache_writes_as_pay_is_sdk_reports_them_per_provider(
    genai: GenAI, payi: FakePayiServer
) -> None:
    """Pay-i's SDK splits the hour-long writes out for Anthropic only, and has no
    cache-write unit for OpenAI (its writes stay in ``text``)."""
    import httpx2

    exporter = exporter_for(payi.base_url)
    genai.reinstrument(ingest=exporter)
    bedrock_call(
        genai,
        "converse",
        extra_headers=fake_usage(cache_write_tokens=500, cache_write_1h_tokens=200),
        model="us.anthropic.claude-sonnet-4-5-20250929-v1:0",
    )
    reply = CACHE_WRITING_REPLY
    genai.check_invariant = False  # the mock is not the fake server
    mock_openai(lambda _: httpx2.Response(200, json=reply)).responses.create(
        model="gpt-6-cyber", input="hi"
    )
    assert exporter.force_flush()
    converse, responses = (r.body["units"] for r in payi.ingested())
    assert converse["text_cache_write"] == {"input": 500, "output": 0}
    assert "text_cache_write_1h" not in converse
    assert "text_cache_write" not in responses
    assert responses["text"] == {"input": 8_000, "output": 300}
    assert responses["text_cache_read"] == {"input": 2_000, "output": 0}

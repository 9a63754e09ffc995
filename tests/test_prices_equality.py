"""The fast price path is ``genai_prices.calc_price``, exactly: every (provider, model) of
genai-prices' bundled snapshot, random usages (seeded), equal Decimals, no tolerance."""

from __future__ import annotations

import random
from decimal import Decimal, localcontext
from typing import Any, List, Tuple

import pytest

genai_prices = pytest.importorskip("genai_prices")
from genai_prices import Usage, calc_price  # noqa: E402
from genai_prices.data_snapshot import get_snapshot  # noqa: E402

from payi_otel._model.user_prices import UserPrice  # noqa: E402
from payi_otel._prices import (  # noqa: E402
    Linear,
    PriceTable,
    Tokens,
    _GenaiPrices,
    _Slow,
    user_linear,
)

#: Usages per model (seeded, random but for four): about 2,300 models x 9.
USAGES_PER_MODEL = 9


def _usages(rng: random.Random) -> List[Tokens]:
    usages = [Tokens(0, 0, 0, 0), Tokens(1, 1, 0, 0), Tokens(1_000_000, 1_000_000, 0, 0)]
    # Beyond any real call, where calc_price's 28 digits round (the fast path leaves it to
    # calc_price there: CALC_PRICE_EXACT_BELOW).
    huge = rng.choice((10**10, 10**14, 10**15, 3 * 10**17))
    usages.append(Tokens(huge, huge // 3, huge // 7, huge // 11))
    while len(usages) < USAGES_PER_MODEL:
        scale = rng.choice((10, 1_000, 100_000, 3_000_000))
        inp = rng.randint(0, scale)
        read = rng.randint(0, inp) if rng.random() < 0.6 else 0
        write = rng.randint(0, inp - read) if rng.random() < 0.4 else 0
        # Now and then a usage calc_price refuses (cache beyond the input): both must refuse.
        if rng.random() < 0.05:
            read = inp + rng.randint(1, 10)
        usages.append(Tokens(inp, rng.randint(0, scale), read, write))
    return usages


def _expected(provider: str, model: str, tokens: Tokens) -> Any:
    counts = dict(
        input_tokens=tokens.input,
        output_tokens=tokens.output,
        cache_read_tokens=tokens.cache_read,
        cache_write_tokens=tokens.cache_write,
    )
    return calc_price(
        Usage(**{k: v for k, v in counts.items() if v}), model_ref=model, provider_id=provider
    )


def _models() -> List[Tuple[str, str]]:
    return [(p.id, m.id) for p in get_snapshot().providers for m in p.models]


def test_every_model_of_the_snapshot_prices_exactly_as_calc_price() -> None:
    rng = random.Random(20)
    table = PriceTable()
    table.genai = _GenaiPrices()  # a fresh coefficient table
    models = _models()
    compared = refused = linear = slow = unknown = 0
    for provider, model in models:
        for tokens in _usages(rng):
            try:
                want = _expected(provider, model, tokens)
            except LookupError:
                assert table.price(provider, model, tokens) is None
                unknown += 1
                break
            except ValueError as error:
                with pytest.raises(ValueError) as raised:
                    table.price(provider, model, tokens)
                assert str(raised.value) == str(error)
                refused += 1
                continue
            got = table.price(provider, model, tokens)
            assert got is not None
            assert (got.input, got.output, got.total) == (
                want.input_price,
                want.output_price,
                want.total_price,
            ), (provider, model, tokens)
            assert all(isinstance(v, Decimal) for v in (got.input, got.output, got.total))
            # The floats the span attributes and metrics carry: float() of each Decimal.
            assert got.floats == (
                float(want.input_price),
                float(want.output_price),
                float(want.total_price),
            ), (provider, model, tokens)
            assert (got.provider, got.model, got.currency, got.source) == (
                want.provider.id,
                want.model.id,
                "USD",
                "genai-prices",
            )
            compared += 1
        _, entry = table.genai.entry(provider, model)
        linear += isinstance(entry, Linear)
        slow += isinstance(entry, _Slow)
    print(
        f"{len(models)} models: {linear} linear, {slow} by calc_price, {unknown} not found by "
        f"their own id; {compared} usages equal, {refused} refused by both"
    )
    # The coverage claimed in docs/performance.md: nearly every model is on the fast path.
    assert len(models) > 2000 and linear > 0.85 * len(models)
    assert compared > 0.9 * len(models) * USAGES_PER_MODEL and refused > 0


def test_the_fast_path_agrees_with_what_the_issue_names_as_tiered_or_conditional() -> None:
    """o3, claude-sonnet-4-5 and gemini-2.5-pro have tiered or dated prices: whichever path
    they take, the figure is calc_price's, across a tier's threshold too."""
    table = PriceTable()
    for provider, model in (
        ("openai", "o3"),
        ("anthropic", "claude-sonnet-4-5"),
        ("google", "gemini-2.5-pro"),
    ):
        for inp in (1_000, 199_999, 200_001, 1_000_000):
            tokens = Tokens(inp, 5_000, inp // 2, 0)
            want = _expected(provider, model, tokens)
            got = table.price(provider, model, tokens)
            assert got is not None
            assert got.total == want.total_price and got.input == want.input_price


def test_a_users_prices_are_exact_and_their_floats_the_nearest() -> None:
    """A user's prices take the integer path too: each figure is the exact value of its
    definition (the per-million prices over a million, times the counts: no rounding, with
    up to 30 significant digits of price and 10 of count, in the default decimal context and
    in an app's own of 6 digits), and its float ``float()`` of that value - the float nearest
    it."""
    rng = random.Random(21)

    def number() -> Decimal:
        digits = rng.randint(1, 30)
        return Decimal(rng.randint(0, 10**digits)).scaleb(-rng.randint(0, 30))

    for case in range(2_000):
        entry = UserPrice(
            "m",
            None,
            number(),
            number(),
            number() if rng.random() < 0.5 else None,
            number() if rng.random() < 0.5 else None,
            "EUR",
        )
        inp = rng.randint(0, 10**10)
        read = rng.randint(0, inp)
        write = rng.randint(0, inp - read)
        tokens = Tokens(inp, rng.randint(0, 10**10), read, write)
        with localcontext() as app:
            if case % 2:
                app.prec = 6  # an app's own precision: prices are not computed in it
            linear = user_linear(entry, "p", "m")
        got = linear.price(tokens)
        assert got is not None
        with localcontext() as exact:
            exact.prec = 500
            per = Decimal(1_000_000)
            cache_read = entry.input if entry.cache_read is None else entry.cache_read
            cache_write = entry.input if entry.cache_write is None else entry.cache_write
            want_input = (
                entry.input * (inp - read - write) + cache_read * read + cache_write * write
            ) / per
            want_output = entry.output * tokens.output / per
            want = (want_input, want_output, want_input + want_output)
            assert (got.input, got.output, got.total) == want, (entry, tokens)
        assert got.floats == tuple(float(v) for v in want), (entry, tokens)
        assert (got.currency, got.source) == ("EUR", "user")


def test_a_figure_beyond_a_float_is_inf_and_the_call_still_priced() -> None:
    """Token counts no call has (a provider's bug, a hostile server) give a figure too large
    for a float: its float is inf, as ``float()`` of the exact Decimal is, and it is priced."""
    entry = UserPrice("m", None, Decimal("1.5"), Decimal(3), None, None, "USD")
    got = user_linear(entry, "p", "m").price(Tokens(10**400, 1, 0, 0))
    assert got is not None
    assert got.floats == (float("inf"), 3e-6, float("inf"))
    with localcontext() as exact:
        exact.prec = 1000
        assert got.input == Decimal("1.5E394") and got.total == got.input + Decimal("0.000003")
